"""Files: the ingest pipeline (stream, stage, identify, process, promote, record) and their reads."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.filenames import sanitise_filename
from careshare.core.ids import new_id
from careshare.core.models import RenditionRecord, Source, StoredFile
from careshare.core.problems import NOT_FOUND, UNSUPPORTED_FILE_TYPE, Problem
from careshare.core.storage import content_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterable

    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal, Processed
    from careshare.core.policy import Policy
    from careshare.core.runtime import Careshare

__all__ = [
    "ORIGINAL",
    "check_record",
    "discard_new_files",
    "get_file",
    "ingest",
    "insert_blobs",
    "list_files",
    "mark_seen",
    "store_renditions",
]

ORIGINAL = "original"
logger = logging.getLogger(__name__)


async def ingest(
    cs: Careshare,
    chunks: AsyncIterable[bytes],
    *,
    principal: Principal,
    owner_type: Literal["patient", "library"],
    patient_id: str | None,
    source: Literal["clinic", "patient"],
    policy: Policy | None = None,
    filename: str | None = None,
) -> StoredFile:
    """Take an upload from first byte to a ``ready`` file, or refuse it leaving nothing behind.

    The bytes decide the type: the client's name and Content-Type are never trusted. Without
    ``filename``, the name is read from ``chunks.filename`` once the stream is consumed (a
    multipart part names its file only when it starts).
    """
    staged = await cs.store.stage(chunks, limit=cs.settings.max_upload_bytes)
    name = sanitise_filename(filename if filename is not None else getattr(chunks, "filename", None))
    started = time.perf_counter()
    try:
        ident = cs.plugins.hook.careshare_identify(head=staged.head, filename=name)
        if ident is None:
            raise Problem(UNSUPPORTED_FILE_TYPE)
        with cs.store.workdir() as workdir, cs.store.local_path(staged.key) as path:
            src = Source(
                path=path,
                sha256=staged.sha256,
                size=staged.size,
                kind=ident.kind,
                media_type=ident.media_type,
                workdir=Path(workdir),
            )
            processed = await cs.processor.process(src, ident.kind, policy or cs.settings.policy)
            if processed is None:
                raise Problem(UNSUPPORTED_FILE_TYPE)
            original = RenditionRecord(ORIGINAL, ident.media_type, staged.size, staged.sha256)
            renditions = await store_renditions(cs, processed, original)
    except BaseException:
        await cs.store.discard(staged.key)
        raise

    now = db.utcnow()
    check = check_record(processed, original, renditions, started)
    stored = StoredFile(
        id=new_id(),
        org=principal.org,
        owner_type=owner_type,
        patient_id=patient_id,
        filename=name,
        kind=ident.kind,
        media_type=ident.media_type,
        size=staged.size,
        sha256=staged.sha256,
        status="ready",
        source=source,
        metadata=dict(processed.metadata),
        check=check,
        renditions=tuple(renditions),
        uploaded_by=principal.subject,
        created_at=now,
    )
    try:
        async with cs.engine.begin() as conn:
            await insert_blobs(conn, renditions, now)
            await _insert_file(conn, stored)
            await record_event(conn, principal, "file.uploaded", patient_id=patient_id, file_id=stored.id)
            # Promote last: a failed insert rolls back and the staged copy is discarded.
            await cs.store.promote(staged)
    except BaseException:
        await cs.store.discard(staged.key)
        raise
    return stored


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
    processed: Processed, original: RenditionRecord, renditions: list[RenditionRecord], started: float
) -> dict[str, Any]:
    """What was checked, by which handler and version, on which bytes, what came out and how long it took."""
    return {
        "handler": processed.handler,
        "handler_version": processed.handler_version,
        "input_sha256": original.sha256,
        "outputs": {r.role: r.sha256 for r in renditions},
        "changes": list(processed.changes),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "reason": None,
        "renderable": processed.renderable,
    }


async def insert_blobs(conn: AsyncConnection, renditions: list[RenditionRecord], now: Any) -> None:
    unique = {r.sha256: r.size for r in renditions}
    existing = set((await conn.execute(sa.select(db.blobs.c.sha256).where(db.blobs.c.sha256.in_(unique)))).scalars())
    new = [{"sha256": h, "size": s, "created_at": now} for h, s in unique.items() if h not in existing]
    if new:
        await conn.execute(_insert_ignore(conn, db.blobs), new)


async def discard_new_files(cs: Careshare, file_ids: list[str]) -> None:
    """Undo ``ingest`` for files a refused request stored: their rows, and blobs nothing else uses.

    For all-or-nothing requests (a message with several uploads, one refused). A file something
    already refers to (an attachment) is kept. Blob objects go inside the transaction, so on SQLite
    no upload of the same bytes can slip in between the check and the delete.
    """
    if not file_ids:
        return
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


def _insert_ignore(conn: AsyncConnection, table: sa.Table) -> Any:
    # Two uploads of the same bytes may race to record the blob; the second insert is a no-op.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


async def _insert_file(conn: AsyncConnection, stored: StoredFile) -> None:
    await conn.execute(
        db.files.insert().values(
            id=stored.id,
            org_id=stored.org,
            owner_type=stored.owner_type,
            patient_id=stored.patient_id,
            filename=stored.filename,
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


async def list_files(
    conn: AsyncConnection,
    principal: Principal,
    *,
    owner_type: Literal["patient", "library"],
    patient_id: str | None,
    source: str | None = None,
    unseen: bool = False,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[StoredFile], str | None]:
    """A page of files, newest first, and the cursor of the next page (None at the end)."""
    query = sa.select(db.files).where(
        db.files.c.org_id == principal.org,
        db.files.c.owner_type == owner_type,
        db.files.c.patient_id.is_(None) if patient_id is None else db.files.c.patient_id == patient_id,
        db.files.c.deleted_at.is_(None),
    )
    if source is not None:
        query = query.where(db.files.c.source == source)
    if unseen:
        query = query.where(db.files.c.seen_at.is_(None))
    if cursor:
        query = query.where(db.files.c.id < cursor)
    rows = list((await conn.execute(query.order_by(db.files.c.id.desc()).limit(limit + 1))).all())
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return await _with_renditions(conn, rows[:limit]), next_cursor


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
