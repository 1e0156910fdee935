"""What every channel shares through core: targets, pinned attachments, the archive, notifications, audit."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated, Any

import attrs
import sqlalchemy as sa
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter

from careshare.core import db
from careshare.core.audit import event_json, record_event
from careshare.core.models import Principal
from careshare.core.notifications import inbox, mark_read
from careshare.core.patients import get_patient
from careshare.core.problems import NOT_FOUND, Problem
from careshare.core.runtime import Careshare
from careshare.core.sharing import (
    MAX_REASON_CHARS,
    attachment_for_patient,
    patient_attachments,
    revocations,
    revoke,
    shared_items,
)
from careshare.core.targets import Attachment, attachments_of, targets
from careshare.web.content import blob_response, content_route, download_name
from careshare.web.guards import clinician, patient, signed_in
from careshare.web.openapi import NON_BLANK, documented, limits
from careshare.web.views import PageLimit, attachment_json, invalid, page_json, parse_body

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["AttachmentController", "AuditController", "InboxController", "Revoke", "share_json"]


@attrs.frozen
class Revoke:
    """Why the item (or the attachment) is withdrawn: kept for the clinic, never shown to the patient."""

    reason: str = attrs.field(metadata=limits(minLength=1, maxLength=MAX_REASON_CHARS, pattern=NON_BLANK))


async def _reason(request: Request[Any, Any, Any]) -> str:
    body = await parse_body(request, Revoke)
    reason = body.reason.strip()
    if not reason:
        raise invalid("$.reason: say why the item is withdrawn (the patient never sees it)")
    if len(reason) > MAX_REASON_CHARS:
        raise invalid(f"$.reason: at most {MAX_REASON_CHARS} characters")
    return reason


async def share_json(conn: AsyncConnection, org: str, target: str, item_id: str) -> dict[str, Any]:
    """The clinic's view of a shared item: each patient's share and each attachment, withdrawn ones marked."""
    rows = list(
        await conn.execute(
            sa.select(db.shares)
            .where(db.shares.c.org_id == org, db.shares.c.target == target, db.shares.c.item_id == item_id)
            .order_by(db.shares.c.id)
        )
    )
    if not rows:
        raise Problem(NOT_FOUND)
    items, attachments = await revocations(conn, org, target, [item_id])
    withdrawn = items.get(item_id)
    attached = (await attachments_of(conn, target, [item_id]))[item_id]
    return {
        "target": target,
        "item_id": item_id,
        "channel": rows[0].channel,
        "title": rows[0].title,
        "revoked": withdrawn.to_json() if withdrawn else None,
        "shares": [
            {
                "patient_id": row.patient_id,
                "shared_by": row.shared_by,
                "shared_at": row.shared_at.isoformat(),
                "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
                "revoked_by": row.revoked_by,
                "reason": row.revoke_reason,
            }
            for row in rows
        ],
        "attachments": [
            {**attachment_json(a), "revoked": revoked.to_json() if (revoked := attachments.get(a.id)) else None}
            for a in attached
        ],
    }


class AttachmentController(Controller):
    path = "/v1"
    dependencies = {"principal": Provide(signed_in)}
    tags = ["sharing"]

    @get("/targets")
    async def list_targets(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
    ) -> dict[str, Any]:
        """Every attachment target the loaded channels offer, with its rules (anyone signed in)."""
        del principal  # taken so that the route needs a token
        return {"items": [t.rules() for t in targets(cs.plugins).values()]}

    @content_route("/attachments/{aid:str}/content")
    async def content(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        aid: FromPath[str],
    ) -> Response[Any]:
        """The pinned bytes of an attachment: for good, whatever happened to the source file since."""
        async with cs.engine.begin() as conn:
            if principal.is_clinician:
                row = (
                    await conn.execute(
                        sa.select(db.attachments.c.target, db.attachments.c.item_id).where(
                            db.attachments.c.id == aid, db.attachments.c.org_id == principal.org
                        )
                    )
                ).first()
                found = None
                if row is not None:
                    found = next(
                        (
                            a
                            for a in (await attachments_of(conn, row.target, [row.item_id]))[row.item_id]
                            if a.id == aid
                        ),
                        None,
                    )
            else:
                found = await attachment_for_patient(conn, principal.org, str(principal.patient), aid)
            if found is None:
                raise Problem(NOT_FOUND)
            await record_event(
                conn,
                principal,
                "file.read",
                patient_id=principal.patient,
                file_id=found.file_id,
                rendition=found.role,
                target=found.target,
                item_id=found.item_id,
            )
        name = download_name(found.filename, found.media_type, found.role)
        return blob_response(request, cs, found.sha256, found.size, found.media_type, name)

    @get("/shares/{target:str}/{item_id:str}", dependencies={"principal": Provide(clinician)})
    async def show_share(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        target: FromPath[str],
        item_id: FromPath[str],
    ) -> dict[str, Any]:
        """A shared item as the clinic sees it: its shares and attachments, withdrawn ones with who, when and why."""
        async with cs.reader.connect() as conn:
            return await share_json(conn, principal.org, target, item_id)

    @post(
        "/shares/{target:str}/{item_id:str}/revoke",
        status_code=200,
        dependencies={"principal": Provide(clinician)},
        operation_class=documented(Revoke, status=200),
    )
    async def revoke_share(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        target: FromPath[str],
        item_id: FromPath[str],
    ) -> dict[str, Any]:
        """Withdraw a shared item from its patient at once: ``{"reason"}`` (idempotent: the first revocation stays)."""
        reason = await _reason(request)
        async with cs.engine.begin() as conn:
            await revoke(conn, cs.plugins, principal, target, item_id, reason)
            return await share_json(conn, principal.org, target, item_id)

    @post(
        "/attachments/{aid:str}/revoke",
        status_code=200,
        dependencies={"principal": Provide(clinician)},
        operation_class=documented(Revoke, status=200),
    )
    async def revoke_attachment(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        aid: FromPath[str],
    ) -> dict[str, Any]:
        """Withdraw one attachment of a shared item: ``{"reason"}``; the item and its other files stay."""
        reason = await _reason(request)
        async with cs.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(db.attachments.c.target, db.attachments.c.item_id).where(
                        db.attachments.c.id == aid, db.attachments.c.org_id == principal.org
                    )
                )
            ).first()
            if row is None:
                raise Problem(NOT_FOUND)
            await revoke(conn, cs.plugins, principal, row.target, row.item_id, reason, attachment_id=aid)
            return await share_json(conn, principal.org, row.target, row.item_id)


class InboxController(Controller):
    path = "/v1/me"
    dependencies = {"principal": Provide(patient)}
    tags = ["me"]

    @get("/archive")
    async def archive(self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal]) -> dict[str, Any]:
        """Everything ever shared with the patient, grouped by channel, each item with its attachments."""
        async with cs.reader.connect() as conn:
            me = await get_patient(conn, principal, str(principal.patient))
            shares = await shared_items(conn, principal.org, me.id)
            by_target: dict[str, list[str]] = {}
            for row in shares:
                by_target.setdefault(row.target, []).append(row.item_id)
            attached: dict[tuple[str, str], list[Attachment]] = {}
            for target, item_ids in by_target.items():
                for item_id, found in (await patient_attachments(conn, target, item_ids)).items():
                    attached[(target, item_id)] = found
        channels: dict[str, list[dict[str, Any]]] = {}
        for row in shares:
            channels.setdefault(row.channel, []).append(
                {
                    "target": row.target,
                    "item_id": row.item_id,
                    "title": row.title,
                    "shared_at": row.shared_at.isoformat(),
                    "attachments": [attachment_json(a) for a in attached.get((row.target, row.item_id), [])],
                }
            )
        # Channels may add entries of their own (e.g. details of an appointment) through the hook.
        for extra in cs.plugins.hook.careshare_archive(patient=me):
            entries = await extra if inspect.isawaitable(extra) else extra
            for entry in entries or ():
                channels.setdefault(entry["channel"], []).append(entry)
        return {"channels": channels, "count": sum(len(v) for v in channels.values())}

    @get("/notifications")
    async def notifications(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
        unread: FromQuery[bool] = False,
    ) -> dict[str, Any]:
        async with cs.reader.connect() as conn:
            items, next_cursor = await inbox(
                conn, principal.org, str(principal.patient), cursor=cursor, limit=limit, unread_only=unread
            )
        return page_json([n.to_json() for n in items], next_cursor)

    @post("/notifications/{nid:str}/read", status_code=200)
    async def read(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], nid: FromPath[str]
    ) -> dict[str, Any]:
        async with cs.engine.begin() as conn:
            found = await mark_read(conn, principal.org, str(principal.patient), nid)
        if found is None:
            raise Problem(NOT_FOUND)
        return found.to_json()


class AuditController(Controller):
    path = "/v1/patients"
    dependencies = {"principal": Provide(clinician)}
    tags = ["patients"]

    @get("/{pid:str}/audit")
    async def audit(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Every share, upload and read concerning the patient, newest first."""
        async with cs.reader.connect() as conn:
            await get_patient(conn, principal, pid)
            query = sa.select(db.audit_events).where(
                db.audit_events.c.org_id == principal.org, db.audit_events.c.patient_id == pid
            )
            rows, next_cursor = await db.newest_first(conn, query, db.audit_events.c.id, cursor=cursor, limit=limit)
            reasons = await _reasons(conn, principal.org, rows)
        return page_json([{**event_json(r), **reasons.get(r.id, {})} for r in rows], next_cursor)


async def _reasons(conn: AsyncConnection, org: str, rows: list[Any]) -> dict[str, dict[str, str]]:
    """The reason of each revocation event on the page (the audit row has ids only; the reason is the revocation's)."""
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.action == "item.revoked":
            table = db.shares
            where = [table.c.patient_id == row.patient_id]
        elif row.action == "attachment.revoked":
            table = db.attachments
            where = [table.c.file_id == row.file_id, table.c.role == row.rendition]
        else:
            continue
        reason = (
            await conn.execute(
                sa.select(table.c.revoke_reason)
                .where(
                    table.c.org_id == org,
                    table.c.target == row.target,
                    table.c.item_id == row.item_id,
                    table.c.revoked_at.is_not(None),
                    *where,
                )
                .limit(1)
            )
        ).scalar()
        if reason is not None:
            found[row.id] = {"reason": reason}
    return found
