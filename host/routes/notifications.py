"""The clinic's inbox: what the organisation's patients sent (messages, uploads, file-request answers).

One inbox per organisation, shared by its clinicians: marking a notification read marks it read
for all of them (``read_by`` says who). Each entry names the kind of event, the patient's id and
the item (a chat message, a file, a file request), never its text, a file name or a patient's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery

from careshare.core.notifications import clinic_inbox, mark_clinic_read
from careshare.core.problems import NOT_FOUND, Problem
from careshare.web.guards import clinician
from careshare.web.views import PageLimit, page_json

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["ClinicNotificationController"]


class ClinicNotificationController(Controller):
    path = "/v1/notifications"
    dependencies = {"principal": Provide(clinician)}
    tags = ["notifications"]

    @get("/")
    async def notifications(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
        unread: FromQuery[bool] = False,
    ) -> dict[str, Any]:
        """The organisation's clinic notifications, newest first; ``unread=true`` for those no clinician read."""
        async with cs.reader.connect() as conn:
            items, next_cursor = await clinic_inbox(conn, principal.org, cursor=cursor, limit=limit, unread_only=unread)
        return page_json([n.clinic_json() for n in items], next_cursor)

    @post("/{nid:str}/read", status_code=200)
    async def read(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], nid: FromPath[str]
    ) -> dict[str, Any]:
        """Mark the notification read for the whole organisation (again: no change, the first reader stays)."""
        async with cs.engine.begin() as conn:
            found = await mark_clinic_read(conn, principal.org, principal.subject, nid)
        if found is None:
            raise Problem(NOT_FOUND)
        return found.clinic_json()
