"""The console's pages of file requests: the clinician asks and reviews each answer, the patient answers.

Mounted by ``careshare_console``; the handlers call the same rules as :mod:`.routes` (never the
HTTP API). The patient's upload goes to the API's answer route under ``/console/api`` (the
console's upload script posts a multipart ``file`` there).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from careshare.core.files import get_file
from careshare.core.kinds import kinds as loaded_kinds
from careshare.core.patients import get_patient
from careshare.core.problems import Problem
from careshare.plugins.requests.file_requests import (
    MAX_FILES,
    MAX_MESSAGE_CHARS,
    MAX_REASON_CHARS,
    TARGET,
    FileRequest,
    cancel_request,
    complete_request,
    create_request,
    get_request,
    list_requests,
    review_answer,
)
from careshare.plugins.requests.routes import NewFileRequest, validated
from careshare.web import (
    CONSOLE,
    ConsolePages,
    NavEntry,
    clinician,
    console_page,
    form_data,
    form_text,
    form_values,
    invalid,
    patient,
    see_other,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["pages"]

TEMPLATES = Path(__file__).parent / "console_templates"
NAME = "file-requests"
#: A request's page lists this many of the patient's requests (the API pages further).
PAGE = 50
#: A due date is the end of that day, in UTC (the form asks for a date, not a time).
END_OF_DAY = "T23:59:59+00:00"
#: Placeholders standing in for a field the form got wrong, so the rules still name every other field.
_ANY_COUNT = 1
_ANY_DUE = "2999-12-30T00:00:00+00:00"


def _status_label(r: FileRequest) -> str:
    return {
        "open": "Waiting for the patient",
        "answered": "Answered",
        "completed": "Completed",
        "cancelled": "Cancelled",
        "expired": "Past its due date",
    }.get(r.status, r.status)


def _request_view(r: FileRequest) -> dict[str, Any]:
    return {
        "request": r,
        "status_label": _status_label(r),
        "counts": {d: r.count(d) for d in ("pending", "accepted", "rejected")},
    }


async def _answer_views(conn: AsyncConnection, principal: Principal, r: FileRequest) -> list[dict[str, Any]]:
    """Each answer with its file's links (a thumbnail when the file has one)."""
    shown = []
    for a in r.answers:
        stored = await get_file(conn, principal, a.file_id)
        roles = {rendition.role for rendition in stored.renditions}
        preview = "thumbnail" if "thumbnail" in roles else "poster" if "poster" in roles else None
        content = f"{CONSOLE}/api/v1/files/{a.file_id}/content"
        shown.append(
            {
                "answer": a,
                "href": f"{CONSOLE}/files/{a.file_id}",
                "thumbnail": f"{content}?rendition={preview}" if preview else None,
            }
        )
    return shown


def _new_request(
    fields: dict[str, str | list[str]], known: frozenset[str]
) -> tuple[str, frozenset[str], datetime, int]:
    """The ask form read with the API's own rules; every wrong field is named at once."""
    errors: list[str] = []
    count_text = form_text(fields, "max_files")
    max_files = int(count_text) if count_text.isdigit() else None
    if max_files is None:
        errors.append(f"$.max_files: give a number of files, from 1 to {MAX_FILES}")
    due_text = form_text(fields, "due_at")
    try:
        due_at = date.fromisoformat(due_text).isoformat() + END_OF_DAY
    except ValueError:
        due_at = None
        errors.append("$.due_at: pick the date the files are due")
    body = NewFileRequest(
        message=form_text(fields, "message"),
        accepted_kinds=form_values(fields, "accepted_kinds"),
        max_files=_ANY_COUNT if max_files is None else max_files,
        due_at=_ANY_DUE if due_at is None else due_at,
    )
    try:
        message, accepted, due = validated(body, known)
    except Problem as refused:
        raise invalid(*errors, *(refused.extra.get("errors") or [refused.detail])) from None
    if errors:
        raise invalid(*errors)
    assert max_files is not None
    return message, accepted, due, max_files


# -- the clinician's pages -------------------------------------------------------------------------


@get("/patients/{pid:str}/file-requests", dependencies={"principal": Provide(clinician)})
async def patient_requests(
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
    cursor: FromQuery[str | None] = None,
) -> Template:
    async with cs.reader.connect() as conn:
        who = await get_patient(conn, principal, pid)
        found, next_cursor = await list_requests(conn, principal, pid, cursor=cursor, limit=PAGE)
    return console_page(
        f"{NAME}/patient.html",
        title=f"File requests of {who.name}",
        patient=who,
        requests=[_request_view(r) for r in found],
        next_cursor=next_cursor,
        kinds=loaded_kinds(cs.plugins),
        max_files=MAX_FILES,
        max_message=MAX_MESSAGE_CHARS,
        earliest=date.today().isoformat(),
    )


