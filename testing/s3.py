"""A throwaway S3 server (moto) on 127.0.0.1, for testing the ``s3://`` blob store for real."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from careshare.testing.processes import ServerProcess, start_server_process, stop_process

if TYPE_CHECKING:
    import subprocess

    from obstore.store import S3Store

__all__ = ["MotoS3", "moto_server_command"]

_S3_XML = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def moto_server_command() -> list[str] | None:
    """How to start moto's server: this interpreter's ``moto.server`` module, else ``moto_server`` on the PATH."""
    if importlib.util.find_spec("moto") is not None and importlib.util.find_spec("moto.server") is not None:
        return [sys.executable, "-m", "moto.server"]
    found = shutil.which("moto_server")
    return [found] if found else None


class MotoS3(ServerProcess):
    """An S3 server (``moto_server``) on 127.0.0.1 and a free port with one bucket, gone on ``stop``.

    ``env`` is what a careshare process reads to reach it: obstore's ``S3Store`` takes endpoint,
    keys and region from the standard ``AWS_*`` variables, and plain HTTP only with
    ``AWS_ALLOW_HTTP``. moto checks no signatures, so the keys are placeholders.
    """

    def __init__(self, bucket: str = "careshare-test", command: list[str] | None = None) -> None:
        from careshare.testing import free_port

        self.command = command or moto_server_command()
        if self.command is None:
            raise FileNotFoundError("moto_server was not found: pip install 'moto[server]'")
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="careshare-moto-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "careshare-test",
            "AWS_SECRET_ACCESS_KEY": "careshare-test-secret",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def storage_url(self, prefix: str = "careshare") -> str:
        """A ``CARESHARE_STORAGE_URL`` in the bucket; a prefix of its own keeps one test's blobs apart."""
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def start(self, timeout: float = 30) -> str:
        """Start the server, wait until it answers, create the bucket; returns ``storage_url()``."""
        self._process = start_server_process(
            [*self.command, "-H", "127.0.0.1", "-p", str(self.port)],
            self.dir / "log",
            ready=self._create_bucket,
            name=f"moto_server on {self.endpoint}",
            timeout=timeout,
        )
        return self.storage_url()

    def _create_bucket(self) -> bool:
        request = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def store(self, prefix: str = "") -> S3Store:
        """An obstore store on the bucket configured explicitly, for looking at what careshare left there."""
        from obstore.store import S3Store

        env = self.env
        return S3Store(
            self.bucket,
            prefix=prefix or None,
            endpoint=self.endpoint,
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region=env["AWS_REGION"],
            client_options={"allow_http": True},
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (relative to it), sorted."""
        import obstore

        return sorted(str(meta["path"]) for batch in obstore.list(self.store(prefix)) for meta in batch)

    def multipart_uploads(self, prefix: str = "") -> list[str]:
        """Keys (relative to ``prefix``) of multipart uploads neither completed nor aborted: what a failed upload may leave."""
        folder = f"{prefix.strip('/')}/" if prefix else ""
        query = urllib.parse.urlencode({"prefix": folder}) if folder else ""
        with urllib.request.urlopen(f"{self.endpoint}/{self.bucket}?uploads&{query}", timeout=10) as response:
            root = ET.fromstring(response.read())
        return sorted((key.text or "").removeprefix(folder) for key in root.iter(f"{_S3_XML}Key"))

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, grace=10)
            self._process = None
        shutil.rmtree(self.dir, ignore_errors=True)
