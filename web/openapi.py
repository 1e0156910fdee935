"""What the published OpenAPI says beyond Litestar's defaults: problems and links (issue 10).

Litestar documents a refusal as its own ``ValidationException`` JSON (``status_code``, ``detail``)
under ``application/json``; careshare answers every refusal as an RFC 9457 problem under
``application/problem+json``. :func:`document_problems` makes every operation say so: its ``400``
and a ``default`` response (any other refusal: 401, 403, 404, 409, 413, 415, 422, 429 ...) carry
the problem's schema. :func:`documented` declares the JSON body a handler reads itself and OpenAPI
links from an operation's answer to the operations that take the id it made, for clients and for
stateful testing (schemathesis).
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass, make_dataclass
from typing import TYPE_CHECKING, Any

import attrs
from litestar.enums import ParamType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Link,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)

from careshare.core import idempotency
from careshare.core.problems import problem_types
from careshare.core.tus import MAX_METADATA_CHARS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar import Litestar

__all__ = [
    "AWARE_DATE_TIME",
    "BEARER",
    "CONTENT_PARAMETERS",
    "CONTENT_RESPONSES",
    "IDEMPOTENCY_KEY",
    "NON_BLANK",
    "SECURITY_SCHEMES",
    "SPACE",
    "TEXT",
    "TUS_CREATED",
    "TUS_CREATE_PARAMETERS",
    "TUS_NO_CONTENT",
    "TUS_OFFSET",
    "TUS_PARAMETERS",
    "TUS_PATCH_MEDIA",
    "TUS_PATCH_PARAMETERS",
    "UPLOAD_MEDIA",
    "UPLOAD_PARAMETERS",
    "body_schema",
    "document_problems",
    "documented",
    "limits",
    "problem_document",
    "problem_responses",
]

PROBLEM_JSON = "application/problem+json"
#: The one security scheme: a JWT bearer token (``Authorization: Bearer <token>``), on every
#: operation unless it is :func:`documented` as ``public``.
BEARER = "bearer"
SECURITY_SCHEMES = {
    BEARER: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="JWT",
        description="A token from the clinic's sign-in (in development: `careshare token`), HS256-signed with the server's key.",
    )
}


def problem_document(codes: Iterable[str]) -> type:
    """The schema of an RFC 9457 problem as careshare sends it, its ``code`` one of ``codes``.

    Made per app, once its plugins are loaded, so the ``code`` enum is every code the app can
    answer; some problems add members (``errors``, ``limit``, ``offset`` ...).
    """
    return _problem_document(tuple(sorted(codes)))


@functools.cache  # one class per set of codes: apps made with the same plugins share it
def _problem_document(codes: tuple[str, ...]) -> type:
    code = typing.Literal[codes]  # type: ignore[valid-type]
    return make_dataclass(
        "ProblemDocument",
        [
            ("type", str),
            ("title", str),
            ("status", int),
            ("code", code),
            ("detail", str),
            ("instance", str | None, None),
        ],
    )


def problem_responses(document: type) -> dict[Any, ResponseSpec]:
    """Every operation's ``400`` and ``default`` answers: the problem ``document``."""

    def refusal(description: str) -> ResponseSpec:
        return ResponseSpec(
            data_container=document, media_type=PROBLEM_JSON, generate_examples=False, description=description
        )

    return {
        400: refusal("The request could not be read (bad JSON, a bad query parameter): a problem naming what to fix."),
        "default": refusal(
            "Any other refusal, as an RFC 9457 problem: branch on its stable `code` (see docs/api.md, Problems)."
        ),
    }


def document_problems(app: Litestar) -> None:
    """Give every route handler the problem responses, before the schema is first built (it is lazy).

    Its path and query strings also say they hold no NUL: the host refuses one anywhere in the
    address (``refuse_unstorable_addresses``), but in ``?filename=``, which is cleaned instead.
    """
    refusals = problem_responses(problem_document(problem_types()))
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            handler.responses = {**refusals, **(handler.responses or {})}
            keyed = any(idempotency.applies(method, route.path) for method in handler.http_methods)
            handler.operation_class = _addressed(handler.operation_class, keyed=keyed)


