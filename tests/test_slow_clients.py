"""Slow, stuck and greedy clients against a real uvicorn server, over real sockets.

A request head or body that stops arriving is answered ``408 request-timeout`` and closed (an idle
connection is just closed), leaving nothing staged, while other clients are served meanwhile;
uploads at once are capped per caller and per process, patients' uploads and failed tokens are
rate-limited: ``429`` with ``Retry-After``. Timeouts are short through settings; no test measures time.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from careshare.host import create_app
from careshare.host.limits import Limiter
from careshare.testing import bearer, free_port, make_pdf, make_settings, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from careshare.core.settings import Settings

#: The server's patience in these tests (seconds): short, so stalls end soon.
TIMEOUT = "1"
#: How long a test waits for an answer that must come at all (a bound, never an assertion).
PATIENCE = 30.0
DECLARED = 1024 * 1024


class Server:
    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
        self.http = httpx.Client(base_url=url, timeout=PATIENCE)
        self.others = 0

    def new_patient(self, external_id: str) -> str:
        response = self.http.post(
            "/v1/patients", json={"name": "Pat Example", "external_id": external_id}, headers=self.clinician
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def files_of(self, patient_id: str) -> list[Any]:
        response = self.http.get(f"/v1/patients/{patient_id}/files", headers=self.clinician)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    def serves_others(self) -> None:
        """Another client is answered at once while stuck ones wait."""
        response = self.http.get("/healthz")
        assert response.status_code == 200, response.text
        self.others += 1
        self.new_patient(f"other-{self.others}")

    def staged(self) -> list[Path]:
        return sorted((self.settings.data_dir / "blobs" / "staging").glob("*"))

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


@contextlib.contextmanager
def serve(tmp_path: Path, http: str = "auto", **env: str) -> Iterator[Server]:
    values = {
        "CARESHARE_BODY_READ_TIMEOUT": TIMEOUT,
        "CARESHARE_HEADER_TIMEOUT": TIMEOUT,
        "CARESHARE_WORKERS": "1",
        **env,
    }
    settings = make_settings(tmp_path / "data", **values)
    with running_server(create_app(settings), http=http) as url:
        server = Server(settings, url)
        try:
            yield server
        finally:
            server.http.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Uploads capped at 2 per caller and 3 per process; 3 uploads an hour per patient."""
    env = {
        "CARESHARE_MAX_UPLOADS_PER_CALLER": "2",
        "CARESHARE_MAX_UPLOADS": "3",
        "CARESHARE_PATIENT_UPLOADS_PER_HOUR": "3",
    }
    with serve(tmp_path_factory.mktemp("slow"), **env) as running:
        yield running


@pytest.fixture(scope="module", params=["h11", "httptools"])
def protocol_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same server on each of uvicorn's HTTP/1.1 protocols (the head timeout wraps both)."""
    with serve(tmp_path_factory.mktemp(f"head-{request.param}"), http=request.param) as running:
        yield running


# -- reading answers off a raw socket ----------------------------------------------------------------


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, closed: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.closed = closed

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type", "").startswith("application/problem+json"), self.headers
        data: dict[str, Any] = json.loads(self.body)
        assert data["status"] == self.status
        return data


def read_answer(sock: socket.socket, *, then_closed: bool = True) -> Answer:
    """One HTTP/1.1 response (its body by Content-Length), then whether the server closed the socket."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer (got {bytes(data)!r})"
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    body = bytearray(rest)
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the answer was cut short"
        body += chunk
    return Answer(status, headers, bytes(body), closed=closes(sock) if then_closed else False)


def closes(sock: socket.socket) -> bool:
    """Whether the server ends the connection (EOF or reset) rather than keeping it open."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def upload_head(path: str, headers: dict[str, str], *, length: int = DECLARED, expect: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if expect:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def stalled_upload(server: Server, path: str, headers: dict[str, str]) -> Iterator[socket.socket]:
    """An upload declaring 1 MiB that sends 10 bytes and stalls, its body already being read.

    ``Expect: 100-continue`` makes the server say when its handler starts reading the body (so the
    upload holds its slots by then); the ``100 Continue`` is read off before the 10 bytes go.
    """
    sock = server.connect()
    try:
        sock.sendall(upload_head(f"{path}?filename=scan.pdf", {**headers, "Content-Type": "application/pdf"}))
        continued = b""
        while b"\r\n\r\n" not in continued:
            chunk = sock.recv(1)
            assert chunk, "closed before 100 Continue"
            continued += chunk
        assert continued.startswith(b"HTTP/1.1 100"), continued
        sock.sendall(b"%PDF-1.7\n%")
        yield sock
    finally:
        sock.close()


