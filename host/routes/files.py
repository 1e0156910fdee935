"""File metadata and content: streamed from the blob store with Range, ETag and safe headers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery

from careshare.core.audit import record_event
from careshare.core.erasure import delete_file
from careshare.core.files import get_file, mark_seen
from careshare.core.problems import FORBIDDEN_ROLE, NOT_FOUND, Problem
from careshare.web.content import blob_response, content_route, download_name
from careshare.web.guards import signed_in
from careshare.web.views import file_json

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["FileController"]


class FileController(Controller):
    path = "/v1/files"
    dependencies = {"principal": Provide(signed_in)}
    tags = ["files"]

    @get("/{fid:str}")
    async def show(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], fid: FromPath[str]
    ) -> dict[str, Any]:
        async with cs.reader.connect() as conn:
            return file_json(await get_file(conn, principal, fid))

    @post("/{fid:str}/seen", status_code=200)
    async def seen(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], fid: FromPath[str]
    ) -> dict[str, Any]:
        """Clinicians: a file the patient sent is no longer new."""
        if not principal.is_clinician:
            raise Problem(FORBIDDEN_ROLE, "Only clinicians mark files as seen.")
        async with cs.engine.begin() as conn:
            return file_json(await mark_seen(conn, principal, fid))

    @delete("/{fid:str}", status_code=204)
    async def remove(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], fid: FromPath[str]
    ) -> None:
        """Clinicians: delete a file from the patient's files or the library; what was already shared stays."""
        if not principal.is_clinician:
            raise Problem(FORBIDDEN_ROLE, "Only clinicians delete files.")
        await delete_file(cs, principal, fid)

    @content_route("/{fid:str}/content")
    async def content(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        fid: FromPath[str],
        rendition: FromQuery[str] = "original",
    ) -> Response[Any]:
        async with cs.engine.begin() as conn:
            stored = await get_file(conn, principal, fid)
            record = stored.rendition(rendition)
            if record is None:
                raise Problem(NOT_FOUND, f"This file has no '{rendition}' rendition.")
            await record_event(
                conn, principal, "file.read", patient_id=stored.patient_id, file_id=stored.id, rendition=rendition
            )
        name = download_name(stored.filename, record.media_type, rendition)
        return blob_response(request, cs, record.sha256, record.size, record.media_type, name)
