"""Helpers for testing careshare and its plugins (``careshare.testing``).

Real components only: settings on a temporary data directory, signed tokens, files made by the
real libraries, a throwaway PostgreSQL cluster, a throwaway S3 server (moto) and a real uvicorn
server on 127.0.0.1.

The contract kit every channel runs is :mod:`careshare.testing.contract` (its fixtures in
:mod:`careshare.testing.pytest_plugin`, a ``pytest11`` plugin; the built-in channels' contracts in
:mod:`careshare.testing.channels`).
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from careshare.core.settings import Settings
from careshare.testing.s3 import MotoS3

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from litestar import Litestar

__all__ = [
    "MotoS3",
    "PostgresCluster",
    "bearer",
    "corpus_dir",
    "free_port",
    "make_pdf",
    "make_settings",
    "running_server",
]


def corpus_dir() -> Path:
    """The real-world test corpus: ``$CARESHARE_CORPUS``, else ``shared/corpus`` beside the repository.

    Raises when it is nowhere: tests that need it must fail loudly, not pass on nothing.
    """
    here = Path(__file__).resolve()
    candidates = [os.environ.get("CARESHARE_CORPUS"), *(p / "shared" / "corpus" for p in here.parents)]
    for candidate in candidates:
        if candidate and (Path(candidate) / "MANIFEST.tsv").exists():
            return Path(candidate)
    raise FileNotFoundError("the shared corpus was not found: set CARESHARE_CORPUS to its folder")


#: Organisations ``make_settings`` allows by default.
TEST_ORGS = ("org-a", "org-b")


def make_settings(data_dir: Path, **env: str) -> Settings:
    """Settings on ``data_dir`` with extra ``CARESHARE_*`` values, ignoring the process environment."""
    values: dict[str, str] = {
        "CARESHARE_DATA_DIR": str(data_dir),
        "CARESHARE_SECRET_KEY": "test-secret-key-0123456789abcdef",
        # The organisations the suite's tokens name; a test of registration sets its own.
        "CARESHARE_ORGS": ",".join(TEST_ORGS),
        # The suite's requests all come from one address and a few patients: the rate limits are
        # off unless a test sets them (tests/test_slow_clients.py); the upload caps stay as deployed.
        "CARESHARE_TOKEN_FAILURES_PER_MINUTE": "0",
        "CARESHARE_PATIENT_UPLOADS_PER_HOUR": "0",
        # The API alone: a third fewer handlers to register per app. The console's tests turn it
        # on (careshare.testing.console.copied_settings, the console_server fixture).
        "CARESHARE_CONSOLE": "0",
    }
    values.update(env)
    return Settings.from_env(values)


def bearer(
    settings: Settings, role: str, org: str, *, sub: str | None = None, patient: str | None = None
) -> dict[str, str]:
    """An ``Authorization`` header for a clinician (``sub``) or a patient (``patient``)."""
    from careshare.host.auth import mint_token

    token = mint_token(settings.secret_key, role=role, org=org, sub=sub, patient=patient)
    return {"Authorization": f"Bearer {token}"}


def make_pdf(
    pages: int = 1, *, user_password: str | None = None, owner_password: str | None = None, text: str | None = None
) -> bytes:
    """A real PDF written by pikepdf; with a password pair it is encrypted (AES-256, R6)."""
    import pikepdf

    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page(page_size=(595, 842))
    if text is not None:
        pdf.docinfo["/Title"] = text
    out = io.BytesIO()
    if user_password is not None or owner_password is not None:
        pdf.save(out, encryption=pikepdf.Encryption(user=user_password or "", owner=owner_password or "owner"))
    else:
        pdf.save(out)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(app: Litestar, port: int | None = None, *, http: str = "auto") -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on 127.0.0.1 in a thread; yields the base URL.

    The server is configured as ``careshare serve`` configures it (``careshare.host.server``), with
    the timeouts of the app's settings; ``http`` picks uvicorn's protocol (auto, h11, httptools).
    """
    import uvicorn

    from careshare.host.server import uvicorn_config

    port = port or free_port()
    server = uvicorn.Server(uvicorn_config(app, app.state.careshare.settings, host="127.0.0.1", port=port, http=http))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, removed on ``stop``.

    Uses the machine's ``initdb`` and ``pg_ctl``; as root (initdb refuses root) it runs them as
    the ``postgres`` user.
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_postgres_bin()
        if self.bin_dir is None:
            raise FileNotFoundError("initdb and pg_ctl were not found")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="careshare-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "careshare", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-t", "60", "-l", str(self.dir / "log"), "start")
        return self.url()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://careshare@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database (one per test keeps tests apart); returns its SQLAlchemy URL."""
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="careshare", database="postgres")
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def find_postgres_bin(env: Mapping[str, str] | None = None) -> Path | None:
    """The directory holding ``initdb``: ``$PG_BIN``, the PATH, or Debian's /usr/lib/postgresql/*/bin."""
    env = os.environ if env is None else env
    candidates: list[Any] = [env.get("PG_BIN")]
    found = shutil.which("initdb")
    candidates.append(Path(found).resolve().parent if found else None)
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None
