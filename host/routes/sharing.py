"""What every channel shares through core: targets, pinned attachments, the archive, notifications, audit."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

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
from careshare.core.sharing import attachment_for_patient, shared_items
from careshare.core.targets import Attachment, attachments_of, targets
from careshare.web.content import blob_response, content_route, download_name
from careshare.web.guards import clinician, patient, signed_in
from careshare.web.views import PageLimit, attachment_json, page_json

__all__ = ["AttachmentController", "AuditController", "InboxController"]


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
                for item_id, found in (await attachments_of(conn, target, item_ids)).items():
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
        return page_json([event_json(r) for r in rows], next_cursor)
