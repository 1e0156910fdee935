"""Resumable (tus 1.0.0) uploads: create, resume at the server's offset, checksums, expiry, access.

Real components throughout: the real app and database, real PDFs, the real ingest pipeline, real
uvicorn servers for connections that break in the middle of a PATCH, and two API processes
sharing only a database and a blob store (SQLite and a folder; PostgreSQL and S3).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import itertools
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import h11
import httpx
import pikepdf
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from careshare.core import db, tus
from careshare.core.settings import DEFAULT_UPLOAD_EXPIRY_SECONDS
from careshare.core.storage import BlobStore
from careshare.core.tus import PARTS_ROOT, part_key, sweep
from careshare.host import create_app
from careshare.testing import bearer, make_pdf, make_settings, running_server
from careshare.testing.api import assert_problem

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from litestar.testing import AsyncTestClient

    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings
    from careshare.testing import MotoS3, PostgresCluster

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {"Content-Type": "application/offset+octet-stream"}
PROBLEM_JSON = "application/problem+json"
MiB = 1024 * 1024
ME = "/v1/me/uploads"

reuses_fixtures = hypothesis_settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], max_examples=6
)


# -- helpers -----------------------------------------------------------------------------------------------


def padded_pdf(size: int, seed: int = 0) -> bytes:
    """A valid PDF of about ``size`` bytes: a blank page plus an uncompressed stream of random bytes."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    pdf.Root.Padding = pikepdf.Stream(pdf, random.Random(seed).randbytes(size))
    out = io.BytesIO()
    pdf.save(out, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum(data: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()


def metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def row_count(settings: Settings, table: str) -> int:
    with contextlib.closing(sqlite3.connect(settings.data_dir / "careshare.db")) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def stored_files(settings: Settings, area: str) -> list[Path]:
    root = settings.data_dir / "blobs" / area
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


async def parts(settings: Settings) -> dict[str, list[tuple[int, int]]]:
    """The part objects in the blob store: each upload's id to the (offset, size) of its parts."""
    found: dict[str, list[tuple[int, int]]] = {}
    for meta in await BlobStore(settings.storage_url).list_prefix(PARTS_ROOT):
        upload_id, _, name = meta["path"].removeprefix(PARTS_ROOT).partition("/")
        if name.isdigit():  # not a local part still being written
            found.setdefault(upload_id, []).append((int(name), meta["size"]))
    return {upload_id: sorted(found[upload_id]) for upload_id in sorted(found)}


def upload_id_of(location: str) -> str:
    return location.rsplit("/", 1)[1]


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, bound_seconds: float = 30.0) -> None:
    """Await ``condition`` until it holds; fail (not time) if it never does within a generous bound."""
    deadline = time.monotonic() + bound_seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


def careshare(client: AsyncTestClient[Any]) -> Careshare:
    return client.app.state.careshare  # type: ignore[no-any-return]


async def create(
    client: AsyncTestClient[Any] | httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    length: int,
    filename: str = "scan.pdf",
) -> str:
    response = await client.post(
        url, headers={**headers, **TUS, "Upload-Length": str(length), "Upload-Metadata": metadata(filename=filename)}
    )
    assert response.status_code == 201, response.text
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.headers["upload-expires"].endswith(" GMT")
    location = response.headers["location"]
    assert location.startswith(f"{url}/")
    return str(location)


async def send(
    client: AsyncTestClient[Any] | httpx.AsyncClient,
    location: str,
    headers: dict[str, str],
    offset: int,
    data: bytes,
    *,
    with_checksum: bool = False,
) -> Any:
    extra = {"Upload-Checksum": checksum(data)} if with_checksum else {}
    return await client.patch(
        location, content=data, headers={**headers, **TUS, **OCTET, "Upload-Offset": str(offset), **extra}
    )


async def offset_of(client: AsyncTestClient[Any] | httpx.AsyncClient, location: str, headers: dict[str, str]) -> int:
    response = await client.head(location, headers={**headers, **TUS})
    assert response.status_code == 200, response.status_code
    assert response.headers["cache-control"] == "no-store"
    return int(response.headers["upload-offset"])


async def download_sha256(client: AsyncTestClient[Any], file_id: str, headers: dict[str, str]) -> str:
    response = await client.get(f"/v1/files/{file_id}/content", headers=headers)
    assert response.status_code == 200, response.text
    return sha256(response.content)


def unbuffered(client: AsyncTestClient[Any]) -> httpx.AsyncClient:
    """The started app without the test client's buffering: a streamed body arrives (or breaks) as sent."""
    transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=True)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture(scope="module")
def big_pdf() -> bytes:
    """Above the 1 MiB blocks in which parts are written and read back."""
    return padded_pdf(int(1.5 * MiB), seed=7)


# -- discovery and the full round trip ----------------------------------------------------------------------


async def test_options_announce_the_protocol_without_sign_in(client: AsyncTestClient[Any], patient_id: str) -> None:
    for url in (ME, f"{ME}/01abc", f"/v1/patients/{patient_id}/uploads"):
        response = await client.options(url)
        assert response.status_code == 204, url
        assert response.headers["tus-version"] == "1.0.0"
        assert set(response.headers["tus-extension"].split(",")) >= {"creation", "termination", "checksum"}
        assert response.headers["tus-max-size"] == str(careshare(client).settings.max_upload_bytes)
        assert response.headers["tus-checksum-algorithm"] == "sha256"
        assert response.headers["tus-resumable"] == "1.0.0"