def assert_timed_out(answer: Answer) -> None:
    assert answer.status == 408, (answer.status, answer.body)
    assert answer.problem()["code"] == "request-timeout"
    assert answer.headers.get("connection") == "close"
    assert answer.closed


def assert_retry_later(response: httpx.Response, code: str) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    seconds = int(response.headers["retry-after"])
    assert seconds >= 1
    assert response.json()["retry_after"] == seconds
    return seconds


# -- body read timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_a_stalled_upload_is_answered_408_and_leaves_nothing_staged(server: Server, kind: str) -> None:
    patient_id = server.new_patient(f"stall-{kind}")
    path = f"/v1/patients/{patient_id}/files"
    sock = server.connect()
    try:
        if kind == "raw":
            sock.sendall(upload_head(f"{path}?filename=scan.pdf", {**server.clinician}, expect=False))
            sock.sendall(b"%PDF-1.7\n%")
        else:
            boundary = "stall0boundary"
            headers = {**server.clinician, "Content-Type": f"multipart/form-data; boundary={boundary}"}
            sock.sendall(upload_head(path, headers, expect=False))
            part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="scan.pdf"\r\n\r\n'
            sock.sendall(part.encode() + b"%PDF-1.7\n%" + b"x" * 70_000)
        server.serves_others()
        assert_timed_out(read_answer(sock))
    finally:
        sock.close()
    assert server.staged() == []
    assert server.files_of(patient_id) == []


