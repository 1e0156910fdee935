"""Sharing: an item reaches a patient. One transaction records the grant, the audit trail and the notification.

The share row is the grant behind every later read of the item's attachments: the patient can
download them for good, whatever happens to the source files. The notification is written in the
same transaction (outbox) and delivered at least once by :mod:`careshare.core.notifications`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.ids import new_id
from careshare.core.notifications import Notification, enqueue
from careshare.core.targets import Attachment, attachments_of

if TYPE_CHECKING:
    from datetime import datetime

    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal

__all__ = ["Shared", "attachment_for_patient", "share", "shared_items"]


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


async def shared_items(conn: AsyncConnection, org: str, patient_id: str) -> list[sa.Row[object]]:
    """Every share of the patient, newest first."""
    rows = await conn.execute(
        sa.select(db.shares)
        .where(db.shares.c.org_id == org, db.shares.c.patient_id == patient_id)
        .order_by(db.shares.c.id.desc())
    )
    return list(rows)


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
                db.shares.c.patient_id == patient_id,
            )
        )
    ).first()
    if row is None:
        return None
    found = (await attachments_of(conn, row.target, [row.item_id]))[row.item_id]
    return next((a for a in found if a.id == attachment_id), None)
