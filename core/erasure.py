"""Deleting a file and erasing a patient: the rows, the blobs nothing else references, and an audit tombstone.

Erasure finds a patient's rows by the schema itself, so a plugin's tables are erased with core's
without a hook of their own: every row with the patient's ``patient_id``, every row that refers by
foreign key to a row being erased (a file request's answers, a medication's reminders), and every
row naming an erased item in its ``item_id`` or an erased attachment in its ``attachment_id``
(attachments, shares and links are keyed by item, not by foreign key). Blobs go when no remaining
row of any table refers to them (any column with a foreign key to ``blobs.sha256``). The audit
keeps its events (they hold ids, never names or text); the patient's own sign-ins are replaced by
``erased-patient``, and a ``patient.erased`` event records who erased and when.

A plugin that keeps patient data any other way (a column of names without ``patient_id``) must
give its table a ``patient_id`` column, or its rows stay: ``tests/test_erasure.py`` reads every
table after an erasure and finds none of the patient's words.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.files import get_file
from careshare.core.patients import get_patient
from careshare.core.problems import NOT_FOUND, Problem, ProblemType
from careshare.core.settings import Setting
from careshare.core.storage import content_key, held_key
from careshare.core.tus import parts_prefix

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = [
    "ERASED_ACTOR",
    "ERASURE_NOT_CONFIRMED",
    "ERASURE_RETAINED",
    "FILE_STILL_PROCESSING",
    "RETENTION_DAYS",
    "Erasure",
    "delete_file",
    "erase_patient",
]

logger = logging.getLogger(__name__)


def _days(value: str) -> int:
    if not value.isdigit():
        raise ValueError("not a whole number of days")
    return int(value)


#: Days a clinic keeps a patient's record after its last entry; erasure is refused until then.
RETENTION_DAYS: Setting[int] = Setting(
    variable="CARESHARE_RETENTION_DAYS",
    default=0,
    description="days after a patient's last record during which erasure is refused (0: erasure any time)",
    parse=_days,
    expected="a whole number of days (0 or more)",
)
#: What the audit says in place of a patient's own sign-in once they are erased.
ERASED_ACTOR = "erased-patient"

ERASURE_RETAINED = ProblemType(
    "erasure-retained",
    409,
    "Records still kept",
    "The clinic must keep this patient's records for now, so they cannot be erased yet.",
)
ERASURE_NOT_CONFIRMED = ProblemType(
    "erasure-not-confirmed",
    422,
    "Erasure not confirmed",
    "Give the patient's external id in the request, exactly as registered, to confirm which patient to erase.",
)
FILE_STILL_PROCESSING = ProblemType(
    "file-still-processing",
    409,
    "File still being checked",
    "The file is still being checked. Delete it once its status is ready or rejected.",
)
#: Tables erasure never deletes from by the schema's rules: the audit is scrubbed instead; blobs go
#: by reference count; stored idempotent answers by what they hold (:func:`_stored_answers`).
_KEPT = frozenset({"audit_events", "blobs", "organisations", "alembic_version", "idempotency_keys"})
_CHUNK = 500


@attrs.frozen
class Erasure:
    """What an erasure removed (or, for a dry run, would remove): rows by table, and blob objects."""

    patient_id: str
    rows: dict[str, int]
    blobs: int
    dry_run: bool

    def to_json(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "dry_run": self.dry_run, "rows": self.rows, "blobs": self.blobs}


def _chunks(values: Iterable[Any]) -> Iterable[list[Any]]:
    items = list(values)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _blob_columns() -> list[sa.Column[Any]]:
    """Every column of every loaded table that refers to a blob."""
    return [
        column
        for table in db.metadata.sorted_tables
        for column in table.columns
        if any(fk.column is db.blobs.c.sha256 for fk in column.foreign_keys)
    ]


async def _in(conn: AsyncConnection, table: sa.Table, column: sa.Column[Any], values: set[Any]) -> list[Any]:
    rows: list[Any] = []
    for chunk in _chunks(sorted(values)):
        rows += list(await conn.execute(sa.select(table).where(column.in_(chunk))))
    return rows


def _key(table: sa.Table, row: Any) -> tuple[Any, ...]:
    return tuple(row._mapping[column] for column in table.primary_key.columns)


async def _doomed(conn: AsyncConnection, patient_id: str) -> dict[str, dict[tuple[Any, ...], Any]]:
    """The rows erasing ``patient_id`` removes, by table, keyed by primary key.

    Rounds over every table until one finds nothing new: a row named by ``item_id`` may belong to
    a table that sorts after the one naming it.
    """
    doomed: dict[str, dict[tuple[Any, ...], Any]] = {}
    while True:
        ids = {row.id for name, found in doomed.items() for row in found.values() if "id" in db.metadata.tables[name].c}
        grew = False
        for table in db.metadata.sorted_tables:
            if table.name in _KEPT:
                continue
            tests: list[tuple[sa.Column[Any], set[Any]]] = []
            if table.name == "patients":
                tests.append((table.c.id, {patient_id}))
            if "patient_id" in table.c:
                tests.append((table.c.patient_id, {patient_id}))
            for column in table.columns:
                for fk in column.foreign_keys:
                    parent = doomed.get(fk.column.table.name)
                    if parent and fk.column.name == "id":
                        tests.append((column, {row.id for row in parent.values()}))
            for name in ("item_id", "attachment_id"):
                if name in table.c and ids:
                    tests.append((table.c[name], ids))
            found = doomed.setdefault(table.name, {})
            for column, values in tests:
                for row in await _in(conn, table, column, values):
                    key = _key(table, row)
                    if key not in found:
                        found[key] = row
                        grew = True
        if not grew:
            return {name: found for name, found in doomed.items() if found}


async def _unreferenced(conn: AsyncConnection, hashes: set[str]) -> set[str]:
    """Which of ``hashes`` no row of any table refers to any more."""
    used: set[str] = set()
    for column in _blob_columns():
        for chunk in _chunks(hashes):
            used |= set((await conn.execute(sa.select(column).where(column.in_(chunk)).distinct())).scalars())
    return hashes - used


def _retained_until(last: datetime | None, days: int) -> datetime | None:
    return None if last is None or days <= 0 else last + timedelta(days=days)


async def _last_record(conn: AsyncConnection, patient_id: str) -> datetime | None:
    """When anything was last written to the patient's record: a file, a share, an audit event."""
    times = [
        (await conn.execute(sa.select(sa.func.max(column)).where(where))).scalar()
        for column, where in (
            (db.files.c.created_at, db.files.c.patient_id == patient_id),
            (db.shares.c.shared_at, db.shares.c.patient_id == patient_id),
            (db.audit_events.c.at, db.audit_events.c.patient_id == patient_id),
        )
    ]
    known = [t for t in times if t is not None]
    return max(known) if known else None


