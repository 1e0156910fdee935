"""Migrations create the schema on SQLite and PostgreSQL, match the table definitions, and take plugins'."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import careshare
from careshare.core import db
from careshare.core.plugins import get_plugin_manager
from careshare.core.runtime import Careshare
from careshare.testing import make_settings

if TYPE_CHECKING:
    from careshare.testing import PostgresCluster


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a fresh SQLite file, or a new database on the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'careshare.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database(f"migrations_{uuid.uuid4().hex}")


async def _run(url: str, fn: Any) -> Any:
    """``fn(sync_connection)`` over the same engine the application uses."""
    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _tables(conn: sa.Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _versions(conn: sa.Connection) -> list[str]:
    return sorted(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def _plugin_dirs() -> list[Path]:
    """The version directories of every installed plugin; loading them puts their tables on ``db.metadata``."""
    pm = get_plugin_manager()
    return [Path(p) for p in itertools.chain.from_iterable(pm.hook.careshare_migrations())]


def _migrate(url: str) -> None:
    """Core's migrations and every plugin's, as the host runs them at start-up."""
    db.migrate(url, _plugin_dirs())


def _heads() -> list[str]:
    """The newest revisions, read from the scripts of core and every plugin.

    The database records heads only: a core revision a plugin's branch depends on is implied by it.
    """
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    locations = [str(db.MIGRATIONS_DIR / "versions"), *(str(d) for d in _plugin_dirs())]
    config.set_main_option("version_locations", " ".join(locations))
    config.set_main_option("path_separator", "space")
    script = ScriptDirectory.from_config(config)
    heads = set(script.get_heads())
    implied: set[str] = set()
    for head in heads:
        dependencies = script.get_revision(head).dependencies or ()
        implied.update((dependencies,) if isinstance(dependencies, str) else dependencies)
    return sorted(heads - implied)


def _diff(conn: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return compare_metadata(context, db.metadata)


async def test_migrating_an_empty_database_creates_every_table(db_url: str) -> None:
    assert await _run(db_url, _tables) == set()
    assert _heads()
    await asyncio.to_thread(_migrate, db_url)
    tables = await _run(db_url, _tables)
    assert set(db.metadata.tables) <= tables
    assert tables - set(db.metadata.tables) == {"alembic_version"}
    assert await _run(db_url, _versions) == _heads()


async def test_migrating_twice_is_a_no_op(db_url: str) -> None:
    await asyncio.to_thread(_migrate, db_url)
    engine = db.create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(db.organisations.insert().values(id="org-kept", created_at=db.utcnow()))
    finally:
        await engine.dispose()
    tables, versions = await _run(db_url, _tables), await _run(db_url, _versions)

    await asyncio.to_thread(_migrate, db_url)

    assert await _run(db_url, _tables) == tables
    assert await _run(db_url, _versions) == versions == _heads()
    kept = await _run(db_url, lambda conn: list(conn.execute(sa.select(db.organisations.c.id)).scalars()))
    assert kept == ["org-kept"]
    assert await _run(db_url, _diff) == []


async def test_migrated_schema_matches_the_table_definitions(db_url: str) -> None:
    """Autogenerate finds nothing to do: the migration and ``db.metadata`` cannot drift apart."""
    await asyncio.to_thread(_migrate, db_url)
    assert await _run(db_url, _diff) == []


async def test_compare_metadata_would_notice_drift(db_url: str) -> None:
    """The comparison above is not vacuous: a table missing from the database is reported."""
    await asyncio.to_thread(_migrate, db_url)
    engine = db.create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP TABLE audit_events"))
    finally:
        await engine.dispose()
    diff = await _run(db_url, _diff)
    assert [(op[0], op[1].name) for op in diff if op[0] == "add_table"] == [("add_table", "audit_events")]


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'careshare.db'}"
    await asyncio.to_thread(db.migrate, url)
    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            foreign_keys = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
            busy_timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        assert journal == "wal"
        assert foreign_keys == 1
        assert busy_timeout is not None and busy_timeout > 0
        # Foreign keys are enforced, not merely switched on: a patient of an unknown organisation fails.
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(
                    db.patients.insert().values(
                        id="p" * 26, org_id="no-such-org", name="x", external_id="x", created_at=db.utcnow()
                    )
                )
    finally:
        await engine.dispose()


DEMO_REVISION = '''
    """Demo plugin: its one table."""

    import sqlalchemy as sa
    from alembic import op

    revision = "demo_0001"
    down_revision = None
    branch_labels = ("demo",)
    depends_on = "0001_core"


    def upgrade() -> None:
        op.create_table(
            "demo_items",
            sa.Column("id", sa.String(26), primary_key=True),
            sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
            sa.Column("label", sa.String(200), nullable=False),
        )


    def downgrade() -> None:
        op.drop_table("demo_items")
'''


async def test_hook_careshare_migrations(db_url: str, tmp_path: Path) -> None:
    versions = tmp_path / "demo_versions"
    versions.mkdir()
    (versions / "demo_0001_items.py").write_text(textwrap.dedent(DEMO_REVISION))

    class DemoPlugin:
        @careshare.hookimpl
        def careshare_migrations(self) -> list[Path]:
            return [versions]

    plugin = DemoPlugin()
    settings = make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=db_url)
    cs = Careshare.build(settings, get_plugin_manager(plugins=[plugin]))
    try:
        await cs.start()
        async with cs.engine.begin() as conn:
            tables = await conn.run_sync(_tables)
            assert "demo_items" in tables
            assert set(db.metadata.tables) <= tables
            # Alembic keeps heads only: 0001_core is implied by demo_0001, which depends on it.
            versions_after_first_start = await conn.run_sync(_versions)
            assert "demo_0001" in versions_after_first_start
            # The plugin's table sits on the core schema: its foreign key to organisations holds.
            await conn.execute(db.organisations.insert().values(id="org-demo", created_at=db.utcnow()))
            await conn.execute(sa.text("INSERT INTO demo_items (id, org_id, label) VALUES ('d1', 'org-demo', 'one')"))
        # A second start finds nothing left to do.
        await cs.start()
        async with cs.engine.connect() as conn:
            assert await conn.run_sync(_versions) == versions_after_first_start
            assert (await conn.execute(sa.text("SELECT count(*) FROM demo_items"))).scalar() == 1
    finally:
        await cs.close()


async def test_disabling_a_plugin_after_its_migrations_ran_still_starts(tmp_path: Path) -> None:
    """Alembic refuses a recorded revision it cannot locate: a disabled plugin's revisions stay known."""
    from litestar.testing import AsyncTestClient

    from careshare.host import create_app
    from careshare.testing import make_settings

    data = tmp_path / "data"
    async with AsyncTestClient(app=create_app(make_settings(data))) as client:
        assert (await client.get("/healthz")).status_code == 200
    disabled = make_settings(data, CARESHARE_DISABLE_PLUGINS="chat,file-requests")
    async with AsyncTestClient(app=create_app(disabled)) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert "chat" not in health.json()["plugins"]