#: Every POST of the API takes one (``careshare.core.idempotency``, host/idempotency.py).
IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key",
    param_in=ParamType.HEADER,
    schema=Schema(
        type=OpenAPIType.STRING, min_length=1, max_length=idempotency.MAX_KEY_CHARS, pattern=idempotency.KEY_PATTERN
    ),
    description="A key of the client's (a UUID): a retry with the same key and request gets the first 2xx answer"
    " again (Idempotent-Replayed: true) instead of acting twice; kept 24 hours, per organisation and caller."
    " The key with another request is 422 idempotency-key-reused; while the first still runs, 409"
    " idempotency-key-in-use (Retry-After).",
)


@functools.cache  # one subclass per operation class, not one per handler of every app made
def _addressed(base: type[Operation], *, keyed: bool = False) -> type[Operation]:
    @dataclass
    class AddressedOperation(base):  # type: ignore[valid-type,misc]
        def __post_init__(self) -> None:
            getattr(super(), "__post_init__", lambda: None)()
            if keyed and not any(getattr(p, "name", "") == IDEMPOTENCY_KEY.name for p in self.parameters or []):
                self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]
            for parameter in self.parameters or []:
                if (
                    isinstance(parameter, Parameter)
                    and parameter.param_in in (ParamType.PATH, ParamType.QUERY)
                    and parameter.name != "filename"
                ):
                    _no_nul(parameter.schema)

    return AddressedOperation


def _no_nul(schema: Any) -> None:
    if isinstance(schema, Schema):
        if schema.type == OpenAPIType.STRING and schema.pattern is None and schema.enum is None:
            schema.pattern = TEXT
        for branch in (*(schema.one_of or ()), *(schema.any_of or ())):
            _no_nul(branch)


