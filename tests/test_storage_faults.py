"""A disk or bucket that refuses writes: ``507 insufficient-storage``, nothing half-written, checks wait.

The disk is real: a small tmpfs (or a loop-mounted ext4 image) mounted for the test, holding the
data directory (blobs, staging, held copies, work directories); the database stays outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from careshare.core.plugins import get_plugin_manager
from careshare.core.problems import INSUFFICIENT_STORAGE, problem_types
from careshare.core.storage import BlobStore, InsufficientStorage
from careshare.host import create_app
from careshare.testing import bearer, hostile, make_settings, running_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from careshare.core.settings import Settings
    from careshare.testing import MotoS3

MIB = 1024 * 1024
DISK_MIB = 24


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def small_disk(where: Path, mib: int = DISK_MIB) -> Iterator[Path]:
    """A real filesystem of ``mib`` MiB mounted at ``where``: tmpfs, else a loop-mounted ext4 image."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small disk needs root (mount -t tmpfs)")  # Reason: CI runs as root; a developer may not
    tried = _run("mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0755", "tmpfs", str(where))
    if tried.returncode != 0:
        image = where.with_name(f"{where.name}.ext4")
        with image.open("wb") as out:
            out.truncate(mib * MIB)
        made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        looped = _run("mount", "-o", "loop", str(image), str(where)) if made.returncode == 0 else made
        if looped.returncode != 0:
            # Reason: this sandbox allows neither a tmpfs nor a loop mount; the reasons are in the message.
            why = f"{tried.stderr.strip()}; {looped.stderr.strip()}"
            pytest.skip(f"no small disk: {why}")  # Reason: no tmpfs or loop mount
    try:
        yield where
    finally:
        for _ in range(50):
            if _run("umount", str(where)).returncode == 0:
                break
            time.sleep(0.1)
        else:
            _run("umount", "-l", str(where))


def free_bytes(path: Path) -> int:
    disk = os.statvfs(path)
    return disk.f_bavail * disk.f_frsize


def fill(disk: Path, leave: int) -> Path:
    """Write a filler file until only about ``leave`` bytes of the disk are free; returns it."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    with filler.open("wb") as out:
        while (room := free_bytes(disk) - leave) > 0:
            try:
                out.write(b"\0" * min(room, MIB))
                out.flush()
            except OSError:
                break
    return filler


def leftovers(data_dir: Path) -> list[str]:
    """Everything a failed upload or check might leave: staging, held, work directories, partial blobs."""
    found = []
    for folder in (data_dir / "blobs" / "staging", data_dir / "blobs" / "held", data_dir / "tmp"):
        if folder.exists():
            found += [str(p.relative_to(data_dir)) for p in folder.iterdir()]
    blobs = data_dir / "blobs" / "sha256"
    if blobs.exists():
        found += [str(p.relative_to(data_dir)) for p in blobs.rglob("*") if p.is_file() and "." in p.name]
    return found


def body(behaviour: str, size: int) -> bytes:
    start = hostile.MAGIC + behaviour.encode() + b"\n"
    return start + os.urandom(max(0, size - len(start)))


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


@pytest.fixture
def on_disk(tmp_path: Path, disk: Path) -> Settings:
    """Settings with the data directory on the small disk and the database beside it, off it."""
    (tmp_path / "db").mkdir()
    return make_settings(
        disk / "data",
        CARESHARE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'db' / 'careshare.db'}",
        CARESHARE_WORKERS="1",
        CARESHARE_UPLOAD_WAIT="10",
    )


@contextlib.contextmanager
def server(settings: Settings) -> Iterator[tuple[httpx.Client, dict[str, str], str]]:
    """A real uvicorn serving careshare with the test file-type plugin; a client, clinician headers, a patient."""
    pm = get_plugin_manager(plugins=[hostile])
    with running_server(create_app(settings, pm)) as base, httpx.Client(base_url=base, timeout=60) as http:
        clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
        created = http.post("/v1/patients", json={"name": "Pat", "external_id": "MRN-1"}, headers=clinician)
        assert created.status_code == 201, created.text
        yield http, clinician, created.json()["id"]


def assert_insufficient_storage(response: httpx.Response, settings: Settings) -> None:
    assert response.status_code == 507, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "insufficient-storage"
    assert problem["status"] == 507
    assert "try again later" in problem["detail"].lower()
    # No paths, keys or OS messages reach the client.
    for secret in (str(settings.data_dir), "staging", "held/", "os error", "No space"):
        assert secret not in response.text


def wait_until(predicate: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


# -- the problem type -------------------------------------------------------------------------------------


def test_insufficient_storage_is_a_registered_507_with_a_sentence_to_act_on() -> None:
    assert problem_types()["insufficient-storage"] is INSUFFICIENT_STORAGE
    problem = InsufficientStorage()
    assert (problem.status, problem.code) == (507, "insufficient-storage")
    assert problem.detail.endswith(".") and "/" not in problem.detail


# -- staging straight into a full disk, property over sizes ------------------------------------------------


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def shared_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One small disk for every example of a property (function-scoped fixtures are shared by examples)."""
    with small_disk(tmp_path_factory.mktemp("faults") / "disk") as mounted:
        yield mounted


