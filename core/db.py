"""Tables on the shared metadata, the async engine, and the Alembic migrations that create them.

Plugins define their own tables on :data:`metadata` and ship migrations for them
(``careshare_migrations``); the schema is only ever created by migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "again_if_raced",
    "attachments",
    "audit_events",
    "blobs",
    "create_engine",
    "deliveries",
    "files",
    "idempotency_keys",
    "insert_ignore",
    "jobs",
    "links",
    "metadata",
    "migrate",
    "newest_first",
    "notifications",
    "organisations",
    "patients",
    "renditions",
    "shares",
    "uploads",
    "utcnow",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


ID = sa.String(26)
SHA256 = sa.String(64)

organisations = sa.Table(
    "organisations",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

patients = sa.Table(
    "patients",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("name", sa.String(500), nullable=False),
    sa.Column("external_id", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    #: name and external id folded (core.patients.search_key): what a search matches, any case, any script.
    sa.Column("search_key", sa.String(2200)),
    sa.UniqueConstraint("org_id", "external_id", name="uq_patients_org_external_id"),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", SHA256, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("owner_type", sa.String(16), nullable=False),  # patient | library
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id")),
    sa.Column("filename", sa.String(1024), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("media_type", sa.String(200), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", SHA256, sa.ForeignKey("blobs.sha256"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # clinic | patient
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("check", sa.JSON, nullable=False),
    sa.Column("uploaded_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("deleted_at", UTCDateTime),
    sa.Column("deleted_by", sa.String(200)),
    #: The file name folded (core.patients.fold): what a file search by name matches.
    sa.Column("name_key", sa.String(4096)),
    # Files a patient sent stay "new" for the clinic until a clinician marks them seen.
    sa.Column("seen_at", UTCDateTime),
    sa.Column("seen_by", sa.String(200)),
    sa.Index("ix_files_org_patient", "org_id", "patient_id", "id"),
)

renditions = sa.Table(
    "renditions",
    metadata,
    sa.Column("file_id", ID, sa.ForeignKey("files.id"), primary_key=True),
    sa.Column("role", sa.String(32), primary_key=True),
    sa.Column("media_type", sa.String(200), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", SHA256, sa.ForeignKey("blobs.sha256"), nullable=False),
)

attachments = sa.Table(
    "attachments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("item_id", ID, nullable=False),
    sa.Column("file_id", ID, sa.ForeignKey("files.id"), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    # Pinned by hash: what was sent stays readable whatever later happens to the file.
    sa.Column("sha256", SHA256, sa.ForeignKey("blobs.sha256"), nullable=False),
    sa.Column("media_type", sa.String(200), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("filename", sa.String(1024), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # One attachment withdrawn from the patient (core.sharing.revoke); the item and its other files stay.
    sa.Column("revoked_at", UTCDateTime),
    sa.Column("revoked_by", sa.String(200)),
    sa.Column("revoke_reason", sa.String(500)),
    sa.Index("ix_attachments_item", "target", "item_id"),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("actor_role", sa.String(16), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("patient_id", ID),
    sa.Column("file_id", ID),
    sa.Column("rendition", sa.String(32)),
    sa.Column("target", sa.String(64)),
    sa.Column("item_id", ID),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_audit_events_org_patient", "org_id", "patient_id", "id"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    # Resumable (tus) uploads in progress: bytes so far are parts in the blob store (uploads/<id>/...).
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_by_role", sa.String(16), nullable=False),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("filename", sa.String(1024)),
    sa.Column("purpose", sa.JSON, nullable=False),  # where the finished file goes (patient files, a request ...)
    sa.Column("file_id", ID),  # set once finished and ingested
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    # One request at a time, in whichever API process: its token, its lease, and a newer request's token.
    sa.Column("holder", ID),
    sa.Column("held_until", UTCDateTime),
    sa.Column("takeover", ID),
    sa.Index("ix_uploads_expires", "expires_at"),
)

shares = sa.Table(
    "shares",
    metadata,
    # An item that reached a patient: the grant behind every read of its attachments, for good.
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("item_id", ID, nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("shared_by", sa.String(200), nullable=False),
    sa.Column("shared_at", UTCDateTime, nullable=False),
    # Withdrawn from the patient (core.sharing.revoke): who, when and why; the row stays for the clinic.
    sa.Column("revoked_at", UTCDateTime),
    sa.Column("revoked_by", sa.String(200)),
    sa.Column("revoke_reason", sa.String(500)),
    sa.UniqueConstraint("target", "item_id", "patient_id", name="uq_shares_item_patient"),
    sa.Index("ix_shares_patient", "org_id", "patient_id", "id"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    # The outbox: one row per notification and delivery plugin, retried with backoff until done.
    sa.Column("notification_id", ID, sa.ForeignKey("notifications.id"), primary_key=True),
    sa.Column("channel", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.String(200)),
    sa.Column("delivered_at", UTCDateTime),
    sa.Index("ix_deliveries_due", "state", "next_attempt_at"),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("target", sa.String(64)),
    sa.Column("item_id", ID),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("read_at", UTCDateTime),
    # Who it is for (core.notifications): the patient, or their organisation's clinicians (one shared
    # clinic inbox; read_at is then the organisation's and read_by the clinician who read it first).
    sa.Column("audience", sa.String(16), nullable=False, server_default="patient"),
    sa.Column("read_by", sa.String(200)),
    sa.Index("ix_notifications_audience", "org_id", "audience", "id"),
)


async def newest_first(
    conn: AsyncConnection, query: sa.Select[Any], id_column: sa.ColumnElement[str], *, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """A page of ``query``'s rows, newest first (ids sort by creation), and the cursor of the next page (None at the end)."""
    if cursor:
        query = query.where(id_column < cursor)
    rows = list(await conn.execute(query.order_by(id_column.desc()).limit(limit + 1)))
    page = rows[:limit]
    return page, (page[-1]._mapping[id_column] if len(rows) > limit else None)


