"""HTTP routes of file requests: clinicians ask and review, patients answer (mounted by ``careshare_routes``)."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from careshare.core import db
from careshare.core.kinds import kinds as loaded_kinds
from careshare.core.models import parse_time
from careshare.plugins.requests.file_requests import (
    MAX_FILES,
    MAX_MESSAGE_CHARS,
    MAX_REASON_CHARS,
    Answer,
    FileRequest,
    answer_with_upload,
    cancel_request,
    complete_request,
    create_request,
    get_request,
    list_requests,
    review_answer,
)
from careshare.web import (
    AWARE_DATE_TIME,
    NON_BLANK,
    Upload,
    clinician,
    documented,
    file_json,
    invalid,
    limits,
    page_route,
    parse_body,
    patient,
    show_route,
    shown,
    upload_route,
)

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["FileRequestController", "MyFileRequestController", "PatientFileRequestController", "routes"]


@attrs.frozen
class NewFileRequest:
    message: str = attrs.field(metadata=limits(maxLength=MAX_MESSAGE_CHARS, pattern=NON_BLANK))
    accepted_kinds: list[str] = attrs.field(metadata=limits(minItems=1))
    max_files: int = attrs.field(metadata=limits(minimum=1, maximum=MAX_FILES))
    #: In the future, too: no JSON schema says that.
    due_at: str = attrs.field(metadata=limits(**AWARE_DATE_TIME))


@attrs.frozen
class Review:
    decision: Literal["accepted", "rejected"]
    reason: str | None = attrs.field(default=None, metadata=limits(maxLength=MAX_REASON_CHARS))
    #: A rejection tells the patient why.
    json_schema: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"decision": {"const": "rejected"}}},
        "then": {"required": ["reason"], "properties": {"reason": {"type": "string", "pattern": NON_BLANK}}},
    }


def _due_at(value: str, errors: list[str]) -> datetime | None:
    try:
        due = parse_time(value)
    except ValueError as exc:
        errors.append(f"$.due_at: {exc}")
        return None
    if due <= db.utcnow():
        errors.append("$.due_at: must be in the future")
        return None
    return due


def validated(body: NewFileRequest, known: frozenset[str]) -> tuple[str, frozenset[str], datetime]:
    """The new request's message, accepted kinds and due time, or ``invalid-request`` naming each wrong field."""
    errors = []
    message = body.message.strip()
    if not message:
        errors.append("$.message: must not be blank")
    elif len(body.message) > MAX_MESSAGE_CHARS:
        errors.append(f"$.message: at most {MAX_MESSAGE_CHARS} characters")
    kinds = frozenset(body.accepted_kinds)
    if not kinds:
        errors.append("$.accepted_kinds: name at least one kind")
    elif unknown := sorted(kinds - known):
        errors.append(f"$.accepted_kinds: unknown kind(s) {', '.join(unknown)}; use {', '.join(sorted(known))}")
    if not 1 <= body.max_files <= MAX_FILES:
        errors.append(f"$.max_files: must be between 1 and {MAX_FILES}")
    due = _due_at(body.due_at, errors)
    if errors or due is None:
        raise invalid(*errors)
    return message, kinds, due


def answer_json(a: Answer, *, for_clinician: bool) -> dict[str, Any]:
    return shown(a, hide=() if for_clinician else {"reviewed_by"}, url=f"/v1/files/{a.file_id}")


def request_json(r: FileRequest, *, for_clinician: bool) -> dict[str, Any]:
    return {
        "id": r.id,
        "patient_id": r.patient_id,
        "message": r.message,
        "accepted_kinds": list(r.accepted_kinds),
        "max_files": r.max_files,
        "due_at": r.due_at.isoformat(),
        "status": r.status,
        "remaining": r.remaining,
        "counts": {d: r.count(d) for d in ("pending", "accepted", "rejected")},
        "answers": [answer_json(a, for_clinician=for_clinician) for a in r.answers],
        "requested_by": r.requested_by if for_clinician else None,
        "created_at": r.created_at.isoformat(),
        "updated_at": r.updated_at.isoformat(),
    }


