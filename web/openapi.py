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

import types
import typing
from dataclasses import dataclass, field
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

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = [
    "BEARER",
    "CONTENT_PARAMETERS",
    "CONTENT_RESPONSES",
    "PROBLEM_RESPONSES",
    "SECURITY_SCHEMES",
    "TUS_CREATED",
    "TUS_CREATE_PARAMETERS",
    "TUS_NO_CONTENT",
    "TUS_PARAMETERS",
    "TUS_PATCH_MEDIA",
    "TUS_PATCH_PARAMETERS",
    "UPLOAD_MEDIA",
    "UPLOAD_PARAMETERS",
    "ProblemDocument",
    "body_schema",
    "document_problems",
    "documented",
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


@dataclass
class ProblemDocument:
    """An RFC 9457 problem as careshare sends it; some problems add members (``errors``, ``limit`` ...)."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str | None = field(default=None)


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=ProblemDocument, media_type=PROBLEM_JSON, generate_examples=False, description=description
    )


PROBLEM_RESPONSES: dict[Any, ResponseSpec] = {
    400: _problem("The request could not be read (bad JSON, a bad query parameter): a problem naming what to fix."),
    "default": _problem(
        "Any other refusal, as an RFC 9457 problem: branch on its stable `code` (see docs/api.md, Problems)."
    ),
}


def document_problems(app: Litestar) -> None:
    """Give every route handler the problem responses, before the schema is first built (it is lazy)."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            handler.responses = {**PROBLEM_RESPONSES, **(handler.responses or {})}


def body_schema(cls: type) -> dict[str, Any]:
    """The JSON schema of an attrs body class as :func:`careshare.web.parse_body` reads it.

    Types only (str, int, bool, float, lists, Literal, optional, nested attrs classes); the
    validators' limits (lengths, patterns) stay the server's to check, answered as
    ``422 invalid-request``. Unknown members are refused, so ``additionalProperties`` is false.
    """
    hints = typing.get_type_hints(cls)
    properties = {a.name: _type_schema(hints[a.name]) for a in attrs.fields(cls)}
    required = sorted(a.name for a in attrs.fields(cls) if a.default is attrs.NOTHING)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _type_schema(kind: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (types.UnionType, typing.Union):
        return {"anyOf": [_type_schema(arg) for arg in args]}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0]) if args else {}}
    if kind is type(None):
        return {"type": "null"}
    if attrs.has(kind):
        return body_schema(kind)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
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
    "application/octet-stream": {"type": "string", "format": "binary"},
    "multipart/form-data": {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary"}},
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


_TUS_RESUMABLE = _tus_header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}, "The tus version.", required=True)
#: The tus headers each resumable-upload route reads itself (host/routes/tus.py).
TUS_CREATE_PARAMETERS = (
    _TUS_RESUMABLE,
    _tus_header("Upload-Length", {"type": "integer", "minimum": 0}, "The whole file's size in bytes."),
    _tus_header("Upload-Defer-Length", {"type": "string"}, "Not supported: send Upload-Length."),
    _tus_header("Upload-Metadata", {"type": "string"}, "key base64,key base64 ... (filename names the file)."),
)
TUS_PATCH_PARAMETERS = (
    _TUS_RESUMABLE,
    _tus_header("Upload-Offset", {"type": "integer", "minimum": 0}, "Where these bytes go.", required=True),
    _tus_header("Upload-Checksum", {"type": "string"}, "sha256 <base64 digest> of this request's bytes."),
    _tus_header("Prefer", {"type": "string"}, "wait=N: on the final PATCH, how long to wait for the check."),
)
TUS_PARAMETERS = (_TUS_RESUMABLE,)
TUS_PATCH_MEDIA: dict[str, dict[str, Any]] = {"application/offset+octet-stream": {"type": "string", "format": "binary"}}
#: tus answers carry their news in headers, with an empty body.
TUS_CREATED: dict[Any, ResponseSpec] = {
    201: ResponseSpec(data_container=None, description="Created: Location names the upload; the body is empty.")
}
TUS_NO_CONTENT: dict[Any, ResponseSpec] = {
    204: ResponseSpec(data_container=None, description="Done: Upload-Offset says where the upload is now.")
}


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
            response = (self.responses or {}).get(str(status))
            if links and isinstance(response, OpenAPIResponse):
                response.links = {
                    name: Link(operation_ref=_ref(method, path), parameters=dict(values))
                    for name, (method, path, values) in links.items()
                }

    return DocumentedOperation
