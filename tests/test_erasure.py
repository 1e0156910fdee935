"""Deleting files and erasing patients through the HTTP API, on SQLite and PostgreSQL, with a real blob store.

After an erasure every table is read whole: none of the patient's words (name, external id, email,
clinical text, file names) and none of their ids remain outside the audit, whose events keep only
ids and the staff who acted. The blob store keeps no object of the patient's own bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import threading
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from careshare.core import db
from careshare.core import erasure as erasure_module
from careshare.core import files as files_module
from careshare.core import rerender as rerender_module
from careshare.core.erasure import ERASED_ACTOR, delete_file, erase_patient
from careshare.core.models import Principal
from careshare.host import create_app
from careshare.host.cli import app as cli
from careshare.testing import bearer, make_pdf, make_settings, running_server
from careshare.testing.api import assert_problem, count_rows, stored_objects
from careshare.testing.api import post_file as upload
from careshare.testing.strategies.dicom import build_dataset, to_bytes
from careshare.testing.targets import World

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from careshare.core.settings import Settings
    from careshare.testing import PostgresCluster
    from careshare.testing.targets import Adapter

NAME = "Zelda Quillfeather"
EXTERNAL_ID = "ERASE-MRN-7788"
EMAIL = "zelda.quillfeather@example.org"
CLINICAL = "Quillfeather clinical text 41c9"
FILE_NAME = "quillfeather-scan.pdf"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _register(api: AsyncTestClient[Any], dr: dict[str, str], name: str, mrn: str, email: str) -> str:
    # With an Idempotency-Key: the stored answer (which holds the name) must go with the patient.
    response = await api.post(
        "/v1/patients",
        json={"name": name, "external_id": mrn, "email": email},
        headers={**dr, "Idempotency-Key": f"register-{mrn}"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _table_text(api: AsyncTestClient[Any]) -> dict[str, str]:
    """Every loaded table's rows as one string per table (over an engine of the test's own loop)."""
    engine = db.create_engine(api.app.state.careshare.settings.database_url)
    found = {}
    try:
        async with engine.connect() as conn:
            for table in db.metadata.sorted_tables:
                rows = (await conn.execute(sa.select(table))).all()
                found[table.name] = "\n".join(repr(tuple(row)) for row in rows)
    finally:
        await engine.dispose()
    return found


async def _row_counts(api: AsyncTestClient[Any]) -> dict[str, int]:
    engine = db.create_engine(api.app.state.careshare.settings.database_url)
    try:
        async with engine.connect() as conn:
            return {
                table.name: int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
                for table in db.metadata.sorted_tables
            }
    finally:
        await engine.dispose()


async def _share_everywhere(world: World, adapters: dict[str, Adapter]) -> list[str]:
    """One item of every channel that shares, each carrying a file, shared with the world's patient."""
    listed = (await world.client.get("/v1/targets", headers=world.clinician)).json()["items"]
    rules = {t["name"]: t for t in listed}
    items = []
    for target, adapter in sorted(adapters.items()):
        if not adapter.shares:
            continue
        source = "patient" if "patient" in rules.get(target, {}).get("sources", ()) else "library"
        files = [await world.sample("pdf", source)]
        item = await adapter.new_item(world, rules.get(target, {}))
        if not adapter.item_per_request:
            response = await adapter.attach(world, item, files)
            assert response.status_code in (200, 201), response.text
        items.append(await adapter.share(world, item, files))
    return items