def test_a_stalled_json_body_is_answered_408_and_changes_nothing(server: Server) -> None:
    body = json.dumps({"name": "Pat Stalled", "external_id": "json-stall"}).encode()
    sock = server.connect()
    try:
        head = upload_head(
            "/v1/patients", {**server.clinician, "Content-Type": "application/json"}, length=len(body), expect=False
        )
        sock.sendall(head + body[: len(body) // 2])
        server.serves_others()
        assert_timed_out(read_answer(sock))
    finally:
        sock.close()
    server.new_patient("json-stall")  # 201, not 409 patient-exists: the stalled one was not registered


def test_a_json_body_trickling_past_the_timeout_is_answered_408(server: Server) -> None:
    """Each byte comes well within the idle timeout, but a JSON body must arrive whole within it."""
    body = json.dumps({"name": "Pat Trickle", "external_id": "json-trickle", "email": "p@example.org"}).encode()
    sock = server.connect()
    try:
        head = upload_head(
            "/v1/patients", {**server.clinician, "Content-Type": "application/json"}, length=len(body), expect=False
        )
        sock.sendall(head)
        answered = False
        for byte in body[:-1]:  # the last byte never goes: the body cannot complete
            sock.sendall(bytes([byte]))
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                answered = True
                break
        assert answered, "the server was still reading a JSON body trickled for longer than its timeout"
        server.serves_others()
        assert_timed_out(read_answer(sock))
    finally:
        sock.close()
    server.new_patient("json-trickle")  # 201: the trickled one was not registered


def test_a_stalled_resumable_patch_keeps_what_arrived_and_answers(server: Server) -> None:
    """tus keeps the bytes of a PATCH cut short (the client resumes there): a stall is answered so too."""
    patient_id = server.new_patient("tus-stall")
    tus = {"Tus-Resumable": "1.0.0", **server.clinician}
    created = server.http.post(f"/v1/patients/{patient_id}/uploads", headers={**tus, "Upload-Length": "5000"})
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    sock = server.connect()
    try:
        headers = {**tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        head = upload_head(location, headers, length=5000, expect=False).replace(b"POST ", b"PATCH ", 1)
        sock.sendall(head + b"%PDF-1.7\n" + b"x" * 991)  # 1000 of the 5000 bytes
        server.serves_others()
        answer = read_answer(sock, then_closed=False)
    finally:
        sock.close()
    assert answer.status == 204, answer.body
    assert answer.headers["upload-offset"] == "1000"
    offset = server.http.head(location, headers=tus)
    assert offset.headers["upload-offset"] == "1000"


# -- header timeouts (uvicorn has none for an unfinished head) ---------------------------------------


def test_a_trickled_request_head_is_answered_408_and_closed(protocol_server: Server) -> None:
    sock = protocol_server.connect()
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        answered = False
        for _ in range(int(PATIENCE / 0.2)):  # a header line every 0.2 s, never the blank line
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"X-Slow: 1\r\n")
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                answered = True
                break
        assert answered, "the server kept waiting for a head trickled past its timeout"
        protocol_server.serves_others()
        answer = read_answer(sock)
    finally:
        sock.close()
    assert_timed_out(answer)
    assert "headers" in answer.problem()["detail"]


def test_many_unfinished_heads_do_not_pin_the_server(protocol_server: Server) -> None:
    socks = [protocol_server.connect() for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(b"POST /v1/patients HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        protocol_server.serves_others()
        for sock in socks:
            assert_timed_out(read_answer(sock))
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed(protocol_server: Server) -> None:
    sock = protocol_server.connect()
    try:
        protocol_server.serves_others()
        assert sock.recv(1) == b""  # closed without a word (blocks at most PATIENCE)
    finally:
        sock.close()


def test_a_keep_alive_connection_with_an_unfinished_second_head_is_answered_408(protocol_server: Server) -> None:
    sock = protocol_server.connect()
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = read_answer(sock, then_closed=False)
        assert first.status == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert_timed_out(read_answer(sock))
    finally:
        sock.close()


def test_careshare_serve_applies_the_timeouts(tmp_path: Path) -> None:
    """The real command: ``careshare serve`` builds uvicorn's config with the same function."""
    port = free_port()
    settings = make_settings(tmp_path / "data")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CARESHARE_")},
        "CARESHARE_DATA_DIR": str(settings.data_dir),
        "CARESHARE_SECRET_KEY": settings.secret_key,
        "CARESHARE_HEADER_TIMEOUT": TIMEOUT,
        "CARESHARE_BODY_READ_TIMEOUT": TIMEOUT,
        "CARESHARE_ORGS": "org-a",
    }
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("careshare")), "serve", "--port", str(port), "--no-worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        for _ in range(int(PATIENCE / 0.1)):
            assert process.poll() is None, stderr_path.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError(f"careshare serve did not become healthy:\n{stderr_path.read_text()}")
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as head_only:
            head_only.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert_timed_out(read_answer(head_only))
        token = bearer(settings, "clinician", "org-a", sub="dr-a")
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as short_body:
            headers = {**token, "Content-Type": "application/json"}
            short_body.sendall(upload_head("/v1/patients", headers, length=100, expect=False) + b'{"name": ')
            assert_timed_out(read_answer(short_body))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=PATIENCE) == 0, stderr_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


# -- concurrent uploads ------------------------------------------------------------------------------


def upload(server: Server, path: str, headers: dict[str, str]) -> httpx.Response:
    return server.http.post(
        path,
        params={"filename": "scan.pdf"},
        content=make_pdf(),
        headers={**headers, "Content-Type": "application/pdf", "Prefer": "respond-async"},
    )


def test_uploads_at_once_are_capped_per_caller_then_per_process(server: Server) -> None:
    patient_id = server.new_patient("caps")
    path = f"/v1/patients/{patient_id}/files"
    dr_b = bearer(server.settings, "clinician", "org-a", sub="dr-b")
    dr_c = bearer(server.settings, "clinician", "org-b", sub="dr-c")
    with (
        stalled_upload(server, path, server.clinician) as first,
        stalled_upload(server, path, server.clinician) as second,
    ):
        assert_retry_later(upload(server, path, server.clinician), "too-many-uploads")
        # Another caller still has room, until the process's three slots are taken.
        with stalled_upload(server, path, dr_b) as third:
            created = server.http.post(
                "/v1/patients", json={"name": "Pat Other", "external_id": "caps-other"}, headers=dr_c
            )
            assert created.status_code == 201, "a JSON request is no upload: the caps leave it alone"
            assert_retry_later(upload(server, f"/v1/patients/{created.json()['id']}/files", dr_c), "too-many-uploads")
            server.serves_others()
            for stalled in (first, second, third):
                assert_timed_out(read_answer(stalled))
    # The stalled uploads gave their slots back when they ended.
    accepted = upload(server, path, server.clinician)
    assert accepted.status_code in (201, 202), accepted.text
    assert len(server.files_of(patient_id)) == 1
    assert server.staged() == []


# -- rate limits -------------------------------------------------------------------------------------


def test_a_patient_sending_many_files_is_told_to_wait(server: Server) -> None:
    first, second = server.new_patient("rate-1"), server.new_patient("rate-2")
    patient = bearer(server.settings, "patient", "org-a", patient=first)
    for _ in range(3):
        response = upload(server, "/v1/me/files", patient)
        assert response.status_code in (201, 202), response.text
    seconds = assert_retry_later(upload(server, "/v1/me/files", patient), "upload-rate-limited")
    assert seconds <= 3600
    # A resumable upload is a new file too: its creation is counted (its PATCHes are not).
    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "100", **patient}
    assert_retry_later(server.http.post("/v1/me/uploads", headers=tus), "upload-rate-limited")
    # Other patients, and clinicians uploading to this patient's record, are not held back.
    other = upload(server, "/v1/me/files", bearer(server.settings, "patient", "org-a", patient=second))
    assert other.status_code in (201, 202), other.text
    clinic = upload(server, f"/v1/patients/{first}/files", server.clinician)
    assert clinic.status_code in (201, 202), clinic.text
    assert len(server.files_of(first)) == 4


