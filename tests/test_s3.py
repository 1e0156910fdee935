"""The blob store on S3 for real: a moto server on 127.0.0.1, reached the way production reaches S3.

The store reads its endpoint and keys from the ``AWS_*`` environment, so each test sets exactly
moto's variables (and no others) and takes a prefix of its own in the session's bucket.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from careshare.core.problems import UPLOAD_EMPTY, UPLOAD_TOO_LARGE, Problem
from careshare.core.storage import HEAD_BYTES, BlobStore, content_key
from careshare.testing import make_pdf, make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings
    from careshare.testing import MotoS3

MiB = 1024 * 1024
#: The store's multipart part size: staging more than this goes to S3 in several parts.
PART = 8 * MiB
TUS = {"Tus-Resumable": "1.0.0"}
#: Uploads ask to wait for their check; an answer of 202 is followed until the check ends.
WAIT = {"Prefer": "wait=30"}
POLL_SECONDS = 30.0

reuses_fixtures = hypothesis_settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], max_examples=12
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def cut(data: bytes, positions: list[int]) -> list[bytes]:
    bounds = [0, *sorted(positions), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def leftovers(moto_s3: MotoS3, prefix: str) -> list[str]:
    """Objects outside the content area and unfinished multipart uploads under ``prefix``."""
    stray = [key for key in moto_s3.keys(prefix) if not key.startswith("sha256/")]
    return stray + [f"multipart:{key}" for key in moto_s3.multipart_uploads(prefix)]


# -- the environment a careshare process on S3 has ---------------------------------------------------------


@pytest.fixture
def s3_env(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    """moto's ``AWS_*`` variables and none of the machine's (a stray profile or token would be used)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    return moto_s3


def new_prefix() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def prefix(s3_env: MotoS3) -> str:
    return new_prefix()


@pytest.fixture
def store(s3_env: MotoS3, prefix: str) -> BlobStore:
    return BlobStore(s3_env.storage_url(prefix))


@pytest.fixture
def settings(tmp_path: Path, s3_env: MotoS3, prefix: str) -> Settings:
    """Overrides the shared ``settings``: the ``client`` fixture's app keeps its blobs in the bucket."""
    return make_settings(tmp_path / "data", CARESHARE_STORAGE_URL=s3_env.storage_url(prefix))


# -- BlobStore on S3 ---------------------------------------------------------------------------------------


def test_the_store_is_s3_under_the_prefix(store: BlobStore, prefix: str) -> None:
    assert store.local_root is None
    assert store.store.prefix == prefix


@reuses_fixtures
@given(data=st.data())
async def test_stage_promote_and_read_back_any_chunking(s3_env: MotoS3, data: st.DataObject) -> None:
    prefix = new_prefix()  # a store of its own per example
    store = BlobStore(s3_env.storage_url(prefix))
    size = data.draw(st.integers(1, 3 * HEAD_BYTES), label="size")
    body = random_bytes(size, seed=data.draw(st.integers(0, 2**16), label="seed"))
    positions = data.draw(st.lists(st.integers(0, size), max_size=8), label="cuts")

    staged = await store.stage(stream(cut(body, positions)), limit=size)
    assert (staged.sha256, staged.size, staged.head) == (sha256(body), size, body[:HEAD_BYTES])
    assert s3_env.keys(prefix) == [staged.key]
    assert not await store.exists(staged.sha256)

    key = await store.promote(staged)
    assert key == content_key(sha256(body))
    assert s3_env.keys(prefix) == [key]
    assert await store.exists(sha256(body))
    assert await collect(store.read(sha256(body))) == body
    assert await store.read_all(sha256(body)) == body

    start = data.draw(st.integers(0, size - 1), label="range start")
    end = data.draw(st.integers(start, size), label="range end")
    assert await collect(store.read(sha256(body), start, end)) == body[start:end]
    assert await collect(store.read(sha256(body), start)) == body[start:]

    # The same bytes again: stored once, the second staging copy dropped.
    again = await store.stage(stream([body]), limit=None)
    assert await store.promote(again) == key
    assert s3_env.keys(prefix) == [key]
    assert leftovers(s3_env, prefix) == []

    await store.discard(key)
    assert not await store.exists(sha256(body))
    await store.discard(key)  # discarding what is gone is no error


