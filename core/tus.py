"""Resumable uploads (the tus model without HTTP): create, append at an offset, finish through ingest.

Any API process may serve any request: they share only the database and the blob store. Each
PATCH streams its body into one part object, ``uploads/<id>/<offset as 20 digits>``; finishing
walks the parts from offset 0 by their sizes into ingest. The ``uploads`` row's ``offset`` is the
truth: a part counts once the offset moves past it (compare-and-set, after the part is stored),
and a part at the current offset is a leftover that the next PATCH there overwrites. One request
works on an upload at a time: it holds a lease in the row (``holder``, ``held_until``, renewed as
it goes) and watches the row; a newer request writes its token into ``takeover``, and the holder
stops reading its body and lets go, so a phone resuming after a dead connection does not wait for
the server to notice. A holder that died lets its lease lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.filenames import sanitise_filename
from careshare.core.files import accept, answer_later, refusal, wait_for_check
from careshare.core.ids import new_id
from careshare.core.problems import NOT_FOUND, UPLOAD_EMPTY, Problem, ProblemType, upload_too_large

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator
    from datetime import datetime

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
    "part_key",
    "parts_prefix",
    "run_sweeper",
    "settle",
    "sweep",
    "terminate",
]

logger = logging.getLogger(__name__)

#: How long a request waits for another request on the same upload to let go, before 423.
LOCK_WAIT_SECONDS = 10.0
#: A holder's lease: shorter than the wait, so a request waiting on a dead holder still gets the upload.
LEASE_SECONDS = 8.0
#: How often a holder renews its lease.
RENEW_SECONDS = 2.0
#: How often a holder looks for a newer request, and a waiting request for a free upload.
POLL_SECONDS = 0.2
#: A PATCH that receives nothing for this long is treated as a broken connection.
READ_IDLE_SECONDS = 300.0
#: Client metadata kept to echo on HEAD (the tus ``Upload-Metadata`` header), at most this long.
MAX_METADATA_CHARS = 4096
#: Parts with no row (a crash between two steps) go once the newest of an upload is this old.
ORPHAN_AGE_SECONDS = 3600.0
#: Where the parts of every upload live in the blob store.
PARTS_ROOT = "uploads/"

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


def parts_prefix(upload_id: str) -> str:
    """The blob store folder holding an upload's parts."""
    return f"{PARTS_ROOT}{upload_id}/"


def part_key(upload_id: str, offset: int) -> str:
    """The part a PATCH at ``offset`` writes (zero-padded: keys sort in offset order)."""
    return f"{parts_prefix(upload_id)}{offset:020d}"


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
        raise upload_too_large(limit)
    if length <= 0:
        raise Problem(UPLOAD_EMPTY)
    source: Source = "clinic" if principal.is_clinician else "patient"
    upload_id, now = new_id(), db.utcnow()
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


# -- one request at a time per upload, in whichever process ------------------------------------------


@attrs.define
class _Lease:
    """A request's hold on an upload: ``stop`` is set when a newer request asks for it or the lease is lost."""

    token: str
    stop: asyncio.Event = attrs.field(factory=asyncio.Event)
    lost: bool = False

    def lose(self) -> None:
        self.lost = True
        self.stop.set()


