"""Malware scanning against a real clamd: clean files pass, EICAR is refused, limits are not clean, outages wait."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pikepdf
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from careshare import hookimpl
from careshare.core import db
from careshare.core.files import accept, check_file, check_key, wait_for_check
from careshare.core.jobs import MAX_ATTEMPTS, LocalQueue, RetryLater
from careshare.core.models import Principal
from careshare.core.plugins import get_plugin_manager
from careshare.core.runtime import Careshare
from careshare.core.scanning import WAITING_FOR_SCANNER, ScannerUnavailable, ScanVerdict
from careshare.host import create_app
from careshare.plugins.clamd import instream, verdict
from careshare.testing import bearer, free_port, make_pdf, make_settings, running_server
from careshare.testing.clamd import EICAR_SIGNATURE, eicar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from careshare.core.scanning import ScanContent
    from careshare.core.settings import Settings
    from careshare.testing.clamd import Clamd

CLINICIAN = Principal(subject="dr-a", role="clinician", org="org-a")
#: A file name full of patient data: it must show in no answer and no log line.
PATIENT_NAME = "Jane-Doe-1970-01-01-bloods.pdf"


def pdf_with(payload: bytes) -> bytes:
    """A real one-page PDF carrying ``payload`` as an uncompressed stream (identified as a PDF, as uploads must be)."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    pdf.Root.CareshareTest = pdf.make_stream(payload)
    out = io.BytesIO()
    pdf.save(out, compress_streams=False)
    return out.getvalue()


def held_files(settings: Settings) -> list[Path]:
    root = settings.data_dir / "blobs" / "held"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


class Api:
    """A real careshare server on 127.0.0.1 with one patient, and a clinician's client."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.http = httpx.Client(base_url=url, headers=bearer(settings, "clinician", "org-a", sub="dr-a"), timeout=60)
        made = self.http.post("/v1/patients", json={"name": "Pat Scan", "external_id": "MRN-S"})
        assert made.status_code == 201, made.text
        self.patient_id = made.json()["id"]

    def upload(self, body: bytes, *, wait: float = 20) -> httpx.Response:
        return self.http.post(
            f"/v1/patients/{self.patient_id}/files",
            params={"filename": PATIENT_NAME},
            content=body,
            headers={"Prefer": f"wait={wait:g}"},
        )

    def file(self, file_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/files/{file_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def until(self, file_id: str, done: Any, seconds: float = 60) -> dict[str, Any]:
        """The file once ``done(file)`` holds (polled; fails after ``seconds``)."""
        for _ in range(int(seconds / 0.1)):
            shown = self.file(file_id)
            if done(shown):
                return shown
            time.sleep(0.1)
        raise AssertionError(f"file never reached the state asked for: {shown['status']} {shown['check']}")


def migrated(settings: Settings, database: Path) -> Settings:
    """``settings`` with a copy of the session's migrated SQLite database in place (start-up skips the migrations)."""
    if settings.database_url.startswith("sqlite+aiosqlite:///"):
        shutil.copyfile(database, settings.database_url.split("///", 1)[1])
    return settings


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[Api]:
    with running_server(create_app(settings)) as url:
        api = Api(settings, url)
        try:
            yield api
        finally:
            api.http.close()


@pytest.fixture
def scanned(tmp_path: Path, clamd: Clamd, migrated_database: Path) -> Iterator[Api]:
    """A server whose uploads clamd scans."""
    settings = make_settings(tmp_path / "data", CARESHARE_CLAMD=clamd.address, CARESHARE_CLAMD_TIMEOUT="10")
    with serve(migrated(settings, migrated_database)) as api:
        yield api


# -- through the HTTP API ---------------------------------------------------------------------------


def test_a_clean_pdf_is_scanned_and_becomes_ready(scanned: Api) -> None:
    body = make_pdf(pages=2)
    response = scanned.upload(body)
    assert response.status_code == 201, response.text
    shown = response.json()
    assert shown["status"] == "ready"
    assert shown["check"]["scans"] == [{"scanner": "clamd", "verdict": "clean"}]
    assert scanned.http.get(f"/v1/files/{shown['id']}/content").content == body


