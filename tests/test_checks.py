"""Checks off the request path: 201/202 with ``Prefer: wait``, rejected rows, jobs run once, workers that die."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from careshare.core import db
from careshare.core.files import CHECK_TASK, accept, check_file, check_key, requeue_stranded, wait_for_check
from careshare.core.models import Principal
from careshare.core.plugins import get_plugin_manager
from careshare.core.runtime import Careshare
from careshare.host import create_app
from careshare.testing import bearer, hostile, make_pdf, make_settings, running_server
from careshare.web.uploads import prefer_wait

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings
    from careshare.testing import MotoS3, PostgresCluster

CLINICIAN = Principal(subject="dr-a", role="clinician", org="org-a")


async def _poll(client: AsyncTestClient[Any], headers: dict[str, str], fid: str) -> dict[str, Any]:
    """The file once it is no longer processing (30 s at most)."""
    for _ in range(300):
        shown = (await client.get(f"/v1/files/{fid}", headers=headers)).json()
        if shown["status"] != "processing":
            return shown
        await asyncio.sleep(0.1)
    raise AssertionError("the check did not end within 30 s")


def _held(settings: Settings) -> list[Path]:
    root = settings.data_dir / "blobs" / "held"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# -- Prefer: wait ---------------------------------------------------------------------------------------


@given(
    wait=st.one_of(st.none(), st.integers(0, 10**30)),
    others=st.lists(st.sampled_from(["return=minimal", "handling=lenient", "wait=abc", "wait=", "x"]), max_size=3),
    default=st.floats(0, 100),
    cap=st.floats(0, 100),
)
def test_prefer_wait_is_the_asked_wait_or_the_default_always_within_the_cap(
    wait: int | None, others: list[str], default: float, cap: float
) -> None:
    values = [", ".join([*others, *([f"wait={wait}"] if wait is not None else [])])]
    result = prefer_wait(values, default, cap)
    assert 0 <= result <= cap
    assert result == max(0.0, min(float(wait) if wait is not None else default, cap))


@pytest.mark.parametrize("header", ["respond-async", "respond-async, wait=20", "wait=20; x=1, respond-async"])
def test_respond_async_asks_for_an_answer_at_once(header: str) -> None:
    assert prefer_wait([header], 10, 30) == 0.0


async def test_an_upload_answers_201_with_the_ready_file_when_its_check_ends_in_time(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    response = await client.post(
        f"/v1/patients/{patient_id}/files?filename=a.pdf", content=make_pdf(), headers=clinician
    )
    assert response.status_code == 201, response.text
    shown = response.json()
    assert shown["status"] == "ready"
    assert response.headers["location"] == f"/v1/files/{shown['id']}"
    assert {r["role"] for r in shown["renditions"]} >= {"original", "shareable"}


@pytest.mark.parametrize("prefer", ["wait=0", "respond-async"])
async def test_an_upload_that_asks_not_to_wait_gets_202_and_its_check_ends_on_its_own(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings, prefer: str
) -> None:
    body = make_pdf(pages=3)
    response = await client.post(
        f"/v1/patients/{patient_id}/files?filename=a.pdf", content=body, headers={**clinician, "Prefer": prefer}
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "processing"
    assert accepted["renditions"] == []
    assert accepted["size"] == len(body)
    assert response.headers["location"] == f"/v1/files/{accepted['id']}"
    assert int(response.headers["retry-after"]) > 0
    shown = await _poll(client, clinician, accepted["id"])
    assert shown["status"] == "ready"
    original = await client.get(f"/v1/files/{accepted['id']}/content", headers=clinician)
    assert original.content == body
    assert _held(settings) == []


async def test_a_refusal_in_time_is_the_problem_and_the_row_keeps_why(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings
) -> None:
    locked = make_pdf(user_password="open-sesame", owner_password="owner")
    response = await client.post(f"/v1/patients/{patient_id}/files", content=locked, headers=clinician)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "pdf-password-protected"
    shown = (await client.get(f"/v1/files/{problem['file_id']}", headers=clinician)).json()
    assert shown["status"] == "rejected"
    assert shown["check"]["reason"] == "pdf-password-protected"
    assert shown["check"]["problem"]["detail"] == problem["detail"]
    assert shown["renditions"] == []
    assert _held(settings) == [] and not (settings.data_dir / "blobs" / "sha256").exists()


async def _answered_later(
    client: AsyncTestClient[Any], patient: dict[str, str], name: str, body: Callable[[int], bytes], final: int
) -> httpx.Response:
    """An upload answered 202 (``Prefer: wait=0``). A check can end before the answer is written
    (a locked PDF is refused at once); that answer is then the verdict itself, and another file goes."""
    for attempt in range(8):
        answer = await client.post(
            f"/v1/me/files?filename={name}", content=body(attempt), headers={**patient, "Prefer": "wait=0"}
        )
        if answer.status_code == 202:
            return answer
        assert answer.status_code == final, answer.text
    raise AssertionError(f"eight uploads of {name} were all checked before their answer")


async def test_a_patient_answered_202_is_told_how_each_check_ended(
    client: AsyncTestClient[Any], patient: dict[str, str]
) -> None:
    good = await _answered_later(client, patient, "Jane-Doe-scan.pdf", lambda n: make_pdf(pages=3 + n), 201)
    bad = await _answered_later(
        client, patient, "Jane-Doe-locked.pdf", lambda n: make_pdf(user_password=f"x{n}", owner_password="y"), 422
    )
    assert (await _poll(client, patient, good.json()["id"]))["status"] == "ready"
    assert (await _poll(client, patient, bad.json()["id"]))["status"] == "rejected"
    # Answered at once (201): the patient knows already, so no notification for this one.
    now = await client.post("/v1/me/files", content=make_pdf(pages=2), headers=patient)
    assert now.status_code == 201
    inbox = (await client.get("/v1/me/notifications", headers=patient)).json()["items"]
    told = {(n["kind"], n["item_id"]) for n in inbox}
    assert told == {("file.ready", good.json()["id"]), ("file.rejected", bad.json()["id"])}
    assert all("Jane" not in n["title"] and ".pdf" not in n["title"] for n in inbox)


# -- files still processing ---------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """No worker in the app when a test asks for ``no_worker``: its checks wait for one the test runs."""
    extra = {"CARESHARE_WORKERS": "0", "CARESHARE_MAX_WAIT": "0.5"} if "no_worker" in request.keywords else {}
    return make_settings(tmp_path / "data", **extra)


async def _worker(settings: Settings) -> AsyncIterator[Careshare]:
    cs = Careshare.build(settings)
    await cs.start()
    job = asyncio.create_task(cs.run_workers(1))
    try:
        yield cs
    finally:
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        await cs.close()


@pytest.mark.no_worker
async def test_a_processing_file_cannot_be_attached_until_its_check_ends(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings
) -> None:
    response = await client.post(f"/v1/patients/{patient_id}/files", content=make_pdf(), headers=clinician)
    assert response.status_code == 202
    fid = response.json()["id"]
    assert response.json()["check"]["state"] == "queued"
    message = {"body": "Your scan", "file_ids": [fid]}
    refused = await client.post(f"/v1/patients/{patient_id}/messages", json=message, headers=clinician)
    assert (refused.status_code, refused.json()["code"]) == (409, "file-not-ready")
    async for _cs in _worker(settings):
        assert (await _poll(client, clinician, fid))["status"] == "ready"
    sent = await client.post(f"/v1/patients/{patient_id}/messages", json=message, headers=clinician)
    assert sent.status_code == 201, sent.text


@pytest.mark.no_worker
async def test_an_upload_inside_a_message_whose_check_runs_long_is_refused_clearly(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    files = {"file": ("scan.pdf", make_pdf(), "application/pdf")}
    response = await client.post(
        f"/v1/patients/{patient_id}/messages", data={"body": "Here"}, files=files, headers=clinician
    )
    assert response.status_code == 409
    problem = response.json()
    assert problem["code"] == "file-still-checking"
    assert "file id" in problem["detail"]
    kept = (await client.get(f"/v1/files/{problem['file_id']}", headers=clinician)).json()
    assert kept["status"] == "processing"
    messages = (await client.get(f"/v1/patients/{patient_id}/messages", headers=clinician)).json()
    assert messages["items"] == []


# -- jobs: at least once, effect once -----------------------------------------------------------------


@pytest.fixture
async def idle(tmp_path: Path) -> AsyncIterator[Careshare]:
    """A runtime whose jobs wait (no worker runs), with a patient of ``org-a``."""
    settings = make_settings(tmp_path / "data", CARESHARE_WORKERS="0")
    cs = Careshare.build(settings)
    await cs.start()
    async with cs.engine.begin() as conn:
        await conn.execute(db.organisations.insert().values(id="org-a", created_at=db.utcnow()))
    try:
        yield cs
    finally:
        await cs.close()


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _accept(cs: Careshare, body: bytes) -> str:
    stored = await accept(
        cs, _chunks(body), principal=CLINICIAN, owner_type="library", patient_id=None, source="clinic"
    )
    assert stored.status == "processing"
    return stored.id


async def _count(cs: Careshare, table: sa.Table, *where: Any) -> int:
    async with cs.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar_one())


async def test_a_check_run_again_and_again_has_one_effect(idle: Careshare) -> None:
    fid = await _accept(idle, make_pdf(pages=2))
    await asyncio.gather(*(check_file(idle, file_id=fid, attempts=1) for _ in range(3)))
    await check_file(idle, file_id=fid, attempts=2)
    done = await wait_for_check(idle, fid, 0)
    assert done.status == "ready"
    roles = [r.role for r in done.renditions]
    assert sorted(roles) == sorted(set(roles)) and "shareable" in roles
    assert await _count(idle, db.renditions, db.renditions.c.file_id == fid) == len(roles)
    assert _held(idle.settings) == []


async def test_a_file_whose_held_bytes_are_gone_is_refused_not_left_processing(idle: Careshare) -> None:
    fid = await _accept(idle, make_pdf())
    (idle.settings.data_dir / "blobs" / "held" / fid).unlink()
    await check_file(idle, file_id=fid, attempts=1)
    done = await wait_for_check(idle, fid, 0)
    assert (done.status, done.check["reason"]) == ("rejected", "file-unprocessable")


async def test_a_processing_file_without_a_job_is_queued_again(idle: Careshare) -> None:
    fid = await _accept(idle, make_pdf())
    assert await idle.jobs.waiting([check_key(fid)]) == {check_key(fid)}
    async with idle.engine.begin() as conn:  # as if the process died between the commit and the defer
        await conn.execute(sa.delete(db.jobs))
    assert await requeue_stranded(idle, older_than_seconds=0) == 1
    assert await idle.jobs.waiting([check_key(fid)]) == {check_key(fid)}
    assert await requeue_stranded(idle, older_than_seconds=0) == 0
    async with idle.engine.connect() as conn:
        task = (await conn.execute(sa.select(db.jobs.c.task))).scalar_one()
    assert task == CHECK_TASK


# -- workers in processes of their own, killed mid-check ----------------------------------------------


def _careshare(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).with_name("careshare")), *args]
    with log.open("ab") as out:
        # A session of its own: SIGKILL to the group takes the worker and its handler processes,
        # as a machine that dies would.
        return subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)


def _wait(predicate: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _worker_env(settings: Settings, plugins: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARESHARE_", "AWS_"))}
    env.update(
        CARESHARE_DATA_DIR=str(settings.data_dir),
        CARESHARE_SECRET_KEY=settings.secret_key,
        CARESHARE_DATABASE_URL=settings.database_url,
        CARESHARE_STORAGE_URL=settings.storage_url,
        CARESHARE_JOB_LEASE_SECONDS=str(settings.job_lease_seconds),
        CARESHARE_ORGS=",".join(settings.allowed_orgs),
        PYTHONPATH=str(plugins),
    )
    env.update(extra)
    return env


def _killed_mid_check_then_recovered(
    api_settings: Settings,
    worker_settings: Settings,
    claimed: Callable[[], bool],
    tmp_path: Path,
    env: dict[str, str],
    recovered: str,
) -> dict[str, Any]:
    """Upload a slow file (202), let a worker process take its job, SIGKILL it, let a second one finish."""
    pm = get_plugin_manager(plugins=[hostile])
    plugins = hostile.entry_point_dir(tmp_path / "plugins")
    log = tmp_path / "workers.log"
    worker_env = {**_worker_env(worker_settings, plugins), **env}
    with running_server(create_app(api_settings, pm)) as base, httpx.Client(base_url=base, timeout=60) as http:
        clinician = bearer(api_settings, "clinician", "org-a", sub="dr-a")
        pid = http.post("/v1/patients", json={"name": "P", "external_id": "1"}, headers=clinician).json()["id"]
        body = hostile.MAGIC + b"sleep-6\n" + os.urandom(4096)
        response = http.post(f"/v1/patients/{pid}/files", content=body, headers={**clinician, "Prefer": "wait=0"})
        assert response.status_code == 202, response.text
        fid = response.json()["id"]
        first = _careshare("worker", "--concurrency", "1", env=worker_env, log=log)
        try:
            _wait(claimed, "the first worker took the job")
            time.sleep(0.5)  # inside the handler's six seconds
            progress = http.get(f"/v1/files/{fid}", headers=clinician).json()
            assert progress["status"] == "processing"
            assert (progress["check"]["state"], progress["check"]["attempt"]) == ("checking", 1)
        finally:
            _kill_group(first)
        second = _careshare("worker", "--concurrency", "1", env=worker_env, log=log)
        try:
            _wait(
                lambda: http.get(f"/v1/files/{fid}", headers=clinician).json()["status"] != "processing",
                "the second worker finished the check",
            )
        finally:
            second.terminate()
            second.wait(timeout=30)
        shown = http.get(f"/v1/files/{fid}", headers=clinician).json()
        content = http.get(f"/v1/files/{fid}/content", headers=clinician)
        assert content.content == body
        ranged = http.get(f"/v1/files/{fid}/content", headers={**clinician, "Range": "bytes=4-9"})
        assert (ranged.status_code, ranged.content) == (206, body[4:10])
    assert second.returncode == 0, log.read_text()[-2000:]
    # The second worker took the job over from the first, dead one (not a fresh job).
    assert recovered in log.read_text()
    return shown


def _sqlite_claimed(settings: Settings) -> Callable[[], bool]:
    def claimed() -> bool:
        with closing(sqlite3.connect(settings.data_dir / "careshare.db")) as conn:
            row = conn.execute("SELECT attempts, leased_until FROM jobs").fetchone()
        return row is not None and row[0] == 1 and row[1] is not None

    return claimed


def test_a_worker_killed_mid_check_leaves_its_job_to_another_on_sqlite(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", CARESHARE_WORKERS="0", CARESHARE_JOB_LEASE_SECONDS="2")
    shown = _killed_mid_check_then_recovered(
        settings, settings, _sqlite_claimed(settings), tmp_path, {}, "taking over a job whose lease lapsed"
    )
    assert shown["status"] == "ready"
    assert sorted(r["role"] for r in shown["renditions"]) == ["original", "shareable"]
    assert _held(settings) == []
    with closing(sqlite3.connect(settings.data_dir / "careshare.db")) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM renditions").fetchone()[0] == 2


def test_a_worker_killed_mid_check_on_postgresql_and_s3_sharing_no_disk_with_the_api(
    tmp_path: Path, postgres: PostgresCluster, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.create_database(f"checks_{uuid.uuid4().hex}")
    storage = moto_s3.storage_url(f"checks-{uuid.uuid4().hex}")
    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    common = {
        "CARESHARE_DATABASE_URL": url,
        "CARESHARE_STORAGE_URL": storage,
        "CARESHARE_WORKERS": "0",
        "CARESHARE_JOB_LEASE_SECONDS": "2",
    }
    api = make_settings(tmp_path / "api", **common)
    worker = make_settings(tmp_path / "worker", **common)  # another data directory: no disk shared

    def claimed() -> bool:
        import psycopg

        with psycopg.connect(url.replace("+asyncpg", "")) as conn:
            row = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'").fetchone()
        return bool(row and row[0] == 1)

    shown = _killed_mid_check_then_recovered(
        api, worker, claimed, tmp_path, dict(moto_s3.env), "retrying a stalled job"
    )
    assert shown["status"] == "ready"
    assert sorted(r["role"] for r in shown["renditions"]) == ["original", "shareable"]
    keys = moto_s3.keys()
    assert not [k for k in keys if "/held/" in k or "/staging/" in k]
    assert not (tmp_path / "api" / "blobs").exists()


# -- the same on both databases, over real HTTP ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def both(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return make_settings(tmp_path / "data")
    postgres = request.getfixturevalue("postgres")
    url = postgres.create_database(f"checks_{uuid.uuid4().hex}")
    return make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=url)


async def test_202_then_ready_or_rejected_and_the_patient_told_on_both_databases(both: Settings) -> None:
    clinician = bearer(both, "clinician", "org-a", sub="dr-a")
    with running_server(create_app(both)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            made = await http.post("/v1/patients", json={"name": "P", "external_id": "1"}, headers=clinician)
            patient = bearer(both, "patient", "org-a", patient=made.json()["id"])
            later = {**patient, "Prefer": "respond-async"}
            good, bad = await asyncio.gather(
                http.post("/v1/me/files", content=make_pdf(pages=4), headers=later),
                http.post("/v1/me/files", content=make_pdf(user_password="a", owner_password="b"), headers=later),
            )
            assert (good.status_code, bad.status_code) == (202, 202)
            ended = {}
            for response in (good, bad):
                fid = response.json()["id"]
                for _ in range(300):
                    shown = (await http.get(f"/v1/files/{fid}", headers=patient)).json()
                    if shown["status"] != "processing":
                        break
                    await asyncio.sleep(0.1)
                ended[fid] = (shown["status"], shown["check"]["reason"])
            assert ended == {
                good.json()["id"]: ("ready", None),
                bad.json()["id"]: ("rejected", "pdf-password-protected"),
            }
            in_time = await http.post(
                "/v1/me/files", content=make_pdf(pages=2), headers={**patient, "Prefer": "wait=20"}
            )
            assert in_time.status_code == 201
            inbox = (await http.get("/v1/me/notifications", headers=patient)).json()["items"]
    assert sorted((n["kind"], n["item_id"]) for n in inbox) == sorted(
        [("file.ready", good.json()["id"]), ("file.rejected", bad.json()["id"])]
    )


async def test_the_openapi_document_names_202_on_every_upload_route(client: AsyncTestClient[Any]) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    for path in ("/v1/patients/{pid}/files", "/v1/library/files", "/v1/me/files"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"201", "202"} <= set(responses), path
        assert "Prefer: wait" in responses["202"]["description"]
