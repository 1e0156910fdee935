"""File requests: a clinician asks a patient for files; the patient answers by uploading; each file is reviewed.

Status: ``open`` -> ``answered`` (first answer) -> ``completed`` (accepted files reach ``max_files``,
or a clinician says so) | ``cancelled``. ``expired`` is never stored: a request still open or
answered when ``due_at`` has passed reads as expired, so no sweeper has to run on time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.files import discard_new_files, ingest
from careshare.core.ids import new_id
from careshare.core.kinds import kinds
from careshare.core.notifications import enqueue, notify_clinic
from careshare.core.patients import get_patient
from careshare.core.problems import NOT_FOUND, Problem, ProblemType
from careshare.core.sharing import share, visible_to_patient
from careshare.plugins.requests.tables import file_request_answers, file_requests

if TYPE_CHECKING:
    from collections.abc import AsyncIterable
    from datetime import datetime

    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal, StoredFile
    from careshare.core.runtime import Careshare

__all__ = [
    "ANSWER_ALREADY_REVIEWED",
    "CHANNEL",
    "KIND_NOT_REQUESTED",
    "MAX_FILES",
    "REQUEST_CLOSED",
    "TARGET",
    "TOO_MANY_FILES",
    "Answer",
    "FileRequest",
    "answer_with_upload",
    "cancel_request",
    "complete_request",
    "create_request",
    "get_request",
    "list_requests",
    "review_answer",
]

CHANNEL = "file-requests"
TARGET = "file-request"
MAX_FILES = 20
MAX_MESSAGE_CHARS = 2000
MAX_REASON_CHARS = 1000
OPEN_STATUSES = frozenset({"open", "answered"})
#: What the patient's inbox shows: never the clinician's message (it may hold clinical text).
REQUEST_TITLE = "Your care team asked you for files"
REJECTED_TITLE = "Your care team could not use a file you sent"
#: The clinic's notification of a file sent in answer (careshare.core.notifications.notify_clinic).
CLINIC_KIND = "file-request.answered"
CLINIC_TITLE = "A patient answered a file request"

Decision = Literal["accepted", "rejected"]

KIND_NOT_REQUESTED = ProblemType(
    "kind-not-requested",
    422,
    "File type not requested",
    "Your care team did not ask for this kind of file. Send a file of a kind the request lists.",
)
TOO_MANY_FILES = ProblemType(
    "too-many-files-for-request",
    422,
    "Request already has enough files",
    "This request already holds as many files as your care team asked for."
    " If they turn a file down, you can send another one.",
)
REQUEST_CLOSED = ProblemType(
    "request-closed",
    409,
    "Request closed",
    "This request is closed (completed, cancelled or past its due date) and takes no more files or changes.",
)
ANSWER_ALREADY_REVIEWED = ProblemType(
    "answer-already-reviewed",
    409,
    "File already reviewed",
    "This file has already been accepted or rejected; a decision is not changed afterwards.",
)


@attrs.frozen
class Answer:
    """A file the patient sent in answer to a request, and the clinician's decision on it."""

    file_id: str
    position: int
    decision: Literal["pending", "accepted", "rejected"]
    reason: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    created_at: datetime
    filename: str
    kind: str
    media_type: str
    size: int