def test_a_pdf_carrying_eicar_is_refused_as_infected_and_never_ready(
    scanned: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = scanned.upload(pdf_with(b"before " + eicar() + b" after"))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "file-infected"
    assert "malware scanner" in problem["detail"]
    # The answer names neither the file nor what was found (the signature helps an attacker, not the patient).
    assert PATIENT_NAME not in response.text and "EICAR" not in response.text
    shown = scanned.file(problem["file_id"])
    assert (shown["status"], shown["check"]["reason"], shown["renditions"]) == ("rejected", "file-infected", [])
    assert "EICAR" not in str(shown)
    assert scanned.http.get(f"/v1/files/{problem['file_id']}/content").status_code == 404
    assert held_files(scanned.settings) == []
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("careshare"))  # not httpx's
    assert EICAR_SIGNATURE in logged  # for the operator: which signature refused which file id
    assert problem["file_id"] in logged
    assert PATIENT_NAME not in logged


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(700 * 1024, id="over-MaxFileSize"),  # clamd stops scanning: Heuristics.Limits.Exceeded
        pytest.param(1536 * 1024, id="over-StreamMaxLength"),  # clamd stops reading: INSTREAM size limit exceeded
    ],
)
def test_a_file_over_the_scanners_limits_is_not_clean_and_is_refused(scanned: Api, size: int) -> None:
    response = scanned.upload(pdf_with(os.urandom(size)))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "file-too-large-to-scan"
    assert PATIENT_NAME not in response.text
    shown = scanned.file(problem["file_id"])
    assert (shown["status"], shown["check"]["reason"]) == ("rejected", "file-too-large-to-scan")
    assert held_files(scanned.settings) == []


def test_without_careshare_clamd_nothing_is_scanned(tmp_path: Path, migrated_database: Path) -> None:
    with serve(migrated(make_settings(tmp_path / "data"), migrated_database)) as api:
        response = api.upload(pdf_with(eicar()))
        assert response.status_code == 201, response.text
        assert "scans" not in response.json()["check"]


@pytest.fixture(params=["sqlite", "postgresql"])
def outage_settings(request: pytest.FixtureRequest, tmp_path: Path, clamd: Clamd, migrated_database: Path) -> Settings:
    extra = {"CARESHARE_CLAMD": clamd.address, "CARESHARE_CLAMD_TIMEOUT": "5"}
    if request.param == "postgresql":  # procrastinate's queue: the wait is a new job under the same key
        postgres = request.getfixturevalue("postgres")
        extra["CARESHARE_DATABASE_URL"] = postgres.create_database(f"scan_{uuid.uuid4().hex}")
    return migrated(make_settings(tmp_path / "data", **extra), migrated_database)


def test_clamd_down_keeps_the_file_processing_until_it_is_back_then_ready(
    outage_settings: Settings, clamd: Clamd
) -> None:
    with serve(outage_settings) as api:
        clamd.halt()
        response = api.upload(make_pdf(), wait=1)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "processing"
        file_id = response.json()["id"]
        waiting = api.until(
            file_id,
            lambda f: f["check"].get("state") == WAITING_FOR_SCANNER and f["check"].get("scanner_waits", 0) >= 2,
        )
        # Failed closed: still processing, nothing to download, and the waits counted as no attempt.
        assert waiting["status"] == "processing" and waiting["renditions"] == []
        assert waiting["check"]["attempt"] == 1
        assert api.http.get(f"/v1/files/{file_id}/content").status_code == 404
        clamd.start()
        shown = api.until(file_id, lambda f: f["status"] != "processing")
        assert shown["status"] == "ready", shown["check"]
        assert shown["check"]["scans"] == [{"scanner": "clamd", "verdict": "clean"}]


# -- the check job: an outage never refuses a file, nor counts as an attempt -----------------------------


@pytest.fixture
async def idle(tmp_path: Path) -> AsyncIterator[Careshare]:
    """A runtime whose jobs wait (no worker) and whose clamd is nowhere: a socket path nothing listens on."""
    settings = make_settings(tmp_path / "data", CARESHARE_WORKERS="0", CARESHARE_CLAMD=str(tmp_path / "no-clamd.sock"))
    cs = Careshare.build(settings)
    await cs.start()
    async with cs.engine.begin() as conn:
        await conn.execute(db.organisations.insert().values(id="org-a", created_at=db.utcnow()))
    try:
        yield cs
    finally:
        await cs.close()


