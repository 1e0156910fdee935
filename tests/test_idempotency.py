"""Idempotency-Key on every creating POST: a retry answers the first answer and makes nothing twice (issue 14).

Over the API on SQLite and PostgreSQL, for each kind of POST that creates or shares: the retry
with the same key is the first answer again (``Idempotent-Replayed: true``) and one row; the key
with another request is ``idempotency-key-reused``; two at once make one; another caller's same
key is another key. On a real server: a retry while the first upload's body is still arriving is
``idempotency-key-in-use``, and keys of any shape are taken or refused as the header's rule says.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from careshare.core import db
from careshare.core.idempotency import Caller, Claimed, claim, request_fingerprint, sweep_keys
from careshare.core.sweep import sweep_leftovers
from careshare.host import create_app
from careshare.plugins.appointments.tables import appointments
from careshare.plugins.chat.tables import chat_messages
from careshare.plugins.consents.tables import consent_requests
from careshare.plugins.letters.tables import letters
from careshare.plugins.medication.tables import medication_reminders
from careshare.plugins.requests.tables import file_requests
from careshare.testing import bearer, make_pdf, make_settings, running_server
from careshare.testing.api import assert_problem, register

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

    from careshare.core.settings import Settings
    from careshare.testing import PostgresCluster

KEY = "Idempotency-Key"
PDF = make_pdf(text="first")
OTHER_PDF = make_pdf(text="second")


@pytest.fixture(params=["sqlite", "postgresql"])
def world_settings(request: pytest.FixtureRequest, tmp_path: Path, migrated_database: Path) -> Settings:
    env = {"CARESHARE_IDEMPOTENCY_WAIT_SECONDS": "1"}
    if request.param == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        return make_settings(
            tmp_path / "data", CARESHARE_DATABASE_URL=cluster.create_database(f"idem_{uuid.uuid4().hex}"), **env
        )
    database = tmp_path / "data" / "careshare.db"
    database.parent.mkdir(parents=True)
    database.write_bytes(migrated_database.read_bytes())
    return make_settings(tmp_path / "data", **env)


@pytest.fixture
async def world(world_settings: Settings) -> AsyncIterator[World]:
    # The test's own engine: the app's connections belong to the app's event loop (PostgreSQL).
    engine = db.create_engine(world_settings.database_url)
    async with AsyncTestClient(app=create_app(world_settings)) as client:
        s = world_settings
        dr_a = bearer(s, "clinician", "org-a", sub="dr-a")
        pid = await register(client, dr_a, "IDEM-1")
        other_pid = await register(client, dr_a, "IDEM-2")
        yield World(
            client,
            s,
            dr_a,
            bearer(s, "clinician", "org-a", sub="dr-b"),
            bearer(s, "patient", "org-a", patient=pid),
            bearer(s, "patient", "org-a", patient=other_pid),
            pid,
            engine,
        )
    await engine.dispose()


@attrs.define
class World:
    client: AsyncTestClient[Any]
    settings: Settings
    dr_a: dict[str, str]
    dr_b: dict[str, str]
    me: dict[str, str]
    other_me: dict[str, str]
    pid: str
    engine: AsyncEngine
    made: dict[str, str] = attrs.field(factory=dict)

    async def made_once(self, name: str, path: str, body: dict[str, Any]) -> str:
        if name not in self.made:
            self.made[name] = await self.made_now(path, body)
        return self.made[name]

    async def made_now(self, path: str, body: dict[str, Any]) -> str:
        response = await self.client.post(path, json=body, headers=self.dr_a)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def count(self, table: sa.Table, *where: Any) -> int:
        async with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(table).where(*where)
            return int((await conn.execute(query)).scalar_one())


#: One request: its path, then the keyword arguments of ``client.post``.
Request = tuple[str, dict[str, Any]]


@attrs.frozen
class Kind:
    """A creating POST: ``prepare(world)`` gives the request and another request (a fresh target each call)."""

    name: str
    prepare: Callable[[World], Awaitable[tuple[Request, Request]]]
    rows: Callable[[World], Awaitable[int]]
    #: The two callers: the first makes, the second is "another caller with the same key".
    patient_side: bool = False


def _json(path: str, body: dict[str, Any], other: dict[str, Any]) -> tuple[Request, Request]:
    return (path, {"json": body}), (path, {"json": other})


async def _patient(w: World) -> tuple[Request, Request]:
    tag = uuid.uuid4().hex[:8]
    return _json("/v1/patients", {"name": "P", "external_id": tag}, {"name": "P", "external_id": tag + "-b"})


async def _message(w: World) -> tuple[Request, Request]:
    return _json(f"/v1/patients/{w.pid}/messages", {"body": "Hello"}, {"body": "Hello again"})


async def _reply(w: World) -> tuple[Request, Request]:
    return _json("/v1/me/messages", {"body": "Thanks"}, {"body": "Thanks again"})


async def _booking(w: World) -> tuple[Request, Request]:
    tid = await w.made_once("appointment-type", "/v1/appointment-types", {"name": "Visit"})
    starts = {"type_id": tid, "starts_at": "2030-05-01T10:00:00+00:00"}
    return _json(f"/v1/patients/{w.pid}/appointments", starts, {**starts, "starts_at": "2030-05-02T10:00:00+00:00"})


async def _consent(w: World) -> tuple[Request, Request]:
    pack = await w.made_once("pack", "/v1/information-packs", {"name": "Pack"})
    form = await w.made_now(
        "/v1/consent-forms", {"name": f"Form {uuid.uuid4().hex[:6]}", "information_pack_ids": [pack]}
    )
    other = await w.made_now(
        "/v1/consent-forms", {"name": f"Form {uuid.uuid4().hex[:6]}", "information_pack_ids": [pack]}
    )
    return _json(f"/v1/patients/{w.pid}/consents", {"form_id": form}, {"form_id": other})


async def _file_request(w: World) -> tuple[Request, Request]:
    asked = {"message": "A scan please", "accepted_kinds": ["pdf"], "max_files": 1, "due_at": "2030-01-01T00:00:00Z"}
    return _json(f"/v1/patients/{w.pid}/file-requests", asked, {**asked, "max_files": 2})


async def _reminder(w: World) -> tuple[Request, Request]:
    tid = await w.made_once("medication-type", "/v1/medication-types", {"name": "Pills"})
    schedule = {"type_id": tid, "schedule": {"times": ["09:00"], "start": "2030-01-01"}}
    mid = await w.made_once("medication", f"/v1/patients/{w.pid}/medications", schedule)
    path = f"/v1/medications/{mid}/reminders"
    return (path, {}), (path, {"json": {}})  # the same route with a body is another request


async def _letter_send(w: World) -> tuple[Request, Request]:
    draft = await w.made_now(f"/v1/patients/{w.pid}/letters", {"subject": "Results", "body": "All fine."})
    return _json(f"/v1/letters/{draft}/send", {"email": False}, {"email": True})


async def _upload(w: World) -> tuple[Request, Request]:
    path = f"/v1/patients/{w.pid}/files"
    return (path, {"params": {"filename": "a.pdf"}, "content": PDF}), (
        path,
        {"params": {"filename": "a.pdf"}, "content": OTHER_PDF},
    )


async def _patient_upload(w: World) -> tuple[Request, Request]:
    return ("/v1/me/files", {"params": {"filename": "mine.pdf"}, "content": PDF}), (
        "/v1/me/files",
        {"params": {"filename": "mine.pdf"}, "content": OTHER_PDF},
    )


async def _resumable(w: World) -> tuple[Request, Request]:
    """A resumable upload's creation: the answer is its ``Location``; its size is part of the request."""
    path, tus = f"/v1/patients/{w.pid}/uploads", {"Tus-Resumable": "1.0.0"}
    return (path, {"headers": {**tus, "Upload-Length": "10"}}), (path, {"headers": {**tus, "Upload-Length": "11"}})


