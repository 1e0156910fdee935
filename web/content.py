"""Blob responses: a stored file's bytes streamed with Range, ETag and safe download headers.

:func:`content_route` declares a route serving them: ``GET`` and ``HEAD`` (players, download
managers and caches ask HEAD first), documented with the byte responses and the Range headers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, route
from litestar.enums import HttpMethod
from litestar.response import Stream

from careshare.core.filenames import content_disposition
from careshare.core.problems import Problem, ProblemType
from careshare.web.openapi import CONTENT_PARAMETERS, CONTENT_RESPONSES, documented
from careshare.web.problems import problem_response

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from careshare.core.runtime import Careshare

__all__ = ["RANGE_NOT_SATISFIABLE", "blob_response", "content_route", "download_name", "parse_range"]

RANGE_NOT_SATISFIABLE = ProblemType(
    "range-not-satisfiable",
    416,
    "Range not satisfiable",
    "The requested byte range lies outside the file. Ask for a range within its size.",
)
_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_EXTENSIONS = {
    "application/pdf": ".pdf",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "application/dicom": ".dcm",
}


def _position(digits: str) -> str:
    """A byte position as digits, capped at 10**18: beyond any file, and int() refuses over 4300 digits."""
    digits = digits.lstrip("0") or ("0" if digits else "")
    return str(10**18) if len(digits) > 18 else digits


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` for a single satisfiable byte range; None to send the whole file.

    Several ranges, or a header we do not understand, are ignored (RFC 9110 allows that);
    a well-formed range outside the file raises ``range-not-satisfiable``.
    """
    if not header:
        return None
    match = _SINGLE_RANGE.match(header.strip().replace(" ", ""))
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = (_position(g) for g in match.groups())
    if first == "":  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            raise Problem(RANGE_NOT_SATISFIABLE)
        return max(size - length, 0), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last != "" and int(last) < start:
        return None  # invalid range spec: ignore it
    if start >= size:
        raise Problem(RANGE_NOT_SATISFIABLE)
    return start, end


def _none_match(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` matches: weak comparison (RFC 9110 13.1.2), so ``W/`` tags and ``*`` count."""
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


def download_name(filename: str, media_type: str, role: str) -> str:
    """The original keeps its name; a rendition gets the extension of what it now is."""
    if role == "original":
        return filename
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return f"{stem}{_EXTENSIONS.get(media_type, '')}"


def content_route(path: str, *, public: bool = False, **options: Any) -> Any:
    """The decorator of a handler answering with :func:`blob_response`: ``GET`` and ``HEAD`` of ``path``.

    A ``HEAD`` runs the handler as a ``GET`` does (the same checks, the same audit event) and gets
    the same headers without the bytes, which are then never read from the store. ``public``: the
    route takes no bearer token (an expiring link).
    """
    return route(
        path,
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        responses=CONTENT_RESPONSES,
        operation_class=documented(parameters=CONTENT_PARAMETERS, public=public),
        **options,
    )


async def _no_bytes() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator that yields nothing


def blob_response(
    request: Request[Any, Any, Any], cs: Careshare, sha256: str, size: int, media_type: str, filename: str
) -> Response[Any]:
    """Stream a blob with its ETag (304), a single Range (206, 416) and safe download headers."""
    etag = f'"{sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition(filename),
    }
    if _none_match(request.headers.get("if-none-match"), etag):
        return Response(content=b"", status_code=304, headers=headers)
    try:
        span = parse_range(request.headers.get("range"), size)
    except Problem as problem:
        return problem_response(problem, request, headers={"Content-Range": f"bytes */{size}"})
    head = request.method == HttpMethod.HEAD
    if span is None:
        headers["Content-Length"] = str(size)
        body = _no_bytes() if head else cs.store.read(sha256)
        return Stream(body, media_type=media_type, headers=headers)
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    body = _no_bytes() if head else cs.store.read(sha256, start, end)
    return Stream(body, status_code=206, media_type=media_type, headers=headers)