async def test_erasure_leaves_no_word_or_byte_of_the_patient(
    api: AsyncTestClient[Any], any_settings: Settings, careshare_adapters: dict[str, Adapter]
) -> None:
    dr = bearer(any_settings, "clinician", "org-a", sub="dr-a")
    pid = await _register(api, dr, NAME, EXTERNAL_ID, EMAIL)
    other = await _register(api, dr, "Other Person", "KEEP-1", "other@example.org")
    me = bearer(any_settings, "patient", "org-a", patient=pid)
    world = World(api, dr, me, pid, other, patient_name=NAME, clinical_text=CLINICAL)
    # The patient's own bytes: a scan the clinic uploaded, a file the patient sent, a reply, a half-sent upload.
    scan = make_pdf(text="quillfeather scan")
    scan_id = (await upload(api, dr, pid, scan, FILE_NAME)).json()["id"]
    sent = make_pdf(text="quillfeather own")
    assert (
        await api.post("/v1/me/files", params={"filename": "my-" + FILE_NAME}, content=sent, headers=me)
    ).status_code == 201
    reply = make_pdf(text="quillfeather reply")
    answered = await api.post(
        "/v1/me/messages", data={"body": CLINICAL + " reply"}, files={"file": ("r.pdf", reply)}, headers=me
    )
    assert answered.status_code == 201, answered.text
    tus = await api.post(
        "/v1/me/uploads",
        headers={**me, "Tus-Resumable": "1.0.0", "Upload-Length": "100", "Upload-Metadata": "filename cXVpbGw="},
    )
    assert tus.status_code == 201, tus.text
    patched = await api.patch(
        tus.headers["location"],
        content=b"x" * 40,
        headers={
            **me,
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert patched.status_code == 204, patched.text
    link = await api.post(f"/v1/files/{scan_id}/links", json={}, headers=dr)
    assert link.status_code == 201, link.text
    items = await _share_everywhere(world, careshare_adapters)
    assert len(items) >= 4  # chat, letters, appointments, medication ... each shared one
    archive = (await api.get("/v1/me/archive", headers=me)).json()
    attachment_ids = [a["id"] for entries in archive["channels"].values() for e in entries for a in e["attachments"]]
    assert attachment_ids
    # The other patient's file, and a library file the patient's items carry, must outlive the erasure.
    kept = make_pdf(text="kept for the other patient")
    kept_id = (await upload(api, dr, other, kept, "other.pdf")).json()["id"]
    library = {
        (await api.get(f"/v1/files/{sample.file_id}", headers=dr)).json()["sha256"]
        for (_kind, source), sample in world.samples.items()
        if source == "library"
    }
    before = await _row_counts(api)

    # A dry run says what would go and changes nothing.
    dry = await api.post(f"/v1/patients/{pid}/erase", json={"external_id": EXTERNAL_ID, "dry_run": True}, headers=dr)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True
    assert await _row_counts(api) == before
    # The wrong external id confirms nothing.
    assert_problem(
        await api.post(f"/v1/patients/{pid}/erase", json={"external_id": "KEEP-1"}, headers=dr),
        422,
        "erasure-not-confirmed",
    )

    done = await api.post(f"/v1/patients/{pid}/erase", json={"external_id": EXTERNAL_ID}, headers=dr)
    assert done.status_code == 200, done.text
    assert done.json()["rows"] == dry.json()["rows"]
    assert done.json()["blobs"] == dry.json()["blobs"] >= 3
    after = await _row_counts(api)
    assert {name: before[name] - after[name] for name in before if before[name] != after[name]} == {
        **{name: count for name, count in done.json()["rows"].items()},
        "audit_events": -1,  # the tombstone
        "blobs": done.json()["blobs"],
    }

    # No word and no id of the patient is left in any table but the audit, which keeps ids only.
    text = await _table_text(api)
    for table, rows in text.items():
        for secret in (NAME, EXTERNAL_ID, EMAIL, CLINICAL, FILE_NAME, "quill"):
            assert secret.lower() not in rows.lower(), (table, secret)
        if table != "audit_events":
            assert pid not in rows, table
    assert f"'{ERASED_ACTOR}'" in text["audit_events"]
    assert f"patient:{pid}" not in text["audit_events"]  # the patient's own sign-in is gone from the audit
    # No object of the patient's own bytes is left in the store; what others use stays.
    remaining = {_sha(p.read_bytes()) for p in stored_objects(any_settings)["sha256"]}
    assert not {_sha(scan), _sha(sent), _sha(reply)} & remaining
    assert _sha(kept) in remaining
    assert library <= remaining  # the library files the patient's items carried serve other patients
    assert not stored_objects(any_settings)["other"]  # the half-sent upload's parts went too

    # Every address of the patient answers 404; the other patient's file is untouched.
    assert_problem(await api.get(f"/v1/patients/{pid}", headers=dr), 404, "not-found")
    assert_problem(await api.get("/v1/me", headers=me), 404, "not-found")
    for aid in attachment_ids:
        assert_problem(await api.get(f"/v1/attachments/{aid}/content", headers=dr), 404, "not-found")
    assert_problem(await api.get(f"/v1/files/{scan_id}", headers=dr), 404, "not-found")
    assert (await api.get(f"/v1/files/{kept_id}/content", headers=dr)).content == kept
    audit = (await api.get(f"/v1/patients/{other}/audit", headers=dr)).json()["items"]
    assert audit  # the other patient's audit trail is theirs still
    again = await api.post(f"/v1/patients/{pid}/erase", json={"external_id": EXTERNAL_ID}, headers=dr)
    assert_problem(again, 404, "not-found")


async def test_erasure_is_refused_while_the_clinic_must_keep_the_records(
    tmp_path: Path, migrated_database: Path
) -> None:
    settings = make_settings(tmp_path / "data", CARESHARE_RETENTION_DAYS="3650")
    database = tmp_path / "data" / "careshare.db"
    shutil.copyfile(migrated_database, database)
    dr = bearer(settings, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=create_app(settings)) as api:
        pid = await _register(api, dr, NAME, EXTERNAL_ID, EMAIL)
        refused = await api.post(f"/v1/patients/{pid}/erase", json={"external_id": EXTERNAL_ID}, headers=dr)
        problem = assert_problem(refused, 409, "erasure-retained")
        assert "3650 days" in problem["detail"]
        assert problem["retained_until"][:4] >= "2036"  # ten years after today's record
        assert NAME not in refused.text and EXTERNAL_ID not in refused.text
        assert (await api.get(f"/v1/patients/{pid}", headers=dr)).status_code == 200


def test_erase_command_counts_in_a_dry_run_then_erases(tmp_path: Path, migrated_database: Path) -> None:
    settings = make_settings(tmp_path / "data")
    shutil.copyfile(migrated_database, tmp_path / "data" / "careshare.db")
    dr = bearer(settings, "clinician", "org-a", sub="dr-a")

    async def made() -> str:
        async with AsyncTestClient(app=create_app(settings)) as api:
            pid = await _register(api, dr, NAME, EXTERNAL_ID, EMAIL)
            assert (await upload(api, dr, pid, make_pdf(text="cli"), FILE_NAME)).status_code == 201
            return pid

    pid = asyncio.run(made())
    env = {**settings.environ, "CARESHARE_DATA_DIR": str(settings.data_dir)}
    runner = CliRunner()
    dry = runner.invoke(cli, ["erase", pid, "--org", "org-a", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing was changed" in dry.output
    assert "files" in dry.output and "patients" in dry.output
    done = runner.invoke(cli, ["erase", pid, "--org", "org-a"], env=env)
    assert done.exit_code == 0, done.output
    assert "erased" in done.output
    gone = runner.invoke(cli, ["erase", pid, "--org", "org-a"], env=env)
    assert gone.exit_code == 1
    assert "Nothing was found" in gone.output


# -- deleting a file --------------------------------------------------------------------------------


async def test_deleting_an_unshared_file_removes_its_rows_and_bytes(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings
) -> None:
    body = make_pdf(text="to be deleted")
    fid = (await upload(client, clinician, patient_id, body, "wrong-patient.pdf")).json()["id"]
    link = (await client.post(f"/v1/files/{fid}/links", json={}, headers=clinician)).json()
    me = bearer(settings, "patient", "org-a", patient=patient_id)
    assert_problem(await client.delete(f"/v1/files/{fid}", headers=me), 403, "forbidden")
    other = bearer(settings, "clinician", "org-b", sub="dr-b")
    assert_problem(await client.delete(f"/v1/files/{fid}", headers=other), 404, "not-found")
    deleted = await client.delete(f"/v1/files/{fid}", headers=clinician)
    assert deleted.status_code == 204, deleted.text
    assert_problem(await client.get(f"/v1/files/{fid}", headers=clinician), 404, "not-found")
    assert (await client.get(f"/v1/patients/{patient_id}/files", headers=clinician)).json()["items"] == []
    assert (await client.get(urlsplit(link["url"]).path)).status_code == 404
    assert _sha(body) not in {_sha(p.read_bytes()) for p in stored_objects(settings)["sha256"]}
    assert await count_rows(client, db.files) == 0
    assert await count_rows(client, db.blobs) == 0
    audit = (await client.get(f"/v1/patients/{patient_id}/audit", headers=clinician)).json()["items"]
    assert audit[0]["action"] == "file.deleted"
    assert_problem(await client.delete(f"/v1/files/{fid}", headers=clinician), 404, "not-found")


async def test_deleting_a_shared_file_keeps_what_the_patient_was_sent(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings
) -> None:
    body = make_pdf(text="sent in chat")
    fid = (await upload(client, clinician, patient_id, body, "sent.pdf")).json()["id"]
    message = await client.post(
        f"/v1/patients/{patient_id}/messages", json={"body": "see attached", "file_ids": [fid]}, headers=clinician
    )
    assert message.status_code == 201, message.text
    [attachment] = message.json()["attachments"]
    assert (await client.delete(f"/v1/files/{fid}", headers=clinician)).status_code == 204
    assert_problem(await client.get(f"/v1/files/{fid}", headers=clinician), 404, "not-found")
    assert (await client.get(f"/v1/patients/{patient_id}/files", headers=clinician)).json()["items"] == []
    me = bearer(settings, "patient", "org-a", patient=patient_id)
    kept = await client.get(f"/v1/attachments/{attachment['id']}/content", headers=me)
    assert kept.status_code == 200
    assert _sha(kept.content) == attachment["sha256"]
    # It cannot be attached again: the file is gone from the patient's files.
    again = await client.post(
        f"/v1/patients/{patient_id}/messages", json={"body": "again", "file_ids": [fid]}, headers=clinician
    )
    assert again.status_code in (404, 422), again.text


async def test_a_file_still_being_checked_is_not_deleted(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    fid = (await upload(client, clinician, patient_id, make_pdf(), "checking.pdf")).json()["id"]
    async with client.app.state.careshare.engine.begin() as conn:  # as a check in another worker would leave it
        await conn.execute(sa.update(db.files).where(db.files.c.id == fid).values(status="processing"))
    assert_problem(await client.delete(f"/v1/files/{fid}", headers=clinician), 409, "file-still-processing")
    assert await count_rows(client, db.files) == 1


# -- racing a download ------------------------------------------------------------------------------


def test_erasure_racing_a_download(tmp_path: Path, migrated_database: Path) -> None:
    """A download streaming when the patient is erased: it ends whole or cut, never wrong; the next one is 404."""
    settings = make_settings(tmp_path / "data")
    shutil.copyfile(migrated_database, tmp_path / "data" / "careshare.db")
    dr = bearer(settings, "clinician", "org-a", sub="dr-a")
    body = make_pdf(pages=400, text="large enough to stream in many chunks")
    with running_server(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as http:
        pid = http.post("/v1/patients", json={"name": NAME, "external_id": EXTERNAL_ID}, headers=dr).json()["id"]
        fid = http.post(f"/v1/patients/{pid}/files", params={"filename": FILE_NAME}, content=body, headers=dr).json()[
            "id"
        ]
        received = bytearray()
        started, outcome = threading.Event(), {}

        def download() -> None:
            try:
                with http.stream("GET", f"/v1/files/{fid}/content", headers=dr) as response:
                    outcome["status"] = response.status_code
                    for chunk in response.iter_bytes(4096):
                        received.extend(chunk)
                        started.set()
                        threading.Event().wait(0.002)
            except httpx.HTTPError as exc:  # cut off: allowed, as long as what came is a prefix
                outcome["error"] = type(exc).__name__
            finally:
                started.set()

        reader = threading.Thread(target=download)
        reader.start()
        assert started.wait(30)
        erased = http.post(f"/v1/patients/{pid}/erase", json={"external_id": EXTERNAL_ID}, headers=dr)
        assert erased.status_code == 200, erased.text
        reader.join(60)
        assert outcome["status"] == 200
        assert body.startswith(bytes(received))  # whole, or a prefix: never other bytes
        after = http.get(f"/v1/files/{fid}/content", headers=dr)
        assert after.status_code == 404
        assert _sha(body) not in {_sha(p.read_bytes()) for p in stored_objects(settings)["sha256"]}


async def test_an_erasure_during_the_check_of_the_same_bytes_for_another_patient_loses_none_of_them(
    api: AsyncTestClient[Any], any_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One leaflet uploaded for two patients: the first is erased while the second's check runs.

    The erasure comes at the worst moment, after the second check found every rendition already
    stored (the first file's) and before its rows hold them; the second file still ends ready with
    every byte it names.
    """
    dr = bearer(any_settings, "clinician", "org-a", sub="dr-a")
    first = await _register(api, dr, "Ann Erased", "SAME-1", "ann@example.org")
    second = await _register(api, dr, "Bea Kept", "SAME-2", "bea@example.org")
    leaflet = make_pdf(pages=3, text="the same leaflet for both")
    sent = await upload(api, dr, first, leaflet, "leaflet.pdf")
    assert sent.status_code == 201 and sent.json()["status"] == "ready", sent.text

    real_settle = files_module._settle
    erased: list[int] = []

    async def settle_after_an_erasure(cs: Any, file_id: str, **outcome: Any) -> None:
        if outcome.get("ready") is not None and not erased:
            clinician = Principal(subject="dr-a", role="clinician", org="org-a")
            erased.append(sum((await erase_patient(cs, clinician, first)).rows.values()))
        await real_settle(cs, file_id, **outcome)

    monkeypatch.setattr(files_module, "_settle", settle_after_an_erasure)
    answer = await upload(api, dr, second, leaflet, "leaflet.pdf")
    assert answer.status_code in (201, 202), answer.text
    kept = answer.json()
    assert erased and erased[0] > 0  # the first patient went, mid-check
    assert_problem(await api.get(f"/v1/patients/{first}", headers=dr), 404, "not-found")
    deadline = asyncio.get_running_loop().time() + 60
    while kept["status"] == "processing" and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        kept = (await api.get(f"/v1/files/{kept['id']}", headers=dr)).json()
    assert kept["status"] == "ready", kept
    roles = [r["role"] for r in kept["renditions"]]
    assert len(roles) > 1, roles  # renditions besides the original: the bytes the erasure could take
    for role in roles:
        got = await api.get(f"/v1/files/{kept['id']}/content", params={"rendition": role}, headers=dr)
        assert got.status_code == 200, (role, got.text)
        assert _sha(got.content) == next(r["sha256"] for r in kept["renditions"] if r["role"] == role)


@pytest.fixture
def pg_settings(postgres: PostgresCluster, tmp_path: Path) -> Settings:
    # PostgreSQL only: on SQLite every writing transaction holds the one write lock from its start,
    # so neither interleaving below can happen there (the inner call would wait for the outer).
    url = postgres.create_database(f"race_{uuid.uuid4().hex}")
    return make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=url)


@pytest.fixture
async def pg_api(pg_settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(pg_settings)) as client:
        yield client


async def _readable(api: AsyncTestClient[Any], dr: dict[str, str], fid: str, body: bytes) -> None:
    got = await api.get(f"/v1/files/{fid}/content", headers=dr)
    assert got.status_code == 200 and got.content == body, got.text


async def test_an_upload_whose_blob_goes_with_another_file_meanwhile_is_accepted(
    pg_api: AsyncTestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload found the blob row (the other file's) and, before its own row names it, that file is deleted."""
    cs = pg_api.app.state.careshare
    dr = bearer(cs.settings, "clinician", "org-a", sub="dr-a")
    first = await _register(pg_api, dr, "Ann Race", "RACE-1", "ann@example.org")
    second = await _register(pg_api, dr, "Bea Race", "RACE-2", "bea@example.org")
    leaflet = make_pdf(pages=2, text="one leaflet, two patients")
    old = (await upload(pg_api, dr, first, leaflet, "leaflet.pdf")).json()
    real_insert_blobs = files_module.insert_blobs
    deleted: list[str] = []

    async def insert_blobs_then_lose_them(conn: Any, renditions: Any, now: Any) -> None:
        await real_insert_blobs(conn, renditions, now)  # the row is there: nothing inserted
        if not deleted:
            deleted.append(old["id"])
            await delete_file(cs, Principal(subject="dr-a", role="clinician", org="org-a"), old["id"])

    monkeypatch.setattr(files_module, "insert_blobs", insert_blobs_then_lose_them)
    answer = await upload(pg_api, dr, second, leaflet, "leaflet.pdf")
    assert deleted == [old["id"]]
    assert answer.status_code == 201 and answer.json()["status"] == "ready", answer.text
    assert (await pg_api.get(f"/v1/files/{old['id']}", headers=dr)).status_code == 404
    await _readable(pg_api, dr, answer.json()["id"], leaflet)


async def test_an_erasure_racing_an_upload_of_the_same_bytes_keeps_them(
    pg_api: AsyncTestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure decided a blob was unused; an upload of the same bytes names it before the erasure deletes it."""
    cs = pg_api.app.state.careshare
    dr = bearer(cs.settings, "clinician", "org-a", sub="dr-a")
    first = await _register(pg_api, dr, "Ann Race", "RACE-3", "ann@example.org")
    second = await _register(pg_api, dr, "Bea Race", "RACE-4", "bea@example.org")
    leaflet = make_pdf(pages=2, text="erased for one, kept for the other")
    assert (await upload(pg_api, dr, first, leaflet, "leaflet.pdf")).status_code == 201
    real_unreferenced = erasure_module._unreferenced
    uploaded: list[Any] = []

    async def unreferenced_then_an_upload(conn: Any, hashes: set[str]) -> set[str]:
        unused = await real_unreferenced(conn, hashes)
        if not uploaded:  # another request, its own transaction, committed before this one deletes
            principal = Principal(subject="dr-a", role="clinician", org="org-a")
            uploaded.append(await accept_bytes(cs, principal, second, leaflet))
        return unused

    monkeypatch.setattr(erasure_module, "_unreferenced", unreferenced_then_an_upload)
    erased = await pg_api.post(f"/v1/patients/{first}/erase", json={"external_id": "RACE-3"}, headers=dr)
    assert erased.status_code == 200, erased.text
    assert len(uploaded) == 1
    assert_problem(await pg_api.get(f"/v1/patients/{first}", headers=dr), 404, "not-found")
    shown = (await pg_api.get(f"/v1/files/{uploaded[0].id}", headers=dr)).json()
    deadline = asyncio.get_running_loop().time() + 60
    while shown["status"] == "processing" and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        shown = (await pg_api.get(f"/v1/files/{uploaded[0].id}", headers=dr)).json()
    assert shown["status"] == "ready", shown
    await _readable(pg_api, dr, uploaded[0].id, leaflet)


async def accept_bytes(cs: Any, principal: Principal, patient_id: str, body: bytes) -> Any:
    """``body`` accepted for the patient as an upload request does (its check queued)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    return await files_module.accept(
        cs,
        chunks(),
        principal=principal,
        owner_type="patient",
        patient_id=patient_id,
        source="clinic",
        filename="leaflet.pdf",
    )


async def test_a_re_render_while_another_file_of_the_same_bytes_is_deleted_keeps_its_renditions(
    api: AsyncTestClient[Any], any_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of one study rendered alike: the first copy is deleted after the second's handler found its renditions stored."""
    dr = bearer(any_settings, "clinician", "org-a", sub="dr-a")
    pid = await _register(api, dr, "Ann Render", "RENDER-1", "ann@example.org")
    frames = np.stack([np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * (k + 1) for k in range(3)])
    study = to_bytes(build_dataset(frames, bits_stored=16))
    options = {"frame": 1, "window_center": 300.0, "window_width": 600}
    first, second = [(await upload(api, dr, pid, study, "study.dcm")).json() for _ in range(2)]
    rendered = await api.post(f"/v1/files/{first['id']}/render", json=options, headers=dr)
    assert rendered.status_code == 200, rendered.text
    real_run_handler = rerender_module.run_handler
    deleted: list[str] = []

    async def run_handler_then_delete_the_first(*args: Any, **kwargs: Any) -> Any:
        outcome = await real_run_handler(*args, **kwargs)  # the renditions: the first copy's, found stored
        if not deleted:
            deleted.append(first["id"])
            cs = args[0]
            await delete_file(cs, Principal(subject="dr-a", role="clinician", org="org-a"), first["id"])
        return outcome

    monkeypatch.setattr(rerender_module, "run_handler", run_handler_then_delete_the_first)
    again = await api.post(f"/v1/files/{second['id']}/render", json=options, headers=dr)
    assert deleted == [first["id"]]
    assert again.status_code == 200, again.text
    wanted = {r["role"]: r["sha256"] for r in rendered.json()["renditions"]}
    got = {r["role"]: r["sha256"] for r in again.json()["renditions"]}
    assert got == {**wanted, "original": got["original"]}  # the same renditions as the first copy's
    for role, sha256 in got.items():
        content = await api.get(f"/v1/files/{second['id']}/content", params={"rendition": role}, headers=dr)
        assert content.status_code == 200 and _sha(content.content) == sha256, role