def _rows(table: sa.Table, *where: Any) -> Callable[[World], Awaitable[int]]:
    async def rows(w: World) -> int:
        return await w.count(table, *where)

    return rows


KINDS = [
    Kind("register patient", _patient, _rows(db.patients)),
    Kind("chat message", _message, _rows(chat_messages)),
    Kind("chat reply", _reply, _rows(chat_messages), patient_side=True),
    Kind("booking", _booking, _rows(appointments)),
    Kind("consent request", _consent, _rows(consent_requests)),
    Kind("file request", _file_request, _rows(file_requests)),
    Kind("medication reminder", _reminder, _rows(medication_reminders)),
    Kind("letter send", _letter_send, _rows(letters, letters.c.status == "sent")),
    Kind("file upload", _upload, _rows(db.files)),
    Kind("patient upload", _patient_upload, _rows(db.files), patient_side=True),
    Kind("resumable upload", _resumable, _rows(db.uploads)),
]


def _ok(response: httpx.Response) -> bool:
    return 200 <= response.status_code < 300


async def _post(w: World, request: Request, headers: dict[str, str], key: str) -> httpx.Response:
    path, kwargs = request
    extra = kwargs.get("headers", {})
    return await w.client.post(path, **{**kwargs, "headers": {**headers, **extra, KEY: key}})


