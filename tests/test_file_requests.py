"""File requests over HTTP: a clinician asks, the patient answers with files, each file is accepted or rejected."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from PIL import Image

from careshare.core import db
from careshare.host import create_app
from careshare.plugins.requests import careshare_migrations
from careshare.plugins.requests.file_requests import REJECTED_TITLE, REQUEST_TITLE
from careshare.plugins.requests.tables import file_request_answers, file_requests
from careshare.testing import bearer, make_pdf, make_settings, running_server
from careshare.testing.api import assert_problem
from careshare.testing.strategies.dicom import build_dataset, to_bytes
from careshare.testing.strategies.video import VideoSpec, make_video

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from careshare.core.settings import Settings
    from careshare.testing import PostgresCluster

PROBLEM_JSON = "application/problem+json"
MESSAGE = "Please send the discharge letter from St Elsewhere and two photos of the wound."
# Hypothesis reuses the function's fixtures across examples: each example makes its own request
# and compares counts before and after, so earlier examples cannot change what it must see.
reuses_fixtures = hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)


# -- files of each kind ------------------------------------------------------------------------


def png(seed: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), (seed % 256, 40, 200)).save(out, "PNG")
    return out.getvalue()


@functools.cache
def dicom() -> bytes:
    return to_bytes(build_dataset(np.arange(64, dtype=np.uint8).reshape(8, 8), PatientName="Doe^Jane"))


@functools.cache
def video() -> bytes:
    return make_video(VideoSpec(frames=4, width=32, height=24, moov_at_end=False))


SAMPLES = {"pdf": make_pdf, "image": png, "dicom": dicom, "video": video}


# -- helpers -----------------------------------------------------------------------------------


def due(days: float = 7) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def ask(client: httpx.AsyncClient, headers: dict[str, str], pid: str, **fields: Any) -> dict[str, Any]:
    body = {"message": MESSAGE, "accepted_kinds": ["pdf", "image"], "max_files": 2, "due_at": due()} | fields
    response = await client.post(f"/v1/patients/{pid}/file-requests", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def send(
    client: httpx.AsyncClient, headers: dict[str, str], rid: str, data: bytes, name: str = "scan.bin"
) -> httpx.Response:
    return await client.post(f"/v1/me/file-requests/{rid}/files?filename={name}", content=data, headers=headers)


async def review(
    client: httpx.AsyncClient, headers: dict[str, str], rid: str, fid: str, decision: str, reason: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"decision": decision}
    if reason is not None:
        body["reason"] = reason
    return await client.post(f"/v1/file-requests/{rid}/files/{fid}/review", json=body, headers=headers)


@pytest.fixture
async def engine(settings: Settings, client: AsyncTestClient[Any]) -> AsyncIterator[sa.ext.asyncio.AsyncEngine]:
    """The app's database, for what the API does not show (rows left behind, a due date in the past)."""
    engine = db.create_engine(settings.database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def stored_counts(engine: sa.ext.asyncio.AsyncEngine, patient_id: str) -> tuple[int, int]:
    """Files and rendition rows held for the patient, deleted or not."""
    async with engine.connect() as conn:
        files = (await conn.execute(sa.select(sa.func.count()).where(db.files.c.patient_id == patient_id))).scalar_one()
        renditions = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(db.renditions.join(db.files, db.files.c.id == db.renditions.c.file_id))
                .where(db.files.c.patient_id == patient_id)
            )
        ).scalar_one()
    return int(files), int(renditions)


async def set_due(engine: sa.ext.asyncio.AsyncEngine, rid: str, when: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.update(file_requests).where(file_requests.c.id == rid).values(due_at=when))