#: What ``str.strip()`` strips (Python's ``\\s``), spelled out for a regex character class, so
#: ECMA and Python engines, and schemathesis, read it alike.
SPACE = "\\t-\\r\\x1c- \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
#: Any string of a JSON body: no NUL (:func:`careshare.core.models.check_text` refuses it everywhere).
TEXT = "^[^\\x00]*$"
#: Text with a character ``str.strip()`` keeps: what the server means by not blank.
NON_BLANK = f"^[^\\x00]*[^\\x00{SPACE}][^\\x00]*$"
#: What :func:`careshare.web.aware_datetime` takes: RFC 3339 with its offset, in the years
#: :data:`careshare.core.models.EARLIEST` to :data:`~careshare.core.models.LATEST` (1900 to 2999).
AWARE_DATE_TIME = {
    "format": "date-time",
    "pattern": "^(19|2[0-9])[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    "(\\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$",
}


def limits(**schema: Any) -> dict[str, Any]:
    """attrs field metadata: the JSON-schema keywords of what the server checks of the field.

    ``attrs.field(metadata=limits(maxLength=MAX_NAME_CHARS, pattern=NON_BLANK))``; on an optional
    field they apply to the value, not to null; ``items`` adds to the schema of a list's items.
    """
    return {"schema": schema}


def body_schema(cls: type) -> dict[str, Any]:
    """The JSON schema of an attrs body class as :func:`careshare.web.parse_body` reads it.

    Each field's type, with the limits its :func:`limits` metadata declares (those the handler
    checks, answered as ``422 invalid-request``), so a request the schema allows is one the server
    takes. A rule across fields is the class's ``json_schema``, as ``if``/``then`` (an ``anyOf`` of bodies
    would split a generated client's one body class into several). Unknown members
    are refused, so ``additionalProperties`` is false.
    """
    hints = typing.get_type_hints(cls)
    properties = {a.name: _type_schema(hints[a.name], a.metadata.get("schema", {})) for a in attrs.fields(cls)}
    required = sorted(a.name for a in attrs.fields(cls) if a.default is attrs.NOTHING)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return {**schema, **getattr(cls, "json_schema", {})}


def _type_schema(kind: Any, limited: dict[str, Any] | None = None) -> dict[str, Any]:
    limited = limited or {}
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return {"anyOf": [_type_schema(arg, None if arg is type(None) else limited) for arg in args]}
    if origin is list:
        items = _type_schema(args[0], limited.get("items")) if args else dict(limited.get("items", {}))
        return {"type": "array", "items": items, **{k: v for k, v in limited.items() if k != "items"}}
    return {**_plain_schema(kind), **limited}


def _plain_schema(kind: Any) -> dict[str, Any]:
    if typing.get_origin(kind) is typing.Literal:
        return {"enum": list(typing.get_args(kind))}
    if kind is type(None):
        return {"type": "null"}
    if attrs.has(kind):
        return body_schema(kind)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if kind is str:
        return {"type": "string", "pattern": TEXT}
    if kind in simple:
        return {"type": simple[kind]}
    return {}


def _ref(method: str, path: str) -> str:
    """An ``operationRef`` to ``method path`` of this document (a JSON pointer: ``/`` is ``~1``)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()


def _header(name: str, description: str) -> Parameter:
    return Parameter(
        name=name, param_in=ParamType.HEADER, schema=Schema(type=OpenAPIType.STRING), description=description
    )


#: What an upload route reads itself (host/uploads.py): the raw bytes or a multipart ``file``.
UPLOAD_MEDIA: dict[str, dict[str, Any]] = {
    "application/octet-stream": {"type": "string", "format": "binary", "minLength": 1},
    "multipart/form-data": {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary", "minLength": 1}},
        "required": ["file"],
    },
}
UPLOAD_PARAMETERS = (
    Parameter(
        name="filename",
        param_in=ParamType.QUERY,
        schema=Schema(type=OpenAPIType.STRING),
        description="The file's display name, unless Content-Disposition or the multipart part names it.",
    ),
    _header("Content-Disposition", "attachment; filename*=UTF-8''<name>: the file's display name."),
    _header("Prefer", "wait=N (seconds) or respond-async (RFC 7240): how long to wait for the check."),
)
#: What a content route reads itself (``blob_response``): a single byte range and a cached ETag.
CONTENT_PARAMETERS = (
    _header("Range", "A single byte range, bytes=first-last or bytes=-suffix; others are ignored."),
    _header("If-None-Match", 'The ETag ("<sha256>") already held: answered 304.'),
)
CONTENT_RESPONSES: dict[Any, ResponseSpec] = {
    200: ResponseSpec(
        data_container=bytes,
        media_type="*/*",
        generate_examples=False,
        description="The bytes; Content-Type says what they are (ETag, Accept-Ranges, Content-Disposition).",
    ),
    206: ResponseSpec(
        data_container=bytes, media_type="*/*", generate_examples=False, description="The byte range asked for."
    ),
    304: ResponseSpec(data_container=None, description="Not modified: the If-None-Match ETag is current."),
}


def _tus_header(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> Parameter:
    return Parameter(
        name=name,
        param_in=ParamType.HEADER,
        schema=schema,
        required=required,
        description=description,  # type: ignore[arg-type]
    )


_BASE64 = "([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
#: Pairs of a key (printable ASCII but space and comma) and an optional base64 value.
_TUS_METADATA = f"^([!-+\\--~]+( {_BASE64})?(,[!-+\\--~]+( {_BASE64})?)*)?$"
_TUS_RESUMABLE = _tus_header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}, "The tus version.", required=True)
#: The tus headers each resumable-upload route reads itself (host/routes/tus.py).
TUS_CREATE_PARAMETERS = (
    _TUS_RESUMABLE,
    _tus_header("Upload-Length", {"type": "integer", "minimum": 1}, "The whole file's size in bytes.", required=True),
    _tus_header("Upload-Defer-Length", {"type": "string"}, "Not supported: send Upload-Length."),
    _tus_header(
        "Upload-Metadata",
        {"type": "string", "pattern": _TUS_METADATA, "maxLength": MAX_METADATA_CHARS},
        "key base64,key base64 ... (filename names the file, in UTF-8).",
    ),
)
TUS_PATCH_PARAMETERS = (
    _TUS_RESUMABLE,
    _tus_header("Upload-Offset", {"type": "integer", "minimum": 0}, "Where these bytes go.", required=True),
    _tus_header(
        "Upload-Checksum",
        {"type": "string", "pattern": "^[Ss][Hh][Aa]256 [A-Za-z0-9+/]{43}=$"},
        "sha256 <base64 digest> of this request's bytes.",
    ),
    _tus_header("Prefer", {"type": "string"}, "wait=N: on the final PATCH, how long to wait for the check."),
)
TUS_PARAMETERS = (_TUS_RESUMABLE,)
TUS_PATCH_MEDIA: dict[str, dict[str, Any]] = {"application/offset+octet-stream": {"type": "string", "format": "binary"}}
#: tus answers carry their news in headers, with an empty body.
TUS_CREATED: dict[Any, ResponseSpec] = {
    201: ResponseSpec(data_container=None, description="Created: Location names the upload; the body is empty.")
}
TUS_OFFSET: dict[Any, ResponseSpec] = {
    200: ResponseSpec(data_container=None, description="Upload-Offset and Upload-Length say how far it got.")
}
TUS_NO_CONTENT: dict[Any, ResponseSpec] = {
    204: ResponseSpec(data_container=None, description="Done: Upload-Offset says where the upload is now.")
}


def _bytes_also_as_octet_stream(answer: Any) -> None:
    """A byte answer (``*/*``: its Content-Type is the file's) listed first as application/octet-stream.

    ``*/*`` is what the bytes may be; code generators (openapi-python-client) take a response
    only under a media type they know, and octet-stream gives their client the raw bytes.
    """
    if isinstance(answer, OpenAPIResponse) and answer.content and "*/*" in answer.content:
        answer.content = {"application/octet-stream": answer.content["*/*"], **answer.content}


def documented(
    body: type | None = None,
    *,
    media: dict[str, dict[str, Any]] | None = None,
    status: int = 201,
    links: dict[str, tuple[str, str, dict[str, str]]] | None = None,
    parameters: tuple[Parameter, ...] = (),
    public: bool = False,
) -> type[Operation]:
    """An ``operation_class`` declaring what the handler reads itself and what its answer leads to.

    ``body``: the attrs class the handler's ``parse_body`` reads (handlers parse JSON themselves,
    for strict errors, so Litestar cannot see it); ``media``: other bodies, by media type, as JSON
    schemas (:data:`UPLOAD_MEDIA`). ``parameters``: headers and query parameters read from the
    request itself. ``links``: name -> ``(method, path, {parameter: runtime expression})`` from the
    ``status`` answer, e.g. ``{"patient": ("GET", "/v1/patients/{pid}", {"pid": "$response.body#/id"})}``.
    ``public``: the operation takes no bearer token (every other one needs :data:`BEARER`).
    """
    bodies: dict[str, dict[str, Any]] = {
        **({"application/json": body_schema(body)} if body is not None else {}),
        **(media or {}),
    }
    content = {kind: OpenAPIMediaType(schema=schema) for kind, schema in bodies.items()}  # type: ignore[arg-type]

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if public:
                self.security = []  # the document's default is the bearer token
            if content:
                self.request_body = RequestBody(content=content, required=True)
            if parameters:
                self.parameters = [*(self.parameters or []), *parameters]
            for answer in (self.responses or {}).values():
                _bytes_also_as_octet_stream(answer)
            response = (self.responses or {}).get(str(status))
            if links and isinstance(response, OpenAPIResponse):
                response.links = {
                    name: Link(operation_ref=_ref(method, path), parameters=dict(values))
                    for name, (method, path, values) in links.items()
                }

    return DocumentedOperation