async def test_each_creating_post_runs_once_per_key(world: World) -> None:
    w = world
    for kind in KINDS:
        first_caller, second_caller = (w.me, w.other_me) if kind.patient_side else (w.dr_a, w.dr_b)
        key = f"key-{uuid.uuid4()}"
        same, different = await kind.prepare(w)
        before = await kind.rows(w)
        first = await _post(w, same, first_caller, key)
        assert _ok(first), (kind.name, first.text)
        assert "idempotent-replayed" not in first.headers
        assert await kind.rows(w) == before + 1, kind.name
        retry = await _post(w, same, first_caller, key)
        assert (retry.status_code, retry.content) == (first.status_code, first.content), kind.name
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.headers["content-type"] == first.headers["content-type"]
        assert retry.headers.get("location") == first.headers.get("location")
        reused = await _post(w, different, first_caller, key)
        assert_problem(reused, 422, "idempotency-key-reused")
        assert await kind.rows(w) == before + 1, kind.name
        # Another caller of the organisation with the same key and the same request: a request of its own.
        theirs, _ = await kind.prepare(w)
        elsewhere = await _post(w, theirs, second_caller, key)
        assert _ok(elsewhere), (kind.name, elsewhere.text)
        assert "idempotent-replayed" not in elsewhere.headers
        assert await kind.rows(w) == before + 2, kind.name
        # Two at once with a new key: one is made; the other has its answer, or is told to wait.
        raced, _ = await kind.prepare(w)
        both = await asyncio.gather(*(_post(w, raced, first_caller, f"race-{key}") for _ in range(2)))
        assert all(_ok(r) or r.status_code == 409 for r in both), (kind.name, [r.text for r in both])
        made = [r for r in both if _ok(r)]
        assert made and all(r.content == made[0].content for r in made), kind.name
        for refused in (r for r in both if not _ok(r)):
            assert_problem(refused, 409, "idempotency-key-in-use")
            assert int(refused.headers["retry-after"]) >= 1
        assert await kind.rows(w) == before + 3, kind.name
    # Every kept answer names whom it is about (but a reminder's: its medication names the patient)
    # or what it made: erasure finds them by those columns (careshare.core.erasure).
    keys = db.idempotency_keys
    assert await w.count(keys, keys.c.item_id.is_(None), keys.c.patient_id.is_(None)) == 0
    assert await w.count(keys, keys.c.patient_id.is_(None)) == 3  # the reminders: first, other caller, race
    assert await w.count(keys, keys.c.patient_id == w.pid) == 3 * (len(KINDS) - 2) - 2
    # Another organisation's same key is another key too.
    org_b = bearer(w.settings, "clinician", "org-b", sub="dr-a")
    body = {"name": "B", "external_id": "IDEM-B"}
    mine = await w.client.post("/v1/patients", json=body, headers={**w.dr_a, KEY: "shared"})
    theirs = await w.client.post("/v1/patients", json=body, headers={**org_b, KEY: "shared"})
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]


