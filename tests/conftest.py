"""Shared fixtures: real settings on a temporary data directory, the real app, real tokens.

The contract kit's pytest plugin (``careshare.testing.pytest_plugin``, loaded by its ``pytest11``
entry point) registers the Hypothesis profiles and the ``careshare_*`` fixtures; these are the
suite's shorter names, on the same migrated database.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import AsyncTestClient

from careshare.host import create_app
from careshare.testing import MotoS3, PostgresCluster, bearer, find_postgres_bin, make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from careshare.core.settings import Settings
    from careshare.testing.clamd import Clamd


#: Test files that take a worker longest (seconds of one worker, measured with --junitxml), run
#: first: scripts/test gives each file to one worker, and a long file started last is the tail.
LONGEST_FIRST = (
    "test_schemathesis",
    "test_api_files",
    "test_corpus",
    "test_api_access",
    "test_contract_kit",
    "test_checks",
    "test_tus",
    "test_file_requests",
    "test_stateful",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))  # stable: the rest as collected


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture(scope="session")
def migrated_database(careshare_migrated_database: Path) -> Path:
    """An SQLite database the installed plugins' migrations brought up to date, once per session (the kit's)."""
    return careshare_migrated_database


@pytest.fixture
async def client(settings: Settings, migrated_database: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    # A copy of the migrated database: start-up finds every revision applied and skips the
    # migrations (tests/test_migrations.py runs them for real on fresh databases).
    if settings.database_url.startswith("sqlite+aiosqlite:///"):
        database = Path(settings.database_url.split("///", 1)[1])
        if not database.exists():
            database.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(migrated_database, database)
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def clinician(settings: Settings) -> dict[str, str]:
    """Headers of a clinician of organisation ``org-a``."""
    return bearer(settings, "clinician", "org-a", sub="dr-a")


@pytest.fixture
async def patient_id(client: AsyncTestClient[Any], clinician: dict[str, str]) -> str:
    response = await client.post("/v1/patients", json={"name": "Pat One", "external_id": "MRN-1"}, headers=clinician)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def patient(settings: Settings, patient_id: str) -> dict[str, str]:
    """Headers of the patient ``patient_id`` of ``org-a``."""
    return bearer(settings, "patient", "org-a", patient=patient_id)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_settings(request: pytest.FixtureRequest, tmp_path: Path, migrated_database: Path) -> Settings:
    """Settings on a migrated SQLite copy, then on a fresh database of the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        database = tmp_path / "data" / "careshare.db"
        database.parent.mkdir(parents=True)
        shutil.copyfile(migrated_database, database)
        return make_settings(tmp_path / "data")
    url = request.getfixturevalue("postgres").create_database(f"db_{uuid.uuid4().hex}")
    return make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=url)


@pytest.fixture
async def api(any_settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app on ``any_settings``: each test that takes it runs on SQLite and on PostgreSQL."""
    async with AsyncTestClient(app=create_app(any_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the session; each test takes its own database."""
    if find_postgres_bin() is None:
        # Reason: scripts/test installs PostgreSQL where it can (root + apt); a machine without it
        # still runs everything else, and the skip names what is missing.
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")  # Reason: scripts/test installs them
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """One moto S3 server for the session; each test takes a prefix of its own in its bucket."""
    try:
        server = MotoS3()
        server.start()
    except (FileNotFoundError, RuntimeError, OSError) as error:
        # Reason: moto[server] comes with the test extras; a machine where it cannot run on
        # 127.0.0.1 still runs everything else, and the skip says why.
        pytest.skip(f"moto_server cannot start here: {error}")  # Reason: moto[server] could not run on 127.0.0.1
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clamd() -> Iterator[Clamd]:
    """A ClamAV daemon of this test's own on a unix socket, knowing the EICAR test string (built in code)."""
    from careshare.testing.clamd import Clamd, find_clamd

    if find_clamd() is None:
        # Reason: scripts/test installs Debian's clamav-daemon where it can (root + apt); a machine
        # without it still runs everything else, and the skip names what is missing.
        pytest.skip("clamd (Debian's clamav-daemon) is not installed")  # Reason: scripts/test installs it
    server = Clamd(max_file_bytes=512 * 1024)
    server.start()  # installed but failing to start is a failure, not a skip
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright, one per test module."""
    from careshare.testing.browser import chromium_path, console_browser

    if chromium_path() is None:
        pytest.skip("no chromium: scripts/test installs Debian's (apt-get install chromium)")  # Reason: needs root+apt
    with console_browser() as browser:
        yield browser


@pytest.fixture
def console_server(tmp_path: Path, migrated_database: Path) -> Iterator[str]:
    """A real server (uvicorn on 127.0.0.1) with the development sign-in on; yields its base URL."""
    from careshare.testing import running_server

    settings = make_settings(
        tmp_path / "console-data", CARESHARE_CONSOLE="1", CARESHARE_DEV_LOGIN="1", CARESHARE_WORKERS="1"
    )
    database = Path(settings.database_url.split("///", 1)[1])
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_database, database)
    with running_server(create_app(settings)) as base_url:
        yield base_url


@pytest.fixture
def page(chromium: Any, console_server: str) -> Iterator[Any]:
    """A fresh browser context (its own cookies) at a phone-and-up width, its console errors collected."""
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.console_errors = []
    tab.on("pageerror", lambda error: tab.console_errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def console_settings(tmp_path: Path, migrated_database: Path) -> Settings:
    """Settings of a console test: the development sign-in on, the database a migrated copy."""
    from careshare.testing.console import copied_settings

    return copied_settings(tmp_path, migrated_database, CARESHARE_DEV_LOGIN="1")


@pytest.fixture
def browser(console_settings: Settings) -> Iterator[Any]:
    """The console driven in process as a browser sends it (not signed in yet)."""
    from litestar.testing import TestClient

    from careshare.testing.console import BASE_URL, ConsoleClient

    with TestClient(create_app(console_settings), base_url=BASE_URL) as test_client:
        yield ConsoleClient(test_client, console_settings)


@pytest.fixture
def clinic(browser: Any) -> Any:
    """``browser`` signed in as clinician ``dr-a`` of ``org-a``."""
    signed = browser.sign_in("clinician", "org-a", sub="dr-a")
    assert signed.status_code == 200, signed.text
    return browser