class PatientFileRequestController(Controller):
    path = "/v1/patients/{pid:str}/file-requests"
    dependencies = {"principal": Provide(clinician)}
    tags = ["file-requests"]

    @post(
        "/",
        status_code=201,
        operation_class=documented(
            NewFileRequest, links={"request": ("GET", "/v1/file-requests/{rid}", {"rid": "$response.body#/id"})}
        ),
    )
    async def ask(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
    ) -> dict[str, Any]:
        """Ask the patient for files: which kinds, how many, by when. The patient is notified."""
        body = await parse_body(request, NewFileRequest)
        message, kinds, due_at = validated(body, frozenset(loaded_kinds(cs.plugins)))
        async with cs.engine.begin() as conn:
            created = await create_request(
                conn,
                cs.plugins,
                principal,
                pid,
                message=message,
                accepted_kinds=kinds,
                max_files=body.max_files,
                due_at=due_at,
            )
        return request_json(created, for_clinician=True)

    list_for_patient = page_route("/", list_requests, partial(request_json, for_clinician=True), of="patient")


class FileRequestController(Controller):
    path = "/v1/file-requests"
    dependencies = {"principal": Provide(clinician)}
    tags = ["file-requests"]

    show = show_route("/{rid:str}", get_request, partial(request_json, for_clinician=True))

    @post("/{rid:str}/files/{fid:str}/review", status_code=200, operation_class=documented(Review, status=200))
    async def review(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        rid: FromPath[str],
        fid: FromPath[str],
    ) -> dict[str, Any]:
        """Accept or reject one file the patient sent; a rejection needs a reason and tells the patient."""
        body = await parse_body(request, Review)
        reason = body.reason.strip() if body.reason is not None else None
        if body.decision == "rejected" and not reason:
            raise invalid("$.reason: give the patient a reason when rejecting a file")
        if body.reason is not None and len(body.reason) > MAX_REASON_CHARS:
            raise invalid(f"$.reason: at most {MAX_REASON_CHARS} characters")
        async with cs.engine.begin() as conn:
            reviewed = await review_answer(
                conn, cs.plugins, principal, rid, fid, decision=body.decision, reason=reason or None
            )
        return request_json(reviewed, for_clinician=True)

    @post("/{rid:str}/complete", status_code=200)
    async def complete(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], rid: FromPath[str]
    ) -> dict[str, Any]:
        async with cs.engine.begin() as conn:
            return request_json(await complete_request(conn, principal, rid), for_clinician=True)

    @post("/{rid:str}/cancel", status_code=200)
    async def cancel(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], rid: FromPath[str]
    ) -> dict[str, Any]:
        async with cs.engine.begin() as conn:
            return request_json(await cancel_request(conn, principal, rid), for_clinician=True)


class MyFileRequestController(Controller):
    path = "/v1/me/file-requests"
    dependencies = {"principal": Provide(patient)}
    tags = ["me"]

    #: The requests sent to the signed-in patient, newest first, with each file's decision and reason.
    mine = page_route("/", list_requests, partial(request_json, for_clinician=False), of="caller")

    show_mine = show_route("/{rid:str}", get_request, partial(request_json, for_clinician=False))

    @upload_route("/{rid:str}/files", responses=None)
    async def answer(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        rid: FromPath[str],
        upload: NamedDependency[Upload],
    ) -> dict[str, Any]:
        """Send one file in answer (raw body or multipart ``file``); it lands in the patient's files too."""
        answered, stored = await answer_with_upload(cs, principal, rid, upload)
        return {"file": file_json(stored), "request": request_json(answered, for_clinician=False)}


def routes() -> list[type[Controller]]:
    return [PatientFileRequestController, FileRequestController, MyFileRequestController]
