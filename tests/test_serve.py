"""``careshare serve`` as a real process: schema on first start, banner, JSON logs without patient data."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from careshare.core import db
from careshare.testing import free_port, make_pdf

if TYPE_CHECKING:
    from collections.abc import Iterator

STARTUP_SECONDS = 60
SHUTDOWN_SECONDS = 30


def _careshare_command() -> str:
    """The ``careshare`` console script of the environment running the tests."""
    beside = Path(sys.executable).with_name("careshare")
    found = str(beside) if beside.exists() else shutil.which("careshare")
    assert found, "the careshare console script is not installed"
    return found


def _environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARESHARE_")}
    env["CARESHARE_DATA_DIR"] = str(data_dir)
    return env


def _wait_until_healthy(process: subprocess.Popen[bytes], base: str, stderr_path: Path) -> httpx.Response:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            raise AssertionError(f"careshare serve exited with {process.returncode}:\n{stderr_path.read_text()}")
        try:
            response = httpx.get(f"{base}/healthz", timeout=5)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"careshare serve did not become healthy:\n{stderr_path.read_text()}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=SHUTDOWN_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=SHUTDOWN_SECONDS)
            raise AssertionError("careshare serve did not stop on SIGINT") from None
    return process.returncode


def _split_banner(lines: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The human banner (printed by Rich before any log record), then every log line parsed as JSON.

    Every line after the first JSON object must be JSON too; a stray plain line fails the test.
    """
    first_json = next((i for i, line in enumerate(lines) if line.startswith("{")), len(lines))
    banner, records = lines[:first_json], []
    for line in lines[first_json:]:
        try:
            value = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line is not JSON: {line!r}") from None
        assert isinstance(value, dict), line
        records.append(value)
    return banner, records


class Server:
    def __init__(self, process: subprocess.Popen[bytes], base: str, port: int, stderr_path: Path) -> None:
        self.process, self.base, self.port, self.stderr_path = process, base, port, stderr_path


@contextlib.contextmanager
def _serve(data_dir: Path, stderr_path: Path) -> Iterator[Server]:
    port = free_port()
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [_careshare_command(), "serve", "--port", str(port), "--log-json"],
            env=_environment(data_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield Server(process, f"http://127.0.0.1:{port}", port, stderr_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=SHUTDOWN_SECONDS)


def test_serve_first_start_banner_and_json_logs_without_patient_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh-data"
    stderr_path = tmp_path / "serve.stderr"
    assert not data_dir.exists()
    with _serve(data_dir, stderr_path) as server:
        health = _wait_until_healthy(server.process, server.base, stderr_path)
        assert health.json()["status"] == "ok"

        # The schema was created by the migrations on this first start.
        database = data_dir / "careshare.db"
        assert database.exists()
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
        assert set(db.metadata.tables) <= tables
        assert versions  # at the newest revision: tests/test_migrations.py checks which

        # The token hint works as printed: run by a shell with no CARESHARE_* set, from another
        # directory, it signs with this server's key (the banner names the data directory).
        hint = re.search(r"Mint a token: (.+)$", stderr_path.read_text(encoding="utf-8"), re.M)
        assert hint is not None, stderr_path.read_text(encoding="utf-8")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        minted = subprocess.run(
            hint.group(1),
            shell=True,
            cwd=elsewhere,
            env={k: v for k, v in os.environ.items() if not k.startswith("CARESHARE_")},
            capture_output=True,
            check=True,
            timeout=60,
        )
        assert b"made a new one" not in minted.stderr and not (elsewhere / "careshare-data").exists()
        token = minted.stdout.decode().strip()
        assert token and "\n" not in token
        headers = {"Authorization": f"Bearer {token}"}

        with httpx.Client(base_url=server.base, headers=headers, timeout=60) as http:
            patient = http.post("/v1/patients", json={"name": "Zebedee Quux", "external_id": "MRN-77"})
            assert patient.status_code == 201, patient.text
            pid = patient.json()["id"]
            body = make_pdf(pages=1, text="Zebedee Quux clinic letter")
            upload = http.post(f"/v1/patients/{pid}/files?filename=Jane-Doe-secret.pdf", content=body)
            assert upload.status_code == 201, upload.text
            assert upload.json()["filename"] == "Jane-Doe-secret.pdf"
            refused = http.post(f"/v1/patients/{pid}/files?filename=Jane-Doe-locked.pdf", content=b"Zebedee " * 64)
            assert refused.status_code == 415, refused.text
            shown = http.get(f"/v1/patients/{pid}")
            assert shown.json()["name"] == "Zebedee Quux"

        assert _stop(server.process) == 0

    lines = [line for line in stderr_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    banner, records = _split_banner(lines)

    # The banner: where the server listens and how to mint a token, before any log line.
    banner_text = " ".join(banner)
    assert f"http://127.0.0.1:{server.port}" in banner_text
    assert "careshare token --role clinician" in banner_text
    assert len(banner) <= 6, banner

    # Logs: one JSON object per line, with the usual fields, and never a patient's name or file name.
    assert records, "no log lines after the banner"
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    log_text = "\n".join(lines)
    for secret in ("Jane-Doe", "Zebedee", "Quux", "MRN-77"):
        assert secret not in log_text, secret

    access = [r for r in records if r["logger"] == "careshare.access"]
    uploads = [r for r in access if r["method"] == "POST" and r["path"] == f"/v1/patients/{pid}/files"]
    assert [r["status"] for r in uploads] == [201, 415]
    assert {"method", "path", "status"} <= access[0].keys()
    assert any(r["method"] == "GET" and r["path"] == "/healthz" and r["status"] == 200 for r in access)
    assert all("?" not in r["path"] for r in access)
    # uvicorn's own lines go through the same JSON formatter, shutdown included.
    assert any(r["logger"].startswith("uvicorn") and "shutdown" in r["message"].lower() for r in records)