def _free(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(db.uploads.c.holder.is_(None), db.uploads.c.held_until.is_(None), db.uploads.c.held_until < now)


async def _acquire(cs: Careshare, upload_id: str, token: str) -> bool:
    """Take the upload's lease (False: there is no such upload), asking a holder to let go; 423 if it will not."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    asked: str | None = None  # the holder we asked to let go
    while True:
        async with cs.reader.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(db.uploads.c.holder, db.uploads.c.held_until).where(db.uploads.c.id == upload_id)
                )
            ).first()
        if row is None:
            return False
        now = db.utcnow()
        if row.holder is None or row.held_until is None or row.held_until < now:
            async with cs.engine.begin() as conn:
                taken = await conn.execute(
                    sa.update(db.uploads)
                    .where(db.uploads.c.id == upload_id, _free(now))
                    .values(holder=token, held_until=now + timedelta(seconds=LEASE_SECONDS), takeover=None)
                )
            if taken.rowcount == 1:
                if row.holder is not None:
                    logger.warning("taking over an upload whose lease lapsed")
                return True
        elif asked != row.holder:
            # Its client has most likely gone: a phone resumes only after its connection failed.
            async with cs.engine.begin() as conn:
                await conn.execute(
                    sa.update(db.uploads)
                    .where(db.uploads.c.id == upload_id, db.uploads.c.holder == row.holder)
                    .values(takeover=token)
                )
            asked = row.holder
        if time.monotonic() > deadline:
            raise Problem(UPLOAD_LOCKED)
        await asyncio.sleep(POLL_SECONDS / 4)


async def _watch(cs: Careshare, upload_id: str, lease: _Lease) -> None:
    """Renew the lease and look for a newer request, until cancelled; a lease not renewed in time is lost."""
    mine = sa.and_(db.uploads.c.id == upload_id, db.uploads.c.holder == lease.token)
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            if time.monotonic() - renewed >= RENEW_SECONDS:
                started = time.monotonic()
                async with cs.engine.begin() as conn:
                    result = await conn.execute(
                        sa.update(db.uploads)
                        .where(mine)
                        .values(held_until=db.utcnow() + timedelta(seconds=LEASE_SECONDS))
                    )
                if result.rowcount != 1:
                    lease.lose()  # the row is gone, or another request took it after our lease lapsed
                    return
                renewed = started
            async with cs.reader.connect() as conn:
                row = (await conn.execute(sa.select(db.uploads.c.takeover).where(mine))).first()
            if row is None:
                lease.lose()
                return
            if row.takeover is not None:
                lease.stop.set()
        except Exception as exc:  # the database is briefly away: keep trying while the lease lasts
            logger.warning("upload lease renewal failed error=%s", type(exc).__name__)
        if time.monotonic() - renewed > LEASE_SECONDS - RENEW_SECONDS:
            lease.lose()  # stop before the lease lapses: another request may take the upload then
            return


async def _release(cs: Careshare, upload_id: str, token: str) -> None:
    try:
        async with cs.engine.begin() as conn:
            await conn.execute(
                sa.update(db.uploads)
                .where(db.uploads.c.id == upload_id, db.uploads.c.holder == token)
                .values(holder=None, held_until=None)
            )
    except Exception as exc:  # the lease lapses on its own
        logger.warning("upload lease release failed error=%s", type(exc).__name__)


@contextlib.asynccontextmanager
async def _exclusive(cs: Careshare, upload_id: str) -> AsyncIterator[_Lease | None]:
    """Hold the upload (None: there is no such upload) until the block ends; see ``_acquire``."""
    token = new_id()
    if not await _acquire(cs, upload_id, token):
        yield None
        return
    lease = _Lease(token)
    watcher = asyncio.create_task(_watch(cs, upload_id, lease))
    try:
        yield lease
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await asyncio.shield(_release(cs, upload_id, token))


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


class _NotKept(Exception):
    """Raised at the end of a body whose part must not be stored (the store then keeps nothing)."""


async def _body(
    received: _Received, upload: ResumableUpload, lease: _Lease, sha256: bytes | None
) -> AsyncIterator[bytes]:
    """The request's bytes as they arrive, refused as soon as they run past the length; see ``append``."""
    digest = hashlib.sha256() if sha256 is not None else None
    position = upload.offset
    while (chunk := await received.next()) is not None:
        position += len(chunk)
        if position > upload.length:
            raise _exceeded(upload)
        if digest is not None:
            digest.update(chunk)
        yield chunk
    if digest is not None and received.interrupted:
        raise _NotKept  # an incomplete body cannot be checked against its checksum
    if digest is not None and digest.digest() != sha256:
        raise Problem(UPLOAD_CHECKSUM_MISMATCH, offset=upload.offset)
    if lease.lost:
        raise _NotKept  # another request may own the upload now: its part, not ours


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
    request took over) keeps what arrived: those bytes are the client's, in order. The part is
    stored (fsynced, or the bucket's put complete) before the offset moves, and the offset reaches
    the length only once the file is stored (so a client never sees a finished upload whose file
    is missing). A refusal of the finished file removes the upload: nothing of it stays stored.
    ``declared`` (the request's Content-Length) lets a body too long for the upload be refused
    before it is read.
    """
    await _load(cs, principal, upload_id, patient_id)
    async with _exclusive(cs, upload_id) as lease:
        upload = await get_upload(cs, principal, upload_id, patient_id=patient_id)
        if lease is None or upload.finished or offset != upload.offset:
            raise Problem(
                UPLOAD_OFFSET_MISMATCH,
                f"The upload is at offset {upload.offset}, not {offset}. Resume from {upload.offset}.",
                offset=upload.offset,
            )
        if declared is not None and offset + declared > upload.length:
            raise _exceeded(upload)
        body = _body(_Received(chunks, lease.stop), upload, lease, sha256)
        try:
            # Overwrites whatever an earlier, interrupted request left at this offset: never part of the upload.
            size = await cs.store.put_part(part_key(upload.id, offset), body)
        except _NotKept:
            return upload, None
        if size == 0:
            return upload, None
        if offset + size < upload.length:
            return await _advance(cs, upload, offset + size, holder=lease.token), None
        finished = await _finish(cs, principal, upload)
    return await _answer(cs, finished, wait)


def _exceeded(upload: ResumableUpload) -> Problem:
    return Problem(
        UPLOAD_LENGTH_EXCEEDED,
        f"The upload is {upload.length} bytes long and at offset {upload.offset}:"
        f" send at most {upload.length - upload.offset} more bytes.",
        offset=upload.offset,
    )


async def _advance(
    cs: Careshare, upload: ResumableUpload, position: int, *, holder: str | None = None, file_id: str | None = None
) -> ResumableUpload:
    now = db.utcnow()
    expires_at = _expiry(cs, now)  # every step forward gives a slow phone the full time again
    moved = db.uploads.c.offset == upload.offset
    if holder is not None:
        moved = sa.and_(moved, db.uploads.c.holder == holder)
    async with cs.engine.begin() as conn:
        result = await conn.execute(
            sa.update(db.uploads)
            .where(db.uploads.c.id == upload.id, moved)
            .values(offset=position, file_id=file_id, expires_at=expires_at)
        )
        if result.rowcount != 1:
            raise Problem(UPLOAD_OFFSET_MISMATCH)
    return attrs.evolve(upload, offset=position, file_id=file_id, expires_at=expires_at)


async def _parts(cs: Careshare, upload: ResumableUpload) -> list[str]:
    """The keys of the upload's parts in order, from offset 0 by each part's size to the length.

    A gap (a part lost from the store) moves the offset back to where the parts still join up,
    and the client is told to resume there: nothing stored out of order.
    """
    sizes = {meta["path"]: meta["size"] for meta in await cs.store.list_prefix(parts_prefix(upload.id))}
    keys, position = [], 0
    while position < upload.length:
        key = part_key(upload.id, position)
        size = sizes.get(key, 0)
        if size <= 0 or position + size > upload.length:
            logger.warning("upload parts do not join up: resuming from an earlier offset")
            await _advance(cs, upload, position)
            raise Problem(
                UPLOAD_OFFSET_MISMATCH,
                f"Some bytes of this upload were lost. Resume from {position}.",
                offset=position,
            )
        keys.append(key)
        position += size
    return keys


async def _finish(cs: Careshare, principal: Principal, upload: ResumableUpload) -> ResumableUpload:
    """Ingest the whole upload from its parts; the offset reaches the length once the file is accepted."""
    keys = await _parts(cs, upload)
    try:
        stored = await accept(
            cs,
            cs.store.read_parts(keys),
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
    await cs.store.delete_prefix(parts_prefix(upload.id))
    return finished


async def _answer(cs: Careshare, finished: ResumableUpload, wait: float) -> tuple[ResumableUpload, StoredFile]:
    # Waited for with the upload let go: it is finished, and a HEAD meanwhile can say so at once.
    done = await wait_for_check(cs, str(finished.file_id), wait)
    if done.status == "processing":
        done = await answer_later(cs, done.id)
    if done.status == "rejected":
        await _remove(cs, finished.id)
        problem = refusal(done)
        problem.extra["file_id"] = done.id
        raise problem
    return finished, done


async def _remove(cs: Careshare, upload_id: str) -> None:
    # The row first: a crash in between leaves orphan parts for the sweep, never a row without bytes.
    async with cs.engine.begin() as conn:
        await conn.execute(sa.delete(db.uploads).where(db.uploads.c.id == upload_id))
    await cs.store.delete_prefix(parts_prefix(upload_id))


async def terminate(cs: Careshare, principal: Principal, upload_id: str, *, patient_id: str) -> None:
    """Remove an upload and its bytes (tus termination); a finished upload's file stays."""
    await _load(cs, principal, upload_id, patient_id)
    async with _exclusive(cs, upload_id):
        await _load(cs, principal, upload_id, patient_id)
        await _remove(cs, upload_id)


# -- expiry ---------------------------------------------------------------------------------------------


async def sweep(cs: Careshare, now: datetime | None = None) -> int:
    """Remove expired uploads and their parts, and parts no row knows; returns how many uploads.

    An expired upload a request is still writing to (its lease holds) stays for the next round.
    """
    now = now or db.utcnow()
    async with cs.reader.connect() as conn:
        expired = list((await conn.execute(sa.select(db.uploads.c.id).where(db.uploads.c.expires_at <= now))).scalars())
    removed = 0
    for upload_id in expired:
        async with cs.engine.begin() as conn:
            result = await conn.execute(
                sa.delete(db.uploads).where(
                    db.uploads.c.id == upload_id, db.uploads.c.expires_at <= now, _free(db.utcnow())
                )
            )
        if result.rowcount != 1:
            continue  # held, or a PATCH moved it on (and its expiry) since we looked
        await cs.store.delete_prefix(parts_prefix(upload_id))
        removed += 1
    removed += await _sweep_orphans(cs)
    return removed


async def _sweep_orphans(cs: Careshare) -> int:
    newest: dict[str, datetime] = {}
    for meta in await cs.store.list_prefix(PARTS_ROOT):
        upload_id = meta["path"].removeprefix(PARTS_ROOT).partition("/")[0]
        if upload_id not in newest or meta["last_modified"] > newest[upload_id]:
            newest[upload_id] = meta["last_modified"]
    cutoff = db.utcnow() - timedelta(seconds=min(ORPHAN_AGE_SECONDS, cs.settings.sweep_age_seconds))
    old = [upload_id for upload_id, modified in newest.items() if modified < cutoff]
    if not old:
        return 0
    async with cs.reader.connect() as conn:
        known = set((await conn.execute(sa.select(db.uploads.c.id).where(db.uploads.c.id.in_(old)))).scalars())
    removed = 0
    for upload_id in old:
        if upload_id not in known:
            await cs.store.delete_prefix(parts_prefix(upload_id))
            removed += 1
    return removed


def sweep_interval(cs: Careshare) -> float:
    """How often the host sweeps: ten minutes, or more often when uploads expire sooner."""
    return min(600.0, max(1.0, cs.settings.upload_expiry_seconds / 4))


async def run_sweeper(cs: Careshare, interval: float | None = None, first_round: asyncio.Event | None = None) -> None:
    """Sweep expired uploads and crash leftovers (``core/sweep.py``) now, then every ``interval`` seconds.

    ``first_round`` is set once the start-up round has ended, whether or not it succeeded.
    """
    from careshare.core.sweep import sweep_leftovers

    while True:
        try:
            removed = await sweep(cs)
            if removed:
                logger.info("swept expired uploads count=%d", removed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be briefly unavailable: try again next round
            logger.warning("upload sweep failed error=%s", type(exc).__name__)
        try:
            await sweep_leftovers(cs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("leftover sweep failed error=%s", type(exc).__name__)
        if first_round is not None:
            first_round.set()
        await asyncio.sleep(interval or sweep_interval(cs))
