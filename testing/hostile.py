"""A file-type plugin of misbehaving handlers, for testing isolation (``careshare.testing.hostile``).

Files starting with ``CARESHARE-TEST-`` and a behaviour name are identified as kind ``hostile``;
processing then does what the name says. Register it only in tests:
``get_plugin_manager(plugins=[careshare.testing.hostile])``, or, for another process (a worker),
through an entry point that :func:`entry_point_dir` writes for ``PYTHONPATH``.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from typing import TYPE_CHECKING

from careshare import hookimpl
from careshare.core.models import Identification, Processed, RenditionOutput
from careshare.core.problems import Problem, ProblemType

if TYPE_CHECKING:
    from pathlib import Path

    from careshare.core.models import Source

__all__ = ["MAGIC", "careshare_identify", "careshare_process", "entry_point_dir"]

MAGIC = b"CARESHARE-TEST-"
KIND = "hostile"

HOSTILE_REFUSED = ProblemType(
    "hostile-refused", 422, "Refused by the test plugin", "The test plugin refused this file on purpose."
)


@hookimpl
def careshare_identify(head: bytes) -> Identification | None:
    if head.startswith(MAGIC):
        return Identification(kind=KIND, media_type="application/octet-stream")
    return None


@hookimpl
def careshare_process(source: Source, kind: str) -> Processed | None:
    if kind != KIND:
        return None
    behaviour = source.path.read_bytes()[len(MAGIC) :].split(b"\n", 1)[0].decode()
    if behaviour == "hang":
        while True:
            time.sleep(0.05)
    if behaviour == "exit":
        os._exit(3)  # dies like a crashing C library would
    if behaviour == "hog":
        # 64 GiB of address space in 64 MiB maps, over any memory limit. Maps are not touched, so the
        # limit (not the time it takes to fill pages) stops the handler; without one this succeeds.
        try:
            hoard = [mmap.mmap(-1, 64 * 1024 * 1024) for _ in range(1024)]
        except OSError as exc:
            if exc.errno == errno.ENOMEM:
                raise MemoryError from None
            raise
        return Processed(handler="hostile", handler_version=str(len(hoard)))
    if behaviour == "raise":
        raise RuntimeError("patient Jane Doe's file broke the handler")  # must never reach a client or log
    if behaviour.startswith("sleep-"):  # a slow but good file: "sleep-3" takes three seconds
        time.sleep(float(behaviour.removeprefix("sleep-")))
    if behaviour == "refuse":
        raise Problem(HOSTILE_REFUSED, "Refused with a detail.", hint="extra member")
    if behaviour.startswith("write-"):  # a good file whose rendition is N KiB written to the work directory
        output = source.workdir / "shareable.bin"
        with output.open("wb") as out:
            for _ in range(int(behaviour.removeprefix("write-"))):
                out.write(os.urandom(1024))
        return Processed(
            handler="hostile",
            handler_version="1",
            metadata={"behaviour": behaviour},
            renditions=(RenditionOutput(role="shareable", media_type="application/octet-stream", path=output),),
        )
    return Processed(
        handler="hostile",
        handler_version="1",
        metadata={"behaviour": behaviour, "pid": os.getpid()},
        renditions=(RenditionOutput(role="shareable", media_type="application/octet-stream"),),
    )


def entry_point_dir(directory: Path) -> Path:
    """A folder that, on ``PYTHONPATH``, installs this plugin in the ``careshare`` entry point group.

    Another process (``careshare worker``, ``careshare serve``) then loads it exactly as it loads
    an outside package's plugin; nothing is installed into the environment itself.
    """
    info = directory / "careshare_test_hostile-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: careshare-test-hostile\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[careshare]\nhostile = {__name__}\n")
    return directory
