"""A throwaway ClamAV daemon (Debian's ``clamd``) with a signature database of its own, for testing scanning for real.

freshclam cannot reach ClamAV's mirrors from a test machine, so the daemon loads one signature
written here: the EICAR test string, itself built from two halves so that no file holds it whole.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from careshare.testing.processes import ServerProcess, start_server_process, stop_process

if TYPE_CHECKING:
    import subprocess

__all__ = ["EICAR_SIGNATURE", "Clamd", "eicar", "find_clamd"]

#: The name clamd reports for our signature (``.UNOFFICIAL``: it is in no official database).
EICAR_SIGNATURE = "Careshare.Test.EICAR.UNOFFICIAL"


def eicar() -> bytes:
    """The 68-byte EICAR anti-virus test string, which every scanner treats as malware (it is harmless)."""
    first = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$"
    second = "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*"
    return (first + second).encode("ascii")


def find_clamd() -> Path | None:
    """``clamd`` on the PATH, else Debian's ``/usr/sbin/clamd`` (not on a normal user's PATH)."""
    found = shutil.which("clamd") or next(
        (p for p in ("/usr/sbin/clamd", "/usr/local/sbin/clamd") if Path(p).exists()), None
    )
    return Path(found) if found else None


class Clamd(ServerProcess):
    """``clamd`` in the foreground on a unix socket (or 127.0.0.1 and a free port), stopped and removed on ``stop``.

    ``stream_max_bytes`` is its ``StreamMaxLength`` (INSTREAM refuses more); ``max_file_bytes`` its
    ``MaxFileSize`` and ``MaxScanSize``, past which it stops scanning and, with ``AlertExceedsMax``,
    says so (``Heuristics.Limits.Exceeded.MaxFileSize``). ``address`` is what ``CARESHARE_CLAMD``
    takes; it stays the same across ``stop``/``start``, so a server outlives an outage of it.
    """

    def __init__(
        self,
        *,
        tcp: bool = False,
        stream_max_bytes: int = 1024 * 1024,
        max_file_bytes: int | None = None,
        binary: Path | None = None,
    ) -> None:
        self.binary = binary or find_clamd()
        if self.binary is None:
            raise FileNotFoundError("clamd was not found: apt-get install clamav-daemon")
        self.dir = Path(tempfile.mkdtemp(prefix="careshare-clamd-"))
        self.socket_path = self.dir / "clamd.sock"
        self.port: int | None = None
        if tcp:
            from careshare.testing import free_port

            self.port = free_port()
        database = self.dir / "db"
        database.mkdir()
        # An extended (.ndb) signature: any file type (0), anywhere (*), the bytes in hex.
        (database / "careshare-test.ndb").write_text(f"Careshare.Test.EICAR:0:*:{eicar().hex()}\n")
        lines = [
            "Foreground yes",
            f"DatabaseDirectory {database}",
            f"TemporaryDirectory {self.dir}",
            f"LogFile {self.dir / 'clamd.log'}",
            f"StreamMaxLength {stream_max_bytes}",
            # Fail closed: a file clamd stops scanning at a limit is reported, never passed as OK.
            "AlertExceedsMax yes",
            "SelfCheck 0",
        ]
        if max_file_bytes is not None:
            lines += [f"MaxFileSize {max_file_bytes}", f"MaxScanSize {max_file_bytes}"]
        if self.port is not None:
            lines += [f"TCPSocket {self.port}", "TCPAddr 127.0.0.1"]
        else:
            lines.append(f"LocalSocket {self.socket_path}")
        self.config = self.dir / "clamd.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}" if self.port is not None else str(self.socket_path)

    def start(self, timeout: float = 60) -> str:
        """Start clamd and wait until it answers ``PING``; returns ``address``."""
        self._process = start_server_process(
            [str(self.binary), "-c", str(self.config)],
            self.dir / "out.log",
            ready=self.ping,
            name="clamd",
            timeout=timeout,
        )
        return self.address

    def ping(self) -> bool:
        try:
            with self._connect() as sock:
                sock.sendall(b"zPING\0")
                return sock.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def _connect(self) -> socket.socket:
        if self.port is not None:
            return socket.create_connection(("127.0.0.1", self.port), timeout=2)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        return sock

    def halt(self) -> None:
        """Stop the daemon (an outage); ``start`` brings it back on the same address."""
        if self._process is not None:
            stop_process(self._process, grace=15)
            self._process = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)
