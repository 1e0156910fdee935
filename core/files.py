"""Files: the ingest pipeline (stream, stage, identify, process, promote, record) and their reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db, scanning
from careshare.core.audit import record_event
from careshare.core.filenames import sanitise_filename
from careshare.core.ids import new_id
from careshare.core.jobs import MAX_ATTEMPTS, RetryLater, task
from careshare.core.kinds import unsupported_detail
from careshare.core.models import RenditionRecord, Source, StoredFile
from careshare.core.patients import fold, like_pattern
from careshare.core.problems import (
    FILE_UNPROCESSABLE,
    NOT_FOUND,
    UNSUPPORTED_FILE_TYPE,
    Problem,
    ProblemType,
    problem_types,
)
from careshare.core.storage import InsufficientStorage, content_key, database_out_of_space, held_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterable

    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal, Processed
    from careshare.core.policy import Policy
    from careshare.core.runtime import Careshare

__all__ = [
    "CHECK_TASK",
    "FILE_STILL_CHECKING",
    "ORIGINAL",
    "FileSearch",
    "RenditionsGone",
    "accept",
    "answer_later",
    "check_file",
    "check_key",
    "check_record",
    "confirm_stored",
    "discard_new_files",
    "get_file",
    "ingest",
    "insert_blobs",
    "list_files",
    "mark_seen",
    "refusal",
    "refusal_record",
    "replace_renditions",
    "requeue_stranded",
    "run_handler",
    "run_requeue_loop",
    "store_renditions",
    "wait_for_check",
]

ORIGINAL = "original"
CHECK_TASK = "careshare.check-file"
#: In a processing file's check record: its uploader got ``202`` and hears of the outcome later.
NOTIFY_WHEN_DONE = "notify_when_done"
#: In a processing file's check record: a patient's own upload, the clinic hears of it once it is ready.
NOTIFY_CLINIC = "notify_clinic"
FILE_STILL_CHECKING = ProblemType(
    "file-still-checking",
    409,
    "File is still being checked",
    "The file is still being checked, so it was not used. Once it is ready, send it again by its file id.",
)
logger = logging.getLogger(__name__)


async def accept(
    cs: Careshare,
    chunks: AsyncIterable[bytes],
    *,
    principal: Principal,
    owner_type: Literal["patient", "library"],
    patient_id: str | None,
    source: Literal["clinic", "patient"],
    filename: str | None = None,
    notify_clinic: bool = True,
) -> StoredFile:
    """Take an upload until its bytes are durable: a ``processing`` file whose check is queued.

    A patient's file (``source`` ``patient``) tells the clinic (a ``patient.upload`` notification)
    once its check has passed; a refused file tells no one. ``notify_clinic=False`` is for flows
    whose own event tells the clinic (a message's files, a file-request answer).

    The bytes decide the type: the client's name and Content-Type are never trusted, and a file no
    plugin recognises is refused here (``unsupported-file-type``), leaving nothing behind. Without
    ``filename``, the name is read from ``chunks.filename`` once the stream is consumed (a
    multipart part names its file only when it starts).
    """
    file_id = new_id()
    staged = await cs.store.stage(chunks, limit=cs.settings.max_upload_bytes, remote_key=held_key(file_id))
    name = sanitise_filename(filename if filename is not None else getattr(chunks, "filename", None))
    try:
        ident = cs.plugins.hook.careshare_identify(head=staged.head, filename=name)
        if ident is None:
            raise Problem(UNSUPPORTED_FILE_TYPE, unsupported_detail(cs.plugins))
        now = db.utcnow()
        stored = StoredFile(
            id=file_id,
            org=principal.org,
            owner_type=owner_type,
            patient_id=patient_id,
            filename=name,
            kind=ident.kind,
            media_type=ident.media_type,
            size=staged.size,
            sha256=staged.sha256,
            status="processing",
            source=source,
            metadata={},
            check={
                "state": "queued",
                "reason": None,
                **({NOTIFY_CLINIC: True} if notify_clinic and source == "patient" and patient_id else {}),
            },
            renditions=(),
            uploaded_by=principal.subject,
            created_at=now,
        )
        await cs.store.hold(staged, stored.id)
    except BaseException:
        await cs.store.discard(staged.key)
        raise
    original = RenditionRecord(ORIGINAL, ident.media_type, staged.size, staged.sha256)

    async def record() -> None:
        async with cs.engine.begin() as conn:
            await insert_blobs(conn, [original], now)
            await _insert_file(conn, stored)
            await record_event(conn, principal, "file.uploaded", patient_id=patient_id, file_id=stored.id)

    try:
        await db.again_if_raced(record)  # the blob row may go with another file of the same bytes
    except BaseException:
        await cs.store.discard(held_key(stored.id))
        raise
    cs.store.release(held_key(stored.id))  # its processing row owns it now
    # After the commit: a crash in between leaves a processing file that requeue_stranded finds.
    await cs.jobs.defer(CHECK_TASK, key=check_key(stored.id), file_id=stored.id)
    return stored


async def ingest(
    cs: Careshare,
    chunks: AsyncIterable[bytes],
    *,
    principal: Principal,
    owner_type: Literal["patient", "library"],
    patient_id: str | None,
    source: Literal["clinic", "patient"],
    filename: str | None = None,
    wait: float | None = None,
) -> StoredFile:
    """``accept`` an upload and wait for its check: the ``ready`` file, or its refusal raised.

    For flows that use the file at once (a message sent with its upload): a check still running
    after ``wait`` seconds (default: the longest wait the settings allow) raises
    ``file-still-checking``; the file stays in the owner's files and finishes on its own.
    """
    # The flow that uses the file tells the clinic of its own event (the message, the answer).
    stored = await accept(
        cs,
        chunks,
        principal=principal,
        owner_type=owner_type,
        patient_id=patient_id,
        source=source,
        filename=filename,
        notify_clinic=False,
    )
    done = await wait_for_check(cs, stored.id, cs.settings.max_wait_seconds if wait is None else wait)
    if done.status == "processing":
        raise Problem(
            FILE_STILL_CHECKING,
            f"The file is still being checked after {wait or cs.settings.max_wait_seconds:g} seconds, so it was"
            " not used. It stays in the files; once it is ready, send it again by its file id.",
            file_id=done.id,
        )
    if done.status == "rejected":
        await discard_new_files(cs, [done.id])  # the flow sends nothing, so it keeps nothing of it
        raise refusal(done)
    return done


def refusal_record(problem: Problem) -> dict[str, Any]:
    """How a refusal is kept in a file's check record (``reason`` and ``problem``); ``refusal`` reads it back."""
    t = problem.type
    return {
        "reason": t.code,
        "problem": {"status": t.status, "title": t.title, "detail": problem.detail, "extra": problem.extra},
    }


def refusal(stored: StoredFile) -> Problem:
    """The problem a rejected file was refused with, as its check recorded it."""
    recorded = stored.check.get("problem") or {}
    code = stored.check.get("reason") or FILE_UNPROCESSABLE.code
    known = problem_types().get(code)
    type_ = known or ProblemType(code, int(recorded.get("status", 422)), str(recorded.get("title", "")), "")
    return Problem(type_, recorded.get("detail") or type_.detail, **(recorded.get("extra") or {}))


async def wait_for_check(cs: Careshare, file_id: str, timeout: float) -> StoredFile:
    """The file once its check has ended, or as it is after ``timeout`` seconds (still ``processing``).

    Checks may run in another process, so the row is read again and again (more rarely as the
    wait goes on); a check run in this process wakes its waiters at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0.0)
    pause = 0.02
    while True:
        event = _finished.setdefault(file_id, asyncio.Event())
        async with cs.reader.connect() as conn:
            stored = await _load(conn, file_id)
        if stored is None:
            raise Problem(NOT_FOUND)
        remaining = deadline - loop.time()
        if stored.status != "processing" or remaining <= 0:
            if stored.status != "processing" or not event.is_set():
                _finished.pop(file_id, None)
            return stored
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races its timeout.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(pause, remaining)):
                await event.wait()
        pause = min(pause * 2, 0.5)


async def answer_later(cs: Careshare, file_id: str) -> StoredFile:
    """The uploader is answered before the check ends: have them notified when it does.

    A compare-and-set on ``processing``: if the check ended meanwhile, nothing is flagged and the
    file comes back final, so the caller answers with the outcome instead (never both, never neither).
    """
    async with cs.engine.begin() as conn:
        stored = await _load(conn, file_id, for_update=True)
        if stored is None:
            raise Problem(NOT_FOUND)
        if stored.status == "processing":
            check = {**stored.check, NOTIFY_WHEN_DONE: True}
            await conn.execute(
                sa.update(db.files)
                .where(db.files.c.id == file_id, db.files.c.status == "processing")
                .values(check=check)
            )
            stored = attrs.evolve(stored, check=check)
    return stored


#: Waiters in this process, by file id (set when a check run here ends).
_finished: dict[str, asyncio.Event] = {}


def check_key(file_id: str) -> str:
    return f"check:{file_id}"


@task(CHECK_TASK)
async def check_file(cs: Careshare, *, file_id: str, attempts: int = 1) -> None:
    """The queued check of one file: handler, renditions, then ``ready`` or ``rejected``, exactly once.

    Safe to run again (a worker killed mid-check, a job retried): a file no longer ``processing``
    is left alone, and the status only moves with a compare-and-set, so one run's renditions win.
    On the last attempt an unexpected failure refuses the file rather than leaving it processing.
    """
    try:
        await _check(cs, file_id, attempts)
    except (Problem, RetryLater):  # a scanner that is away: the run does not count, the file waits
        raise
    except Exception as exc:
        if database_out_of_space(exc):  # the database's disk is full: not the file's fault either
            logger.warning("check postponed, database full file=%s", file_id)
            raise RetryLater(LONGEST_STORAGE_WAIT_SECONDS) from None
        if attempts < MAX_ATTEMPTS:
            raise
        logger.error("check given up file=%s error=%s", file_id, type(exc).__name__)
        await _settle(cs, file_id, rejected=Problem(FILE_UNPROCESSABLE))
    finally:
        event = _finished.get(file_id)
        if event is not None:
            event.set()


async def _check(cs: Careshare, file_id: str, attempts: int) -> None:
    async with cs.engine.begin() as conn:
        stored = await _load(conn, file_id, for_update=True)
        if stored is None or stored.status != "processing":
            return
        # Progress for GET /v1/files/{id}: the check has started (and how often it was tried).
        progress = {**stored.check, "state": "checking", "attempt": attempts, "started_at": db.utcnow().isoformat()}
        await conn.execute(
            sa.update(db.files)
            .where(db.files.c.id == file_id, db.files.c.status == "processing")
            .values(check=progress)
        )
    key = await cs.store.held_or_stored(file_id, stored.sha256)
    if key is None:  # cannot happen unless the store lost bytes: say so, never leave it processing
        logger.error("held upload missing file=%s", file_id)
        await _settle(cs, file_id, rejected=Problem(FILE_UNPROCESSABLE))
        return
    started = time.perf_counter()
    original = RenditionRecord(ORIGINAL, stored.media_type, stored.size, stored.sha256)
    try:
        # Malware scanning first: no handler parses bytes a scanner refused or could not check.
        scans = await scanning.scan(cs, stored, key)
        processed, renditions, handler_seconds = await run_handler(cs, stored, key, cs.settings.policy)
    except scanning.ScannerUnavailable as unavailable:
        raise RetryLater(await scanning.note_scanner_wait(cs, file_id, str(unavailable))) from None
    except InsufficientStorage:
        # Not the file's fault: it stays processing and its check runs again once there is room.
        raise RetryLater(await _note_storage_wait(cs, file_id)) from None
    except Problem as problem:
        if await cs.store.held_or_stored(file_id, stored.sha256) != key:
            # Another run of this check promoted the bytes while this one read them: its verdict stands.
            logger.info("check overtaken by another run file=%s", file_id)
            return
        await _settle(cs, file_id, rejected=problem, started=started)
        return
    # Promote before the row says ready: a crash in between leaves a stored blob and a job to retry.
    try:
        await cs.store.promote_held(file_id, stored.sha256)
    except InsufficientStorage:
        raise RetryLater(await _note_storage_wait(cs, file_id)) from None
    check = check_record(processed, original, renditions, started, handler_seconds)
    if scans:
        check["scans"] = scans
    await _settle(cs, file_id, ready=(processed, renditions, check))


async def run_handler(
    cs: Careshare, stored: StoredFile, key: str, policy: Policy, *, missing: ProblemType = UNSUPPORTED_FILE_TYPE
) -> tuple[Processed, list[RenditionRecord], float]:
    """Run the file's handler on the object at ``key`` (its original) and store what it made.

    Returns the handler's outcome, the renditions (the original first) and the seconds the
    handler itself took; a refusal is raised. ``missing`` is raised when no plugin handles the kind.
    """
    original = RenditionRecord(ORIGINAL, stored.media_type, stored.size, stored.sha256)
    with cs.store.workdir() as workdir:
        async with cs.store.local_path(key) as path:
            source = Source(
                path=path,
                sha256=stored.sha256,
                size=stored.size,
                kind=stored.kind,
                media_type=stored.media_type,
                workdir=Path(workdir),
            )
            started = time.perf_counter()
            try:
                processed = await cs.processor.process(source, stored.kind, policy)
            except Problem:
                # A handler whose outputs hit a full disk fails as if the file were bad: it is not.
                if _short_of_space(Path(workdir), stored.size):
                    raise InsufficientStorage from None
                raise
            handler_seconds = time.perf_counter() - started
            if processed is None:
                raise Problem(missing)
            return processed, await store_renditions(cs, processed, original), handler_seconds


#: A handler refusing a file while its work directory's disk has less room than the original plus
#: this is put down to the disk, not the file: the check is tried again later.
_SPACE_MARGIN_BYTES = 1024 * 1024
#: The check state of a file whose check found no room to store its outputs (it stays ``processing``).
WAITING_FOR_STORAGE = "waiting-for-storage"
#: Seconds between two tries while the store is full: 1, 2, 4 ... at most this.
LONGEST_STORAGE_WAIT_SECONDS = 60.0


def _short_of_space(workdir: Path, original_size: int) -> bool:
    """Whether the disk under ``workdir`` lacks room (bytes or inodes) for another copy of the original."""
    try:
        disk = os.statvfs(workdir)
    except OSError:
        return False
    no_inodes = disk.f_files > 0 and disk.f_favail == 0
    return no_inodes or disk.f_bavail * disk.f_frsize < original_size + _SPACE_MARGIN_BYTES


async def _note_storage_wait(cs: Careshare, file_id: str) -> float:
    """Mark a processing file as waiting for room to store its outputs; returns the seconds until it is tried again."""
    try:
        async with cs.engine.begin() as conn:
            row = (
                await conn.execute(sa.select(db.files.c.status, db.files.c.check).where(db.files.c.id == file_id))
            ).first()
            if row is None or row.status != "processing":
                return 0.0
            waits = int(row.check.get("storage_waits") or 0) + 1
            check = {**row.check, "state": WAITING_FOR_STORAGE, "storage_waits": waits}
            await conn.execute(
                sa.update(db.files)
                .where(db.files.c.id == file_id, db.files.c.status == "processing")
                .values(check=check)
            )
    except Exception as exc:  # the database may sit on the full disk too: wait the longest
        logger.warning("could not note a storage wait file=%s error=%s", file_id, type(exc).__name__)
        return LONGEST_STORAGE_WAIT_SECONDS
    delay = min(2.0 ** (waits - 1), LONGEST_STORAGE_WAIT_SECONDS)
    logger.warning("check postponed, storage full file=%s waits=%s retry_in=%s", file_id, waits, delay)
    return delay


async def _settle(
    cs: Careshare,
    file_id: str,
    *,
    ready: tuple[Processed, list[RenditionRecord], dict[str, Any]] | None = None,
    rejected: Problem | None = None,
    started: float | None = None,
) -> None:
    """Move a file out of ``processing`` (compare-and-set) with its outcome and notification."""
    now = db.utcnow()
    async with cs.engine.begin() as conn:
        stored = await _load(conn, file_id, for_update=True)
        if stored is None or stored.status != "processing":
            return
        notify = bool(stored.check.get(NOTIFY_WHEN_DONE))
        if ready is not None:
            processed, renditions, check = ready
            values: dict[str, Any] = {"status": "ready", "metadata": dict(processed.metadata), "check": check}
        else:
            assert rejected is not None
            check = {
                "state": "done",
                **refusal_record(rejected),
                "duration_ms": None if started is None else round((time.perf_counter() - started) * 1000, 1),
            }
            values = {"status": "rejected", "check": check}
        moved = await conn.execute(
            sa.update(db.files).where(db.files.c.id == file_id, db.files.c.status == "processing").values(**values)
        )
        if moved.rowcount != 1:
            return
        if ready is not None:
            await insert_blobs(conn, renditions, now)
            await conn.execute(
                db.renditions.insert(),
                [
                    {"file_id": file_id, "role": r.role, "media_type": r.media_type, "size": r.size, "sha256": r.sha256}
                    for r in renditions
                ],
            )
            # The same bytes may be another file's too (one leaflet uploaded for two patients): when
            # this check found a rendition already stored, an erasure or deletion of that other file
            # may have removed it before these rows held it. Now that they do, nothing can remove it:
            # look once more, and run the check again (it writes them anew) if any went.
            try:
                await confirm_stored(cs, renditions)
            except RenditionsGone:
                logger.warning("renditions removed while the check ran, checking again file=%s", file_id)
                raise RetryLater(0.5) from None
        if notify:
            await _notify_uploader(conn, cs, stored, "file.ready" if ready is not None else "file.rejected")
        if ready is not None and stored.check.get(NOTIFY_CLINIC) and stored.patient_id is not None:
            from careshare.core.notifications import PATIENT_UPLOAD, PATIENT_UPLOAD_TITLE, notify_clinic

            await notify_clinic(
                conn,
                cs.plugins,
                org=stored.org,
                patient_id=stored.patient_id,
                kind=PATIENT_UPLOAD,
                title=PATIENT_UPLOAD_TITLE,
                target=None,
                item_id=stored.id,
                dedupe_key=f"patient.upload:{stored.id}",
            )
    if rejected is not None:
        # After the commit: the row says rejected, so nothing refused is kept (a crash here leaves
        # a held copy that no processing file owns, for the sweep).
        await cs.store.discard(held_key(file_id))


class RenditionsGone(Exception):
    """A rendition a run found already stored was removed (another file's erasure) before its rows held it."""


async def confirm_stored(cs: Careshare, renditions: list[RenditionRecord]) -> None:
    """Inside the transaction that writes rows naming ``renditions``: their bytes are still stored.

    Content is shared by hash: a run that found a rendition already stored (another file's, the
    same bytes) did not write it, and deleting that other file in between may have removed it.
    Once this transaction's rows name it nothing removes it, so one look here settles it; raises
    :class:`RenditionsGone` (roll back, run again) when one went.
    """
    for sha256 in {r.sha256 for r in renditions}:
        if not await cs.store.exists(sha256):
            raise RenditionsGone


async def _notify_uploader(conn: AsyncConnection, cs: Careshare, stored: StoredFile, kind: str) -> None:
    """Tell a patient answered ``202`` how their file's check ended (a title only; never the file or its name)."""
    if stored.source != "patient" or stored.patient_id is None:
        return
    from careshare.core.notifications import enqueue

    title = "Your file was received" if kind == "file.ready" else "Your file could not be accepted"
    await enqueue(
        conn,
        cs.plugins,
        org=stored.org,
        patient_id=stored.patient_id,
        kind=kind,
        title=title,
        target=None,
        item_id=stored.id,
        dedupe_key=f"{kind}:{stored.id}",
    )


async def requeue_stranded(cs: Careshare, *, older_than_seconds: float = 60.0) -> int:
    """Queue the check of every ``processing`` file that has no job (a crash between commit and defer)."""
    cutoff = db.utcnow() - timedelta(seconds=older_than_seconds)
    async with cs.reader.connect() as conn:
        ids = list(
            (
                await conn.execute(
                    sa.select(db.files.c.id).where(db.files.c.status == "processing", db.files.c.created_at < cutoff)
                )
            ).scalars()
        )
    if not ids:
        return 0
    waiting = await cs.jobs.waiting(check_key(i) for i in ids)
    stranded = [i for i in ids if check_key(i) not in waiting]
    for file_id in stranded:
        logger.warning("requeueing the check of a stranded file=%s", file_id)
        await cs.jobs.defer(CHECK_TASK, key=check_key(file_id), file_id=file_id)
    return len(stranded)


async def run_requeue_loop(cs: Careshare, every_seconds: float = 60.0) -> None:
    while True:
        try:
            await requeue_stranded(cs)
        except Exception as exc:
            logger.warning("requeue round failed error=%s", type(exc).__name__)
        await asyncio.sleep(every_seconds)


async def store_renditions(cs: Careshare, processed: Processed, original: RenditionRecord) -> list[RenditionRecord]:
    """The original plus every rendition a handler made, each stored by content (path None: the original's bytes)."""
    renditions = [original]
    for output in processed.renditions:
        if output.path is None:
            renditions.append(RenditionRecord(output.role, original.media_type, original.size, original.sha256))
        else:
            sha256, size = await cs.store.put_file(output.path)
            renditions.append(RenditionRecord(output.role, output.media_type, size, sha256))
    return renditions


def check_record(
    processed: Processed,
    original: RenditionRecord,
    renditions: list[RenditionRecord],
    started: float,
    handler_seconds: float | None = None,
) -> dict[str, Any]:
    """What was checked, by which handler and version, on which bytes, what came out and how long it took.

    ``duration_ms`` runs from the start of the check to its renditions stored (durably);
    ``handler_ms`` is the handler's own part of it.
    """
    return {
        "handler": processed.handler,
        "handler_version": processed.handler_version,
        "input_sha256": original.sha256,
        "outputs": {r.role: r.sha256 for r in renditions},
        "changes": list(processed.changes),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "handler_ms": None if handler_seconds is None else round(handler_seconds * 1000, 1),
        "reason": None,
        "renderable": processed.renderable,
    }


async def replace_renditions(
    conn: AsyncConnection, cs: Careshare, file_id: str, renditions: list[RenditionRecord]
) -> None:
    """Put ``renditions`` in place of a file's renditions; its original stays (rechecks, re-renders).

    Old rendition blobs stay in the store: attachments already sent pin them by hash. Raises
    :class:`RenditionsGone` (from :func:`confirm_stored`) when the caller must run the handler again.
    """
    await insert_blobs(conn, renditions, db.utcnow())
    await conn.execute(
        sa.delete(db.renditions).where(db.renditions.c.file_id == file_id, db.renditions.c.role != ORIGINAL)
    )
    await conn.execute(
        db.renditions.insert(),
        [
            {"file_id": file_id, "role": r.role, "media_type": r.media_type, "size": r.size, "sha256": r.sha256}
            for r in renditions
            if r.role != ORIGINAL
        ],
    )
    await confirm_stored(cs, renditions)


async def insert_blobs(conn: AsyncConnection, renditions: list[RenditionRecord], now: Any) -> None:
    unique = {r.sha256: r.size for r in renditions}
    existing = set((await conn.execute(sa.select(db.blobs.c.sha256).where(db.blobs.c.sha256.in_(unique)))).scalars())
    new = [{"sha256": h, "size": s, "created_at": now} for h, s in unique.items() if h not in existing]
    if new:
        await conn.execute(db.insert_ignore(conn, db.blobs), new)


async def discard_new_files(cs: Careshare, file_ids: list[str]) -> None:
    """Undo ``ingest`` for files a refused request stored: their rows, and blobs nothing else uses.

    For all-or-nothing requests (a message with several uploads, one refused). A file something
    already refers to (an attachment) is kept. Blob objects go inside the transaction, so on SQLite
    no upload of the same bytes can slip in between the check and the delete.
    """
    if not file_ids:
        return
    await db.again_if_raced(lambda: _discard(cs, file_ids))  # an upload may name a blob meanwhile


async def _discard(cs: Careshare, file_ids: list[str]) -> None:
    async with cs.engine.begin() as conn:
        attached = sa.select(db.attachments.c.file_id).where(db.attachments.c.file_id.in_(file_ids))
        doomed = list(
            (
                await conn.execute(
                    sa.select(db.files.c.id).where(db.files.c.id.in_(file_ids), db.files.c.id.not_in(attached))
                )
            ).scalars()
        )
        if not doomed:
            return
        hashes = set(
            (await conn.execute(sa.select(db.renditions.c.sha256).where(db.renditions.c.file_id.in_(doomed)))).scalars()
        )
        hashes |= set((await conn.execute(sa.select(db.files.c.sha256).where(db.files.c.id.in_(doomed)))).scalars())
        await conn.execute(sa.delete(db.renditions).where(db.renditions.c.file_id.in_(doomed)))
        await conn.execute(sa.delete(db.files).where(db.files.c.id.in_(doomed)))
        used: set[str] = set()
        for column in (db.files.c.sha256, db.renditions.c.sha256, db.attachments.c.sha256):
            used |= set((await conn.execute(sa.select(column).where(column.in_(hashes)).distinct())).scalars())
        unused = sorted(hashes - used)
        if unused:
            await conn.execute(sa.delete(db.blobs).where(db.blobs.c.sha256.in_(unused)))
            for sha256 in unused:
                await cs.store.discard(content_key(sha256))
        for file_id in doomed:  # a file whose check had not ended still holds its upload
            await cs.store.discard(held_key(file_id))


async def _insert_file(conn: AsyncConnection, stored: StoredFile) -> None:
    await conn.execute(
        db.files.insert().values(
            id=stored.id,
            org_id=stored.org,
            owner_type=stored.owner_type,
            patient_id=stored.patient_id,
            filename=stored.filename,
            name_key=fold(stored.filename),
            kind=stored.kind,
            media_type=stored.media_type,
            size=stored.size,
            sha256=stored.sha256,
            status=stored.status,
            source=stored.source,
            metadata=stored.metadata,
            check=stored.check,
            uploaded_by=stored.uploaded_by,
            created_at=stored.created_at,
        )
    )
    if stored.renditions:
        await conn.execute(
            db.renditions.insert(),
            [
                {"file_id": stored.id, "role": r.role, "media_type": r.media_type, "size": r.size, "sha256": r.sha256}
                for r in stored.renditions
            ],
        )


def _row_to_file(row: sa.Row[Any], renditions: list[RenditionRecord]) -> StoredFile:
    return StoredFile(
        id=row.id,
        org=row.org_id,
        owner_type=row.owner_type,
        patient_id=row.patient_id,
        filename=row.filename,
        kind=row.kind,
        media_type=row.media_type,
        size=row.size,
        sha256=row.sha256,
        status=row.status,
        source=row.source,
        metadata=row.metadata,
        check=row.check,
        renditions=tuple(renditions),
        uploaded_by=row.uploaded_by,
        created_at=row.created_at,
        seen_at=row.seen_at,
    )


async def _with_renditions(conn: AsyncConnection, rows: list[sa.Row[Any]]) -> list[StoredFile]:
    by_file: dict[str, list[RenditionRecord]] = {row.id: [] for row in rows}
    if by_file:
        result = await conn.execute(
            sa.select(db.renditions).where(db.renditions.c.file_id.in_(by_file)).order_by(db.renditions.c.role)
        )
        for r in result:
            by_file[r.file_id].append(RenditionRecord(r.role, r.media_type, r.size, r.sha256))
    return [_row_to_file(row, by_file[row.id]) for row in rows]


async def _load(conn: AsyncConnection, file_id: str, *, for_update: bool = False) -> StoredFile | None:
    query = sa.select(db.files).where(db.files.c.id == file_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else (await _with_renditions(conn, [row]))[0]


async def get_file(conn: AsyncConnection, principal: Principal, file_id: str) -> StoredFile:
    """The file if ``principal`` may see it; otherwise ``not-found`` (existence is never leaked).

    A clinician sees every file of their organisation. A patient sees the files they uploaded
    themselves; what the clinic shares with them they read through the items that carry it.
    """
    query = sa.select(db.files).where(
        db.files.c.id == file_id, db.files.c.org_id == principal.org, db.files.c.deleted_at.is_(None)
    )
    if not principal.is_clinician:
        query = query.where(db.files.c.patient_id == principal.patient, db.files.c.source == "patient")
    row = (await conn.execute(query)).first()
    if row is None:
        raise Problem(NOT_FOUND)
    return (await _with_renditions(conn, [row]))[0]


@attrs.frozen
class FileSearch:
    """What a file list is narrowed to; every field left at its default narrows nothing.

    ``name`` matches a part of the file name, ignoring case in every script (as patient search
    does); ``since`` is inclusive and ``before`` exclusive, both compared with when the file arrived.
    """

    name: str = ""
    kind: str | None = None
    status: str | None = None
    source: str | None = None
    unseen: bool = False
    since: datetime | None = None
    before: datetime | None = None


async def list_files(
    conn: AsyncConnection,
    principal: Principal,
    *,
    owner_type: Literal["patient", "library"],
    patient_id: str | None,
    search: FileSearch = FileSearch(),
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[StoredFile], str | None]:
    """A page of the files ``search`` matches, newest first, and the cursor of the next page (None at the end).

    A patient's list holds only what they sent themselves (``source`` ``patient``): the clinic's
    files for them reach them shared, as attachments, never through their file list.
    """
    query = sa.select(db.files).where(
        db.files.c.org_id == principal.org,
        db.files.c.owner_type == owner_type,
        db.files.c.patient_id.is_(None) if patient_id is None else db.files.c.patient_id == patient_id,
        db.files.c.deleted_at.is_(None),
    )
    if not principal.is_clinician:
        query = query.where(db.files.c.source == "patient", db.files.c.patient_id == principal.patient)
    wanted = fold(search.name.strip())
    if wanted:
        query = query.where(db.files.c.name_key.like(like_pattern(wanted), escape="\\"))
    for column, value in (
        (db.files.c.kind, search.kind),
        (db.files.c.status, search.status),
        (db.files.c.source, search.source),
    ):
        if value is not None:
            query = query.where(column == value)
    if search.unseen:
        query = query.where(db.files.c.seen_at.is_(None))
    if search.since is not None:
        query = query.where(db.files.c.created_at >= search.since)
    if search.before is not None:
        query = query.where(db.files.c.created_at < search.before)
    rows, next_cursor = await db.newest_first(conn, query, db.files.c.id, cursor=cursor, limit=limit)
    return await _with_renditions(conn, rows), next_cursor


async def mark_seen(conn: AsyncConnection, principal: Principal, file_id: str) -> StoredFile:
    """A clinician has looked at a file the patient sent: it is no longer new (idempotent)."""
    stored = await get_file(conn, principal, file_id)
    if stored.seen_at is None:
        now = db.utcnow()
        await conn.execute(
            sa.update(db.files).where(db.files.c.id == file_id).values(seen_at=now, seen_by=principal.subject)
        )
        await record_event(conn, principal, "file.seen", patient_id=stored.patient_id, file_id=file_id)
        stored = attrs.evolve(stored, seen_at=now)
    return stored