async def test_refusals_are_not_kept_and_lapsed_claims_do_not_block(world: World) -> None:
    w = world
    engine = w.engine
    # A refused request keeps nothing: the same key, sent again once the cause is gone, runs.
    body = {"name": "Dup", "external_id": "IDEM-1"}  # the fixture's patient has this external id
    refused = await w.client.post("/v1/patients", json=body, headers={**w.dr_a, KEY: "after-refusal"})
    assert_problem(refused, 409, "patient-exists")
    again = await w.client.post("/v1/patients", json=body, headers={**w.dr_a, KEY: "after-refusal"})
    assert_problem(again, 409, "patient-exists")
    assert "idempotent-replayed" not in again.headers
    # A claim whose process died (its lease lapsed) is taken over; a live one answers in-use.
    caller = Caller("org-a", "clinician", "dr-a", "orphan")
    fingerprint = request_fingerprint("POST", "/v1/patients", b"", [(b"content-type", b"application/json")])
    held = await claim(engine, caller, fingerprint)
    assert isinstance(held, Claimed)
    live = await w.client.post(
        "/v1/patients", json={"name": "L", "external_id": "IDEM-L"}, headers={**w.dr_a, KEY: "orphan"}
    )
    problem = assert_problem(live, 409, "idempotency-key-in-use")
    assert problem["retry_after"] == int(live.headers["retry-after"]) >= 1
    keys = db.idempotency_keys
    async with engine.begin() as conn:
        await conn.execute(sa.update(keys).values(expires_at=db.utcnow() - timedelta(seconds=1)))
    taken = await w.client.post(
        "/v1/patients", json={"name": "L", "external_id": "IDEM-L"}, headers={**w.dr_a, KEY: "orphan"}
    )
    assert taken.status_code == 201, taken.text
    assert await w.count(db.patients, db.patients.c.external_id == "IDEM-L") == 1
    # Expired answers are swept (the periodic sweep counts them); fresh ones stay.
    assert await sweep_keys(engine) == 0
    async with engine.begin() as conn:
        await conn.execute(sa.update(keys).values(expires_at=db.utcnow() - timedelta(seconds=1)))
    if w.settings.database_url.startswith("sqlite"):  # the app's own sweep (aiosqlite works from any loop)
        assert (await sweep_leftovers(w.client.app.state.careshare)).keys == 1
    else:
        assert await sweep_keys(engine) == 1
    assert await w.count(keys) == 0


# -- a real server: bodies streamed through, and the header's rule -----------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, migrated_database: Path) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("idempotency") / "data"
    folder.mkdir()
    (folder / "careshare.db").write_bytes(migrated_database.read_bytes())
    s = make_settings(folder, CARESHARE_IDEMPOTENCY_WAIT_SECONDS="0.2", CARESHARE_TOKEN_FAILURES_PER_MINUTE="0")
    with running_server(create_app(s)) as url:
        clinician = bearer(s, "clinician", "org-a", sub="dr-a")
        pid = httpx.post(f"{url}/v1/patients", json={"name": "S", "external_id": "S-1"}, headers=clinician).json()["id"]
        yield Served(url, s, clinician, pid, folder / "careshare.db")


