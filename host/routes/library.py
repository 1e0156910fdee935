"""The organisation library: files for templates (appointment types, information packs ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery

from careshare.core.files import FileSearch, accept, list_files
from careshare.web.guards import clinician
from careshare.web.search import file_search
from careshare.web.uploads import Upload, answer_upload, upload_route
from careshare.web.views import PageLimit, file_json, page_json

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["LibraryController"]


class LibraryController(Controller):
    path = "/v1/library/files"
    dependencies = {"principal": Provide(clinician)}
    tags = ["library"]

    @upload_route("/")
    async def upload(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        upload: NamedDependency[Upload],
    ) -> Response[Any]:
        stored = await accept(cs, upload, principal=principal, owner_type="library", patient_id=None, source="clinic")
        return await answer_upload(request, cs, stored)

    @get("/", dependencies={"search": Provide(file_search)})
    async def files(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        search: NamedDependency[FileSearch],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
    ) -> dict[str, Any]:
        """The library, newest first; ``name``, ``kind``, ``status``, ``since`` and ``before`` narrow it."""
        async with cs.reader.connect() as conn:
            items, next_cursor = await list_files(
                conn, principal, owner_type="library", patient_id=None, search=search, cursor=cursor, limit=limit
            )
        return page_json([file_json(f) for f in items], next_cursor)
