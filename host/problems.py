"""Every error leaves the host as RFC 9457 ``application/problem+json`` with a stable ``code``."""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from litestar import Response
from litestar.exceptions import HTTPException, ValidationException

from careshare.core.problems import Problem, ProblemType
from careshare.web.problems import BAD_REQUEST, REQUEST_TOO_LARGE, problem_response

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "INTERNAL_ERROR",
    "exception_handlers",
    "refuse_unstorable_addresses",
]

logger = logging.getLogger("careshare.host")

METHOD_NOT_ALLOWED = ProblemType(
    "method-not-allowed", 405, "Method not allowed", "This address does not accept this HTTP method."
)
INTERNAL_ERROR = ProblemType(
    "internal-error",
    500,
    "Something went wrong on our side",
    "careshare hit an unexpected error. Nothing was changed; try again, and tell support if it keeps happening.",
)
#: nginx's 499: the client went away before its request was read; nobody reads this answer, the log does.
CLIENT_CLOSED_REQUEST = ProblemType(
    "client-closed-request",
    499,
    "Client closed the request",
    "The connection closed before the whole request arrived. Send the request again.",
)
#: Litestar's words when the client disconnects while a handler reads the body.
_DISCONNECTED = "client disconnected prematurely"
_BY_STATUS = {
    400: BAD_REQUEST,
    405: METHOD_NOT_ALLOWED,
    413: REQUEST_TOO_LARGE,
}


def _on_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, Problem)
    # A problem may carry headers to send with it (Retry-After on a 429: host/limits.py).
    return problem_response(exc, request, headers=getattr(exc, "headers", None))


def _on_http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    from careshare.core.problems import NOT_FOUND

    if isinstance(exc, ValidationException):
        errors = [
            {"field": e.get("key"), "message": e.get("message")} for e in (exc.extra or []) if isinstance(e, dict)
        ]
        return problem_response(Problem(BAD_REQUEST, "Some request parameters are not valid.", errors=errors), request)
    if exc.status_code >= 500 and exc.detail == _DISCONNECTED:
        logger.info("client closed the request early method=%s path=%s", request.method, request.url.path)
        return problem_response(Problem(CLIENT_CLOSED_REQUEST), request)
    type_ = {404: NOT_FOUND}.get(exc.status_code) or _BY_STATUS.get(exc.status_code)
    if type_ is None:
        if exc.status_code >= 500:
            return _on_exception(request, exc)
        type_ = ProblemType(f"http-{exc.status_code}", exc.status_code, "Request refused", "The request was refused.")
    return problem_response(Problem(type_), request, headers=exc.headers)


def _on_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    from careshare.core.storage import InsufficientStorage, database_out_of_space

    if database_out_of_space(exc):  # the database's disk is full: 507 like a refused blob write
        logger.warning(
            "database refused a write error=%s on %s %s", type(exc).__name__, request.method, request.url.path
        )
        return problem_response(InsufficientStorage(), request)
    # Only the type and the frames: exception messages can carry SQL parameters or file names.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("unhandled %s on %s %s\n%s", type(exc).__name__, request.method, request.url.path, frames)
    return problem_response(Problem(INTERNAL_ERROR), request)


exception_handlers: dict[type[Exception] | int, Any] = {
    Problem: _on_problem,
    HTTPException: _on_http_exception,
    Exception: _on_exception,
}


def refuse_unstorable_addresses(app: ASGIApp) -> ASGIApp:
    """Answer ``400`` to a path or query parameter holding NUL (``%00``) before any handler sees it.

    Path and query parameters become database parameters; PostgreSQL refuses NUL in text, so this
    is the one place such an address is stopped (JSON bodies are checked by ``structure_body``).
    ``?filename=`` is the exception: a file name is cleaned by the sanitiser, like one in a form.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or _nul_in_query(scope.get("query_string", b""))):
            raise Problem(BAD_REQUEST, "The address holds a NUL character (%00). Remove it and send the request again.")
        await app(scope, receive, send)

    return middleware


def _nul_in_query(query: bytes) -> bool:
    if b"%00" not in query:
        return False
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return any("\x00" in name or ("\x00" in value and name != "filename") for name, value in pairs)