def test_an_address_failing_tokens_is_told_to_wait(tmp_path: Path) -> None:
    with serve(tmp_path, CARESHARE_TOKEN_FAILURES_PER_MINUTE="3") as server:
        wrong = {"Authorization": "Bearer not-a-token"}
        # Requests without any token are refused as before and count for nothing.
        for _ in range(5):
            assert server.http.get("/v1/patients/nobody").json()["code"] == "authentication-required"
        for _ in range(3):
            response = server.http.get("/v1/patients/nobody", headers=wrong)
            assert response.status_code == 401
            assert response.json()["code"] == "invalid-token"
        assert_retry_later(server.http.get("/v1/patients/nobody", headers=wrong), "too-many-token-failures")
        # While the address waits, a right token is refused alike: guesses learn nothing.
        assert_retry_later(server.http.get("/v1/patients/nobody", headers=server.clinician), "too-many-token-failures")
        assert server.http.get("/healthz").status_code == 200


# -- the limiter ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@given(
    capacity=st.integers(1, 6),
    per_second=st.sampled_from([0.0, 0.5, 2.0]),
    steps=st.lists(st.tuples(st.sampled_from(["acquire", "release", "tick"]), st.floats(0, 3)), max_size=40),
)
def test_the_limiter_never_grants_more_than_its_buckets_hold(
    capacity: int, per_second: float, steps: list[Any]
) -> None:
    """Slots (no refill): at most ``capacity`` held at once. Rates: in any span since a grant, at
    most a full bucket plus what refilled meanwhile. A refusal takes nothing and names a wait."""
    clock = Clock()
    limiter = Limiter(capacity, per_second, clock=clock, retry_after=7.0)
    held = 0  # slots taken and not given back
    granted_at: list[float] = []
    for action, value in steps:
        if action == "tick":
            clock.now += value
        elif action == "release":
            if per_second == 0 and held:
                limiter.release("k")
                held -= 1
        else:
            before = limiter.level("k")
            wait = limiter.acquire("k")
            if wait == 0:
                assert before >= 1
                held += 1
                granted_at.append(clock.now)
            else:
                assert before < 1
                assert limiter.level("k") == before
                assert wait == 7.0 if per_second == 0 else 0 < wait <= 1 / per_second
        assert 0 <= limiter.level("k") <= capacity
        if per_second == 0:
            assert limiter.level("k") == capacity - held
        else:
            for index, start in enumerate(granted_at):
                assert len(granted_at) - index <= capacity + (clock.now - start) * per_second + 1e-9
    assert limiter.wait("other") == 0  # keys are apart


def test_the_limiter_forgets_full_buckets_and_caps_its_keys() -> None:
    clock = Clock()
    limiter = Limiter(2, 1.0, clock=clock, max_keys=3)
    for key in range(5):
        assert limiter.acquire(key) == 0
    assert len(limiter._buckets) == 3  # the oldest two were forgiven
    clock.now += 10
    limiter.acquire("fresh")
    limiter.release("fresh")
    assert "fresh" not in limiter._buckets
    off = Limiter(0)
    assert all(off.acquire("x") == 0 for _ in range(10))


def test_timeouts_and_caps_are_settings(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        CARESHARE_BODY_READ_TIMEOUT="2.5",
        CARESHARE_HEADER_TIMEOUT="4",
        CARESHARE_MAX_UPLOADS_PER_CALLER="1",
        CARESHARE_MAX_UPLOADS="9",
        CARESHARE_PATIENT_UPLOADS_PER_HOUR="0",
        CARESHARE_TOKEN_FAILURES_PER_MINUTE="0",
    )
    assert (settings.body_read_timeout_seconds, settings.header_timeout_seconds) == (2.5, 4.0)
    assert (settings.max_uploads_per_caller, settings.max_uploads) == (1, 9)
    assert (settings.patient_uploads_per_hour, settings.token_failures_per_minute) == (0, 0)
    defaults = make_settings(tmp_path)
    assert defaults.body_read_timeout_seconds == 30.0
    for name, value in [
        ("CARESHARE_BODY_READ_TIMEOUT", "0"),
        ("CARESHARE_HEADER_TIMEOUT", "-1"),
        ("CARESHARE_MAX_UPLOADS", "0"),
        ("CARESHARE_MAX_UPLOADS_PER_CALLER", "two"),
        ("CARESHARE_PATIENT_UPLOADS_PER_HOUR", "-3"),
    ]:
        with pytest.raises(ValueError, match=name):
            make_settings(tmp_path, **{name: value})
    # One function configures uvicorn for `careshare serve` and for tests alike.
    from careshare.host.server import uvicorn_config

    config = uvicorn_config(create_app(settings), settings, host="127.0.0.1", port=1)
    assert config.http.head_timeout == 4.0  # type: ignore[union-attr]