async def test_a_patient_upload_resumes_in_parts_to_the_same_sha256(
    client: AsyncTestClient[Any],
    settings: Settings,
    patient: dict[str, str],
    clinician: dict[str, str],
    patient_id: str,
    big_pdf: bytes,
) -> None:
    location = await create(client, ME, patient, len(big_pdf), filename="MRI report.pdf")
    head = await client.head(location, headers={**patient, **TUS})
    assert head.status_code == 200
    assert head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == str(len(big_pdf))
    assert head.headers["cache-control"] == "no-store"
    assert head.headers["upload-metadata"] == metadata(filename="MRI report.pdf")
    assert head.content == b""

    cuts = [0, 700_000, 1_300_000, len(big_pdf)]
    for start, end in itertools.pairwise(cuts[:-1]):
        response = await send(client, location, patient, start, big_pdf[start:end], with_checksum=True)
        assert response.status_code == 204, response.text
        assert response.headers["upload-offset"] == str(end)
        assert response.headers["upload-expires"].endswith(" GMT")
        assert "careshare-file-id" not in response.headers
        assert await offset_of(client, location, patient) == end
    # One part object per PATCH, keyed by the offset it starts at.
    assert await parts(settings) == {upload_id_of(location): [(0, 700_000), (700_000, 600_000)]}

    final = await send(client, location, patient, cuts[-2], big_pdf[cuts[-2] :])
    assert final.status_code == 204, final.text
    assert final.headers["upload-offset"] == str(len(big_pdf))
    file_id = final.headers["careshare-file-id"]
    assert await parts(settings) == {}

    after = await client.head(location, headers={**patient, **TUS})
    assert after.headers["upload-offset"] == after.headers["upload-length"] == str(len(big_pdf))
    assert after.headers["careshare-file-id"] == file_id
    status = (await client.get(location, headers=patient)).json()
    assert status["finished"] is True and status["file_id"] == file_id and status["offset"] == len(big_pdf)

    stored = (await client.get(f"/v1/files/{file_id}", headers=patient)).json()
    assert stored["source"] == "patient" and stored["owner"] == {"type": "patient", "id": patient_id}
    assert stored["filename"] == "MRI report.pdf"
    assert stored["sha256"] == sha256(big_pdf)
    assert await download_sha256(client, file_id, patient) == sha256(big_pdf)
    new = (await client.get(f"/v1/patients/{patient_id}/files?source=patient", headers=clinician)).json()
    assert [f["id"] for f in new["items"]] == [file_id]
    assert stored_files(settings, "staging") == []