async def _accept(cs: Careshare, body: bytes) -> str:
    async def chunks() -> AsyncIterator[bytes]:
        yield body

    stored = await accept(cs, chunks(), principal=CLINICIAN, owner_type="library", patient_id=None, source="clinic")
    return stored.id


async def test_the_last_attempt_with_the_scanner_away_waits_and_refuses_nothing(idle: Careshare) -> None:
    file_id = await _accept(idle, make_pdf())
    with pytest.raises(RetryLater) as later:
        await check_file(idle, file_id=file_id, attempts=MAX_ATTEMPTS)
    assert later.value.seconds > 0
    shown = await wait_for_check(idle, file_id, 0)
    assert shown.status == "processing"
    assert (shown.check["state"], shown.check["scanner_waits"]) == (WAITING_FOR_SCANNER, 1)
    assert [p.name for p in held_files(idle.settings)] == [file_id]  # the upload is kept for the next try


async def test_the_local_queue_runs_a_waiting_job_again_later_without_counting_the_run(idle: Careshare) -> None:
    file_id = await _accept(idle, make_pdf())
    queue = idle.jobs
    assert isinstance(queue, LocalQueue)
    delays = []
    for _ in range(3):
        async with idle.engine.begin() as conn:  # due now: the test does not wait out the backoff
            await conn.execute(sa.update(db.jobs).values(run_after=db.utcnow()))
        row = await queue.claim()
        assert row is not None and row.key == check_key(file_id)
        await queue.run_one(idle, row)
        async with idle.engine.connect() as conn:
            job = (await conn.execute(sa.select(db.jobs))).one()
        assert job.attempts == 0 and job.leased_until is None
        delays.append((job.run_after.replace(tzinfo=None) - db.utcnow().replace(tzinfo=None)).total_seconds())
    shown = await wait_for_check(idle, file_id, 0)
    assert (shown.status, shown.check["scanner_waits"], shown.check["attempt"]) == ("processing", 3, 1)
    assert delays[0] > 0 and delays[0] < delays[1] < delays[2]  # backing off: 1, 2, 4 s


# -- the hook: scanners beside clamd ---------------------------------------------------------------------


