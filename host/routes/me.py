"""Patient routes: the signed-in patient's own profile and the files they send to the clinic."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery

from careshare.core.files import FileSearch, accept, list_files
from careshare.core.patients import get_patient
from careshare.web.guards import patient
from careshare.web.uploads import Upload, answer_upload, upload_route
from careshare.web.views import PageLimit, file_json, page_json, patient_json

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["MeController"]


class MeController(Controller):
    path = "/v1/me"
    dependencies = {"principal": Provide(patient)}
    tags = ["me"]

    @get("/")
    async def me(self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal]) -> dict[str, Any]:
        async with cs.reader.connect() as conn:
            return patient_json(await get_patient(conn, principal, str(principal.patient)))

    @upload_route("/files")
    async def upload(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        upload: NamedDependency[Upload],
    ) -> Response[Any]:
        async with cs.reader.connect() as conn:
            await get_patient(conn, principal, str(principal.patient))
        stored = await accept(
            cs, upload, principal=principal, owner_type="patient", patient_id=principal.patient, source="patient"
        )
        return await answer_upload(request, cs, stored)

    @get("/files")
    async def files(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
    ) -> dict[str, Any]:
        async with cs.reader.connect() as conn:
            items, next_cursor = await list_files(
                conn,
                principal,
                owner_type="patient",
                patient_id=principal.patient,
                search=FileSearch(source="patient"),
                cursor=cursor,
                limit=limit,
            )
        return page_json([file_json(f) for f in items], next_cursor)
