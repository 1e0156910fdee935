"""Swagger UI from the server itself: ``/schema/swagger`` works on a clinic network without internet.

Litestar's page loads Swagger UI from a public CDN; here it loads ``/schema/assets/<version>/...``,
served from ``swagger_ui/`` (swagger-ui-dist, gzipped, refreshed by ``scripts/vendor-swagger-ui``).
A browser that accepts gzip gets the stored bytes as they are; any other client gets them unzipped.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath

__all__ = ["ASSETS", "HERE", "swagger_asset", "swagger_page"]

HERE = Path(__file__).parent / "swagger_ui"
VERSION = (HERE / "VERSION").read_text().strip()
#: Where the page finds the assets: the version in the path, so a browser may keep them for good.
ASSETS = f"/schema/assets/{VERSION}"
_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
}


def swagger_page() -> SwaggerRenderPlugin:
    """Litestar's Swagger UI page with every asset from this server (no favicon from elsewhere)."""
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon="",
    )


@functools.cache
def _stored(name: str) -> bytes:
    return (HERE / f"{name}.gz").read_bytes()


@functools.cache
def _unzipped(name: str) -> bytes:
    return gzip.decompress(_stored(name))


@get(f"{ASSETS}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def swagger_asset(request: Request[object, object, object], name: FromPath[str]) -> Response[bytes]:
    """One of Swagger UI's three files, gzipped when the client takes gzip."""
    if name not in _MEDIA_TYPES:
        raise NotFoundException()
    headers = {"Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}
    accepted = request.headers.get("accept-encoding", "")
    if "gzip" in {part.split(";", 1)[0].strip().lower() for part in accepted.split(",")}:
        headers["Content-Encoding"] = "gzip"
        return Response(_stored(name), media_type=_MEDIA_TYPES[name], headers=headers)
    return Response(_unzipped(name), media_type=_MEDIA_TYPES[name], headers=headers)
