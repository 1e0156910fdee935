"""Upload bodies, streamed: a raw body or the multipart field ``file``, never held whole in memory."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from litestar.exceptions import HTTPException
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from careshare.core.problems import UPLOAD_INCOMPLETE, UPLOAD_MALFORMED, UPLOAD_TOO_LARGE, Problem

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Request

__all__ = ["Upload", "filename_from_disposition"]

#: Room for multipart boundaries, part headers and small text fields around the file.
ENVELOPE_BYTES = 64 * 1024
FILE_FIELD = "file"
_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([^;]+)", re.IGNORECASE)


def filename_from_disposition(header: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` header, preferring RFC 5987 ``filename*``."""
    if not header:
        return None
    star = _FILENAME_STAR.search(header)
    if star:
        value = star.group(1).strip().strip('"')
        charset, _, rest = value.partition("'")
        _lang, _, encoded = rest.partition("'")
        if encoded:
            try:
                return unquote(encoded, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError):
                pass
    _, options = parse_options_header(header)
    return options.get("filename")


def _too_large(max_bytes: int) -> Problem:
    return Problem(
        UPLOAD_TOO_LARGE,
        f"The file is larger than the {max_bytes:,} bytes this server accepts. Send a smaller file.",
        limit=max_bytes,
    )


class Upload:
    """The file bytes of a request, as an async iterator; ``filename`` is known once the file part began."""

    def __init__(self, request: Request[Any, Any, Any], max_bytes: int) -> None:
        self.request = request
        self.filename: str | None = request.query_params.get("filename")
        self.max_bytes = max_bytes
        media_type, options = parse_options_header(request.headers.get("content-type", ""))
        self.boundary = options.get("boundary") if media_type == "multipart/form-data" else None
        # A raw body is the file itself; only multipart needs room for its envelope.
        self.max_body = max_bytes + (ENVELOPE_BYTES if media_type == "multipart/form-data" else 0)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(max_bytes)
        if media_type == "multipart/form-data" and not self.boundary:
            raise Problem(UPLOAD_MALFORMED, "The multipart body has no boundary. Let your HTTP client build it.")
        if self.boundary is None:
            self.filename = filename_from_disposition(request.headers.get("content-disposition")) or self.filename

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._multipart() if self.boundary else self._body()

    async def _body(self) -> AsyncIterator[bytes]:
        received = 0
        try:
            async for chunk in self.request.stream():
                received += len(chunk)
                if received > self.max_body:
                    raise _too_large(self.max_bytes)
                if chunk:
                    yield chunk
        except HTTPException:
            # Litestar raises when the client goes away mid-body.
            raise Problem(UPLOAD_INCOMPLETE) from None

    async def _multipart(self) -> AsyncIterator[bytes]:
        assert self.boundary is not None
        parser = PushMultipartParser(self.boundary, max_segment_count=32, strict=True)
        in_file = found = False
        try:
            async for chunk in self._body():
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        in_file = event.name == FILE_FIELD and not found
                        if in_file:
                            self.filename = event.filename or self.filename
                    elif event is None:
                        found = found or in_file
                        in_file = False
                    elif in_file:
                        yield bytes(event)
            for event in parser.parse(b""):
                if in_file and isinstance(event, (bytes, bytearray, memoryview)):
                    yield bytes(event)
            if not parser.closed:
                raise Problem(UPLOAD_INCOMPLETE)
        except MultipartError:
            raise Problem(UPLOAD_MALFORMED) from None
        if not found:
            raise Problem(
                UPLOAD_MALFORMED, "The multipart body has no 'file' field. Put the file in a field named 'file'."
            )
