"""Upload bodies, streamed: a raw body, the multipart field ``file`` or a form's files, never held whole in memory."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from litestar import Response, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from careshare.core.models import TextError, check_text
from careshare.core.problems import UPLOAD_INCOMPLETE, UPLOAD_MALFORMED, Problem, upload_too_large
from careshare.web.openapi import UPLOAD_MEDIA, UPLOAD_PARAMETERS, documented
from careshare.web.problems import INVALID_REQUEST, REQUEST_TOO_LARGE

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from litestar import Request

    from careshare.core.models import Principal, StoredFile
    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings

__all__ = [
    "FilePart",
    "FormField",
    "FormParts",
    "Upload",
    "answer_upload",
    "filename_from_disposition",
    "requested_wait",
    "upload_route",
]

#: Room for multipart boundaries, part headers and small text fields around the file.
ENVELOPE_BYTES = 64 * 1024
FILE_FIELD = "file"
#: A part's headers may be this long: a file name of any length is cut by the sanitiser, not refused.
MAX_PART_HEADER_BYTES = 32 * 1024
_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([^;]+)", re.IGNORECASE)
_PREFER_WAIT = re.compile(r"^\s*wait\s*=\s*\"?(\d+)\"?\s*$", re.IGNORECASE)
_RESPOND_ASYNC = re.compile(r"^\s*respond-async\s*$", re.IGNORECASE)


def prefer_wait(headers: list[str], default: float, cap: float) -> float:
    """Seconds to wait for a check from ``Prefer`` header values (RFC 7240), capped at ``cap``.

    ``wait=N`` asks for up to N seconds, ``respond-async`` for an answer at once; anything else
    (other preferences, a malformed value) leaves ``default``.
    """
    wait = default
    for header in headers:
        for preference in header.split(","):
            preference = preference.split(";", 1)[0]
            if _RESPOND_ASYNC.match(preference):
                return 0.0
            match = _PREFER_WAIT.match(preference)
            if match:
                digits = match.group(1)
                # Any number of seconds is a wait; more than the cap is the cap (never int() of 5000 digits).
                wait = float(digits) if len(digits) <= 18 else float("inf")
    return max(0.0, min(wait, cap))


def requested_wait(request: Request[Any, Any, Any], settings: Settings) -> float:
    """How long this request waits for its upload's check (``Prefer: wait``, else the settings' default)."""
    return prefer_wait(request.headers.getall("prefer", []), settings.upload_wait_seconds, settings.max_wait_seconds)


#: The answers of an upload route besides ``201``, for the OpenAPI description.
UPLOAD_RESPONSES = {
    202: ResponseSpec(
        data_container=dict[str, Any],
        generate_examples=False,
        description="Accepted: the bytes are stored and the file is still being checked (status processing);"
        " follow Location. Ask for up to N seconds of waiting with Prefer: wait=N (RFC 7240).",
    )
}


async def answer_upload(request: Request[Any, Any, Any], cs: Careshare, stored: StoredFile) -> Response[Any]:
    """An accepted upload's answer: ``201`` with the ready file if its check ends within the wait,
    the refusal as a problem if it is refused by then, else ``202`` with the file as it is now.

    Every answer names the file (``Location``; a refusal's ``file_id``), so a client that stops
    waiting can follow it at ``GET /v1/files/{id}``.
    """
    from careshare.core.files import answer_later, refusal, wait_for_check
    from careshare.web.problems import problem_response
    from careshare.web.views import file_json

    done = await wait_for_check(cs, stored.id, requested_wait(request, cs.settings))
    if done.status == "processing":
        done = await answer_later(cs, done.id)
    headers = {"Location": f"/v1/files/{done.id}", "Vary": "Prefer"}
    if done.status == "rejected":
        problem = refusal(done)
        problem.extra["file_id"] = done.id
        return problem_response(problem, request, headers=headers)
    if done.status == "processing":
        headers["Retry-After"] = "2"
        return Response(content=file_json(done), status_code=202, headers=headers)
    return Response(content=file_json(done), status_code=201, headers=headers)


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


async def _capped_body(request: Request[Any, Any, Any], max_body: int, max_bytes: int) -> AsyncIterator[bytes]:
    """The request body's chunks; crossing ``max_body`` refuses the upload (named by its file limit)."""
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise upload_too_large(max_bytes)
            if chunk:
                yield chunk
    except HTTPException:
        # Litestar raises when the client goes away mid-body.
        raise Problem(UPLOAD_INCOMPLETE) from None


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
            raise upload_too_large(max_bytes)
        if media_type == "multipart/form-data" and not self.boundary:
            raise Problem(UPLOAD_MALFORMED, "The multipart body has no boundary. Let your HTTP client build it.")
        if self.boundary is None:
            self.filename = filename_from_disposition(request.headers.get("content-disposition")) or self.filename

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._multipart() if self.boundary else self._body()

    def _body(self) -> AsyncIterator[bytes]:
        return _capped_body(self.request, self.max_body, self.max_bytes)

    async def _multipart(self) -> AsyncIterator[bytes]:
        assert self.boundary is not None
        parser = PushMultipartParser(
            self.boundary, max_header_size=MAX_PART_HEADER_BYTES, max_segment_count=32, strict=True
        )
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


async def _provide_upload(
    request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
) -> Upload:
    """The request's file, capped at the server's upload limit; after ``principal``, so who calls is known first."""
    del principal  # only the order: a caller without a token hears 401, not 413
    return Upload(request, cs.settings.max_upload_bytes)


def upload_route(path: str, **options: Any) -> Any:
    """``@post`` for a route that takes one file as its body (raw, or the multipart field ``file``).

    The handler takes ``upload: NamedDependency[Upload]``. Litestar's body cap is off (the upload is
    capped as it streams, at the server's ``max_upload_bytes``), ``201`` and ``202`` (``Prefer: wait``)
    and the upload bodies are documented. ``options`` go to :func:`litestar.post` and win.
    """
    dependencies = {"upload": Provide(_provide_upload), **options.pop("dependencies", {})}
    settings: dict[str, Any] = {
        "status_code": 201,
        "request_max_body_size": None,
        "responses": UPLOAD_RESPONSES,
        "operation_class": documented(media=UPLOAD_MEDIA, parameters=UPLOAD_PARAMETERS),
        **options,
    }
    return post(path, dependencies=dependencies, **settings)


class FormField:
    """A text field of a multipart form, read whole (text fields are small)."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value


class FilePart:
    """One file part of a multipart form, streamed: iterate it (once) before asking for the next part."""

    def __init__(self, name: str, filename: str | None, chunks: AsyncIterator[bytes]) -> None:
        self.name = name
        self.filename = filename
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks


_END = object()


class FormParts:
    """The parts of a ``multipart/form-data`` body in their order: text fields and streamed files.

    A part named ``file`` (or carrying a file name) is a :class:`FilePart` whose bytes arrive as the
    consumer reads them, so several files pass one after the other without being held in memory;
    every other part is a :class:`FormField`, buffered up to ``max_text_bytes`` for all of them
    together. Each file's own size limit is the consumer's (``ingest`` enforces it while staging).
    """

    #: Text fields a form may carry besides its files.
    MAX_TEXT_FIELDS = 32

    def __init__(
        self,
        request: Request[Any, Any, Any],
        max_file_bytes: int,
        *,
        max_files: int,
        max_text_bytes: int = ENVELOPE_BYTES,
    ) -> None:
        self.request = request
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.max_text_bytes = max_text_bytes
        media_type, options = parse_options_header(request.headers.get("content-type", ""))
        self.boundary = options.get("boundary")
        if media_type != "multipart/form-data" or not self.boundary:
            raise Problem(
                UPLOAD_MALFORMED, "Send a multipart/form-data body with its boundary. Let your HTTP client build it."
            )
        # One more file than allowed may arrive, so the consumer can refuse it by its own rule.
        self.max_body = (max_files + 1) * (max_file_bytes + ENVELOPE_BYTES) + max_text_bytes + ENVELOPE_BYTES
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise upload_too_large(max_file_bytes)

    def __aiter__(self) -> AsyncIterator[FormField | FilePart]:
        return self._parts()

    async def _events(self) -> AsyncGenerator[Any, None]:
        assert self.boundary is not None
        segments = self.max_files + 1 + self.MAX_TEXT_FIELDS
        parser = PushMultipartParser(
            self.boundary, max_header_size=MAX_PART_HEADER_BYTES, max_segment_count=segments, strict=True
        )
        try:
            async for chunk in _capped_body(self.request, self.max_body, self.max_file_bytes):
                for event in parser.parse(chunk):
                    yield event
            for event in parser.parse(b""):
                yield event
        except MultipartError:
            raise Problem(UPLOAD_MALFORMED) from None
        if not parser.closed:
            raise Problem(UPLOAD_INCOMPLETE)

    async def _parts(self) -> AsyncIterator[FormField | FilePart]:
        events = self._events()
        text_bytes = 0
        try:
            while (event := await anext(events, _END)) is not _END:
                if not isinstance(event, MultipartSegment):
                    raise Problem(UPLOAD_MALFORMED)
                if event.name == FILE_FIELD or event.filename is not None:
                    state = {"ended": False}
                    yield FilePart(event.name, event.filename, self._file_bytes(events, state))
                    if not state["ended"]:  # the consumer skipped the part: pass over its bytes
                        async for _ in self._file_bytes(events, state):
                            pass
                    continue
                value = bytearray()
                while (data := await anext(events, _END)) is not None:
                    if data is _END:
                        raise Problem(UPLOAD_INCOMPLETE)
                    text_bytes += len(data)
                    if text_bytes > self.max_text_bytes:
                        raise Problem(
                            REQUEST_TOO_LARGE,
                            f"The form's text fields are larger than the {self.max_text_bytes:,} bytes this address accepts.",
                        )
                    value += data
                try:
                    text = check_text(value.decode("utf-8"))
                except UnicodeDecodeError:
                    raise Problem(UPLOAD_MALFORMED, "A text field of the form is not UTF-8 text.") from None
                except TextError:
                    raise Problem(INVALID_REQUEST, errors=[f"$.{event.name}: {TextError.sentence}"]) from None
                yield FormField(event.name, text)
        finally:
            await events.aclose()

    @staticmethod
    async def _file_bytes(events: AsyncGenerator[Any, None], state: dict[str, bool]) -> AsyncIterator[bytes]:
        while (data := await anext(events, _END)) is not None:
            if data is _END:
                raise Problem(UPLOAD_INCOMPLETE)
            yield bytes(data)
        state["ended"] = True
