"""The README's walkthrough (``scripts/try``) against a server started as ``scripts/serve`` starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from careshare.testing import free_port

ROOT = Path(__file__).parents[1]


def _environment(data_dir: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARESHARE_")}
    return {**env, "CARESHARE_DATA_DIR": str(data_dir), **more}


def test_the_walkthrough_runs_green_and_a_wrong_data_dir_says_what_to_fix(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    careshare = Path(sys.executable).with_name("careshare")
    # scripts/serve installs, then runs exactly this (its last line).
    server = subprocess.Popen(
        [str(careshare), "serve", "--port", str(port)],
        env=_environment(data_dir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "careshare serve exited"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer within 60 s"
            time.sleep(0.2)

        walked = subprocess.run(
            [str(ROOT / "scripts" / "try")],
            env=_environment(data_dir, CARESHARE_URL=url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert walked.returncode == 0, walked.stderr
        lines = walked.stdout.splitlines()
        assert [line.split()[0] for line in lines] == [
            "patient",
            "file",
            "letter",
            "attached",
            "sent",
            "patient",
            "pdf",
        ]
        assert lines[1].endswith("(ready)") and lines[4] == "sent     sent" and lines[5] == "patient  sees 1 letter(s)"
        assert int(lines[6].split()[1]) > 1000  # the letter's PDF, read back by the patient

        # Minted on another data directory: the script stops with the problem's sentence.
        elsewhere = subprocess.run(
            [str(ROOT / "scripts" / "try")],
            env=_environment(tmp_path / "another", CARESHARE_URL=url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert elsewhere.returncode == 1 and elsewhere.stdout == ""
        assert "made a new one" in elsewhere.stderr
        assert "POST /v1/patients answered 401" in elsewhere.stderr
        assert "not signed with this server's key" in elsewhere.stderr
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