async def erase_patient(cs: Careshare, principal: Principal, patient_id: str, *, dry_run: bool = False) -> Erasure:
    """Erase a patient of ``principal``'s organisation: every row of theirs, and the blobs only they used.

    ``dry_run`` counts what would go and changes nothing. Refused as ``erasure-retained`` while
    ``CARESHARE_RETENTION_DAYS`` has not passed since the patient's last record. One transaction
    removes the rows; blob objects are removed inside it (as :func:`~careshare.core.files.discard_new_files`
    does), and unfinished resumable uploads' parts after it.
    """
    return await db.again_if_raced(lambda: _erase(cs, principal, patient_id, dry_run=dry_run))


async def _erase(cs: Careshare, principal: Principal, patient_id: str, *, dry_run: bool) -> Erasure:
    if not principal.is_clinician:
        raise Problem(NOT_FOUND)
    days = cs.settings.get(RETENTION_DAYS)
    async with cs.engine.begin() as conn:
        await get_patient(conn, principal, patient_id)
        until = _retained_until(await _last_record(conn, patient_id), days)
        if until is not None and until > db.utcnow():
            raise Problem(
                ERASURE_RETAINED,
                f"This clinic keeps records for {days} days after the last entry (CARESHARE_RETENTION_DAYS);"
                f" this patient's records can be erased from {until:%Y-%m-%d}.",
                retained_until=until.isoformat(),
            )
        doomed = await _doomed(conn, patient_id)
        hashes = {
            value
            for column in _blob_columns()
            for row in doomed.get(column.table.name, {}).values()
            if (value := row._mapping[column]) is not None
        }
        answers = await _stored_answers(conn, principal.org, patient_id)
        rows = {name: len(found) for name, found in doomed.items()} | (
            {"idempotency_keys": len(answers)} if answers else {}
        )
        uploads = [row.id for row in doomed.get("uploads", {}).values()]
        files = [row.id for row in doomed.get("files", {}).values()]
        if dry_run:
            async with conn.begin_nested() as savepoint:
                await _delete(conn, doomed)
                unused = await _unreferenced(conn, hashes)
                await savepoint.rollback()
            return Erasure(patient_id=patient_id, rows=rows, blobs=len(unused), dry_run=True)
        await _delete(conn, doomed)
        unused = await _unreferenced(conn, hashes)
        for chunk in _chunks(unused):
            await conn.execute(sa.delete(db.blobs).where(db.blobs.c.sha256.in_(chunk)))
        await _forget_answers(conn, principal.org, answers)
        await conn.execute(
            sa.update(db.audit_events)
            .where(db.audit_events.c.patient_id == patient_id, db.audit_events.c.actor_role == "patient")
            .values(actor=ERASED_ACTOR)
        )
        await record_event(conn, principal, "patient.erased", patient_id=patient_id)
        for sha256 in sorted(unused):
            await cs.store.discard(content_key(sha256))
        for file_id in files:  # a file whose check had not ended still holds its upload
            await cs.store.discard(held_key(file_id))
    for upload_id in uploads:
        await cs.store.delete_prefix(parts_prefix(upload_id))
    logger.info("patient erased patient=%s rows=%d blobs=%d", patient_id, sum(rows.values()), len(unused))
    return Erasure(patient_id=patient_id, rows=rows, blobs=len(unused), dry_run=False)


