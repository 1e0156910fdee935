"""Starting a throwaway server process for tests, waiting until it answers, and stopping it."""

from __future__ import annotations

import contextlib
import subprocess
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType
    from typing import Self

__all__ = ["ServerProcess", "start_server_process", "stop_process"]


def start_server_process(
    command: list[str], log: Path, *, ready: Callable[[], bool], name: str, timeout: float
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output in ``log``; return once ``ready()`` is true.

    A process that exits or is not ready within ``timeout`` seconds is stopped and reported with
    the end of its log.
    """
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return process


def stop_process(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process is gone."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


class ServerProcess:
    """A throwaway server as a context manager: ``start()`` on entry, ``stop()`` on exit."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        with contextlib.suppress(OSError):
            self.stop()