@post("/patients/{pid:str}/file-requests", status_code=303, dependencies={"principal": Provide(clinician)})
async def ask(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
) -> Redirect:
    message, accepted, due_at, max_files = _new_request(await form_data(request), frozenset(loaded_kinds(cs.plugins)))
    async with cs.engine.begin() as conn:
        made = await create_request(
            conn,
            cs.plugins,
            principal,
            pid,
            message=message,
            accepted_kinds=accepted,
            max_files=max_files,
            due_at=due_at,
        )
    return see_other(f"/file-requests/{made.id}", "Request sent to the patient.")


@get("/file-requests/{rid:str}", dependencies={"principal": Provide(clinician)})
async def review_page(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], rid: FromPath[str]
) -> Template:
    async with cs.reader.connect() as conn:
        found = await get_request(conn, principal, rid)
        who = await get_patient(conn, principal, found.patient_id)
        answers = await _answer_views(conn, principal, found)
    return console_page(
        f"{NAME}/review.html",
        title="File request",
        patient=who,
        view=_request_view(found),
        answers=answers,
        max_reason=MAX_REASON_CHARS,
    )


@post(
    "/file-requests/{rid:str}/files/{fid:str}/accept", status_code=303, dependencies={"principal": Provide(clinician)}
)
async def accept(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], rid: FromPath[str], fid: FromPath[str]
) -> Redirect:
    async with cs.engine.begin() as conn:
        reviewed = await review_answer(conn, cs.plugins, principal, rid, fid, decision="accepted", reason=None)
    done = " The request is complete." if reviewed.status == "completed" else ""
    return see_other(f"/file-requests/{rid}", "File accepted." + done)


@post(
    "/file-requests/{rid:str}/files/{fid:str}/reject", status_code=303, dependencies={"principal": Provide(clinician)}
)
async def reject(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    rid: FromPath[str],
    fid: FromPath[str],
) -> Redirect:
    reason = form_text(await form_data(request), "reason")
    if not reason:
        raise invalid("$.reason: give the patient a reason when rejecting a file")
    if len(reason) > MAX_REASON_CHARS:
        raise invalid(f"$.reason: at most {MAX_REASON_CHARS} characters")
    async with cs.engine.begin() as conn:
        await review_answer(conn, cs.plugins, principal, rid, fid, decision="rejected", reason=reason)
    return see_other(f"/file-requests/{rid}", "File rejected; the patient is told why and may send another.")


@post("/file-requests/{rid:str}/complete", status_code=303, dependencies={"principal": Provide(clinician)})
async def complete(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], rid: FromPath[str]
) -> Redirect:
    async with cs.engine.begin() as conn:
        await complete_request(conn, principal, rid)
    return see_other(f"/file-requests/{rid}", "Request completed; it takes no more files.")


@post("/file-requests/{rid:str}/cancel", status_code=303, dependencies={"principal": Provide(clinician)})
async def cancel(cs: NamedDependency[Careshare], principal: NamedDependency[Principal], rid: FromPath[str]) -> Redirect:
    async with cs.engine.begin() as conn:
        await cancel_request(conn, principal, rid)
    return see_other(f"/file-requests/{rid}", "Request cancelled.")


# -- the patient's view ----------------------------------------------------------------------------


@get("/me/file-requests", dependencies={"principal": Provide(patient)})
async def my_requests(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    """One page of the patient's requests, split into open and closed; the older link pages through both."""
    async with cs.reader.connect() as conn:
        found, next_cursor = await list_requests(conn, principal, principal.patient or "", cursor=cursor, limit=PAGE)
    return console_page(
        f"{NAME}/mine.html",
        title="File requests",
        open=[_request_view(r) for r in found if r.is_open],
        closed=[_request_view(r) for r in found if not r.is_open],
        next_cursor=next_cursor,
        kinds=loaded_kinds(cs.plugins),
    )


@get("/me/file-requests/{rid:str}", dependencies={"principal": Provide(patient)})
async def my_request(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], rid: FromPath[str]
) -> Template:
    async with cs.reader.connect() as conn:
        found = await get_request(conn, principal, rid)
        answers = await _answer_views(conn, principal, found)
    return console_page(
        f"{NAME}/answer.html",
        title="Files your care team asked for",
        view=_request_view(found),
        answers=answers,
        kinds=loaded_kinds(cs.plugins),
        upload_url=f"{CONSOLE}/api/v1/me/file-requests/{rid}/files",
        upload_label="Send a file",
    )


def pages() -> ConsolePages:
    return ConsolePages(
        NAME,
        routes=[
            patient_requests,
            ask,
            review_page,
            accept,
            reject,
            complete,
            cancel,
            my_requests,
            my_request,
        ],
        templates=TEMPLATES,
        nav=[
            NavEntry(
                "File requests",
                "/patients/{pid}/file-requests",
                place="patient",
                quick_action="Ask for files",
                order=70,
            ),
            NavEntry("File requests", "/me/file-requests", audience="patient", order=70),
        ],
        # A notification of a request (asked, or a file turned down) carries the request's id.
        item_pages={TARGET: "/me/file-requests/{item_id}"},
        # The clinic's inbox: an answer to a request opens the request, its files to review.
        clinic_pages={TARGET: "/file-requests/{item_id}"},
    )
