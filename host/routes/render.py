"""Clinician route: render a DICOM file again with another frame or window."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from careshare.core.rerender import RENDER_BODY_SCHEMA, render_options, rerender
from careshare.web.guards import clinician
from careshare.web.openapi import documented
from careshare.web.views import file_json, parse_body

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["RenderController"]


class RenderController(Controller):
    path = "/v1/files"
    dependencies = {"principal": Provide(clinician)}
    tags = ["files"]

    @post(
        "/{fid:str}/render",
        status_code=200,
        operation_class=documented(media={"application/json": RENDER_BODY_SCHEMA}, status=200),
    )
    async def render(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        fid: FromPath[str],
    ) -> dict[str, Any]:
        """Body ``{"frame"?, "window_center"?, "window_width"?}``; returns the file with its new renditions."""
        options = await parse_body(request, await render_options(cs, principal, fid))
        return file_json(await rerender(cs, principal, fid, options))