async def test_a_clinician_upload_lands_in_the_patients_files_from_the_clinic(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    body = make_pdf(pages=2, text="discharge")
    url = f"/v1/patients/{patient_id}/uploads"
    location = await create(client, url, clinician, len(body), filename="discharge.pdf")
    assert (await send(client, location, clinician, 0, body[:100])).status_code == 204
    final = await send(client, location, clinician, 100, body[100:], with_checksum=True)
    assert final.status_code == 204, final.text
    stored = (await client.get(f"/v1/files/{final.headers['careshare-file-id']}", headers=clinician)).json()
    assert stored["source"] == "clinic" and stored["owner"]["id"] == patient_id
    assert stored["uploaded_by"] == "dr-a"
    assert await download_sha256(client, stored["id"], clinician) == sha256(body)


@reuses_fixtures
@given(data=st.data())
async def test_an_upload_broken_off_anywhere_resumes_to_the_same_sha256(
    client: AsyncTestClient[Any], patient: dict[str, str], big_pdf: bytes, data: st.DataObject
) -> None:
    """A PATCH whose body ends early keeps what arrived (none of it when a checksum came with it)."""
    size = len(big_pdf)
    first = data.draw(st.integers(0, size - 2), label="first complete PATCH ends at")
    broken = data.draw(st.integers(first, size - 1), label="the next PATCH's body breaks at")
    with_checksum = data.draw(st.booleans(), label="the broken PATCH carries a checksum")

    async with unbuffered(client) as raw:
        location = await create(raw, ME, patient, size)
        if first:
            assert (await send(raw, location, patient, 0, big_pdf[:first])).status_code == 204

        async def breaks_off() -> Any:
            for start in range(first, broken, 256 * 1024):
                yield big_pdf[start : min(start + 256 * 1024, broken)]
            raise ConnectionResetError("the phone lost its signal")

        extra = {"Upload-Checksum": checksum(big_pdf[first:])} if with_checksum else {}
        headers = {**patient, **TUS, **OCTET, "Upload-Offset": str(first), **extra}
        cut_short = await raw.patch(location, content=breaks_off(), headers=headers)

        resume_at = await offset_of(raw, location, patient)
        assert resume_at == (first if with_checksum else broken)
        assert cut_short.headers["upload-offset"] == str(resume_at)
        final = await send(raw, location, patient, resume_at, big_pdf[resume_at:], with_checksum=True)
        assert final.status_code == 204, final.text
        file_id = final.headers["careshare-file-id"]
    assert await download_sha256(client, file_id, patient) == sha256(big_pdf)


# -- refusals -----------------------------------------------------------------------------------------------


async def test_a_patch_at_another_offset_is_409_and_changes_nothing(
    client: AsyncTestClient[Any], patient: dict[str, str]
) -> None:
    body = make_pdf(text="offsets")
    location = await create(client, ME, patient, len(body))
    assert (await send(client, location, patient, 0, body[:50])).status_code == 204
    for wrong in (0, 49, 51, len(body)):
        problem = assert_problem(
            await send(client, location, patient, wrong, body[wrong:]), 409, "upload-offset-mismatch"
        )
        assert problem["offset"] == 50
    assert await offset_of(client, location, patient) == 50
    assert (await send(client, location, patient, 50, body[50:])).status_code == 204


async def test_a_checksum_mismatch_is_460_and_the_offset_does_not_move(
    client: AsyncTestClient[Any], settings: Settings, patient: dict[str, str]
) -> None:
    body = make_pdf(text="checksums")
    location = await create(client, ME, patient, len(body))
    assert (await send(client, location, patient, 0, body[:100], with_checksum=True)).status_code == 204

    corrupted = bytes([body[100] ^ 0xFF]) + body[101:300]
    response = await client.patch(
        location,
        content=corrupted,
        headers={**patient, **TUS, **OCTET, "Upload-Offset": "100", "Upload-Checksum": checksum(body[100:300])},
    )
    assert_problem(response, 460, "upload-checksum-mismatch")
    assert await offset_of(client, location, patient) == 100
    assert await parts(settings) == {upload_id_of(location): [(0, 100)]}  # nothing of the bad bytes kept

    for header, code in (
        ("md5 " + base64.b64encode(b"x" * 16).decode(), "upload-checksum-algorithm-unsupported"),
        ("sha256 not-base64!", "upload-checksum-malformed"),
        ("sha256 " + base64.b64encode(b"short").decode(), "upload-checksum-malformed"),
    ):
        refused = await client.patch(
            location,
            content=body[100:300],
            headers={**patient, **TUS, **OCTET, "Upload-Offset": "100", "Upload-Checksum": header},
        )
        assert_problem(refused, 400, code)
    assert await offset_of(client, location, patient) == 100

    accepted = await send(client, location, patient, 100, body[100:], with_checksum=True)
    assert accepted.status_code == 204, accepted.text
    file_id = accepted.headers["careshare-file-id"]
    assert await download_sha256(client, file_id, patient) == sha256(body)
    assert await parts(settings) == {}


async def test_every_tus_request_but_options_needs_tus_resumable(
    client: AsyncTestClient[Any], patient: dict[str, str]
) -> None:
    body = make_pdf()
    location = await create(client, ME, patient, len(body))
    attempts = [
        ("POST", ME, {"Upload-Length": "10"}),
        ("HEAD", location, {}),
        ("PATCH", location, {**OCTET, "Upload-Offset": "0"}),
        ("DELETE", location, {}),
    ]
    for method, url, headers in attempts:
        for version in (None, "0.2.2"):
            sent = {**patient, **headers, **({"Tus-Resumable": version} if version else {})}
            response = await client.request(method, url, headers=sent, content=body if method == "PATCH" else None)
            assert response.status_code == 412, (method, version)
            assert response.headers["tus-version"] == "1.0.0"
            assert response.headers["tus-resumable"] == "1.0.0"
            if method != "HEAD":
                expected = "tus-resumable-required" if version is None else "tus-version-unsupported"
                assert response.json()["code"] == expected
    # Checked before sign-in: a client speaking another protocol learns that first.
    assert (await client.post(ME, headers={"Upload-Length": "10"})).status_code == 412
    assert await offset_of(client, location, patient) == 0


async def test_a_patch_of_another_content_type_is_415(client: AsyncTestClient[Any], patient: dict[str, str]) -> None:
    body = make_pdf()
    location = await create(client, ME, patient, len(body))
    for content_type in ("application/octet-stream", "application/pdf", None):
        headers = {**patient, **TUS, "Upload-Offset": "0", **({"Content-Type": content_type} if content_type else {})}
        assert_problem(
            await client.patch(location, content=body, headers=headers), 415, "upload-content-type-unsupported"
        )
    assert await offset_of(client, location, patient) == 0


async def test_lengths_are_required_and_capped(tmp_path: Path) -> None:
    from litestar.testing import AsyncTestClient

    settings = make_settings(tmp_path / "data", CARESHARE_MAX_UPLOAD_BYTES="5000")
    async with AsyncTestClient(app=create_app(settings)) as client:
        clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
        pid = (await client.post("/v1/patients", json={"name": "P", "external_id": "1"}, headers=clinician)).json()[
            "id"
        ]
        patient = bearer(settings, "patient", "org-a", patient=pid)
        assert (await client.options(ME)).headers["tus-max-size"] == "5000"

        def post(**headers: str) -> Any:
            return client.post(ME, headers={**patient, **TUS, **headers})

        assert_problem(await post(**{"Upload-Length": "5001"}), 413, "upload-too-large")
        assert_problem(await post(), 400, "upload-length-required")
        assert_problem(await post(**{"Upload-Defer-Length": "1"}), 400, "upload-length-required")
        assert_problem(await post(**{"Upload-Length": "-1"}), 400, "upload-length-invalid")
        assert_problem(await post(**{"Upload-Length": "12.5"}), 400, "upload-length-invalid")
        assert_problem(await post(**{"Upload-Length": "0"}), 400, "upload-empty")
        assert_problem(
            await post(**{"Upload-Length": "10", "Upload-Metadata": "filename ***"}), 400, "upload-metadata-malformed"
        )
        assert row_count(settings, "uploads") == 0 and await parts(settings) == {}

        location = await create(client, ME, patient, 5000)
        assert (await send(client, location, patient, 0, b"%PDF-" + b"x" * 995)).status_code == 204
        # More bytes than the upload has left: refused whole, declared or not.
        assert_problem(await send(client, location, patient, 1000, b"y" * 4001), 413, "upload-length-exceeded")

        async def streamed() -> Any:
            for _ in range(5):
                yield b"z" * 1000

        async with unbuffered(client) as raw:  # no Content-Length: counted while it arrives
            refused = await raw.patch(
                location, content=streamed(), headers={**patient, **TUS, **OCTET, "Upload-Offset": "1000"}
            )
        assert_problem(refused, 413, "upload-length-exceeded")
        assert await offset_of(client, location, patient) == 1000
        assert await parts(settings) == {upload_id_of(location): [(0, 1000)]}  # refused whole
        assert_problem(await send(client, location, patient, "x", b""), 400, "upload-offset-invalid")  # type: ignore[arg-type]


async def test_termination_removes_the_upload_and_its_bytes(
    client: AsyncTestClient[Any], settings: Settings, patient: dict[str, str]
) -> None:
    body = make_pdf(text="never mind")
    location = await create(client, ME, patient, len(body))
    kept = await create(client, ME, patient, len(body))
    assert (await send(client, location, patient, 0, body[:200])).status_code == 204
    assert (await send(client, kept, patient, 0, body[:100])).status_code == 204
    assert len(await parts(settings)) == 2

    response = await client.delete(location, headers={**patient, **TUS})
    assert response.status_code == 204
    assert response.headers["tus-resumable"] == "1.0.0"
    assert await parts(settings) == {upload_id_of(kept): [(0, 100)]}
    assert row_count(settings, "uploads") == 1
    assert (await client.head(location, headers={**patient, **TUS})).status_code == 404
    assert_problem(await send(client, location, patient, 200, body[200:]), 404, "not-found")
    assert_problem(await client.delete(location, headers={**patient, **TUS}), 404, "not-found")
    assert row_count(settings, "files") == 0


# -- expiry -------------------------------------------------------------------------------------------------


async def _expire(cs: Careshare, location: str) -> None:
    async with cs.engine.begin() as conn:
        await conn.execute(
            sa.update(db.uploads)
            .where(db.uploads.c.id == location.rsplit("/", 1)[1])
            .values(expires_at=db.utcnow() - timedelta(seconds=1))
        )


async def test_an_expired_upload_is_410_until_swept_then_gone(
    client: AsyncTestClient[Any], settings: Settings, patient: dict[str, str]
) -> None:
    body = make_pdf(text="late")
    stale = await create(client, ME, patient, len(body))
    fresh = await create(client, ME, patient, len(body))
    assert (await send(client, stale, patient, 0, body[:100])).status_code == 204
    assert (await send(client, fresh, patient, 0, body[:50])).status_code == 204
    await _expire(careshare(client), stale)

    assert_problem(await send(client, stale, patient, 100, body[100:]), 410, "upload-expired")
    assert (await client.head(stale, headers={**patient, **TUS})).status_code == 410
    assert_problem(await client.get(stale, headers=patient), 410, "upload-expired")
    assert len(await parts(settings)) == 2

    assert await sweep(careshare(client)) == 1
    assert await parts(settings) == {upload_id_of(fresh): [(0, 50)]}
    assert row_count(settings, "uploads") == 1
    assert (await client.head(stale, headers={**patient, **TUS})).status_code == 404
    assert row_count(settings, "files") == 0
    assert (await send(client, fresh, patient, 50, body[50:])).status_code == 204


async def test_the_sweep_removes_orphaned_parts_only_once_old(
    client: AsyncTestClient[Any], settings: Settings, patient: dict[str, str]
) -> None:
    location = await create(client, ME, patient, 1000)
    assert (await send(client, location, patient, 0, b"%PDF-" + b"x" * 95)).status_code == 204
    cs = careshare(client)

    async def body(data: bytes) -> Any:
        yield data

    orphan, young = "0" * 26, "1" * 26
    for upload_id, offset in ((orphan, 0), (orphan, 15), (young, 0)):
        assert await cs.store.put_part(part_key(upload_id, offset), body(b"left by a crash")) == 15
    old = time.time() - 2 * 3600
    for upload_id, offset in ((orphan, 0), (orphan, 15), (upload_id_of(location), 0)):  # old but known: stays
        assert cs.store.local_root is not None
        os.utime(cs.store.local_root / part_key(upload_id, offset), (old, old))
    assert await sweep(cs) == 1
    assert await parts(settings) == {upload_id_of(location): [(0, 100)], young: [(0, 15)]}
    assert not (cs.store.local_root / PARTS_ROOT / orphan).exists()
    assert await offset_of(client, location, patient) == 100


def test_upload_expiry_comes_from_the_environment(tmp_path: Path) -> None:
    assert make_settings(tmp_path / "a").upload_expiry_seconds == DEFAULT_UPLOAD_EXPIRY_SECONDS == 24 * 3600
    assert make_settings(tmp_path / "b", CARESHARE_UPLOAD_EXPIRY_HOURS="0.5").upload_expiry_seconds == 1800
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="CARESHARE_UPLOAD_EXPIRY_HOURS"):
            make_settings(tmp_path / "c", CARESHARE_UPLOAD_EXPIRY_HOURS=bad)


