"""Refusals with a stable code and a sentence a person can act on (RFC 9457 problem details)."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "FILE_UNPROCESSABLE",
    "FORBIDDEN_ROLE",
    "INSUFFICIENT_STORAGE",
    "INVALID_TOKEN",
    "MISSING_TOKEN",
    "NOT_FOUND",
    "PATIENT_EXISTS",
    "UNKNOWN_ORGANISATION",
    "UNSUPPORTED_FILE_TYPE",
    "UPLOAD_EMPTY",
    "UPLOAD_INCOMPLETE",
    "UPLOAD_MALFORMED",
    "UPLOAD_TOO_LARGE",
    "Problem",
    "ProblemType",
    "problem_types",
    "upload_too_large",
]

_REGISTRY: dict[str, ProblemType] = {}


@attrs.frozen
class ProblemType:
    """One kind of refusal: its stable ``code``, HTTP status, short title and the default sentence.

    Creating one registers it, so ``problem_types()`` lists every code the running system can answer.
    """

    code: str
    status: int
    title: str
    detail: str

    def __attrs_post_init__(self) -> None:
        known = _REGISTRY.get(self.code)
        if known is not None and known != self:
            raise ValueError(f"problem code {self.code!r} is already defined differently")
        _REGISTRY[self.code] = self


def problem_types() -> dict[str, ProblemType]:
    """Every problem type defined so far, by code."""
    return dict(_REGISTRY)


class Problem(Exception):
    """A refusal the client can act on. Raised anywhere; the host turns it into problem+json.

    ``detail`` replaces the type's default sentence; ``extra`` adds members to the problem object
    (for example ``limit`` and ``total``). Neither may hold patient data or file contents.
    """

    def __init__(self, type_: ProblemType, detail: str | None = None, **extra: Any) -> None:
        self.type = type_
        self.detail = detail or type_.detail
        self.extra = extra
        super().__init__(f"{type_.code}: {self.detail}")

    @property
    def code(self) -> str:
        return self.type.code

    @property
    def status(self) -> int:
        return self.type.status

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://careshare.dev/problems/{self.code}",
            "title": self.type.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


# Core problems. Plugins define theirs next to the rule they enforce.
NOT_FOUND = ProblemType("not-found", 404, "Not found", "Nothing was found at this address, or you may not see it.")
MISSING_TOKEN = ProblemType(
    "authentication-required",
    401,
    "Sign-in required",
    "Send a bearer token in the Authorization header.",
)
INVALID_TOKEN = ProblemType(
    "invalid-token",
    401,
    "Token not accepted",
    "The bearer token is invalid or has expired. Sign in again to get a new one.",
)
UNKNOWN_ORGANISATION = ProblemType(
    "organisation-unknown",
    403,
    "Organisation not registered",
    "The token names an organisation this server does not know. Ask its administrator to register the"
    " organisation (careshare org create) or to add it to CARESHARE_ORGS.",
)
FORBIDDEN_ROLE = ProblemType(
    "forbidden",
    403,
    "Not allowed for your role",
    "Your role may not do this. Ask a clinician of your organisation.",
)
PATIENT_EXISTS = ProblemType(
    "patient-exists",
    409,
    "Patient already registered",
    "A patient with this external_id is already registered in your organisation.",
)
UNSUPPORTED_FILE_TYPE = ProblemType(
    "unsupported-file-type",
    415,
    "File type not supported",
    # Raised with the loaded kinds named (careshare.core.kinds.unsupported_detail); this is the fallback.
    "careshare could not recognise this file as a type it can share. Send a file of a type careshare accepts.",
)
UPLOAD_TOO_LARGE = ProblemType(
    "upload-too-large",
    413,
    "File too large",
    "The file is larger than this server accepts. Send a smaller file.",
)


def upload_too_large(limit: int) -> Problem:
    """``upload-too-large`` naming the server's limit: what every upload path (body, form, tus, stage) raises."""
    return Problem(
        UPLOAD_TOO_LARGE,
        f"The file is larger than the {limit:,} bytes this server accepts. Send a smaller file.",
        limit=limit,
    )


UPLOAD_EMPTY = ProblemType(
    "upload-empty", 400, "Empty upload", "The upload contained no file data. Choose a file and send it again."
)
UPLOAD_MALFORMED = ProblemType(
    "upload-malformed",
    400,
    "Upload could not be read",
    "The upload body could not be read. Send the file as the raw body or as the multipart field 'file'.",
)
UPLOAD_INCOMPLETE = ProblemType(
    "upload-incomplete",
    400,
    "Upload incomplete",
    "The connection ended before the whole file arrived. Send the file again.",
)
FILE_UNPROCESSABLE = ProblemType(
    "file-unprocessable",
    422,
    "File could not be processed",
    "careshare recognised the file type but could not process this file."
    " Save or export it again and upload the new copy.",
)
#: The disk or the bucket refused a write (full, over quota): the server's state, not the request's fault.
INSUFFICIENT_STORAGE = ProblemType(
    "insufficient-storage",
    507,
    "Server out of storage space",
    "The server has no room to store this right now, so nothing was kept. Try again later;"
    " if it keeps happening, tell the clinic's administrator.",
)