@attrs.frozen
class FileRequest:
    id: str
    org: str
    patient_id: str
    requested_by: str
    message: str
    accepted_kinds: tuple[str, ...]
    max_files: int
    due_at: datetime
    #: As read: ``expired`` when the stored status is still open or answered and ``due_at`` passed.
    status: str
    created_at: datetime
    updated_at: datetime
    answers: tuple[Answer, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def count(self, decision: str) -> int:
        return sum(1 for a in self.answers if a.decision == decision)

    @property
    def remaining(self) -> int:
        """How many more files the patient may send now (rejected files do not count)."""
        if not self.is_open:
            return 0
        return max(self.max_files - len(self.answers) + self.count("rejected"), 0)


def status_at(stored: str, due_at: datetime, now: datetime) -> str:
    return "expired" if stored in OPEN_STATUSES and due_at <= now else stored


def _from_row(row: sa.Row[object], answers: list[Answer], now: datetime) -> FileRequest:
    r = row._mapping
    return FileRequest(
        id=r["id"],
        org=r["org_id"],
        patient_id=r["patient_id"],
        requested_by=r["requested_by"],
        message=r["message"],
        accepted_kinds=tuple(r["accepted_kinds"]),
        max_files=r["max_files"],
        due_at=r["due_at"],
        status=status_at(r["status"], r["due_at"], now),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        answers=tuple(answers),
    )


async def _answers(conn: AsyncConnection, request_ids: list[str]) -> dict[str, list[Answer]]:
    by_request: dict[str, list[Answer]] = {rid: [] for rid in request_ids}
    if not request_ids:
        return by_request
    rows = await conn.execute(
        sa.select(
            file_request_answers,
            db.files.c.filename,
            db.files.c.kind,
            db.files.c.media_type,
            db.files.c.size,
        )
        .join(db.files, db.files.c.id == file_request_answers.c.file_id)
        .where(file_request_answers.c.request_id.in_(request_ids))
        .order_by(file_request_answers.c.request_id, file_request_answers.c.position)
    )
    for row in rows:
        by_request[row.request_id].append(
            Answer(
                file_id=row.file_id,
                position=row.position,
                decision=row.decision,
                reason=row.reason,
                reviewed_by=row.reviewed_by,
                reviewed_at=row.reviewed_at,
                created_at=row.created_at,
                filename=row.filename,
                kind=row.kind,
                media_type=row.media_type,
                size=row.size,
            )
        )
    return by_request


def _visible(principal: Principal) -> list[sa.ColumnElement[bool]]:
    """Clinicians see their organisation's requests; a patient sees only the requests sent to them."""
    where = [file_requests.c.org_id == principal.org]
    if not principal.is_clinician:
        where.append(file_requests.c.patient_id == principal.patient)
        where.append(visible_to_patient(TARGET, file_requests.c.id))  # withdrawn (core.sharing.revoke): gone
    return where


async def get_request(
    conn: AsyncConnection, principal: Principal, request_id: str, *, for_update: bool = False
) -> FileRequest:
    """The request if ``principal`` may see it, else ``not-found`` (existence is never leaked)."""
    query = sa.select(file_requests).where(file_requests.c.id == request_id, *_visible(principal))
    if for_update:
        # PostgreSQL: answers and reviews of one request queue here (SQLite writers are serial anyway).
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise Problem(NOT_FOUND)
    return _from_row(row, (await _answers(conn, [request_id]))[request_id], db.utcnow())


async def list_requests(
    conn: AsyncConnection, principal: Principal, patient_id: str, *, cursor: str | None = None, limit: int = 50
) -> tuple[list[FileRequest], str | None]:
    """A page of one patient's requests, newest first, and the cursor of the next page."""
    await get_patient(conn, principal, patient_id)
    query = sa.select(file_requests).where(*_visible(principal), file_requests.c.patient_id == patient_id)
    rows, next_cursor = await db.newest_first(conn, query, file_requests.c.id, cursor=cursor, limit=limit)
    answers = await _answers(conn, [row.id for row in rows])
    now = db.utcnow()
    return [_from_row(row, answers[row.id], now) for row in rows], next_cursor


async def create_request(
    conn: AsyncConnection,
    pm: pluggy.PluginManager,
    principal: Principal,
    patient_id: str,
    *,
    message: str,
    accepted_kinds: frozenset[str],
    max_files: int,
    due_at: datetime,
) -> FileRequest:
    """Record the request and send it to the patient (share + notification) in the caller's transaction."""
    assert accepted_kinds and accepted_kinds <= kinds(pm).keys() and 1 <= max_files <= MAX_FILES
    await get_patient(conn, principal, patient_id)
    now = db.utcnow()
    request = FileRequest(
        id=new_id(),
        org=principal.org,
        patient_id=patient_id,
        requested_by=principal.subject,
        message=message,
        accepted_kinds=tuple(sorted(accepted_kinds)),
        max_files=max_files,
        due_at=due_at,
        status=status_at("open", due_at, now),
        created_at=now,
        updated_at=now,
    )
    await conn.execute(
        file_requests.insert().values(
            id=request.id,
            org_id=request.org,
            patient_id=patient_id,
            requested_by=request.requested_by,
            message=message,
            accepted_kinds=list(request.accepted_kinds),
            max_files=max_files,
            due_at=due_at,
            status="open",
            created_at=now,
            updated_at=now,
        )
    )
    await share(
        conn,
        pm,
        principal,
        channel=CHANNEL,
        target=TARGET,
        item_id=request.id,
        patient_id=patient_id,
        title=REQUEST_TITLE,
        notification_kind="file-request",
    )
    return request


def check_answer(request: FileRequest, kind: str | None) -> None:
    """Raise why the request takes no further file (of ``kind``, once known); order: closed, count, kind."""
    if not request.is_open:
        raise Problem(REQUEST_CLOSED, request_status=request.status)
    if request.remaining == 0:
        raise Problem(
            TOO_MANY_FILES,
            f"This request asks for at most {request.max_files} file(s) and already holds that many."
            " If your care team turns a file down, you can send another one.",
            limit=request.max_files,
        )
    if kind is not None and kind not in request.accepted_kinds:
        raise Problem(
            KIND_NOT_REQUESTED,
            f"This is a {kind} file; your care team asked for {', '.join(request.accepted_kinds)}.",
            kind=kind,
            accepted_kinds=list(request.accepted_kinds),
        )


async def answer_with_upload(
    cs: Careshare, principal: Principal, request_id: str, chunks: AsyncIterable[bytes]
) -> tuple[FileRequest, StoredFile]:
    """Ingest one file from the patient into their files and add it to the request, or keep nothing.

    The request's state is checked before the upload is read (no bytes are stored for a closed or
    full request) and again, with the file's kind, once the file has been identified.
    """
    async with cs.reader.connect() as conn:
        check_answer(await get_request(conn, principal, request_id), None)
    stored = await ingest(
        cs, chunks, principal=principal, owner_type="patient", patient_id=principal.patient, source="patient"
    )
    try:
        async with cs.engine.begin() as conn:
            request = await get_request(conn, principal, request_id, for_update=True)
            check_answer(request, stored.kind)
            now = db.utcnow()
            await conn.execute(
                file_request_answers.insert().values(
                    request_id=request.id,
                    file_id=stored.id,
                    position=len(request.answers),
                    decision="pending",
                    created_at=now,
                )
            )
            await conn.execute(
                sa.update(file_requests)
                .where(file_requests.c.id == request.id)
                .values(status="answered", updated_at=now)
            )
            await record_event(
                conn,
                principal,
                "file-request.answered",
                patient_id=request.patient_id,
                file_id=stored.id,
                target=TARGET,
                item_id=request.id,
            )
            # One per file sent in answer: each is a file for a clinician to review.
            await notify_clinic(
                conn,
                cs.plugins,
                org=request.org,
                patient_id=request.patient_id,
                kind=CLINIC_KIND,
                title=CLINIC_TITLE,
                target=TARGET,
                item_id=request.id,
                dedupe_key=f"{CLINIC_KIND}:{request.id}:{stored.id}",
            )
            request = await get_request(conn, principal, request_id)
    except BaseException:
        # Refused (or failed) after ingest: the file, its renditions and blobs nothing else uses go.
        await discard_new_files(cs, [stored.id])
        raise
    return request, stored


async def review_answer(
    conn: AsyncConnection,
    pm: pluggy.PluginManager,
    principal: Principal,
    request_id: str,
    file_id: str,
    *,
    decision: Decision,
    reason: str | None,
) -> FileRequest:
    """Accept or reject one answered file, in the caller's transaction.

    A rejection notifies the patient (one notification per answer) and frees a place for another
    file; accepted files reaching ``max_files`` complete an open request.
    """
    request = await get_request(conn, principal, request_id, for_update=True)
    if request.status == "cancelled":
        raise Problem(REQUEST_CLOSED, request_status=request.status)
    answer = next((a for a in request.answers if a.file_id == file_id), None)
    if answer is None:
        raise Problem(NOT_FOUND)
    if answer.decision != "pending":
        raise Problem(ANSWER_ALREADY_REVIEWED, decision=answer.decision)
    now = db.utcnow()
    await conn.execute(
        sa.update(file_request_answers)
        .where(file_request_answers.c.request_id == request_id, file_request_answers.c.file_id == file_id)
        .values(decision=decision, reason=reason, reviewed_by=principal.subject, reviewed_at=now)
    )
    completes = decision == "accepted" and request.is_open and request.count("accepted") + 1 >= request.max_files
    await conn.execute(
        sa.update(file_requests)
        .where(file_requests.c.id == request_id)
        .values(updated_at=now, **({"status": "completed"} if completes else {}))
    )
    await record_event(
        conn,
        principal,
        f"file-request.{decision}",
        patient_id=request.patient_id,
        file_id=file_id,
        target=TARGET,
        item_id=request_id,
    )
    if decision == "rejected":
        await enqueue(
            conn,
            pm,
            org=request.org,
            patient_id=request.patient_id,
            kind="file-request-rejected",
            title=REJECTED_TITLE,
            target=TARGET,
            item_id=request_id,
            dedupe_key=f"{TARGET}:{request_id}:{file_id}:rejected",
        )
    return await get_request(conn, principal, request_id)


async def _close(conn: AsyncConnection, principal: Principal, request_id: str, status: str) -> FileRequest:
    request = await get_request(conn, principal, request_id, for_update=True)
    if not request.is_open:
        raise Problem(REQUEST_CLOSED, request_status=request.status)
    await conn.execute(
        sa.update(file_requests).where(file_requests.c.id == request_id).values(status=status, updated_at=db.utcnow())
    )
    await record_event(
        conn, principal, f"file-request.{status}", patient_id=request.patient_id, target=TARGET, item_id=request_id
    )
    return await get_request(conn, principal, request_id)


async def complete_request(conn: AsyncConnection, principal: Principal, request_id: str) -> FileRequest:
    """The clinician has what they need: no more answers (pending files may still be reviewed)."""
    return await _close(conn, principal, request_id, "completed")


async def cancel_request(conn: AsyncConnection, principal: Principal, request_id: str) -> FileRequest:
    """The request is withdrawn: no more answers and no more reviews."""
    return await _close(conn, principal, request_id, "cancelled")
