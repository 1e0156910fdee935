"""tuspy, the tus project's own Python client, against a real server (issue 13).

A resumable upload as a third-party client makes it: created with metadata, sent in chunks, broken
off, resumed by a new uploader that asks HEAD for the offset, with sha256 checksums on every chunk;
the file that lands is byte for byte what was sent.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import TYPE_CHECKING

import httpx
import pikepdf
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from tusclient.client import TusClient
from tusclient.uploader import Uploader

from careshare.host import create_app
from careshare.testing import bearer, make_settings, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator

CHUNK = 64 * 1024


class Sha256Uploader(Uploader):
    """tuspy sends sha1 checksums unless told otherwise; careshare checks sha256."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


def _pdf(payload: int) -> bytes:
    """A real PDF carrying ``payload`` random bytes in a stream the PDF handler keeps."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    pdf.Root.CareshareBlob = pikepdf.Stream(pdf, os.urandom(payload))
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], str]]:
    settings = make_settings(tmp_path_factory.mktemp("tuspy") / "data", CARESHARE_WORKERS="1")
    clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
    with running_server(create_app(settings)) as base:
        made = httpx.post(f"{base}/v1/patients", json={"name": "Tus Py", "external_id": "TUS-1"}, headers=clinician)
        assert made.status_code == 201, made.text
        yield base, clinician, made.json()["id"]


def _landed(base: str, headers: dict[str, str], upload_url: str) -> bytes:
    status = httpx.head(upload_url, headers={**headers, "Tus-Resumable": "1.0.0"})
    assert status.status_code == 200, status.text
    fid = status.headers["careshare-file-id"]
    stored = httpx.get(f"{base}/v1/files/{fid}", headers={**headers, "Prefer": "wait=30"})
    assert stored.json()["filename"] == "scan report.pdf", stored.text
    return httpx.get(f"{base}/v1/files/{fid}/content", headers=headers).content


# A real server round trip per example: a tenth of the profile's count (3 with CI=true).
@hsettings(max_examples=max(3, hsettings.default.max_examples // 10), deadline=None)
@given(chunks_first=st.integers(min_value=1, max_value=5), payload=st.integers(min_value=CHUNK, max_value=6 * CHUNK))
def test_tuspy_uploads_breaks_off_and_resumes_to_the_same_bytes(
    server: tuple[str, dict[str, str], str], chunks_first: int, payload: int
) -> None:
    base, clinician, pid = server
    body = _pdf(payload)
    client = TusClient(f"{base}/v1/patients/{pid}/uploads", headers=clinician)
    first = Sha256Uploader(
        file_stream=io.BytesIO(body),
        client=client,
        chunk_size=CHUNK,
        metadata={"filename": "scan report.pdf"},
        upload_checksum=True,
    )
    first.upload(stop_at=min(chunks_first * CHUNK, len(body) - 1))  # broken off before the end
    assert first.url is not None and first.offset < len(body)

    # A new client process: it knows only the upload's address, asks HEAD where to go on.
    again = Sha256Uploader(
        file_stream=io.BytesIO(body), client=client, url=first.url, chunk_size=CHUNK, upload_checksum=True
    )
    assert again.offset == first.offset
    again.upload()
    assert again.offset == len(body)
    assert hashlib.sha256(_landed(base, clinician, first.url)).digest() == hashlib.sha256(body).digest()