@attrs.frozen
class Served:
    url: str
    settings: Settings
    clinician: dict[str, str]
    pid: str
    database: Path

    def key_state(self, key: str) -> str | None:
        with sqlite3.connect(self.database) as conn:
            row = conn.execute("SELECT state FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
            return str(row[0]) if row else None

    def patients(self, external_id: str) -> int:
        with sqlite3.connect(self.database) as conn:
            return int(
                conn.execute("SELECT count(*) FROM patients WHERE external_id = ?", (external_id,)).fetchone()[0]
            )


async def test_a_retry_while_the_upload_streams_is_in_use_then_the_answer(server: Served) -> None:
    """The handler runs while the body arrives (nothing waits for it whole): the key is taken meanwhile."""
    pdf = make_pdf(pages=40, text="streamed")
    assert len(pdf) > 4096  # some of it held back
    gate = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield pdf[:4096]
        await gate.wait()
        yield pdf[4096:]

    key = f"upload-{uuid.uuid4()}"
    headers = {**server.clinician, KEY: key}
    path, params = f"{server.url}/v1/patients/{server.pid}/files", {"filename": "scan.pdf"}
    async with httpx.AsyncClient(timeout=60) as client:
        first = asyncio.create_task(client.post(path, params=params, content=slowly(), headers=headers))
        for _ in range(400):  # until the first request holds the key, its body not yet whole
            await asyncio.sleep(0.025)
            if server.key_state(key) == "in_flight":
                break
        waiting = await client.post(path, params=params, content=pdf, headers=headers)
        assert_problem(waiting, 409, "idempotency-key-in-use")
        assert int(waiting.headers["retry-after"]) >= 1
        assert not first.done()
        gate.set()
        made = await first
        assert made.status_code == 201, made.text
        retry = await client.post(path, params=params, content=pdf, headers=headers)
        assert (retry.status_code, retry.json(), retry.headers["idempotent-replayed"]) == (201, made.json(), "true")
        other = await client.post(path, params=params, content=pdf + b"\n", headers=headers)
        assert_problem(other, 422, "idempotency-key-reused")


_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
VALID_KEYS = st.text(_PRINTABLE, min_size=1, max_size=200).map(str.strip).filter(bool)
INVALID_KEYS = st.one_of(
    st.text(_PRINTABLE, min_size=201, max_size=260).map(lambda s: "k" + s.strip() + "k").filter(lambda s: len(s) > 200),
    # A tab, or a byte beyond ASCII (HTTP's obs-text), among printable ones.
    st.builds(
        lambda head, odd: head + bytes([odd]) + b"k",
        st.binary(min_size=1, max_size=5).map(lambda raw: bytes(x % 94 + 33 for x in raw)),
        st.sampled_from([0x09, *range(0x80, 0x100)]),
    ),
    st.just(b""),
)


@given(key=VALID_KEYS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_key_of_the_rule_is_taken(server: Served, key: str) -> None:
    caller = bearer(server.settings, "clinician", "org-a", sub=f"dr-{uuid.uuid4().hex}")  # a fresh key space
    external_id = f"V-{uuid.uuid4().hex}"
    body = {"name": "V", "external_id": external_id}
    first = httpx.post(f"{server.url}/v1/patients", json=body, headers={**caller, KEY: key}, timeout=30)
    retry = httpx.post(f"{server.url}/v1/patients", json=body, headers={**caller, KEY: key}, timeout=30)
    assert first.status_code == 201, first.text
    assert (retry.status_code, retry.json(), retry.headers["idempotent-replayed"]) == (201, first.json(), "true")
    assert server.patients(external_id) == 1


@given(key=INVALID_KEYS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_key_against_the_rule_is_refused_and_nothing_made(server: Served, key: str | bytes) -> None:
    external_id = f"I-{uuid.uuid4().hex}"
    refused = httpx.post(
        f"{server.url}/v1/patients",
        json={"name": "I", "external_id": external_id},
        headers={**server.clinician, KEY: key},
        timeout=30,
    )
    assert_problem(refused, 400, "idempotency-key-invalid")
    assert server.patients(external_id) == 0


def test_two_keys_in_one_request_are_refused(server: Served) -> None:
    headers = [*server.clinician.items(), (KEY, "a"), (KEY, "b")]
    refused = httpx.post(
        f"{server.url}/v1/patients", json={"name": "T", "external_id": "T-1"}, headers=headers, timeout=30
    )
    assert_problem(refused, 400, "idempotency-key-invalid")
    assert server.patients("T-1") == 0