async def test_the_host_sweeps_expired_uploads_when_it_starts(tmp_path: Path) -> None:
    from litestar.testing import AsyncTestClient

    settings = make_settings(tmp_path / "data", CARESHARE_UPLOAD_EXPIRY_HOURS="0.01")
    async with AsyncTestClient(app=create_app(settings)) as client:
        clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
        pid = (await client.post("/v1/patients", json={"name": "P", "external_id": "1"}, headers=clinician)).json()[
            "id"
        ]
        location = await create(client, f"/v1/patients/{pid}/uploads", clinician, 1000)
        assert (await send(client, location, clinician, 0, b"%PDF-" + b"x" * 95)).status_code == 204
        response = await client.head(location, headers={**clinician, **TUS})
        expires = response.headers["upload-expires"]
        await _expire(careshare(client), location)
    assert expires.endswith(" GMT")
    assert row_count(settings, "uploads") == 1 and len(await parts(settings)) == 1

    async def swept() -> bool:
        return row_count(settings, "uploads") == 0 and await parts(settings) == {}

    async with AsyncTestClient(app=create_app(settings)):
        await eventually(swept, "the start-up sweep removed the expired upload and its bytes")


# -- the ingest pipeline decides --------------------------------------------------------------------------


async def test_a_refused_file_on_the_final_patch_keeps_only_its_rejected_row(
    client: AsyncTestClient[Any], settings: Settings, patient: dict[str, str]
) -> None:
    body = make_pdf(user_password="secret", owner_password="owner")
    location = await create(client, ME, patient, len(body), filename="locked.pdf")
    assert (await send(client, location, patient, 0, body[:300])).status_code == 204
    refused = await send(client, location, patient, 300, body[300:], with_checksum=True)
    assert_problem(refused, 422, "pdf-password-protected")
    assert stored_files(settings, "sha256") == [] and stored_files(settings, "staging") == []
    assert stored_files(settings, "held") == []
    assert row_count(settings, "files") == 1 and row_count(settings, "renditions") == 0
    shown = await client.get(f"/v1/files/{refused.json()['file_id']}", headers=patient)
    assert (shown.json()["status"], shown.json()["check"]["reason"]) == ("rejected", "pdf-password-protected")
    assert row_count(settings, "uploads") == 0 and await parts(settings) == {}
    assert (await client.head(location, headers={**patient, **TUS})).status_code == 404