async def notifications(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.get("/v1/me/notifications", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


# -- the round trip ----------------------------------------------------------------------------


async def test_round_trip_with_a_rejection_and_a_reupload(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    await round_trip(client, clinician, patient, patient_id)


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A new empty database of the session's PostgreSQL cluster (made before the test's event loop runs)."""
    return postgres.create_database(f"requests_{uuid.uuid4().hex}")


async def test_round_trip_and_racing_answers_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """The same rules on PostgreSQL, through a real server (racing answers arrive as separate connections)."""
    settings = make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=pg_url)
    clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
    with running_server(create_app(settings)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            registered = await client.post("/v1/patients", json={"name": "P", "external_id": "P1"}, headers=clinician)
            pid = registered.json()["id"]
            patient = bearer(settings, "patient", "org-a", patient=pid)
            await round_trip(client, clinician, patient, pid)
            await racing_answers(client, clinician, patient, pid)


async def test_racing_answers_take_the_last_place_once(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    await racing_answers(client, clinician, patient, patient_id)


async def racing_answers(
    client: httpx.AsyncClient, clinician: dict[str, str], patient: dict[str, str], pid: str
) -> None:
    """Answers sent at once to a request with one place left: exactly one gets it, the others keep nothing."""
    rid = (await ask(client, clinician, pid, max_files=1))["id"]
    mine = (await client.get("/v1/me/files", params={"limit": 200}, headers=patient)).json()["items"]
    responses = await asyncio.gather(*(send(client, patient, rid, make_pdf(pages=n)) for n in range(1, 5)))
    assert sorted(r.status_code for r in responses) == [201, 422, 422, 422], [r.text for r in responses]
    for refused in (r for r in responses if r.status_code == 422):
        assert refused.json()["code"] == "too-many-files-for-request"
    after = (await client.get("/v1/me/files", params={"limit": 200}, headers=patient)).json()["items"]
    assert len(after) == len(mine) + 1
    shown = (await client.get(f"/v1/file-requests/{rid}", headers=clinician)).json()
    assert len(shown["answers"]) == 1


async def round_trip(
    client: httpx.AsyncClient, clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    created = await ask(client, clinician, patient_id, accepted_kinds=["image", "pdf", "image"], max_files=2)
    rid = created["id"]
    assert created["status"] == "open" and created["remaining"] == 2
    assert created["accepted_kinds"] == ["image", "pdf"] and created["answers"] == []

    # The patient is told, without the clinician's message.
    [told] = await notifications(client, patient)
    assert (told["kind"], told["target"], told["item_id"], told["title"]) == (
        "file-request",
        "file-request",
        rid,
        REQUEST_TITLE,
    )
    assert "wound" not in told["title"]
    mine = (await client.get("/v1/me/file-requests", headers=patient)).json()
    assert [r["id"] for r in mine["items"]] == [rid]
    assert mine["items"][0]["message"] == MESSAGE and mine["items"][0]["requested_by"] is None

    # Two answers: a PDF as multipart, a PNG as the raw body.
    letter = make_pdf(text="discharge")
    first = await client.post(
        f"/v1/me/file-requests/{rid}/files",
        files={"file": ("letter.pdf", letter, "application/pdf")},
        headers=patient,
    )
    assert first.status_code == 201, first.text
    pdf_id = first.json()["file"]["id"]
    assert first.json()["file"]["source"] == "patient" and first.json()["file"]["kind"] == "pdf"
    assert first.json()["request"]["status"] == "answered" and first.json()["request"]["remaining"] == 1
    second = await send(client, patient, rid, png(1), "wound.png")
    assert second.status_code == 201, second.text
    photo_id = second.json()["file"]["id"]
    assert_problem(await send(client, patient, rid, png(2), "more.png"), 422, "too-many-files-for-request")

    # The answers are in the patient's files, which clinicians see as new files from the patient.
    theirs = (
        await client.get(f"/v1/patients/{patient_id}/files", params={"source": "patient"}, headers=clinician)
    ).json()
    assert {f["id"] for f in theirs["items"]} == {pdf_id, photo_id}
    downloaded = await client.get(f"/v1/files/{pdf_id}/content?rendition=original", headers=clinician)
    assert downloaded.content == letter

    accepted = await review(client, clinician, rid, pdf_id, "accepted")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "answered"
    rejected = await review(client, clinician, rid, photo_id, "rejected", "  The photo is too blurry to read.  ")
    assert rejected.status_code == 200, rejected.text
    assert [(a["file_id"], a["decision"], a["reason"]) for a in rejected.json()["answers"]] == [
        (pdf_id, "accepted", None),
        (photo_id, "rejected", "The photo is too blurry to read."),
    ]
    assert rejected.json()["answers"][1]["reviewed_by"] == "dr-a"
    assert_problem(await review(client, clinician, rid, photo_id, "accepted"), 409, "answer-already-reviewed")

    # The patient sees the decision and its reason, and is told of the rejection (without the reason).
    seen = (await client.get(f"/v1/me/file-requests/{rid}", headers=patient)).json()
    assert [(a["decision"], a["reason"]) for a in seen["answers"]] == [
        ("accepted", None),
        ("rejected", "The photo is too blurry to read."),
    ]
    assert seen["remaining"] == 1 and "reviewed_by" not in seen["answers"][0]
    told_again = await notifications(client, patient)
    assert [(n["kind"], n["item_id"], n["title"]) for n in told_again] == [
        ("file-request-rejected", rid, REJECTED_TITLE),
        ("file-request", rid, REQUEST_TITLE),
    ]
    assert "blurry" not in told_again[0]["title"]

    # The patient sends a sharper photo; accepting it fills the request, which completes.
    again = await send(client, patient, rid, png(3), "sharper.png")
    assert again.status_code == 201, again.text
    sharper_id = again.json()["file"]["id"]
    assert [a["position"] for a in again.json()["request"]["answers"]] == [0, 1, 2]
    done = await review(client, clinician, rid, sharper_id, "accepted", "Thank you")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed" and done.json()["counts"] == {
        "pending": 0,
        "accepted": 2,
        "rejected": 1,
    }
    assert_problem(await send(client, patient, rid, make_pdf(pages=2)), 409, "request-closed")
    assert (await client.get(f"/v1/file-requests/{rid}", headers=clinician)).json()["status"] == "completed"

    audit = (await client.get(f"/v1/patients/{patient_id}/audit", headers=clinician)).json()
    actions = [e["action"] for e in audit["items"] if e["item_id"] == rid]
    assert actions.count("file-request.answered") == 3
    assert actions.count("file-request.accepted") == 2 and actions.count("file-request.rejected") == 1
    assert "item.shared" in actions
    # The request is in the patient's archive, under its channel.
    archive = (await client.get("/v1/me/archive", headers=patient)).json()
    assert [e["item_id"] for e in archive["channels"]["file-requests"]] == [rid]


# -- what is refused leaves nothing ------------------------------------------------------------


async def test_a_kind_not_requested_is_refused_after_identification_and_nothing_stays(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
    engine: sa.ext.asyncio.AsyncEngine,
) -> None:
    rid = (await ask(client, clinician, patient_id, accepted_kinds=["pdf"]))["id"]
    # The name and Content-Type claim a PDF; the bytes are a PNG, and the bytes decide.
    refused = await client.post(
        f"/v1/me/file-requests/{rid}/files",
        files={"file": ("letter.pdf", png(), "application/pdf")},
        headers=patient,
    )
    body = assert_problem(refused, 422, "kind-not-requested")
    assert body["kind"] == "image" and body["accepted_kinds"] == ["pdf"]
    assert_problem(await send(client, patient, rid, b"not a file at all" * 10), 415, "unsupported-file-type")

    assert await stored_counts(engine, patient_id) == (0, 0)
    async with engine.connect() as conn:
        blobs = (await conn.execute(sa.select(db.blobs.c.sha256))).scalars().all()
    assert hashlib.sha256(png()).hexdigest() not in blobs  # its bytes were used by nothing else
    assert (await client.get("/v1/me/files", headers=patient)).json()["items"] == []
    after = (await client.get(f"/v1/file-requests/{rid}", headers=clinician)).json()
    assert after["status"] == "open" and after["answers"] == [] and after["remaining"] == 2
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(file_request_answers))).scalar_one() == 0

    accepted = await send(client, patient, rid, make_pdf(), "letter.pdf")
    assert accepted.status_code == 201, accepted.text
    assert await stored_counts(engine, patient_id) == (1, len(accepted.json()["file"]["renditions"]))


async def test_the_count_limit_counts_files_not_rejected(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
    engine: sa.ext.asyncio.AsyncEngine,
) -> None:
    rid = (await ask(client, clinician, patient_id, max_files=1))["id"]
    first = await send(client, patient, rid, make_pdf())
    assert first.status_code == 201, first.text
    stored = await stored_counts(engine, patient_id)
    body = assert_problem(await send(client, patient, rid, png()), 422, "too-many-files-for-request")
    assert body["limit"] == 1
    assert await stored_counts(engine, patient_id) == stored
    # A pending file still counts: only a rejection frees its place.
    rejected = await review(client, clinician, rid, first.json()["file"]["id"], "rejected", "Wrong letter")
    assert rejected.status_code == 200 and rejected.json()["remaining"] == 1
    replacement = await send(client, patient, rid, png())
    assert replacement.status_code == 201, replacement.text
    assert_problem(await send(client, patient, rid, make_pdf(pages=3)), 422, "too-many-files-for-request")


async def test_partial_answers_stay_open_until_completed(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    rid = (await ask(client, clinician, patient_id, max_files=3))["id"]
    sent = await send(client, patient, rid, make_pdf())
    assert sent.status_code == 201
    accepted = await review(client, clinician, rid, sent.json()["file"]["id"], "accepted")
    # One accepted file of three asked for: partial, still answerable.
    assert accepted.json()["status"] == "answered" and accepted.json()["remaining"] == 2
    pending = await send(client, patient, rid, png())
    assert pending.status_code == 201

    completed = await client.post(f"/v1/file-requests/{rid}/complete", headers=clinician)
    assert completed.status_code == 200, completed.text
    assert completed.json()["status"] == "completed" and completed.json()["remaining"] == 0
    assert_problem(await send(client, patient, rid, png(5)), 409, "request-closed")
    assert_problem(await client.post(f"/v1/file-requests/{rid}/complete", headers=clinician), 409, "request-closed")
    assert_problem(await client.post(f"/v1/file-requests/{rid}/cancel", headers=clinician), 409, "request-closed")
    # A file that arrived before completion may still be reviewed.
    late = await review(client, clinician, rid, pending.json()["file"]["id"], "accepted")
    assert late.status_code == 200 and late.json()["status"] == "completed"


async def test_a_cancelled_request_takes_no_answers_and_no_reviews(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    rid = (await ask(client, clinician, patient_id))["id"]
    sent = await send(client, patient, rid, make_pdf())
    cancelled = await client.post(f"/v1/file-requests/{rid}/cancel", headers=clinician)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    body = assert_problem(await send(client, patient, rid, png()), 409, "request-closed")
    assert body["request_status"] == "cancelled"
    assert_problem(await review(client, clinician, rid, sent.json()["file"]["id"], "accepted"), 409, "request-closed")
    assert_problem(await client.post(f"/v1/file-requests/{rid}/complete", headers=clinician), 409, "request-closed")
    mine = (await client.get(f"/v1/me/file-requests/{rid}", headers=patient)).json()
    assert mine["status"] == "cancelled" and [a["decision"] for a in mine["answers"]] == ["pending"]


async def test_a_request_past_its_due_date_reads_as_expired(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
    engine: sa.ext.asyncio.AsyncEngine,
) -> None:
    answered = (await ask(client, clinician, patient_id))["id"]
    sent = await send(client, patient, answered, make_pdf())
    untouched = (await ask(client, clinician, patient_id))["id"]
    completed = (await ask(client, clinician, patient_id))["id"]
    assert (await client.post(f"/v1/file-requests/{completed}/complete", headers=clinician)).status_code == 200
    past = datetime.now(UTC) - timedelta(minutes=1)
    for rid in (answered, untouched, completed):
        await set_due(engine, rid, past)

    listed = (await client.get(f"/v1/patients/{patient_id}/file-requests", headers=clinician)).json()
    assert {r["id"]: r["status"] for r in listed["items"]} == {
        answered: "expired",
        untouched: "expired",
        completed: "completed",  # closed before its due date: stays completed
    }
    mine = (await client.get("/v1/me/file-requests", headers=patient)).json()
    assert {r["id"]: (r["status"], r["remaining"]) for r in mine["items"]} == {
        answered: ("expired", 0),
        untouched: ("expired", 0),
        completed: ("completed", 0),
    }
    body = assert_problem(await send(client, patient, untouched, make_pdf()), 409, "request-closed")
    assert body["request_status"] == "expired"
    assert_problem(await client.post(f"/v1/file-requests/{untouched}/cancel", headers=clinician), 409, "request-closed")
    # What arrived in time can still be reviewed after the due date.
    late = await review(client, clinician, answered, sent.json()["file"]["id"], "accepted")
    assert late.status_code == 200 and late.json()["status"] == "expired"


# -- who may see what --------------------------------------------------------------------------


async def test_other_organisations_and_other_patients_get_404(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
    engine: sa.ext.asyncio.AsyncEngine,
) -> None:
    rid = (await ask(client, clinician, patient_id))["id"]
    fid = (await send(client, patient, rid, make_pdf())).json()["file"]["id"]
    other = await client.post("/v1/patients", json={"name": "Pat Two", "external_id": "MRN-2"}, headers=clinician)
    other_id = other.json()["id"]
    other_patient = bearer(settings, "patient", "org-a", patient=other_id)
    other_org = bearer(settings, "clinician", "org-b", sub="dr-b")
    same_patient_id_other_org = bearer(settings, "patient", "org-b", patient=patient_id)
    body = {"message": MESSAGE, "accepted_kinds": ["pdf"], "max_files": 1, "due_at": due()}

    for headers in (other_org,):
        assert_problem(await client.get(f"/v1/file-requests/{rid}", headers=headers), 404, "not-found")
        assert_problem(await client.get(f"/v1/patients/{patient_id}/file-requests", headers=headers), 404, "not-found")
        assert_problem(
            await client.post(f"/v1/patients/{patient_id}/file-requests", json=body, headers=headers), 404, "not-found"
        )
        assert_problem(await review(client, headers, rid, fid, "accepted"), 404, "not-found")
        assert_problem(await client.post(f"/v1/file-requests/{rid}/complete", headers=headers), 404, "not-found")
        assert_problem(await client.post(f"/v1/file-requests/{rid}/cancel", headers=headers), 404, "not-found")
    before = await stored_counts(engine, other_id), await stored_counts(engine, patient_id)
    assert (await client.get("/v1/me/file-requests", headers=other_patient)).json()["items"] == []
    # A token of another organisation naming this patient's id finds no such patient there.
    assert_problem(await client.get("/v1/me/file-requests", headers=same_patient_id_other_org), 404, "not-found")
    for headers in (other_patient, same_patient_id_other_org):
        assert_problem(await client.get(f"/v1/me/file-requests/{rid}", headers=headers), 404, "not-found")
        assert_problem(await send(client, headers, rid, make_pdf()), 404, "not-found")
    assert (await stored_counts(engine, other_id), await stored_counts(engine, patient_id)) == before
    # A clinician may not review a file of another request, even of the same patient.
    second = (await ask(client, clinician, patient_id))["id"]
    assert_problem(await review(client, clinician, second, fid, "accepted"), 404, "not-found")
    # Roles: patients do not use clinician addresses, and the other way round.
    assert_problem(await client.get(f"/v1/file-requests/{rid}", headers=patient), 403, "forbidden")
    assert_problem(await client.get("/v1/me/file-requests", headers=clinician), 403, "forbidden")
    # The request is untouched.
    shown = (await client.get(f"/v1/file-requests/{rid}", headers=clinician)).json()
    assert shown["status"] == "answered" and [a["decision"] for a in shown["answers"]] == ["pending"]


# -- bodies ------------------------------------------------------------------------------------

VALID = {"message": MESSAGE, "accepted_kinds": ["pdf"], "max_files": 2}


@pytest.mark.parametrize(
    "body",
    [
        {"accepted_kinds": ["pdf"], "max_files": 2, "due_at": "DUE"},
        {**VALID, "message": "   ", "due_at": "DUE"},
        {**VALID, "message": 12, "due_at": "DUE"},
        {**VALID, "message": "x" * 2001, "due_at": "DUE"},
        {**VALID, "accepted_kinds": [], "due_at": "DUE"},
        {**VALID, "accepted_kinds": ["pdf", "audio"], "due_at": "DUE"},
        {**VALID, "accepted_kinds": "pdf", "due_at": "DUE"},
        {**VALID, "accepted_kinds": [None], "due_at": "DUE"},
        {**VALID, "max_files": 0, "due_at": "DUE"},
        {**VALID, "max_files": 21, "due_at": "DUE"},
        {**VALID, "max_files": "2", "due_at": "DUE"},
        {**VALID, "max_files": True, "due_at": "DUE"},
        {**VALID, "max_files": 2.5, "due_at": "DUE"},
        {**VALID},
        {**VALID, "due_at": "next tuesday"},
        {**VALID, "due_at": "2999-01-01T10:00:00"},
        {**VALID, "due_at": "2001-01-01T10:00:00+00:00"},
        {**VALID, "due_at": 1893456000},
        {**VALID, "due_at": "DUE", "status": "completed"},
    ],
)
async def test_invalid_request_bodies_are_422(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, body: dict[str, Any]
) -> None:
    body = {k: due() if v == "DUE" else v for k, v in body.items()}
    response = await client.post(f"/v1/patients/{patient_id}/file-requests", json=body, headers=clinician)
    assert_problem(response, 422, "invalid-request")
    assert response.json()["errors"]
    assert (await client.get(f"/v1/patients/{patient_id}/file-requests", headers=clinician)).json()["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"decision": "maybe"},
        {"decision": "rejected"},
        {"decision": "rejected", "reason": "   "},
        {"decision": "rejected", "reason": 12},
        {"decision": "rejected", "reason": "x" * 1001},
        {"decision": "accepted", "note": "extra"},
        {"reason": "no decision"},
    ],
)
async def test_invalid_review_bodies_are_422(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
    body: dict[str, Any],
) -> None:
    rid = (await ask(client, clinician, patient_id))["id"]
    fid = (await send(client, patient, rid, make_pdf())).json()["file"]["id"]
    response = await client.post(f"/v1/file-requests/{rid}/files/{fid}/review", json=body, headers=clinician)
    assert_problem(response, 422, "invalid-request")
    shown = (await client.get(f"/v1/file-requests/{rid}", headers=clinician)).json()
    assert [a["decision"] for a in shown["answers"]] == ["pending"]
    assert [n["kind"] for n in await notifications(client, patient)] == ["file-request"]


# -- the rules, over random requests and answers -----------------------------------------------

steps = st.lists(
    st.tuples(st.just("send"), st.sampled_from(sorted(SAMPLES))) | st.tuples(st.just("reject"), st.none()),
    max_size=7,
)


@reuses_fixtures
@given(
    kinds=st.frozensets(st.sampled_from(sorted(SAMPLES)), min_size=1),
    max_files=st.integers(1, 4),
    steps=steps,
)
async def test_answers_are_accepted_or_refused_by_the_request_rules(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
    engine: sa.ext.asyncio.AsyncEngine,
    kinds: frozenset[str],
    max_files: int,
    steps: list[tuple[str, str | None]],
) -> None:
    rid = (await ask(client, clinician, patient_id, accepted_kinds=sorted(kinds), max_files=max_files))["id"]
    files_before, _ = await stored_counts(engine, patient_id)
    answers: list[tuple[str, str]] = []  # (file id, decision) in the order sent
    for number, (action, kind) in enumerate(steps):
        if action == "reject":
            pending = [fid for fid, decision in answers if decision == "pending"]
            if pending:
                response = await review(client, clinician, rid, pending[0], "rejected", "Not what we need")
                assert response.status_code == 200, response.text
                answers = [(fid, "rejected" if fid == pending[0] else d) for fid, d in answers]
            continue
        assert kind is not None
        data = png(number) if kind == "image" else SAMPLES[kind]()
        response = await send(client, patient, rid, data)
        kept = sum(1 for _, decision in answers if decision != "rejected")
        if kept >= max_files:
            assert_problem(response, 422, "too-many-files-for-request")
        elif kind not in kinds:
            assert_problem(response, 422, "kind-not-requested")
        else:
            assert response.status_code == 201, response.text
            assert response.json()["file"]["kind"] == kind
            answers.append((response.json()["file"]["id"], "pending"))

    shown = (await client.get(f"/v1/me/file-requests/{rid}", headers=patient)).json()
    assert [(a["file_id"], a["decision"]) for a in shown["answers"]] == answers
    assert shown["status"] == ("answered" if answers else "open")
    assert shown["remaining"] == max_files - sum(1 for _, d in answers if d != "rejected")
    files_after, _ = await stored_counts(engine, patient_id)
    assert files_after - files_before == len(answers)  # refused files left nothing behind


# -- plugin wiring -----------------------------------------------------------------------------


async def test_the_migration_creates_the_tables_as_defined(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'requests.db'}"
    await asyncio.to_thread(db.migrate, url, careshare_migrations())
    ours = {file_requests.name, file_request_answers.name}

    def diff(conn: sa.Connection) -> list[Any]:
        def only_ours(_obj: Any, name: str | None, type_: str, _reflected: bool, _compare_to: Any) -> bool:
            return type_ != "table" or name in ours

        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": only_ours})
        return compare_metadata(context, db.metadata)

    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            assert ours <= set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_disabling_the_plugin_removes_its_routes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", CARESHARE_DISABLE_PLUGINS="file-requests")
    headers = bearer(settings, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=create_app(settings)) as client:
        pid = (await client.post("/v1/patients", json={"name": "P", "external_id": "P1"}, headers=headers)).json()["id"]
        response = await client.post(
            f"/v1/patients/{pid}/file-requests",
            json={"message": MESSAGE, "accepted_kinds": ["pdf"], "max_files": 1, "due_at": due()},
            headers=headers,
        )
        assert response.status_code == 404, response.text