async def test_a_multipart_staging_reads_back_across_part_boundaries(
    store: BlobStore, s3_env: MotoS3, prefix: str
) -> None:
    body = random_bytes(2 * PART + 12_345, seed=3)
    staged = await store.stage(stream(cut(body, [1, PART - 7, PART + 1, 2 * PART])), limit=len(body))
    assert (staged.sha256, staged.size) == (sha256(body), len(body))
    await store.promote(staged)
    assert await collect(store.read(staged.sha256, PART - 100, PART + 100)) == body[PART - 100 : PART + 100]
    assert sha256(await collect(store.read(staged.sha256))) == sha256(body)
    assert leftovers(s3_env, prefix) == []


@pytest.mark.parametrize("size", [1000, PART + 1000], ids=["one-put", "multipart"])
async def test_over_the_limit_leaves_nothing_in_the_bucket(
    store: BlobStore, s3_env: MotoS3, prefix: str, size: int
) -> None:
    body = random_bytes(size, seed=5)
    with pytest.raises(Problem) as refused:
        await store.stage(stream(cut(body, [size // 3, size // 2])), limit=size - 1)
    assert refused.value.type == UPLOAD_TOO_LARGE
    assert s3_env.keys(prefix) == []
    assert s3_env.multipart_uploads(prefix) == []


async def test_an_empty_upload_leaves_nothing_in_the_bucket(store: BlobStore, s3_env: MotoS3, prefix: str) -> None:
    with pytest.raises(Problem) as refused:
        await store.stage(stream([b"", b""]), limit=10)
    assert refused.value.type == UPLOAD_EMPTY
    assert s3_env.keys(prefix) == []


async def test_put_file_stores_by_content_once(store: BlobStore, s3_env: MotoS3, prefix: str, tmp_path: Path) -> None:
    body = random_bytes(300_000, seed=9)
    path = tmp_path / "rendition.pdf"
    path.write_bytes(body)
    assert await store.put_file(path) == (sha256(body), len(body))
    assert await store.put_file(path) == (sha256(body), len(body))
    assert s3_env.keys(prefix) == [content_key(sha256(body))]
    assert await store.exists(sha256(body))
    assert await store.read_all(sha256(body)) == body


async def test_local_path_is_a_temporary_copy(store: BlobStore, tmp_path: Path) -> None:
    body = random_bytes(HEAD_BYTES + 1, seed=11)
    staged = await store.stage(stream([body]), limit=None)
    key = await store.promote(staged)
    store.local_tmp = tmp_path
    async with store.local_path(key) as path:
        assert path.parent == tmp_path
        assert path.read_bytes() == body
    assert not path.exists()


# -- the HTTP API on S3 ------------------------------------------------------------------------------------


async def settled(client: AsyncTestClient[Any], response: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The file an upload answered with, once its check has ended (201 at once, or 202 then polled)."""
    assert response.status_code in (201, 202), response.text
    file = dict(response.json())
    return await checked(client, file["id"], headers)


async def checked(client: AsyncTestClient[Any], file_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        shown = await client.get(f"/v1/files/{file_id}", headers=headers)
        assert shown.status_code == 200, shown.text
        file = dict(shown.json())
        if file["status"] != "processing":
            return file
        assert time.monotonic() < deadline, f"file {file_id} still processing after {POLL_SECONDS} s"
        await asyncio.sleep(0.1)


async def test_a_pdf_upload_is_checked_and_served_from_the_bucket(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, s3_env: MotoS3, prefix: str
) -> None:
    body = make_pdf(pages=2, text="S3 round trip")
    response = await client.post(
        f"/v1/patients/{patient_id}/files",
        params={"filename": "letter.pdf"},
        content=body,
        headers={**clinician, **WAIT},
    )
    file = await settled(client, response, clinician)
    assert (file["status"], file["kind"], file["sha256"], file["size"]) == ("ready", "pdf", sha256(body), len(body))
    assert content_key(sha256(body)) in s3_env.keys(prefix)
    assert leftovers(s3_env, prefix) == []

    whole = await client.get(f"/v1/files/{file['id']}/content", headers=clinician)
    assert whole.status_code == 200
    assert whole.content == body
    assert whole.headers["etag"] == f'"{sha256(body)}"'

    for header, start, end in [
        ("bytes=10-99", 10, 100),
        ("bytes=100-", 100, len(body)),
        ("bytes=-64", len(body) - 64, len(body)),
    ]:
        ranged = await client.get(f"/v1/files/{file['id']}/content", headers={**clinician, "Range": header})
        assert ranged.status_code == 206, (header, ranged.text)
        assert ranged.content == body[start:end], header
        assert ranged.headers["content-range"] == f"bytes {start}-{end - 1}/{len(body)}"

    # The same bytes once more: a second file, one blob (the promotion finds it already stored).
    response = await client.post(
        f"/v1/patients/{patient_id}/files",
        params={"filename": "copy.pdf"},
        content=body,
        headers={**clinician, **WAIT},
    )
    copy = await settled(client, response, clinician)
    assert copy["status"] == "ready" and copy["id"] != file["id"]
    assert s3_env.keys(prefix).count(content_key(sha256(body))) == 1
    assert leftovers(s3_env, prefix) == []
    again = await client.get(f"/v1/files/{copy['id']}/content", headers=clinician)
    assert again.content == body


async def test_a_refused_upload_leaves_nothing_in_the_bucket(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, s3_env: MotoS3, prefix: str
) -> None:
    body = b"%PDF-1.7\nnot really a PDF\n" + random_bytes(5000, seed=13)
    response = await client.post(
        f"/v1/patients/{patient_id}/files",
        params={"filename": "broken.pdf"},
        content=body,
        headers={**clinician, **WAIT},
    )
    if response.status_code in (201, 202):
        assert (await settled(client, response, clinician))["status"] == "rejected"
    else:
        assert 400 <= response.status_code < 500, response.text
    assert content_key(sha256(body)) not in s3_env.keys(prefix)
    assert leftovers(s3_env, prefix) == []


def tus_metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


async def test_a_tus_upload_ends_in_a_file_stored_in_the_bucket(
    client: AsyncTestClient[Any], patient: dict[str, str], s3_env: MotoS3, prefix: str
) -> None:
    body = make_pdf(pages=3, text="resumed")
    created = await client.post(
        "/v1/me/uploads",
        headers={
            **patient,
            **TUS,
            "Upload-Length": str(len(body)),
            "Upload-Metadata": tus_metadata(filename="scan.pdf"),
        },
    )
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    offset = 0
    for end in (len(body) // 2, len(body)):
        sent = await client.patch(
            location,
            content=body[offset:end],
            headers={
                **patient,
                **TUS,
                **WAIT,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
            },
        )
        assert sent.status_code == 204, sent.text
        assert sent.headers["upload-offset"] == str(end)
        offset = end
    file = await checked(client, sent.headers["careshare-file-id"], patient)
    assert (file["status"], file["sha256"], file["filename"]) == ("ready", sha256(body), "scan.pdf")
    assert content_key(sha256(body)) in s3_env.keys(prefix)
    assert leftovers(s3_env, prefix) == []
    download = await client.get(f"/v1/files/{file['id']}/content", headers=patient)
    assert download.status_code == 200
    assert download.content == body


async def test_erasure_leaves_no_object_of_the_patient_in_the_bucket(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, s3_env: MotoS3, prefix: str
) -> None:
    """Every object of the patient's own bytes (originals and renditions) goes; another patient's stays."""
    own = make_pdf(pages=2, text="erased from the bucket")
    file = await settled(
        client,
        await client.post(
            f"/v1/patients/{patient_id}/files", params={"filename": "x.pdf"}, content=own, headers={**clinician, **WAIT}
        ),
        clinician,
    )
    message = await client.post(
        f"/v1/patients/{patient_id}/messages", json={"body": "see", "file_ids": [file["id"]]}, headers=clinician
    )
    assert message.status_code == 201, message.text
    other = await client.post("/v1/patients", json={"name": "Kept", "external_id": "KEPT-1"}, headers=clinician)
    kept = make_pdf(text="another patient's")
    kept_file = await settled(
        client,
        await client.post(
            f"/v1/patients/{other.json()['id']}/files",
            params={"filename": "k.pdf"},
            content=kept,
            headers={**clinician, **WAIT},
        ),
        clinician,
    )
    # Blank pages make the same thumbnail: an object the other patient's file uses is theirs as well.
    others = {content_key(r["sha256"]) for r in kept_file["renditions"]}
    patients_objects = ({content_key(r["sha256"]) for r in file["renditions"]} | {content_key(sha256(own))}) - others
    assert patients_objects <= set(s3_env.keys(prefix))
    erased = await client.post(f"/v1/patients/{patient_id}/erase", json={"external_id": "MRN-1"}, headers=clinician)
    assert erased.status_code == 200, erased.text
    assert erased.json()["blobs"] == len(patients_objects)
    remaining = set(s3_env.keys(prefix))
    assert not patients_objects & remaining
    assert others <= remaining
    assert leftovers(s3_env, prefix) == []