T = TypeVar("T")
#: Runs of a transaction that raced another on a shared blob row (each race needs another request
#: in the same instant, so a third run is as far as it goes in practice).
RACE_ATTEMPTS = 3


async def again_if_raced(run: Callable[[], Awaitable[T]]) -> T:
    """Run a transaction (``run`` begins and commits its own), again if it lost a race on a foreign key.

    Blobs are shared by hash: on PostgreSQL an upload may find a blob row that another file's
    deletion removes before the upload's own row names it, and a deletion may find a blob unused
    that an upload names before the delete. Either transaction then fails on the foreign key having
    changed nothing for good (rolled back; objects go only after the rows), and its next run sees
    the other's outcome. SQLite never gets here: its writers hold the one write lock throughout.
    """
    for _ in range(RACE_ATTEMPTS - 1):
        try:
            return await run()
        except sa.exc.IntegrityError:
            continue
    return await run()


def insert_ignore(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT that skips rows whose key exists (racing writers of the same row: the second is a no-op)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


def create_engine(url: str, *, immediate: bool = True) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout on every connection.

    On SQLite, ``immediate`` transactions take the write lock when they begin; an engine for reads
    only (``immediate=False``) begins deferred, so readers never queue behind writers (WAL).
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # The driver's own BEGIN handling breaks SAVEPOINT; SQLAlchemy's documented recipe.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Take the write lock up front: a deferred transaction that later writes can fail
            # with SQLITE_BUSY at once (no busy wait) when another writer got there first.
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_async_engine(url, pool_pre_ping=True)


def migrate(url: str, extra_version_dirs: Iterable[Path] = ()) -> None:
    """Bring the schema to the newest revision of core and every plugin (blocking: run in a thread)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    locations = [str(MIGRATIONS_DIR / "versions"), *(str(path) for path in extra_version_dirs)]
    config.set_main_option("version_locations", " ".join(locations))
    config.set_main_option("path_separator", "space")
    config.attributes["database_url"] = url
    command.upgrade(config, "heads")


jobs = sa.Table(
    "jobs",
    metadata,
    # The embedded queue (SQLite, one process): work to do off the request path, leased while it runs.
    sa.Column("id", ID, primary_key=True),
    sa.Column("task", sa.String(64), nullable=False),
    sa.Column("key", sa.String(200), nullable=False, unique=True),  # one waiting or running job per key
    sa.Column("args", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("run_after", UTCDateTime, nullable=False),
    sa.Column("leased_until", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_jobs_due", "run_after"),
)

links = sa.Table(
    "links",
    metadata,
    # Expiring download links for people outside the app (careshare.core.links); the token is never stored.
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("file_id", ID, sa.ForeignKey("files.id"), nullable=False),
    sa.Column("rendition", sa.String(32), nullable=False),
    # Set for a link to an attachment (its pinned bytes); None: the file's rendition as it is now.
    sa.Column("attachment_id", ID),
    sa.Column("target", sa.String(64)),
    sa.Column("item_id", ID),
    sa.Column("patient_id", ID),
    sa.Column("purpose", sa.String(200), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
    sa.Column("revoked_by", sa.String(200)),
    sa.Column("uses", sa.Integer, nullable=False),
    sa.Column("last_used_at", UTCDateTime),
    sa.Index("ix_links_org_file", "org_id", "file_id", "id"),
    sa.Index("ix_links_attachment", "attachment_id"),
    sa.Index("ix_links_item", "target", "item_id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    # One Idempotency-Key of one caller (careshare.core.idempotency): claimed while its request runs, then its answer.
    sa.Column("org_id", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # in_flight | done
    sa.Column("token", ID, nullable=False),  # the claim's own id: only its request completes or releases it
    sa.Column("fingerprint", SHA256, nullable=False),  # method, path and query
    sa.Column("body_sha256", SHA256),  # the request body's, once it has arrived
    sa.Column("status", sa.Integer),
    sa.Column("headers", sa.JSON),
    sa.Column("body", sa.LargeBinary),
    # The patient the answer is about and the id it made, when known: erasing the patient removes
    # the row, as it removes the rows of the items it erases (careshare.core.erasure).
    sa.Column("patient_id", ID),
    sa.Column("item_id", ID),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # In flight: the lease's end (renewed while the request runs); done: when the answer is forgotten.
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_idempotency_keys_expires", "expires_at"),
    sa.Index("ix_idempotency_keys_patient", "patient_id"),
    sa.Index("ix_idempotency_keys_item", "item_id"),
)