class _RefusesMarked:
    """An outside scanner: refuses files carrying a marker, says nothing of others it cannot judge."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    @hookimpl
    async def careshare_scan(self, content: ScanContent) -> ScanVerdict | None:
        data = b"".join([chunk async for chunk in content.chunks()])
        self.seen.append(len(data))
        assert len(data) == content.size
        return ScanVerdict("marker", "infected" if b"REFUSE-ME" in data else "clean", "Marker.Test")


async def test_hook_careshare_scan(tmp_path: Path, clamd: Clamd, migrated_database: Path) -> None:
    scanner = _RefusesMarked()
    settings = migrated(make_settings(tmp_path / "data", CARESHARE_CLAMD=clamd.address), migrated_database)
    pm = get_plugin_manager(blocked=settings.disabled_plugins, plugins=[scanner])
    clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
    with running_server(create_app(settings, plugins=pm)) as url:
        async with httpx.AsyncClient(base_url=url, headers=clinician, timeout=60) as http:
            marked, infected, clean = await asyncio.gather(
                http.post("/v1/library/files", content=pdf_with(b"REFUSE-ME")),
                http.post("/v1/library/files", content=pdf_with(eicar())),
                http.post("/v1/library/files", content=make_pdf()),
            )
    assert (marked.status_code, marked.json()["code"]) == (422, "file-infected")
    assert (infected.status_code, infected.json()["code"]) == (422, "file-infected")
    assert clean.status_code == 201, clean.text
    assert sorted(s["scanner"] for s in clean.json()["check"]["scans"]) == ["clamd", "marker"]
    assert len(scanner.seen) >= 2


# -- the INSTREAM client against clamd itself --------------------------------------------------------------


@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.binary(max_size=4096),
    after=st.binary(max_size=4096),
    infected=st.booleans(),
    cuts=st.lists(st.integers(0, 9000), max_size=6),
)
def test_eicar_is_found_wherever_it_sits_and_however_the_stream_is_cut(
    clamd: Clamd, before: bytes, after: bytes, infected: bool, cuts: list[int]
) -> None:
    data = before + (eicar() if infected else b"") + after
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})

    async def chunks() -> AsyncIterator[bytes]:
        for start, end in itertools.pairwise(points):
            yield data[start:end]

    answer = asyncio.run(instream(clamd.address, chunks(), timeout=10))
    assert verdict(answer) == (
        ScanVerdict("clamd", "infected", EICAR_SIGNATURE) if infected else ScanVerdict("clamd", "clean")
    )


def test_the_client_speaks_tcp_too() -> None:
    from careshare.testing.clamd import Clamd, find_clamd

    if find_clamd() is None:
        pytest.skip("clamd (Debian's clamav-daemon) is not installed")  # Reason: scripts/test installs it
    with Clamd(tcp=True, stream_max_bytes=64 * 1024) as server:
        assert server.address.startswith("tcp://127.0.0.1:")

        async def scan(body: bytes) -> ScanVerdict:
            async def chunks() -> AsyncIterator[bytes]:
                yield body

            return verdict(await instream(server.address, chunks(), timeout=10))

        assert asyncio.run(scan(b"just text")) == ScanVerdict("clamd", "clean")
        assert asyncio.run(scan(eicar())).verdict == "infected"
        assert asyncio.run(scan(os.urandom(1024 * 1024))).verdict == "too-large"


def test_a_scanner_that_accepts_but_never_answers_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "stalled.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.bind(str(path))
        stalled.listen(1)  # connections queue in the backlog; nobody reads or answers

        async def chunks() -> AsyncIterator[bytes]:
            yield b"%PDF-1.4 small"

        with pytest.raises(ScannerUnavailable, match="no answer in time"):
            asyncio.run(instream(str(path), chunks(), timeout=0.3))


@pytest.mark.parametrize("where", ["missing-socket", "closed-port"])
def test_a_scanner_that_is_not_there_is_unavailable(tmp_path: Path, where: str) -> None:
    address = str(tmp_path / "nothing.sock") if where == "missing-socket" else f"tcp://127.0.0.1:{free_port()}"

    async def chunks() -> AsyncIterator[bytes]:
        yield b"bytes"

    with pytest.raises(ScannerUnavailable, match="cannot reach clamd"):
        asyncio.run(instream(address, chunks(), timeout=5))


@pytest.mark.parametrize(
    "answer",
    ["", "stream: Can't allocate memory ERROR", "COMMAND READ TIMED OUT", "UNKNOWN COMMAND", "stream:"],
)
def test_an_answer_that_is_no_verdict_is_unavailable_never_clean(answer: str) -> None:
    with pytest.raises(ScannerUnavailable):
        verdict(answer)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("/run/clamav/clamd.ctl", True),
        ("unix:///run/clamav/clamd.ctl", True),
        ("tcp://127.0.0.1:3310", True),
        ("tcp://clamav.internal:3310", True),
        ("clamd.ctl", False),
        ("tcp://127.0.0.1", False),
        ("tcp://127.0.0.1:port", False),
        ("http://127.0.0.1:3310", False),
    ],
)
def test_careshare_clamd_is_a_unix_socket_or_a_tcp_address(tmp_path: Path, value: str, ok: bool) -> None:
    if ok:
        assert make_settings(tmp_path / "data", CARESHARE_CLAMD=value).clamd == value
    else:
        with pytest.raises(ValueError, match="CARESHARE_CLAMD"):
            make_settings(tmp_path / "data", CARESHARE_CLAMD=value)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_careshare_clamd_timeout_is_a_positive_number_of_seconds(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="CARESHARE_CLAMD_TIMEOUT"):
        make_settings(tmp_path / "data", CARESHARE_CLAMD_TIMEOUT=value)


def test_an_ok_before_the_whole_file_was_sent_is_not_clean(tmp_path: Path) -> None:
    path = tmp_path / "hasty.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hasty:
        hasty.bind(str(path))
        hasty.listen(1)

        def answer_early() -> None:
            conn, _ = hasty.accept()
            with conn:
                conn.recv(64)  # the command and a little of the stream, then a verdict on that alone
                conn.sendall(b"stream: OK\0")

        thread = threading.Thread(target=answer_early, daemon=True)
        thread.start()

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield os.urandom(256 * 1024)

        with pytest.raises(ScannerUnavailable, match="before the whole file was sent"):
            asyncio.run(instream(str(path), chunks(), timeout=10))
        thread.join(timeout=10)
