"""Every error leaves the host as RFC 9457 ``application/problem+json`` with a stable ``code``."""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from litestar import Response
from litestar.exceptions import HTTPException, ValidationException

from careshare.core.problems import Problem, ProblemType

if TYPE_CHECKING:
    from litestar import Request

__all__ = ["INTERNAL_ERROR", "INVALID_REQUEST", "exception_handlers", "problem_response"]

logger = logging.getLogger("careshare.host")
PROBLEM_JSON = "application/problem+json"

INVALID_REQUEST = ProblemType(
    "invalid-request", 422, "Request not valid", "The request is not valid. Correct the fields named in 'errors'."
)
BAD_REQUEST = ProblemType(
    "bad-request", 400, "Bad request", "The request could not be understood. Check it and send it again."
)
METHOD_NOT_ALLOWED = ProblemType(
    "method-not-allowed", 405, "Method not allowed", "This address does not accept this HTTP method."
)
INTERNAL_ERROR = ProblemType(
    "internal-error",
    500,
    "Something went wrong on our side",
    "careshare hit an unexpected error. Nothing was changed; try again, and tell support if it keeps happening.",
)
REQUEST_TOO_LARGE = ProblemType(
    "request-too-large", 413, "Request too large", "The request body is larger than this address accepts."
)
_BY_STATUS = {
    400: BAD_REQUEST,
    405: METHOD_NOT_ALLOWED,
    413: REQUEST_TOO_LARGE,
}


def problem_response(
    problem: Problem, request: Request[Any, Any, Any] | None = None, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        content=problem.to_dict(instance=request.url.path if request else None),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _on_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, Problem)
    return problem_response(exc, request)


def _on_http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    from careshare.core.problems import NOT_FOUND

    if isinstance(exc, ValidationException):
        errors = [
            {"field": e.get("key"), "message": e.get("message")} for e in (exc.extra or []) if isinstance(e, dict)
        ]
        return problem_response(Problem(BAD_REQUEST, "Some request parameters are not valid.", errors=errors), request)
    type_ = {404: NOT_FOUND}.get(exc.status_code) or _BY_STATUS.get(exc.status_code)
    if type_ is None:
        if exc.status_code >= 500:
            return _on_exception(request, exc)
        type_ = ProblemType(f"http-{exc.status_code}", exc.status_code, "Request refused", "The request was refused.")
    return problem_response(Problem(type_), request, headers=exc.headers)


def _on_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Only the type and the frames: exception messages can carry SQL parameters or file names.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("unhandled %s on %s %s\n%s", type(exc).__name__, request.method, request.url.path, frames)
    return problem_response(Problem(INTERNAL_ERROR), request)


exception_handlers: dict[type[Exception] | int, Any] = {
    Problem: _on_problem,
    HTTPException: _on_http_exception,
    Exception: _on_exception,
}