# -- access ---------------------------------------------------------------------------------------------------


async def test_only_the_owner_reaches_an_upload(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
) -> None:
    body = make_pdf(text="mine")
    mine = await create(client, ME, patient, len(body))
    assert (await send(client, mine, patient, 0, body[:100])).status_code == 204
    clinic_url = f"/v1/patients/{patient_id}/uploads"
    clinics = await create(client, clinic_url, clinician, len(body))
    upload_id, clinic_upload_id = mine.rsplit("/", 1)[1], clinics.rsplit("/", 1)[1]

    other = await client.post("/v1/patients", json={"name": "Pat Two", "external_id": "MRN-2"}, headers=clinician)
    other_patient = bearer(settings, "patient", "org-a", patient=other.json()["id"])
    other_org = bearer(settings, "clinician", "org-b", sub="dr-b")
    strangers = [
        (other_patient, mine),  # another patient of the same clinic
        (patient, f"{ME}/{clinic_upload_id}"),  # the clinic's upload is not the patient's
        (clinician, f"{clinic_url}/{upload_id}"),  # nor the patient's the clinic's to resume
        (other_org, f"{clinic_url}/{clinic_upload_id}"),
        (other_org, f"{clinic_url}/{upload_id}"),
    ]
    for headers, url in strangers:
        assert (await client.head(url, headers={**headers, **TUS})).status_code == 404, url
        assert_problem(await send(client, url, headers, 100, body[100:]), 404, "not-found")
        assert_problem(await client.delete(url, headers={**headers, **TUS}), 404, "not-found")
        assert_problem(await client.get(url, headers=headers), 404, "not-found")
    assert_problem(await client.post(clinic_url, headers={**other_org, **TUS, "Upload-Length": "10"}), 404, "not-found")
    assert (await client.post(ME, headers={**clinician, **TUS, "Upload-Length": "10"})).status_code == 403
    assert (await client.post(clinic_url, headers={**patient, **TUS, "Upload-Length": "10"})).status_code == 403

    assert await offset_of(client, mine, patient) == 100
    assert await offset_of(client, clinics, clinician) == 0
    assert row_count(settings, "uploads") == 2


# -- one request at a time: the lease in the row ----------------------------------------------------------------


