"""The local queue's doorbell: a job queued by one process wakes the idle pool of another on the same SQLite file.

Two runtimes on one data directory stand for the API process and a ``careshare worker``: each
has its own engine and queue, as two processes would. The doorbell's sockets are real unix
datagram sockets in the folder beside the database.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from careshare.core.jobs import Doorbell, LocalQueue
from careshare.core.runtime import Careshare
from careshare.testing import make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def two() -> AsyncIterator[tuple[Careshare, Careshare]]:
    # A short folder: a unix socket's path must stay under 108 bytes, and pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="cs-bell-") as tmp:
        settings = make_settings(Path(tmp) / "data", CARESHARE_WORKERS="0")
        api, worker = Careshare.build(settings), Careshare.build(settings)
        await api.start()
        await worker.start()
        try:
            yield api, worker
        finally:
            await worker.close()
            await api.close()


async def test_a_job_queued_in_one_process_rings_the_idle_pool_of_another(two: tuple[Careshare, Careshare]) -> None:
    api, worker = two
    assert isinstance(api.jobs, LocalQueue) and isinstance(worker.jobs, LocalQueue)
    assert api.jobs.doorbell is not None and worker.jobs.doorbell is not None
    rung = asyncio.Event()  # set by the doorbell only: the poll never touches it
    worker.jobs.doorbell.listen(rung)
    try:
        await api.jobs.defer("careshare.no-such-task", key="bell:1")
        await asyncio.wait_for(rung.wait(), timeout=30)
    finally:
        worker.jobs.doorbell.close()
    assert list(worker.jobs.doorbell.folder.glob("*.sock")) == []  # closing takes its socket away


async def test_a_socket_left_by_a_process_that_is_gone_is_removed_when_rung(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="cs-bell-") as tmp:
        bell = Doorbell(Path(tmp) / "careshare.db.wake")
        bell.folder.mkdir()
        stale = bell.folder / "4242-deadbeef.sock"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(stale))
        dead.close()  # its file stays, as after SIGKILL
        assert stale.exists()
        bell.ring()
        assert not stale.exists()


async def test_ringing_with_nobody_listening_or_no_folder_is_harmless(tmp_path: Path) -> None:
    Doorbell(tmp_path / "never-made.wake").ring()
    folder = tmp_path / "empty.wake"
    folder.mkdir()
    (folder / "not-a-socket.txt").write_text("x")
    Doorbell(folder).ring()
    assert (folder / "not-a-socket.txt").read_text() == "x"


def test_only_a_file_backed_sqlite_database_has_a_doorbell(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    on_file = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'careshare.db'}")
    in_memory = create_async_engine("sqlite+aiosqlite:///:memory:")
    postgres = create_async_engine("postgresql+asyncpg://u:p@127.0.0.1:1/db")
    bell = Doorbell.for_engine(on_file)
    assert bell is not None and bell.folder == (tmp_path / "careshare.db.wake").resolve()
    assert Doorbell.for_engine(in_memory) is None
    assert Doorbell.for_engine(postgres) is None


async def test_a_folder_path_too_long_for_a_socket_leaves_the_pool_to_its_poll(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / ("x" * 120) / "careshare.db.wake")
    bell.listen(asyncio.Event())
    assert bell._sock is None
    assert not bell.folder.exists()
    bell.close()
