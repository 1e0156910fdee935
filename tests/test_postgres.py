"""The API on PostgreSQL through the same code as on SQLite, and concurrent uploads on both."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from careshare.core import db
from careshare.core.storage import content_key
from careshare.host import create_app
from careshare.testing import bearer, make_pdf, make_settings, running_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from careshare.core.settings import Settings
    from careshare.testing import PostgresCluster


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A new empty database of the session's cluster, for this test alone."""
    return postgres.create_database(f"api_{uuid.uuid4().hex}")


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str) -> Settings:
    return make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=pg_url)


@pytest.fixture
async def pg_client(pg_settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(pg_settings)) as test_client:
        yield test_client


@pytest.fixture
def pg_clinician(pg_settings: Settings) -> dict[str, str]:
    return bearer(pg_settings, "clinician", "org-a", sub="dr-a")


async def _count(url: str, table: sa.Table, *where: Any) -> int:
    """Rows of ``table``, read over an engine of the test's own (the app runs in another event loop)."""
    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar_one())
    finally:
        await engine.dispose()


def _stored_keys(settings: Settings) -> set[str]:
    """Every object in the local blob store, staging included, as store keys."""
    root = settings.data_dir / "blobs"
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


async def _register(client: Any, headers: dict[str, str], external_id: str = "MRN-1") -> str:
    response = await client.post("/v1/patients", json={"name": "Pat One", "external_id": external_id}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_schema_is_migrated_on_start(pg_client: AsyncTestClient[Any], pg_url: str) -> None:
    response = await pg_client.get("/healthz")
    assert response.status_code == 200, response.text
    engine = db.create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            assert engine.dialect.name == "postgresql"
            tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    assert set(db.metadata.tables) <= tables


async def test_duplicate_external_id_is_409(
    pg_client: AsyncTestClient[Any], pg_clinician: dict[str, str], pg_url: str
) -> None:
    first = await _register(pg_client, pg_clinician)
    again = await pg_client.post(
        "/v1/patients", json={"name": "Someone Else", "external_id": "MRN-1"}, headers=pg_clinician
    )
    assert again.status_code == 409, again.text
    assert again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["code"] == "patient-exists"
    # The failed insert rolled back cleanly: the connection and the next request still work.
    other = await _register(pg_client, pg_clinician, external_id="MRN-2")
    assert other != first
    assert await _count(pg_url, db.patients) == 2
    # The same external id in another organisation is a different patient.
    elsewhere = bearer(pg_client.app.state.careshare.settings, "clinician", "org-b", sub="dr-b")
    await _register(pg_client, elsewhere)
    assert await _count(pg_url, db.patients) == 3


async def test_upload_dedupe_list_and_range_on_postgres(
    pg_client: AsyncTestClient[Any], pg_clinician: dict[str, str], pg_url: str
) -> None:
    pid = await _register(pg_client, pg_clinician)
    body = make_pdf(pages=3)
    sha = hashlib.sha256(body).hexdigest()

    first = await pg_client.post(f"/v1/patients/{pid}/files?filename=one.pdf", content=body, headers=pg_clinician)
    assert first.status_code == 201, first.text
    assert first.json()["sha256"] == sha and first.json()["size"] == len(body)
    assert first.json()["metadata"]["pages"] == 3
    second = await pg_client.post(f"/v1/patients/{pid}/files?filename=two.pdf", content=body, headers=pg_clinician)
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first.json()["id"]
    assert second.json()["sha256"] == sha

    # The same bytes twice: two files, one blob.
    first_blobs = {r["sha256"] for r in first.json()["renditions"]}  # original, shareable, thumbnail
    assert {r["sha256"] for r in second.json()["renditions"]} == first_blobs
    assert await _count(pg_url, db.blobs, db.blobs.c.sha256 == sha) == 1
    assert await _count(pg_url, db.blobs) == len(first_blobs)
    assert await _count(pg_url, db.files, db.files.c.sha256 == sha) == 2
    assert await _count(pg_url, db.audit_events, db.audit_events.c.action == "file.uploaded") == 2

    other = make_pdf(pages=1, text="another")
    third = await pg_client.post(f"/v1/patients/{pid}/files?filename=three.pdf", content=other, headers=pg_clinician)
    assert third.status_code == 201, third.text
    assert await _count(pg_url, db.blobs) == len(first_blobs | {r["sha256"] for r in third.json()["renditions"]})

    # Pagination: newest first, a cursor until the end, every file exactly once.
    page1 = await pg_client.get(f"/v1/patients/{pid}/files?limit=2", headers=pg_clinician)
    assert page1.status_code == 200, page1.text
    assert [f["filename"] for f in page1.json()["items"]] == ["three.pdf", "two.pdf"]
    cursor = page1.json()["next_cursor"]
    assert cursor
    page2 = await pg_client.get(
        f"/v1/patients/{pid}/files", params={"limit": 2, "cursor": cursor}, headers=pg_clinician
    )
    assert page2.status_code == 200, page2.text
    assert [f["filename"] for f in page2.json()["items"]] == ["one.pdf"]
    assert page2.json()["next_cursor"] is None
    listed = page1.json()["items"] + page2.json()["items"]
    assert sorted(f["id"] for f in listed) == sorted(r.json()["id"] for r in (first, second, third))
    # A file read from PostgreSQL has the same shape as the one returned by the upload.
    assert page2.json()["items"][0] == first.json()

    # Ranged download of the shared blob through the second file.
    fid = second.json()["id"]
    ranged = await pg_client.get(f"/v1/files/{fid}/content", headers={**pg_clinician, "Range": "bytes=10-109"})
    assert ranged.status_code == 206, ranged.text
    assert ranged.headers["content-range"] == f"bytes 10-109/{len(body)}"
    assert ranged.content == body[10:110]
    tail = await pg_client.get(f"/v1/files/{fid}/content", headers={**pg_clinician, "Range": "bytes=-7"})
    assert tail.status_code == 206
    assert tail.content == body[-7:]
    whole = await pg_client.get(f"/v1/files/{fid}/content", headers=pg_clinician)
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == sha
    assert whole.headers["etag"] == f'"{sha}"'
    beyond = await pg_client.get(f"/v1/files/{fid}/content", headers={**pg_clinician, "Range": f"bytes={len(body)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(body)}"


async def test_password_pdf_refused_keeps_only_its_rejected_row_on_postgres(
    pg_client: AsyncTestClient[Any], pg_clinician: dict[str, str], pg_url: str
) -> None:
    pid = await _register(pg_client, pg_clinician)
    locked = make_pdf(user_password="open-sesame", owner_password="owner")
    response = await pg_client.post(
        f"/v1/patients/{pid}/files?filename=locked.pdf", content=locked, headers=pg_clinician
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "pdf-password-protected"
    fid = response.json()["file_id"]
    assert response.headers["location"] == f"/v1/files/{fid}"
    assert await _count(pg_url, db.files, db.files.c.status == "rejected") == 1
    assert await _count(pg_url, db.files) == 1
    assert await _count(pg_url, db.renditions) == 0
    shown = (await pg_client.get(f"/v1/files/{fid}", headers=pg_clinician)).json()
    assert shown["status"] == "rejected"
    assert shown["check"]["reason"] == "pdf-password-protected"
    # Nothing refused is stored: not the original, not a rendition.
    assert _stored_keys(pg_client.app.state.careshare.settings) == set()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return make_settings(tmp_path / "data")
    url = request.getfixturevalue("pg_url")
    return make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=url)


async def test_concurrent_uploads_of_the_same_bytes(any_settings: Settings) -> None:
    """Eight uploads of one file at once, over real HTTP: all succeed, one blob row, eight files.

    A real uvicorn serves the app so the requests truly overlap (Litestar's AsyncTestClient
    runs each request to completion before the next starts).
    """
    headers = bearer(any_settings, "clinician", "org-a", sub="dr-a")
    body = make_pdf(pages=60, text="concurrent")
    sha = hashlib.sha256(body).hexdigest()
    uploads = 8
    with running_server(create_app(any_settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            pid = await _register(http, headers)
            responses = await asyncio.gather(
                *(
                    http.post(f"/v1/patients/{pid}/files?filename=copy-{n}.pdf", content=body, headers=headers)
                    for n in range(uploads)
                )
            )
            assert [r.status_code for r in responses] == [201] * uploads, [r.text for r in responses]
            assert {r.json()["sha256"] for r in responses} == {sha}
            assert len({r.json()["id"] for r in responses}) == uploads
            listed = await http.get(f"/v1/patients/{pid}/files?limit=50", headers=headers)
            assert len(listed.json()["items"]) == uploads
            content = await http.get(f"/v1/files/{responses[-1].json()['id']}/content", headers=headers)
            assert content.content == body
    url = any_settings.database_url
    rendition_blobs = {r["sha256"] for r in responses[0].json()["renditions"]}
    assert all({r["sha256"] for r in response.json()["renditions"]} == rendition_blobs for response in responses)
    assert await _count(url, db.blobs) == len(rendition_blobs)
    assert await _count(url, db.files, db.files.c.sha256 == sha) == uploads
    assert await _count(url, db.renditions, db.renditions.c.sha256 == sha) >= uploads
    # Exactly one stored copy under its content key, and no staging leftovers.
    assert _stored_keys(any_settings) == {content_key(h) for h in rendition_blobs}