async def _hold(cs: Careshare, location: str, seconds: float) -> None:
    """Mark the upload held by a request elsewhere (a process that will never answer) for ``seconds``."""
    async with cs.engine.begin() as conn:
        await conn.execute(
            sa.update(db.uploads)
            .where(db.uploads.c.id == upload_id_of(location))
            .values(holder="z" * 26, held_until=db.utcnow() + timedelta(seconds=seconds), takeover=None)
        )


async def _row(cs: Careshare, location: str) -> sa.Row[Any]:
    async with cs.engine.connect() as conn:
        return (await conn.execute(sa.select(db.uploads).where(db.uploads.c.id == upload_id_of(location)))).one()


async def test_a_dead_holders_lease_lapses_and_a_silent_live_one_is_423(
    client: AsyncTestClient[Any], patient: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = make_pdf(text="leases")
    location = await create(client, ME, patient, len(body))
    assert (await send(client, location, patient, 0, body[:100])).status_code == 204
    cs = careshare(client)
    assert (await _row(cs, location)).holder is None  # let go once the PATCH ended

    await _hold(cs, location, 1.0)  # killed mid-PATCH: nobody renews its lease
    started = time.monotonic()
    assert await offset_of(client, location, patient) == 100
    assert 0.5 < time.monotonic() - started < tus.LOCK_WAIT_SECONDS
    row = await _row(cs, location)
    assert (row.holder, row.held_until, row.takeover) == (None, None, None)

    # A holder whose lease holds but who never lets go: asked to (takeover), then 423 after the wait.
    monkeypatch.setattr(tus, "LOCK_WAIT_SECONDS", 0.5)
    await _hold(cs, location, 60.0)
    assert_problem(await send(client, location, patient, 100, body[100:]), 423, "upload-locked")
    assert (await client.head(location, headers={**patient, **TUS})).status_code == 423
    assert_problem(await client.delete(location, headers={**patient, **TUS}), 423, "upload-locked")
    row = await _row(cs, location)
    assert row.holder == "z" * 26 and row.takeover is not None and row.offset == 100
    # The status read waits for nobody.
    assert (await client.get(location, headers=patient)).json()["offset"] == 100


async def test_a_slow_patch_keeps_renewing_its_lease(
    client: AsyncTestClient[Any], patient: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body trickling in for longer than the lease keeps it: renewed as it goes, so its bytes count."""
    monkeypatch.setattr(tus, "LEASE_SECONDS", 1.0)
    monkeypatch.setattr(tus, "RENEW_SECONDS", 0.2)
    monkeypatch.setattr(tus, "POLL_SECONDS", 0.05)
    body = make_pdf(text="slowly")
    location = await create(client, ME, patient, len(body))
    cs = careshare(client)
    leases = []

    async def trickles() -> Any:
        for start in range(0, 600, 100):
            yield body[start : start + 100]
            await asyncio.sleep(0.4)
            leases.append((await _row(cs, location)).held_until)

    async with unbuffered(client) as raw:
        response = await raw.patch(
            location, content=trickles(), headers={**patient, **TUS, **OCTET, "Upload-Offset": "0"}
        )
    assert response.status_code == 204, response.text
    assert response.headers["upload-offset"] == "600"
    assert leases == sorted(leases) and len(set(leases)) >= 3  # 2.4 s of body, a 1 s lease: renewed
    assert await offset_of(client, location, patient) == 600


async def test_parts_that_do_not_join_up_send_the_client_back_to_where_they_do(
    client: AsyncTestClient[Any], settings: Settings, patient: dict[str, str]
) -> None:
    """A part lost from the store is not papered over: the final PATCH says where to resume from."""
    body = make_pdf(text="lost")
    location = await create(client, ME, patient, len(body))
    for start, end in ((0, 100), (100, 250), (250, 400)):
        assert (await send(client, location, patient, start, body[start:end])).status_code == 204
    await careshare(client).store.discard(part_key(upload_id_of(location), 100))

    problem = assert_problem(await send(client, location, patient, 400, body[400:]), 409, "upload-offset-mismatch")
    assert problem["offset"] == 100
    assert await offset_of(client, location, patient) == 100
    final = await send(client, location, patient, 100, body[100:], with_checksum=True)
    assert final.status_code == 204, final.text
    assert await download_sha256(client, final.headers["careshare-file-id"], patient) == sha256(body)
    assert await parts(settings) == {}


# -- broken connections through a real server ------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str, bound_seconds: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail (not time) if it never does within a generous bound."""
    deadline = time.monotonic() + bound_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


class RawPatch:
    """A bare HTTP/1.1 PATCH: send its head and part of its body, then hang up or fall silent."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.conn = h11.Connection(h11.CLIENT)

    def start(self, path: str, headers: dict[str, str]) -> None:
        request = h11.Request(method="PATCH", target=path, headers=[("Host", "127.0.0.1"), *headers.items()])
        self.sock.sendall(self.conn.send(request))

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.conn.send(h11.Data(data=data)))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Settings, str, dict[str, str]]]:
    settings = make_settings(tmp_path / "data")
    with running_server(create_app(settings)) as url:
        clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
        response = httpx.post(f"{url}/v1/patients", json={"name": "Pat", "external_id": "MRN-1"}, headers=clinician)
        assert response.status_code == 201, response.text
        yield settings, url, bearer(settings, "patient", "org-a", patient=response.json()["id"])


@pytest.mark.parametrize("how", ["hangs-up", "falls-silent"])
def test_a_phone_losing_its_connection_mid_patch_resumes_from_head(
    server: tuple[Settings, str, dict[str, str]], how: str
) -> None:
    """A dropped connection keeps the bytes that arrived; a silent one is let go when the phone comes back."""
    settings, url, patient = server
    body = padded_pdf(4 * MiB, seed=11)
    sent = int(2.5 * MiB)
    with httpx.Client(base_url=url, headers={**patient, **TUS}, timeout=60) as client:
        created = client.post(
            ME, headers={"Upload-Length": str(len(body)), "Upload-Metadata": metadata(filename="x.pdf")}
        )
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        folder = settings.data_dir / "blobs" / PARTS_ROOT / upload_id_of(location)

        def written() -> int:  # the part being written: a new file, renamed into place once the PATCH ends
            return sum(path.stat().st_size for path in folder.glob("*")) if folder.exists() else 0

        raw = RawPatch(url)
        try:
            raw.start(location, {**patient, **TUS, **OCTET, "Upload-Offset": "0", "Content-Length": str(len(body))})
            for start in range(0, sent, 64 * 1024):
                raw.send(body[start : min(start + 64 * 1024, sent)])
            # The server is writing this PATCH to its part ...
            wait_until(lambda: written() >= 2 * MiB, "the PATCH reached its part")
            if how == "hangs-up":
                raw.close()  # ... and the phone's connection breaks.
            # (falls-silent: the connection stays open, no more bytes come, as when a phone loses its network.)

            head = client.head(location)
            assert head.status_code == 200
            offset = int(head.headers["upload-offset"])
            assert 2 * MiB <= offset <= sent
            assert asyncio.run(parts(settings)) == {upload_id_of(location): [(0, offset)]}

            final = client.patch(
                location,
                content=body[offset:],
                headers={**OCTET, "Upload-Offset": str(offset), "Upload-Checksum": checksum(body[offset:])},
            )
            assert final.status_code == 204, final.text
            file_id = final.headers["careshare-file-id"]
        finally:
            raw.close()
        digest = hashlib.sha256()
        with client.stream("GET", f"/v1/files/{file_id}/content") as download:
            assert download.status_code == 200
            for chunk in download.iter_raw():
                digest.update(chunk)
        assert digest.hexdigest() == sha256(body)
        assert client.head(location).headers["careshare-file-id"] == file_id
    assert asyncio.run(parts(settings)) == {}
    assert row_count(settings, "files") == 1


# -- several API processes sharing only a database and a blob store -------------------------------------------


@pytest.fixture(params=["sqlite-and-folder", "postgresql-and-s3"])
def shared_stores(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What API processes on different hosts share: ``CARESHARE_DATABASE_URL`` and ``CARESHARE_STORAGE_URL``."""
    if request.param == "sqlite-and-folder":
        shared = tmp_path / "shared"
        shared.mkdir()
        return {
            "CARESHARE_DATABASE_URL": f"sqlite+aiosqlite:///{shared / 'careshare.db'}",
            "CARESHARE_STORAGE_URL": (shared / "blobs").as_uri(),
        }
    postgres: PostgresCluster = request.getfixturevalue("postgres")
    moto_s3: MotoS3 = request.getfixturevalue("moto_s3")
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    return {
        "CARESHARE_DATABASE_URL": postgres.create_database(f"tus_{uuid.uuid4().hex}"),
        "CARESHARE_STORAGE_URL": moto_s3.storage_url(f"tus-{uuid.uuid4().hex}"),
    }


@pytest.fixture
def two_api_processes(
    tmp_path: Path, shared_stores: dict[str, str]
) -> Iterator[tuple[httpx.Client, httpx.Client, Settings]]:
    """Two uvicorn servers, each with a data directory of its own; clients signed in as one patient."""
    a = make_settings(tmp_path / "a", CARESHARE_WORKERS="1", **shared_stores)
    b = make_settings(tmp_path / "b", CARESHARE_WORKERS="1", **shared_stores)
    with running_server(create_app(a)) as url_a, running_server(create_app(b)) as url_b:
        clinician = bearer(a, "clinician", "org-a", sub="dr-a")
        response = httpx.post(f"{url_a}/v1/patients", json={"name": "Pat", "external_id": "MRN-1"}, headers=clinician)
        assert response.status_code == 201, response.text
        patient = {**bearer(a, "patient", "org-a", patient=response.json()["id"]), **TUS}
        with (
            httpx.Client(base_url=url_a, headers=patient, timeout=60) as on_a,
            httpx.Client(base_url=url_b, headers=patient, timeout=60) as on_b,
        ):
            yield on_a, on_b, a
    for data_dir in (a.data_dir, b.data_dir):  # nothing of an upload on either host's own disk
        assert not [path for path in data_dir.rglob("*") if path.name in ("uploads", "blobs", "careshare.db")]


def upload_row(settings: Settings, location: str) -> sa.Row[Any]:
    async def read() -> sa.Row[Any]:
        engine = db.create_engine(settings.database_url, immediate=False)
        try:
            async with engine.connect() as conn:
                query = sa.select(db.uploads).where(db.uploads.c.id == upload_id_of(location))
                return (await conn.execute(query)).one()
        finally:
            await engine.dispose()

    return asyncio.run(read())


def ready_file(client: httpx.Client, file_id: str) -> dict[str, Any]:
    """The file once its check has ended (a worker in either process runs it), within a bound."""
    deadline = time.monotonic() + 60
    while (shown := client.get(f"/v1/files/{file_id}").json())["status"] == "processing":
        assert time.monotonic() < deadline, "the file's check never ended"
        time.sleep(0.05)
    return dict(shown)


def patch(client: httpx.Client, location: str, offset: int, data: bytes, *, with_checksum: bool = False) -> Any:
    extra = {"Upload-Checksum": checksum(data)} if with_checksum else {}
    return client.patch(location, content=data, headers={**OCTET, "Upload-Offset": str(offset), **extra})


def test_an_upload_goes_on_through_whichever_api_process_a_request_reaches(
    two_api_processes: tuple[httpx.Client, httpx.Client, Settings],
) -> None:
    on_a, on_b, settings = two_api_processes
    body = padded_pdf(int(2.5 * MiB), seed=3)
    first, second = MiB + 17, 2 * MiB + 5
    created = on_a.post(ME, headers={"Upload-Length": str(len(body)), "Upload-Metadata": metadata(filename="x.pdf")})
    assert created.status_code == 201, created.text
    location = created.headers["location"]

    assert patch(on_a, location, 0, body[:first]).status_code == 204
    moved = patch(on_b, location, first, body[first:second], with_checksum=True)
    assert moved.status_code == 204, moved.text
    assert moved.headers["upload-offset"] == str(second)
    head = on_b.head(location)
    assert head.status_code == 200
    assert (head.headers["upload-offset"], head.headers["upload-length"]) == (str(second), str(len(body)))
    assert asyncio.run(parts(settings)) == {upload_id_of(location): [(0, first), (first, second - first)]}
    stale = patch(on_a, location, first, body[first:second])  # A knows nothing B did but what the row says
    assert stale.status_code == 409 and stale.headers["upload-offset"] == str(second)

    final = patch(on_a, location, second, body[second:], with_checksum=True)
    assert final.status_code == 204, final.text
    file_id = final.headers["careshare-file-id"]
    assert on_b.head(location).headers["careshare-file-id"] == file_id
    shown = ready_file(on_b, file_id)
    assert (shown["status"], shown["sha256"], shown["size"]) == ("ready", sha256(body), len(body))
    assert on_b.get(f"/v1/files/{file_id}/content").content == body
    assert on_a.get(f"/v1/files/{file_id}/content").content == body
    assert asyncio.run(parts(settings)) == {}
    row = upload_row(settings, location)
    assert (row.offset, row.file_id, row.holder) == (len(body), file_id, None)


def test_a_stalled_patch_on_one_process_gives_way_to_a_request_on_another(
    two_api_processes: tuple[httpx.Client, httpx.Client, Settings],
) -> None:
    """A phone's network goes quiet mid-PATCH on A; it comes back through B, which asks A to let go."""
    on_a, on_b, settings = two_api_processes
    body = padded_pdf(2 * MiB, seed=5)
    sent = MiB + 1234
    created = on_a.post(ME, headers={"Upload-Length": str(len(body)), "Upload-Metadata": metadata(filename="x.pdf")})
    location = created.headers["location"]
    resumed = threading.Event()

    def goes_quiet() -> Iterator[bytes]:
        for start in range(0, sent, 64 * 1024):
            yield body[start : min(start + 64 * 1024, sent)]
        resumed.wait(60)  # no more bytes come; the connection stays open

    stalled: dict[str, Any] = {}

    def patch_on_a() -> None:
        try:
            stalled["response"] = on_a.patch(location, content=goes_quiet(), headers={**OCTET, "Upload-Offset": "0"})
        except httpx.HTTPError as error:  # A answered before the body ended and closed the connection
            stalled["error"] = error

    thread = threading.Thread(target=patch_on_a)
    thread.start()
    try:
        wait_until(lambda: upload_row(settings, location).holder is not None, "A took the upload")
        time.sleep(1.0)  # the bytes sent reach A (loopback)
        started = time.monotonic()
        head = on_b.head(location)
        took = time.monotonic() - started
    finally:
        resumed.set()
        thread.join(timeout=60)
    assert head.status_code == 200
    # A was alive and renewing its lease: B got the upload because A let go when asked, not by a lapse.
    assert took < tus.LEASE_SECONDS / 2
    offset = int(head.headers["upload-offset"])
    assert offset == sent  # without a checksum, what arrived is kept
    if "response" in stalled:
        assert stalled["response"].status_code == 204
        assert stalled["response"].headers["upload-offset"] == str(offset)

    final = patch(on_b, location, offset, body[offset:], with_checksum=True)
    assert final.status_code == 204, final.text
    shown = ready_file(on_a, final.headers["careshare-file-id"])
    assert (shown["status"], shown["sha256"]) == ("ready", sha256(body))
    assert on_a.get(f"/v1/files/{shown['id']}/content").content == body
    assert asyncio.run(parts(settings)) == {}
