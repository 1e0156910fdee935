"""The problems every route may answer, and the one way an answer becomes ``application/problem+json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Response

from careshare.core.problems import Problem, ProblemType

if TYPE_CHECKING:
    from litestar import Request

__all__ = ["BAD_REQUEST", "INVALID_REQUEST", "PROBLEM_JSON", "REQUEST_TOO_LARGE", "problem_response"]

PROBLEM_JSON = "application/problem+json"

INVALID_REQUEST = ProblemType(
    "invalid-request", 422, "Request not valid", "The request is not valid. Correct the fields named in 'errors'."
)
BAD_REQUEST = ProblemType(
    "bad-request", 400, "Bad request", "The request could not be understood. Check it and send it again."
)
REQUEST_TOO_LARGE = ProblemType(
    "request-too-large", 413, "Request too large", "The request body is larger than this address accepts."
)


def problem_response(
    problem: Problem, request: Request[Any, Any, Any] | None = None, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        content=problem.to_dict(instance=request.url.path if request else None),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )
