"""Streaming uploads and downloads through a real uvicorn server on 127.0.0.1.

The upload limit is enforced while the body arrives (413 before the client finished sending),
refusals and broken connections leave nothing in the blob store, and big files round-trip.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import socket
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import h11
import httpx
import pikepdf
import pytest

from careshare.host import create_app
from careshare.testing import bearer, make_settings, running_server
from careshare.testing.api import assert_problem

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

    from careshare.core.settings import Settings

MiB = 1024 * 1024
SMALL_LIMIT = 1 * MiB
#: Above the blob store's 8 MiB staging part size, so big uploads go through multipart writes.
LARGE_LIMIT = 24 * MiB
CHUNK = 64 * 1024
PROBLEM_JSON = "application/problem+json"


# -- helpers -----------------------------------------------------------------------------------------


def pdf_of_size(size: int, seed: int = 0) -> bytes:
    """A valid PDF of exactly ``size`` bytes: a blank page plus an uncompressed stream of random padding."""

    def build(padding: int) -> bytes:
        pdf = pikepdf.new()
        pdf.add_blank_page(page_size=(595, 842))
        pdf.Root.Padding = pikepdf.Stream(pdf, random.Random(seed).randbytes(max(padding, 0)))
        out = io.BytesIO()
        pdf.save(
            out,
            compress_streams=False,
            object_stream_mode=pikepdf.ObjectStreamMode.disable,
            deterministic_id=True,
        )
        return out.getvalue()

    padding = size - len(build(0))
    for _ in range(10):
        data = build(padding)
        if len(data) == size:
            return data
        padding += size - len(data)
    raise AssertionError(f"could not build a PDF of exactly {size} bytes")


def chunks(data: bytes, size: int = CHUNK) -> Iterator[bytes]:
    """An iterator body: httpx sends it with ``Transfer-Encoding: chunked`` and no Content-Length."""
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def multipart_chunks(data: bytes, filename: str, boundary: str = "careshare-test-boundary") -> Iterator[bytes]:
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="note"\r\n\r\n'
        "a small text field\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    yield from chunks(data)
    yield f"\r\n--{boundary}--\r\n".encode()


MULTIPART = {"Content-Type": "multipart/form-data; boundary=careshare-test-boundary"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_files(settings: Settings, area: str) -> list[Path]:
    root = settings.data_dir / "blobs" / area
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def row_count(settings: Settings, table: str) -> int:
    with contextlib.closing(sqlite3.connect(settings.data_dir / "careshare.db")) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def assert_nothing_stored(settings: Settings) -> None:
    assert blob_files(settings, "staging") == []
    assert blob_files(settings, "sha256") == []
    assert row_count(settings, "files") == 0
    assert row_count(settings, "blobs") == 0


def wait_until(condition: Callable[[], bool], what: str, bound_seconds: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail (not time) if it never does within a generous bound."""
    deadline = time.monotonic() + bound_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


class Server:
    """A running careshare on 127.0.0.1 with a registered patient, and a clinician's client."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.headers = bearer(settings, "clinician", "org-a", sub="dr-a")
        self.client = httpx.Client(base_url=url, headers=self.headers, timeout=60)
        response = self.client.post("/v1/patients", json={"name": "Pat", "external_id": "MRN-1"})
        assert response.status_code == 201, response.text
        self.patient_id: str = response.json()["id"]

    @property
    def upload_path(self) -> str:
        return f"/v1/patients/{self.patient_id}/files"

    def upload(self, content: bytes | Iterable[bytes], *, filename: str = "scan.pdf", **kwargs: Any) -> httpx.Response:
        return self.client.post(self.upload_path, params={"filename": filename}, content=content, **kwargs)


@contextlib.contextmanager
def serve(tmp_path: Path, limit: int) -> Iterator[Server]:
    settings = make_settings(tmp_path / "data", CARESHARE_MAX_UPLOAD_BYTES=str(limit))
    with running_server(create_app(settings)) as url:
        server = Server(settings, url)
        try:
            yield server
        finally:
            server.client.close()


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Server]:
    """A server accepting uploads up to 1 MiB."""
    with serve(tmp_path, SMALL_LIMIT) as server:
        yield server


@pytest.fixture
def large(tmp_path: Path) -> Iterator[Server]:
    """A server accepting uploads up to 24 MiB (several staging parts)."""
    with serve(tmp_path, LARGE_LIMIT) as server:
        yield server


class RawConnection:
    """A bare HTTP/1.1 connection: send a head and some body, then read a response or hang up."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.conn = h11.Connection(h11.CLIENT)

    def send_head(self, path: str, headers: dict[str, str]) -> None:
        self.sock.sendall(
            self.conn.send(h11.Request(method="POST", target=path, headers=[("Host", "127.0.0.1"), *headers.items()]))
        )

    def send_body(self, data: bytes) -> None:
        self.sock.sendall(self.conn.send(h11.Data(data=data)))

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = 0, {}, bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, headers, bytes(body)

    def close(self) -> None:
        self.sock.close()


# -- the upload limit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [SMALL_LIMIT, 9 * MiB], ids=["1MiB", "9MiB-multipart-staging"])
def test_chunked_upload_over_the_limit_is_413_and_leaves_nothing(tmp_path: Path, limit: int) -> None:
    with serve(tmp_path, limit) as server:
        body = pdf_of_size(limit + 2 * MiB)
        response = server.upload(chunks(body))
        problem = assert_problem(response, 413, "upload-too-large")
        assert problem["limit"] == limit
        assert_nothing_stored(server.settings)
        assert server.client.get(server.upload_path).json()["items"] == []


@pytest.mark.parametrize(
    ("framing", "multipart"),
    [("chunked", False), ("chunked", True), ("content-length", True)],
    ids=["raw-chunked", "multipart-chunked", "multipart-content-length"],
)
def test_limit_is_enforced_before_the_body_ends(small: Server, framing: str, multipart: bool) -> None:
    """Past the limit the server answers 413 while the body is unfinished: it never waits for the rest."""
    body = pdf_of_size(SMALL_LIMIT + 16 * 1024)
    parts = list(multipart_chunks(body, "big.pdf"))[:-1] if multipart else list(chunks(body))  # no closing line
    headers = {**small.headers, **(MULTIPART if multipart else {})}
    if framing == "content-length":
        # Within the multipart envelope allowance, so only the running count of file bytes can refuse.
        headers["Content-Length"] = str(SMALL_LIMIT + 48 * 1024)
        assert sum(map(len, parts)) < SMALL_LIMIT + 48 * 1024
    else:
        headers["Transfer-Encoding"] = "chunked"
    raw = RawConnection(small.url)
    try:
        raw.send_head(f"{small.upload_path}?filename=big.pdf", headers)
        # Over the limit, then nothing more: the body does not end (no last chunk, or bytes still owed).
        for piece in parts:
            raw.send_body(piece)
        status, response_headers, payload = raw.read_response()
    finally:
        raw.close()
    assert status == 413
    assert response_headers["content-type"].startswith(PROBLEM_JSON)
    assert json.loads(payload)["code"] == "upload-too-large"
    assert json.loads(payload)["limit"] == SMALL_LIMIT
    wait_until(lambda: blob_files(small.settings, "staging") == [], "the staging file was removed")
    assert_nothing_stored(small.settings)


def test_chunked_multipart_upload_over_the_limit_is_413_and_leaves_nothing(small: Server) -> None:
    body = pdf_of_size(SMALL_LIMIT + 1)
    response = small.client.post(small.upload_path, content=multipart_chunks(body, "big.pdf"), headers=MULTIPART)
    assert_problem(response, 413, "upload-too-large")
    assert_nothing_stored(small.settings)


@pytest.mark.parametrize(
    ("declared", "content_type"),
    [
        (SMALL_LIMIT + 1, "application/pdf"),  # a raw body is the file: one byte over is over
        (SMALL_LIMIT * 10, "application/octet-stream"),
        (10**15, "application/pdf"),
        (SMALL_LIMIT * 2, MULTIPART["Content-Type"]),
    ],
    ids=["raw-limit+1", "raw-10x", "raw-petabyte", "multipart-2x"],
)
def test_declared_content_length_over_the_limit_is_refused_before_the_body(
    small: Server, declared: int, content_type: str
) -> None:
    """The server answers 413 having received only the head: no body byte was ever sent."""
    raw = RawConnection(small.url)
    try:
        raw.send_head(
            f"{small.upload_path}?filename=huge.pdf",
            {**small.headers, "Content-Length": str(declared), "Content-Type": content_type},
        )
        status, headers, body = raw.read_response()
    finally:
        raw.close()
    assert status == 413
    assert headers["content-type"].startswith(PROBLEM_JSON)
    assert json.loads(body)["code"] == "upload-too-large"
    assert json.loads(body)["limit"] == SMALL_LIMIT
    assert_nothing_stored(small.settings)


@pytest.mark.parametrize("send", ["chunked", "content-length", "multipart"])
def test_exactly_the_limit_is_accepted_and_one_byte_more_is_refused(small: Server, send: str) -> None:
    at_limit, over = pdf_of_size(SMALL_LIMIT, seed=1), pdf_of_size(SMALL_LIMIT + 1, seed=2)
    assert (len(at_limit), len(over)) == (SMALL_LIMIT, SMALL_LIMIT + 1)

    def post(data: bytes) -> httpx.Response:
        if send == "chunked":
            return small.upload(chunks(data))
        if send == "content-length":
            return small.upload(data)
        return small.client.post(small.upload_path, content=multipart_chunks(data, "x.pdf"), headers=MULTIPART)

    refused = post(over)
    assert_problem(refused, 413, "upload-too-large")
    assert_nothing_stored(small.settings)

    accepted = post(at_limit)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["size"] == SMALL_LIMIT
    assert accepted.json()["sha256"] == sha256(at_limit)
    stored = sorted(path.name for path in blob_files(small.settings, "sha256"))
    assert stored == sorted({r["sha256"] for r in accepted.json()["renditions"]})  # original, shareable, thumbnail
    assert sha256(at_limit) in stored
    assert blob_files(small.settings, "staging") == []


def test_patient_and_library_uploads_have_the_same_limit(small: Server) -> None:
    patient = bearer(small.settings, "patient", "org-a", patient=small.patient_id)
    over = pdf_of_size(SMALL_LIMIT + 1)
    for path, headers in (("/v1/me/files", patient), ("/v1/library/files", small.headers)):
        response = small.client.post(path, params={"filename": "x.pdf"}, content=chunks(over), headers=headers)
        assert_problem(response, 413, "upload-too-large")
    assert_nothing_stored(small.settings)


# -- big files ---------------------------------------------------------------------------------------------


def test_multi_megabyte_streamed_upload_and_download_round_trip(large: Server) -> None:
    body = pdf_of_size(10 * MiB + 12_345, seed=3)
    response = large.upload(chunks(body), filename="MRI report.pdf")
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["size"] == len(body)
    assert created["sha256"] == sha256(body)
    assert blob_files(large.settings, "staging") == []
    stored = sorted(path.name for path in blob_files(large.settings, "sha256"))
    assert stored == sorted({r["sha256"] for r in created["renditions"]})
    assert sha256(body) in stored

    digest, received = hashlib.sha256(), 0
    with large.client.stream("GET", f"/v1/files/{created['id']}/content") as download:
        assert download.status_code == 200
        assert download.headers["content-length"] == str(len(body))
        assert download.headers["etag"] == f'"{sha256(body)}"'
        for chunk in download.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert received == len(body)
    assert digest.hexdigest() == created["sha256"]

    # A seek into the middle, crossing the 8 MiB mark where staging parts were split.
    start, end = 8 * MiB - 1000, 8 * MiB + 5 * CHUNK
    with large.client.stream(
        "GET", f"/v1/files/{created['id']}/content", headers={"Range": f"bytes={start}-{end}"}
    ) as ranged:
        assert ranged.status_code == 206
        assert ranged.headers["content-range"] == f"bytes {start}-{end}/{len(body)}"
        assert b"".join(ranged.iter_raw()) == body[start : end + 1]

    tail = large.client.get(f"/v1/files/{created['id']}/content", headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == body[-100:]


# -- broken connections --------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_client_disconnecting_mid_upload_leaves_nothing(large: Server, framing: str) -> None:
    body = pdf_of_size(12 * MiB, seed=4)
    length = {"Content-Length": str(len(body))} if framing == "content-length" else {"Transfer-Encoding": "chunked"}
    raw = RawConnection(large.url)
    try:
        raw.send_head(f"{large.upload_path}?filename=cut.pdf", {**large.headers, **length})
        for piece in chunks(body[: 3 * MiB], 256 * 1024):
            raw.send_body(piece)
        # The server has begun staging this upload ...
        wait_until(lambda: blob_files(large.settings, "staging") != [], "the upload reached the staging area")
    finally:
        raw.close()  # ... and the client goes away mid-body.
    wait_until(lambda: blob_files(large.settings, "staging") == [], "the staging file was removed")
    assert_nothing_stored(large.settings)
    # The server is fine and takes the next upload.
    assert large.client.get("/healthz").status_code == 200
    again = large.upload(chunks(pdf_of_size(2 * MiB, seed=5)), filename="next.pdf")
    assert again.status_code == 201, again.text
