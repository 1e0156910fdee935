"""Sharing: an item reaches a patient. One transaction records the grant, the audit trail and the notification.

The share row is the grant behind every later read of the item's attachments: the patient can
download them for good, whatever happens to the source files. The notification is written in the
same transaction (outbox) and delivered at least once by :mod:`careshare.core.notifications`.

A share, or one attachment of a shared item, can be withdrawn (:func:`revoke`): the row stays for
the clinic, marked with who, when and why, and every patient-facing read leaves it out from then on
(:func:`visible_to_patient` in a channel's own queries, :func:`patient_attachments` for its files).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.ids import new_id
from careshare.core.notifications import Notification, enqueue
from careshare.core.problems import NOT_FOUND, Problem, ProblemType
from careshare.core.targets import Attachment, attachments_of

if TYPE_CHECKING:
    from datetime import datetime

    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal

__all__ = [
    "ITEM_NOT_SHARED",
    "MAX_REASON_CHARS",
    "WITHDRAWN_KIND",
    "WITHDRAWN_TITLE",
    "Revocation",
    "Revoked",
    "Shared",
    "attachment_for_patient",
    "patient_attachments",
    "revocations",
    "revoke",
    "share",
    "shared_items",
    "visible_to_patient",
]

#: A reason says why in a sentence or two (kept for the clinic, never shown to the patient).
MAX_REASON_CHARS = 500
#: What the patient is told of a withdrawal: that something was withdrawn, never what or why.
WITHDRAWN_KIND = "item.withdrawn"
WITHDRAWN_TITLE = "A shared item was withdrawn"

ITEM_NOT_SHARED = ProblemType(
    "item-not-shared",
    409,
    "Not shared with a patient",
    "This item has not reached a patient, so there is nothing to withdraw. Change it in its channel instead.",
)


@attrs.frozen
class Shared:
    """What ``careshare_shared`` receives: an item that reached a patient."""

    channel: str
    target: str
    item_id: str
    org: str
    patient_id: str
    title: str
    shared_by: str
    shared_at: datetime
    attachments: tuple[Attachment, ...]
    notification: Notification | None


async def share(
    conn: AsyncConnection,
    pm: pluggy.PluginManager,
    principal: Principal,
    *,
    channel: str,
    target: str,
    item_id: str,
    patient_id: str,
    title: str,
    notification_kind: str | None = None,
    notification_key: str | None = None,
) -> Shared:
    """Record that ``item_id`` reached ``patient_id``, in the caller's transaction.

    ``title`` is what the patient's inbox and archive show; it must hold no clinical detail (a
    notification may travel through push gateways). ``notification_kind`` None shares silently (a
    patient's own reply needs no notification to themselves). ``notification_key`` de-duplicates
    notifications (default: one per item and patient); a reminder passes its own.
    """
    now = db.utcnow()
    exists = (
        await conn.execute(
            sa.select(db.shares.c.id).where(
                db.shares.c.target == target, db.shares.c.item_id == item_id, db.shares.c.patient_id == patient_id
            )
        )
    ).first()
    if exists is None:
        await conn.execute(
            db.shares.insert().values(
                id=new_id(),
                org_id=principal.org,
                patient_id=patient_id,
                channel=channel,
                target=target,
                item_id=item_id,
                title=title,
                shared_by=principal.subject,
                shared_at=now,
            )
        )
    attachments = tuple((await attachments_of(conn, target, [item_id]))[item_id])
    await record_event(conn, principal, "item.shared", patient_id=patient_id, target=target, item_id=item_id)
    for attachment in attachments:
        await record_event(
            conn,
            principal,
            "file.shared",
            patient_id=patient_id,
            file_id=attachment.file_id,
            rendition=attachment.role,
            target=target,
            item_id=item_id,
        )
    notification = None
    if notification_kind is not None:
        notification = await enqueue(
            conn,
            pm,
            org=principal.org,
            patient_id=patient_id,
            kind=notification_kind,
            title=title,
            target=target,
            item_id=item_id,
            dedupe_key=notification_key or f"{target}:{item_id}:{patient_id}",
        )
    event = Shared(
        channel=channel,
        target=target,
        item_id=item_id,
        org=principal.org,
        patient_id=patient_id,
        title=title,
        shared_by=principal.subject,
        shared_at=now,
        attachments=attachments,
        notification=notification,
    )
    pm.hook.careshare_shared(event=event)
    return event


async def shared_items(
    conn: AsyncConnection, org: str, patient_id: str, *, revoked: bool = False
) -> list[sa.Row[object]]:
    """Every share of the patient, newest first; withdrawn ones only with ``revoked`` (the clinic's view)."""
    query = sa.select(db.shares).where(db.shares.c.org_id == org, db.shares.c.patient_id == patient_id)
    if not revoked:
        query = query.where(db.shares.c.revoked_at.is_(None))
    return list(await conn.execute(query.order_by(db.shares.c.id.desc())))


async def attachment_for_patient(
    conn: AsyncConnection, org: str, patient_id: str, attachment_id: str
) -> Attachment | None:
    """The attachment if it belongs to an item shared with this patient, else None."""
    row = (
        await conn.execute(
            sa.select(db.attachments.c.target, db.attachments.c.item_id)
            .join(
                db.shares,
                sa.and_(db.shares.c.target == db.attachments.c.target, db.shares.c.item_id == db.attachments.c.item_id),
            )
            .where(
                db.attachments.c.id == attachment_id,
                db.attachments.c.org_id == org,
                db.attachments.c.revoked_at.is_(None),
                db.shares.c.patient_id == patient_id,
                db.shares.c.revoked_at.is_(None),
            )
        )
    ).first()
    if row is None:
        return None
    found = (await attachments_of(conn, row.target, [row.item_id]))[row.item_id]
    return next((a for a in found if a.id == attachment_id), None)


# -- revocation ------------------------------------------------------------------------------------


@attrs.frozen
class Revocation:
    """Who withdrew a share or an attachment, when and why (the clinic's to see, never the patient's)."""

    at: datetime
    by: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"revoked_at": self.at.isoformat(), "revoked_by": self.by, "reason": self.reason}


@attrs.frozen
class Revoked:
    """What :func:`revoke` did: the item's target and id, and whether this call withdrew anything new."""

    target: str
    item_id: str
    attachment_id: str | None
    changed: bool
    notifications: tuple[Notification, ...]


def _revocation(row: Any) -> Revocation | None:
    if row.revoked_at is None:
        return None
    return Revocation(at=row.revoked_at, by=row.revoked_by, reason=row.revoke_reason or "")


def visible_to_patient(target: str, item_id: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """SQL: true unless the item of ``target`` whose id is ``item_id`` (a column) was withdrawn.

    For a channel's patient-facing queries: ``query.where(visible_to_patient(TARGET, table.c.id))``.
    An item never shared is visible (the channel's own rules decide who sees it).
    """
    return ~sa.exists().where(
        db.shares.c.target == target,
        db.shares.c.item_id == item_id,
        db.shares.c.revoked_at.is_not(None),
    )


async def patient_attachments(conn: AsyncConnection, target: str, item_ids: list[str]) -> dict[str, list[Attachment]]:
    """:func:`~careshare.core.targets.attachments_of` as the patient sees it.

    Withdrawn attachments are left out, and a withdrawn item carries none.
    """
    found = await attachments_of(conn, target, item_ids)
    ids = [a.id for attached in found.values() for a in attached]
    if not ids:
        return found
    hidden = set(
        (
            await conn.execute(
                sa.select(db.attachments.c.id).where(
                    db.attachments.c.id.in_(ids), db.attachments.c.revoked_at.is_not(None)
                )
            )
        ).scalars()
    )
    withdrawn = set(
        (
            await conn.execute(
                sa.select(db.shares.c.item_id).where(
                    db.shares.c.target == target,
                    db.shares.c.item_id.in_(list(found)),
                    db.shares.c.revoked_at.is_not(None),
                )
            )
        ).scalars()
    )
    return {
        item_id: [] if item_id in withdrawn else [a for a in attached if a.id not in hidden]
        for item_id, attached in found.items()
    }


async def revocations(
    conn: AsyncConnection, org: str, target: str, item_ids: list[str]
) -> tuple[dict[str, Revocation], dict[str, Revocation]]:
    """For the clinic's views: the items withdrawn (by item id) and the attachments withdrawn (by attachment id)."""
    if not item_ids:
        return {}, {}
    items: dict[str, Revocation] = {}
    for row in await conn.execute(
        sa.select(db.shares.c.item_id, db.shares.c.revoked_at, db.shares.c.revoked_by, db.shares.c.revoke_reason)
        .where(
            db.shares.c.org_id == org,
            db.shares.c.target == target,
            db.shares.c.item_id.in_(item_ids),
            db.shares.c.revoked_at.is_not(None),
        )
        .order_by(db.shares.c.revoked_at)
    ):
        found = _revocation(row)
        if found is not None:
            items.setdefault(row.item_id, found)
    attachments: dict[str, Revocation] = {}
    for row in await conn.execute(
        sa.select(
            db.attachments.c.id,
            db.attachments.c.revoked_at,
            db.attachments.c.revoked_by,
            db.attachments.c.revoke_reason,
        ).where(
            db.attachments.c.org_id == org,
            db.attachments.c.target == target,
            db.attachments.c.item_id.in_(item_ids),
            db.attachments.c.revoked_at.is_not(None),
        )
    ):
        found = _revocation(row)
        if found is not None:
            attachments[row.id] = found
    return items, attachments


async def _withdraw_deliveries(conn: AsyncConnection, target: str, item_id: str, patient_id: str) -> None:
    """Deliveries of the item's notifications that have not gone out yet go out no more (``withdrawn``)."""
    told = sa.select(db.notifications.c.id).where(
        db.notifications.c.target == target,
        db.notifications.c.item_id == item_id,
        db.notifications.c.patient_id == patient_id,
        db.notifications.c.kind != WITHDRAWN_KIND,
    )
    await conn.execute(
        sa.update(db.deliveries)
        .where(db.deliveries.c.state == "pending", db.deliveries.c.notification_id.in_(told))
        .values(state="withdrawn", last_error="withdrawn")
    )


async def revoke(
    conn: AsyncConnection,
    pm: pluggy.PluginManager,
    principal: Principal,
    target: str,
    item_id: str,
    reason: str,
    attachment_id: str | None = None,
) -> Revoked:
    """Withdraw a shared item, or one attachment of it, from its patient at once, in the caller's transaction.

    The share (or attachment) row is marked with who, when and ``reason``; the audit records
    ``item.revoked`` / ``attachment.revoked``; the patient is told only that something was
    withdrawn (:data:`WITHDRAWN_KIND`, :data:`WITHDRAWN_TITLE`). Idempotent: a second call keeps
    the first revocation and writes nothing. ``not-found`` when the organisation has no such item
    or attachment, ``item-not-shared`` when it never reached a patient.
    """
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON_CHARS:
        raise ValueError("reason must be 1 to MAX_REASON_CHARS characters")  # callers check it and name the field
    query = sa.select(db.shares).where(
        db.shares.c.org_id == principal.org, db.shares.c.target == target, db.shares.c.item_id == item_id
    )
    shares = list(await conn.execute(query.order_by(db.shares.c.id).with_for_update()))
    attachment = None
    if attachment_id is not None:
        attachment = (
            await conn.execute(
                sa.select(db.attachments).where(
                    db.attachments.c.id == attachment_id,
                    db.attachments.c.org_id == principal.org,
                    db.attachments.c.target == target,
                    db.attachments.c.item_id == item_id,
                )
            )
        ).first()
        if attachment is None:
            raise Problem(NOT_FOUND)
    if not shares:
        carries = (
            await conn.execute(
                sa.select(db.attachments.c.id)
                .where(
                    db.attachments.c.org_id == principal.org,
                    db.attachments.c.target == target,
                    db.attachments.c.item_id == item_id,
                )
                .limit(1)
            )
        ).first()
        if attachment is None and carries is None:
            raise Problem(NOT_FOUND)
        raise Problem(ITEM_NOT_SHARED)
    now = db.utcnow()
    values = {"revoked_at": now, "revoked_by": principal.subject, "revoke_reason": reason}
    told: list[Notification] = []
    changed = False
    if attachment is not None:
        done = await conn.execute(
            sa.update(db.attachments)
            .where(db.attachments.c.id == attachment.id, db.attachments.c.revoked_at.is_(None))
            .values(**values)
        )
        changed = done.rowcount == 1
        if changed:
            for row in shares:
                await record_event(
                    conn,
                    principal,
                    "attachment.revoked",
                    patient_id=row.patient_id,
                    file_id=attachment.file_id,
                    rendition=attachment.role,
                    target=target,
                    item_id=item_id,
                )
                if row.revoked_at is None:  # a patient whose item is withdrawn already was told
                    told.append(await _tell(conn, pm, principal, row, f"withdrawn:{attachment.id}:{row.patient_id}"))
    else:
        changed = await _withdraw_item(conn, principal, shares, values)
        for row in shares if changed else ():
            if row.revoked_at is None:
                told.append(await _tell(conn, pm, principal, row, f"withdrawn:{target}:{item_id}:{row.patient_id}"))
        if changed:
            # What reached the patient together with it (a consent request's pack copies) goes too, untold.
            for extra in pm.hook.careshare_withdrawn_with(conn=conn, target=target, item_id=item_id):
                pairs = await extra if inspect.isawaitable(extra) else extra
                for part_target, part_id in pairs or ():
                    parts = list(
                        await conn.execute(
                            sa.select(db.shares).where(
                                db.shares.c.org_id == principal.org,
                                db.shares.c.target == part_target,
                                db.shares.c.item_id == part_id,
                            )
                        )
                    )
                    await _withdraw_item(conn, principal, parts, values)
    return Revoked(
        target=target, item_id=item_id, attachment_id=attachment_id, changed=changed, notifications=tuple(told)
    )


async def _withdraw_item(
    conn: AsyncConnection, principal: Principal, shares: list[Any], values: dict[str, Any]
) -> bool:
    """Mark each share withdrawn (those not withdrawn before), audit it, drop its pending deliveries."""
    changed = False
    for row in shares:
        done = await conn.execute(
            sa.update(db.shares).where(db.shares.c.id == row.id, db.shares.c.revoked_at.is_(None)).values(**values)
        )
        if done.rowcount != 1:
            continue  # withdrawn before: the first revocation stays
        changed = True
        await record_event(
            conn, principal, "item.revoked", patient_id=row.patient_id, target=row.target, item_id=row.item_id
        )
        await _withdraw_deliveries(conn, row.target, row.item_id, row.patient_id)
    return changed


async def _tell(
    conn: AsyncConnection, pm: pluggy.PluginManager, principal: Principal, share_row: Any, key: str
) -> Notification:
    """The patient's notice: neutral words only (no title of the item, no file name, no reason)."""
    return await enqueue(
        conn,
        pm,
        org=principal.org,
        patient_id=share_row.patient_id,
        kind=WITHDRAWN_KIND,
        title=WITHDRAWN_TITLE,
        target=share_row.target,
        item_id=share_row.item_id,
        dedupe_key=key,
    )
