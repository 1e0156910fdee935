"""Resumable uploads (the tus model without HTTP): create, append at an offset, finish through ingest.

The bytes received so far live in ``<data dir>/uploads/<id>`` on local disk, whatever the blob
store: a partial file is appended to in place and only its finished bytes go to the store. The
``uploads`` row's ``offset`` is the truth; bytes past it in the partial file are leftovers of an
unfinished append, cut off before the next one. Only one request works on an upload at a time
(``flock`` on its partial file); a new request for the upload asks an in-process holder to let go,
so a phone resuming after a dead connection does not wait for the server to notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.filenames import sanitise_filename
from careshare.core.files import accept, answer_later, refusal, wait_for_check
from careshare.core.ids import new_id
from careshare.core.problems import NOT_FOUND, UPLOAD_EMPTY, UPLOAD_TOO_LARGE, Problem, ProblemType

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator
    from datetime import datetime
    from pathlib import Path

    from careshare.core.models import Principal, StoredFile
    from careshare.core.runtime import Careshare

__all__ = [
    "UPLOAD_CHECKSUM_MISMATCH",
    "UPLOAD_EXPIRED",
    "UPLOAD_LENGTH_EXCEEDED",
    "UPLOAD_LOCKED",
    "UPLOAD_OFFSET_MISMATCH",
    "ResumableUpload",
    "append",
    "create",
    "get_upload",
    "partial_path",
    "run_sweeper",
    "settle",
    "sweep",
    "terminate",
]

logger = logging.getLogger(__name__)

#: Finished bytes are read back for ingest, and received bytes written, in blocks of this size.
BLOCK_BYTES = 1024 * 1024
#: How long a request waits for another request on the same upload (another process) to finish.
LOCK_WAIT_SECONDS = 10.0
#: A PATCH that receives nothing for this long is treated as a broken connection.
READ_IDLE_SECONDS = 300.0
#: Client metadata kept to echo on HEAD (the tus ``Upload-Metadata`` header), at most this long.
MAX_METADATA_CHARS = 4096
#: Partial files with no row (a crash between two steps) go once they are this old.
ORPHAN_AGE_SECONDS = 3600.0

UPLOAD_OFFSET_MISMATCH = ProblemType(
    "upload-offset-mismatch",
    409,
    "Upload offset does not match",
    "The upload is at a different offset than this request says. Ask for the current offset (HEAD) and resume there.",
)
UPLOAD_CHECKSUM_MISMATCH = ProblemType(
    "upload-checksum-mismatch",
    460,
    "Checksum mismatch",
    "The bytes received do not match the checksum sent with them, so they were discarded. Send this part again.",
)
UPLOAD_EXPIRED = ProblemType(
    "upload-expired",
    410,
    "Upload expired",
    "This upload waited too long for its remaining bytes and has expired. Start a new upload.",
)
UPLOAD_LENGTH_EXCEEDED = ProblemType(
    "upload-length-exceeded",
    413,
    "More bytes than announced",
    "This request carries bytes beyond the length announced when the upload was created. Send only what remains.",
)
UPLOAD_LOCKED = ProblemType(
    "upload-locked",
    423,
    "Upload busy",
    "Another request is still writing to this upload. Wait a moment, ask for the current offset and resume.",
)

Source = Literal["clinic", "patient"]


@attrs.frozen
class ResumableUpload:
    """An upload in progress (or just finished): how far it got and where its file goes."""

    id: str
    org: str
    patient_id: str
    created_by: str
    created_by_role: str
    length: int
    offset: int
    filename: str | None
    metadata: str | None
    source: Source
    file_id: str | None
    created_at: datetime
    expires_at: datetime

    @property
    def finished(self) -> bool:
        return self.file_id is not None

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def partial_path(cs: Careshare, upload_id: str) -> Path:
    return cs.settings.data_dir / "uploads" / upload_id


def _create_durably(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the name survives a power cut as surely as the row that refers to it
    finally:
        os.close(folder)


def _row_to_upload(row: sa.Row[Any]) -> ResumableUpload:
    purpose = row.purpose or {}
    return ResumableUpload(
        id=row.id,
        org=row.org_id,
        patient_id=row.patient_id,
        created_by=row.created_by,
        created_by_role=row.created_by_role,
        length=row.length,
        offset=row.offset,
        filename=row.filename,
        metadata=purpose.get("metadata"),
        source=purpose.get("source", "patient" if row.created_by_role == "patient" else "clinic"),
        file_id=row.file_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def _expiry(cs: Careshare, now: datetime) -> datetime:
    return now + timedelta(seconds=cs.settings.upload_expiry_seconds)


async def create(
    cs: Careshare,
    principal: Principal,
    *,
    patient_id: str,
    length: int,
    filename: str | None = None,
    metadata: str | None = None,
) -> ResumableUpload:
    """A new empty upload of ``length`` bytes for the patient's files (the caller checked the patient).

    A patient's finished file has source ``patient``, a clinician's ``clinic``. ``metadata`` is the
    client's own description, kept only to be echoed back.
    """
    limit = cs.settings.max_upload_bytes
    if length > limit:
        raise Problem(
            UPLOAD_TOO_LARGE,
            f"The file is larger than the {limit:,} bytes this server accepts. Send a smaller file.",
            limit=limit,
        )
    if length <= 0:
        raise Problem(UPLOAD_EMPTY)
    source: Source = "clinic" if principal.is_clinician else "patient"
    upload_id, now = new_id(), db.utcnow()
    path = partial_path(cs, upload_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file first: a crash before the row leaves an orphan the sweep removes, never a row without bytes.
    await asyncio.to_thread(_create_durably, path)
    upload = ResumableUpload(
        id=upload_id,
        org=principal.org,
        patient_id=patient_id,
        created_by=principal.subject,
        created_by_role=principal.role,
        length=length,
        offset=0,
        filename=sanitise_filename(filename) if filename else None,
        metadata=metadata[:MAX_METADATA_CHARS] if metadata else None,
        source=source,
        file_id=None,
        created_at=now,
        expires_at=_expiry(cs, now),
    )
    try:
        async with cs.engine.begin() as conn:
            await conn.execute(
                db.uploads.insert().values(
                    id=upload.id,
                    org_id=upload.org,
                    patient_id=upload.patient_id,
                    created_by=upload.created_by,
                    created_by_role=upload.created_by_role,
                    length=upload.length,
                    offset=0,
                    filename=upload.filename,
                    purpose={"files": "patient", "source": source, "metadata": upload.metadata},
                    file_id=None,
                    created_at=now,
                    expires_at=upload.expires_at,
                )
            )
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return upload


async def _load(cs: Careshare, principal: Principal, upload_id: str, patient_id: str) -> ResumableUpload:
    # Patients reach their own uploads; clinicians their organisation's, for that patient.
    if not principal.is_clinician and principal.patient != patient_id:
        raise Problem(NOT_FOUND)
    query = sa.select(db.uploads).where(
        db.uploads.c.id == upload_id,
        db.uploads.c.org_id == principal.org,
        db.uploads.c.patient_id == patient_id,
        db.uploads.c.created_by_role == principal.role,
    )
    async with cs.reader.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise Problem(NOT_FOUND)
    return _row_to_upload(row)


async def get_upload(cs: Careshare, principal: Principal, upload_id: str, *, patient_id: str) -> ResumableUpload:
    """The upload as recorded, without waiting for a request that is writing to it (a status read)."""
    upload = await _load(cs, principal, upload_id, patient_id)
    if upload.expired(db.utcnow()):
        raise Problem(UPLOAD_EXPIRED)
    return upload


# -- one request at a time per upload ---------------------------------------------------------------

#: The stop signal of the request holding each upload in this process.
_holders: dict[str, asyncio.Event] = {}


@contextlib.asynccontextmanager
async def _exclusive(cs: Careshare, upload_id: str) -> AsyncIterator[tuple[int | None, asyncio.Event]]:
    """Hold the upload: its partial file open and ``flock``-ed (None once finished or removed).

    A holder in this process is asked to stop at once (its client has most likely gone: a phone
    resumes only after its connection failed); one in another process is waited for, then 423.
    """
    try:
        fd: int | None = os.open(partial_path(cs, upload_id), os.O_RDWR)
    except FileNotFoundError:
        fd = None
    stop = asyncio.Event()
    if fd is None:
        yield None, stop
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holders.get(upload_id)
                if holder is not None:
                    holder.set()
                if time.monotonic() > deadline:
                    raise Problem(UPLOAD_LOCKED) from None
                await asyncio.sleep(0.02)
        _holders[upload_id] = stop
        try:
            yield fd, stop
        finally:
            if _holders.get(upload_id) is stop:
                del _holders[upload_id]
    finally:
        os.close(fd)  # releases the flock


async def settle(cs: Careshare, principal: Principal, upload_id: str, *, patient_id: str) -> ResumableUpload:
    """The upload once no request is writing to it: the offset to resume from (tus HEAD)."""
    await _load(cs, principal, upload_id, patient_id)
    async with _exclusive(cs, upload_id):
        return await get_upload(cs, principal, upload_id, patient_id=patient_id)


# -- appending ----------------------------------------------------------------------------------------


class _Received:
    """Chunks of one request, stopped early when another request takes over the upload or it stalls."""

    def __init__(self, chunks: AsyncIterable[bytes], stop: asyncio.Event) -> None:
        self.chunks = aiter(chunks)
        self.stop = stop
        self.interrupted = False

    async def next(self) -> bytes | None:
        """The next chunk, or None at the end of the body or when told to stop."""
        if self.stop.is_set():
            self.interrupted = True
            return None
        reading = asyncio.ensure_future(anext(self.chunks, None))
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait({reading, stopping}, timeout=READ_IDLE_SECONDS, return_when="FIRST_COMPLETED")
        finally:
            stopping.cancel()
        if reading in done:
            try:
                return reading.result()
            except Exception as exc:  # the body could not be read to its end: a broken connection
                logger.info("upload body ended early error=%s", type(exc).__name__)
                self.interrupted = True
                return None
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reading
        self.interrupted = True
        return None


def _write_at(fd: int, position: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        position += written
        view = view[written:]


async def append(
    cs: Careshare,
    principal: Principal,
    upload_id: str,
    *,
    patient_id: str,
    offset: int,
    chunks: AsyncIterable[bytes],
    sha256: bytes | None = None,
    declared: int | None = None,
    wait: float = 0.0,
) -> tuple[ResumableUpload, StoredFile | None]:
    """Add the bytes of one request at ``offset``; the last ones finish the upload (``accept``).

    The request that finishes it waits up to ``wait`` seconds for the file's check: a refusal by
    then is raised (the file's row stays ``rejected``), a check still running finishes on its own.

    With ``sha256`` (the digest of exactly this request's bytes) nothing is kept unless the whole
    body arrived and matches. Without it, a body cut short (the connection broke, or a newer
    request took over) keeps what arrived: those bytes are the client's, in order. Bytes are
    written and fsynced before the offset moves, and the offset reaches the length only once the
    file is stored (so a client never sees a finished upload whose file is missing). A refusal of
    the finished file removes the upload: nothing of it stays stored. ``declared`` (the request's
    Content-Length) lets a body too long for the upload be refused before it is read.
    """
    await _load(cs, principal, upload_id, patient_id)
    async with _exclusive(cs, upload_id) as (fd, stop):
        upload = await get_upload(cs, principal, upload_id, patient_id=patient_id)
        if fd is None or upload.finished or offset != upload.offset:
            raise Problem(
                UPLOAD_OFFSET_MISMATCH,
                f"The upload is at offset {upload.offset}, not {offset}. Resume from {upload.offset}.",
                offset=upload.offset,
            )
        if declared is not None and offset + declared > upload.length:
            raise _exceeded(upload)
        received = _Received(chunks, stop)
        digest = hashlib.sha256() if sha256 is not None else None
        position, block, held = offset, bytearray(), 0
        # Whatever an earlier, interrupted request left beyond the offset is not part of the upload.
        await asyncio.to_thread(os.ftruncate, fd, offset)
        while (chunk := await received.next()) is not None:
            if position + held + len(chunk) > upload.length:
                raise _exceeded(upload)
            if digest is not None:
                digest.update(chunk)
            block += chunk
            held += len(chunk)
            if held >= BLOCK_BYTES:
                await asyncio.to_thread(_write_at, fd, position, bytes(block))
                position, block, held = position + held, bytearray(), 0
        if digest is not None and received.interrupted:
            return upload, None  # an incomplete body cannot be checked against its checksum: nothing kept
        if block:
            await asyncio.to_thread(_write_at, fd, position, bytes(block))
            position += held
        if digest is not None and digest.digest() != sha256:
            raise Problem(UPLOAD_CHECKSUM_MISMATCH, offset=upload.offset)
        await asyncio.to_thread(os.fsync, fd)
        if position == upload.length:
            return await _finish(cs, principal, upload, fd, wait)
        if position == offset:
            return upload, None
        return await _advance(cs, upload, position), None


def _exceeded(upload: ResumableUpload) -> Problem:
    return Problem(
        UPLOAD_LENGTH_EXCEEDED,
        f"The upload is {upload.length} bytes long and at offset {upload.offset}:"
        f" send at most {upload.length - upload.offset} more bytes.",
        offset=upload.offset,
    )


async def _advance(
    cs: Careshare, upload: ResumableUpload, position: int, file_id: str | None = None
) -> ResumableUpload:
    now = db.utcnow()
    expires_at = _expiry(cs, now)  # every step forward gives a slow phone the full time again
    async with cs.engine.begin() as conn:
        result = await conn.execute(
            sa.update(db.uploads)
            .where(db.uploads.c.id == upload.id, db.uploads.c.offset == upload.offset)
            .values(offset=position, file_id=file_id, expires_at=expires_at)
        )
        if result.rowcount != 1:
            raise Problem(UPLOAD_OFFSET_MISMATCH)
    return attrs.evolve(upload, offset=position, file_id=file_id, expires_at=expires_at)


async def _read_back(fd: int, length: int) -> AsyncIterator[bytes]:
    position = 0
    while position < length:
        block = await asyncio.to_thread(os.pread, fd, min(BLOCK_BYTES, length - position), position)
        if not block:
            raise OSError("the partial upload file is shorter than its offset")
        position += len(block)
        yield block


async def _finish(
    cs: Careshare, principal: Principal, upload: ResumableUpload, fd: int, wait: float
) -> tuple[ResumableUpload, StoredFile]:
    try:
        stored = await accept(
            cs,
            _read_back(fd, upload.length),
            principal=principal,
            owner_type="patient",
            patient_id=upload.patient_id,
            source=upload.source,
            filename=upload.filename,
        )
    except Problem:
        await _remove(cs, upload.id)  # refused for good: the same bytes would be refused again
        raise
    finished = await _advance(cs, upload, upload.length, file_id=stored.id)
    with contextlib.suppress(FileNotFoundError):
        partial_path(cs, upload.id).unlink()
    done = await wait_for_check(cs, stored.id, wait)
    if done.status == "processing":
        done = await answer_later(cs, done.id)
    if done.status == "rejected":
        await _remove(cs, upload.id)
        problem = refusal(done)
        problem.extra["file_id"] = done.id
        raise problem
    return finished, done


async def _remove(cs: Careshare, upload_id: str) -> None:
    # The row first: a crash in between leaves an orphan file for the sweep, never a row without bytes.
    async with cs.engine.begin() as conn:
        await conn.execute(sa.delete(db.uploads).where(db.uploads.c.id == upload_id))
    with contextlib.suppress(FileNotFoundError):
        partial_path(cs, upload_id).unlink()


async def terminate(cs: Careshare, principal: Principal, upload_id: str, *, patient_id: str) -> None:
    """Remove an upload and its bytes (tus termination); a finished upload's file stays."""
    await _load(cs, principal, upload_id, patient_id)
    async with _exclusive(cs, upload_id):
        await _load(cs, principal, upload_id, patient_id)
        await _remove(cs, upload_id)


# -- expiry ---------------------------------------------------------------------------------------------


async def sweep(cs: Careshare, now: datetime | None = None) -> int:
    """Remove expired uploads and their partial files, and partial files no row knows; returns how many.

    An expired upload a request is still writing to stays for the next round.
    """
    now = now or db.utcnow()
    async with cs.reader.connect() as conn:
        expired = list((await conn.execute(sa.select(db.uploads.c.id).where(db.uploads.c.expires_at <= now))).scalars())
    removed = 0
    for upload_id in expired:
        path = partial_path(cs, upload_id)
        try:
            fd: int | None = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
            async with cs.engine.begin() as conn:
                result = await conn.execute(
                    sa.delete(db.uploads).where(db.uploads.c.id == upload_id, db.uploads.c.expires_at <= now)
                )
            if result.rowcount != 1:
                continue  # a PATCH moved it on (and its expiry) since we looked
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed += 1
        finally:
            if fd is not None:
                os.close(fd)
    removed += await _sweep_orphans(cs)
    return removed


async def _sweep_orphans(cs: Careshare) -> int:
    folder = cs.settings.data_dir / "uploads"
    cutoff = time.time() - ORPHAN_AGE_SECONDS
    old = []
    for entry in folder.glob("*") if folder.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime < cutoff:
                old.append(entry)
    if not old:
        return 0
    async with cs.reader.connect() as conn:
        known = set(
            (await conn.execute(sa.select(db.uploads.c.id).where(db.uploads.c.id.in_([p.name for p in old])))).scalars()
        )
    removed = 0
    for entry in old:
        if entry.name not in known:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
    return removed


def sweep_interval(cs: Careshare) -> float:
    """How often the host sweeps: ten minutes, or more often when uploads expire sooner."""
    return min(600.0, max(1.0, cs.settings.upload_expiry_seconds / 4))


async def run_sweeper(cs: Careshare, interval: float | None = None) -> None:
    """Sweep expired uploads now and then every ``interval`` seconds until cancelled."""
    while True:
        try:
            removed = await sweep(cs)
            if removed:
                logger.info("swept expired uploads count=%d", removed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be briefly unavailable: try again next round
            logger.warning("upload sweep failed error=%s", type(exc).__name__)
        await asyncio.sleep(interval or sweep_interval(cs))