@given(
    upload=st.integers(1, 6 * MIB),
    room=st.integers(0, 4 * MIB),
    chunk=st.sampled_from([4096, 65536, MIB]),
)
def test_staging_onto_a_full_disk_is_insufficient_storage_and_leaves_nothing(
    shared_disk: Path, upload: int, room: int, chunk: int
) -> None:
    disk = shared_disk
    root = disk / f"store-{uuid.uuid4().hex}"
    root.mkdir()
    filler = fill(disk, room)
    store = BlobStore(root.as_uri(), local_tmp=root / "tmp")
    data = os.urandom(upload)
    try:
        staged = asyncio.run(store.stage(_chunks(data, chunk), limit=None))
    except InsufficientStorage:
        assert upload + 256 * 1024 > room  # refused only when it truly did not fit (slack: the fs's own blocks)
        assert not list((root / "staging").iterdir())
    else:
        assert (root / staged.key).read_bytes() == data
        asyncio.run(store.discard(staged.key))
    finally:
        filler.unlink()
        for path in sorted(root.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        root.rmdir()


# -- through a real server -------------------------------------------------------------------------------


def test_a_disk_that_fills_mid_upload_answers_507_keeps_serving_and_recovers(on_disk: Settings, disk: Path) -> None:
    with server(on_disk) as (http, clinician, pid):
        earlier = body("ok", 200_000)
        first = http.post(f"/v1/patients/{pid}/files", content=earlier, headers=clinician)
        assert first.status_code == 201, first.text
        filler = fill(disk, 2 * MIB)
        big = body("ok", 6 * MIB)
        refused = http.post(f"/v1/patients/{pid}/files", content=big, headers=clinician)
        assert_insufficient_storage(refused, on_disk)
        assert leftovers(on_disk.data_dir) == []
        # Reads go on meanwhile, and so do writes that fit.
        read = http.get(f"/v1/files/{first.json()['id']}/content", headers=clinician)
        assert (read.status_code, read.content) == (200, earlier)
        small = http.post(f"/v1/patients/{pid}/files", content=body("ok", 50_000), headers=clinician)
        assert small.status_code == 201, small.text
        filler.unlink()
        again = http.post(f"/v1/patients/{pid}/files", content=big, headers=clinician)
        assert again.status_code == 201, again.text
        content = http.get(f"/v1/files/{again.json()['id']}/content", headers=clinician)
        assert content.content == big
        assert leftovers(on_disk.data_dir) == []


def test_a_full_disk_refuses_an_upload_at_its_first_bytes(on_disk: Settings, disk: Path) -> None:
    with server(on_disk) as (http, clinician, pid):
        filler = fill(disk, 0)
        refused = http.post(f"/v1/patients/{pid}/files", content=body("ok", 100_000), headers=clinician)
        assert_insufficient_storage(refused, on_disk)
        listed = http.get(f"/v1/patients/{pid}/files", headers=clinician)
        assert listed.status_code == 200 and listed.json()["items"] == []
        filler.unlink()
        assert http.post(f"/v1/patients/{pid}/files", content=body("ok", 100_000), headers=clinician).status_code == 201
        assert leftovers(on_disk.data_dir) == []


def test_a_check_whose_rendition_hits_a_full_disk_waits_processing_then_finishes(on_disk: Settings, disk: Path) -> None:
    with server(on_disk) as (http, clinician, pid):
        earlier = body("ok", 100_000)
        ready = http.post(f"/v1/patients/{pid}/files", content=earlier, headers=clinician).json()["id"]
        filler = fill(disk, 3 * MIB)
        # Its 200 kB are held, but its 8 MiB rendition does not fit: not the file's fault.
        upload = body("write-8192", 200_000)
        accepted = http.post(f"/v1/patients/{pid}/files", content=upload, headers={**clinician, "Prefer": "wait=0"})
        assert accepted.status_code == 202, accepted.text
        fid = accepted.json()["id"]

        def shown() -> dict[str, Any]:
            response = http.get(f"/v1/files/{fid}", headers=clinician)
            assert response.status_code == 200, response.text
            return dict(response.json())

        wait_until(lambda: shown()["check"].get("state") == "waiting-for-storage", "the check waits for room")
        assert shown()["status"] == "processing"
        read = http.get(f"/v1/files/{ready}/content", headers=clinician)
        assert (read.status_code, read.content) == (200, earlier)
        filler.unlink()
        wait_until(lambda: shown()["status"] != "processing", "the check ends once there is room")
        done = shown()
        assert done["status"] == "ready", done
        assert sorted(r["role"] for r in done["renditions"]) == ["original", "shareable"]
        shareable = http.get(f"/v1/files/{fid}/content", headers=clinician, params={"rendition": "shareable"})
        assert shareable.status_code == 200 and len(shareable.content) == 8192 * 1024
        assert leftovers(on_disk.data_dir) == []


def test_a_bucket_that_refuses_writes_answers_507(
    tmp_path: Path, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    # A bucket that does not exist refuses every write, as a full or locked one would.
    settings = make_settings(tmp_path / "data", CARESHARE_STORAGE_URL=f"s3://missing-{uuid.uuid4().hex}/careshare")
    with server(settings) as (http, clinician, pid):
        refused = http.post(f"/v1/patients/{pid}/files", content=body("ok", 100_000), headers=clinician)
        assert_insufficient_storage(refused, settings)
        assert http.get(f"/v1/patients/{pid}", headers=clinician).status_code == 200


def test_with_the_database_on_the_full_disk_too_writes_are_507_and_plain_reads_go_on(
    tmp_path: Path, disk: Path
) -> None:
    settings = make_settings(disk / "data", CARESHARE_WORKERS="1")  # the embedded layout: all on one disk
    with server(settings) as (http, clinician, pid):
        kept = body("ok", 100_000)
        first = http.post(f"/v1/patients/{pid}/files", content=kept, headers=clinician)
        assert first.status_code == 201, first.text
        filler = fill(disk, 0)
        try:
            patient = http.post("/v1/patients", json={"name": "Pat Two", "external_id": "MRN-2"}, headers=clinician)
            assert_insufficient_storage(patient, settings)
            upload = http.post(f"/v1/patients/{pid}/files", content=body("ok", 100_000), headers=clinician)
            assert_insufficient_storage(upload, settings)
            shown = http.get(f"/v1/files/{first.json()['id']}", headers=clinician)
            assert (shown.status_code, shown.json()["status"]) == (200, "ready")
            # Reading the bytes writes an audit event first: with no room to record it, nothing is served.
            read = http.get(f"/v1/files/{first.json()['id']}/content", headers=clinician)
            assert_insufficient_storage(read, settings)
        finally:
            filler.unlink()
        again = http.post("/v1/patients", json={"name": "Pat Two", "external_id": "MRN-2"}, headers=clinician)
        assert again.status_code == 201, again.text
        assert http.post(f"/v1/patients/{pid}/files", content=body("ok", 100_000), headers=clinician).status_code == 201