async def _stored_answers(conn: AsyncConnection, org: str, patient_id: str) -> list[Any]:
    """Keys of stored Idempotency-Key answers that name the patient (a registration, a message ...).

    An answer about a patient carries their id (every resource of theirs does); keys last a day,
    so this reads at most a day's answers of the organisation.
    """
    table = db.idempotency_keys
    needle = patient_id.encode()
    rows = await conn.execute(
        sa.select(table.c.role, table.c.subject, table.c.key, table.c.body).where(table.c.org_id == org)
    )
    return [row for row in rows.all() if row.body is not None and needle in bytes(row.body)]


async def _forget_answers(conn: AsyncConnection, org: str, answers: list[Any]) -> None:
    table = db.idempotency_keys
    for row in answers:
        await conn.execute(
            sa.delete(table).where(
                table.c.org_id == org, table.c.role == row.role, table.c.subject == row.subject, table.c.key == row.key
            )
        )


async def _delete(conn: AsyncConnection, doomed: dict[str, dict[tuple[Any, ...], Any]]) -> None:
    """Delete the doomed rows, children before parents."""
    for table in reversed(db.metadata.sorted_tables):
        found = doomed.get(table.name)
        if not found:
            continue
        keys = list(table.primary_key.columns)
        if len(keys) == 1:
            for chunk in _chunks(key[0] for key in found):
                await conn.execute(sa.delete(table).where(keys[0].in_(chunk)))
        else:
            for key in found:
                await conn.execute(
                    sa.delete(table).where(*(column == value for column, value in zip(keys, key, strict=True)))
                )


async def delete_file(cs: Careshare, principal: Principal, file_id: str) -> None:
    """Delete a file from the patient's files or the library, audited as ``file.deleted``.

    What already reached a patient stays: an item's attachments keep their pinned copy (revoke the
    share to withdraw it). A file nothing refers to goes entirely, with its renditions, its links
    and the blobs nothing else uses; a file something still refers to (an attachment, a file
    request's answer) is marked deleted: it leaves every list and read, and its links stop.
    """
    await db.again_if_raced(lambda: _delete_file(cs, principal, file_id))


async def _delete_file(cs: Careshare, principal: Principal, file_id: str) -> None:
    if not principal.is_clinician:
        raise Problem(NOT_FOUND)
    async with cs.engine.begin() as conn:
        stored = await get_file(conn, principal, file_id)
        if stored.status == "processing":
            raise Problem(FILE_STILL_PROCESSING)
        await record_event(conn, principal, "file.deleted", patient_id=stored.patient_id, file_id=file_id)
        referrers = [
            column
            for table in db.metadata.sorted_tables
            if table.name not in ("renditions", "links")
            for column in table.columns
            if any(fk.column is db.files.c.id for fk in column.foreign_keys)
        ]
        referred = False
        for column in referrers:
            if (await conn.execute(sa.select(column).where(column == file_id).limit(1))).first() is not None:
                referred = True
                break
        if referred:
            now = db.utcnow()
            await conn.execute(
                sa.update(db.files).where(db.files.c.id == file_id).values(deleted_at=now, deleted_by=principal.subject)
            )
            await conn.execute(
                sa.update(db.links)
                .where(db.links.c.file_id == file_id, db.links.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_by=principal.subject)
            )
            return
        hashes = {stored.sha256, *(r.sha256 for r in stored.renditions)}
        await conn.execute(sa.delete(db.links).where(db.links.c.file_id == file_id))
        await conn.execute(sa.delete(db.renditions).where(db.renditions.c.file_id == file_id))
        await conn.execute(sa.delete(db.files).where(db.files.c.id == file_id))
        unused = await _unreferenced(conn, hashes)
        for chunk in _chunks(unused):
            await conn.execute(sa.delete(db.blobs).where(db.blobs.c.sha256.in_(chunk)))
        for sha256 in sorted(unused):
            await cs.store.discard(content_key(sha256))
