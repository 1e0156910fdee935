"""Malware scanning: the stage of a file's check that every ``careshare_scan`` scanner must pass.

It runs on the held original before the file's handler opens it, so a parser never sees bytes a
scanner refused. Fail closed: a scanner that cannot answer (down, timed out) keeps the file
``processing`` and its check waits and tries again; that wait never counts toward the attempts
that end in refusal, and never lets a file through.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.problems import Problem, ProblemType

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from careshare.core.models import StoredFile
    from careshare.core.runtime import Careshare

__all__ = [
    "FILE_INFECTED",
    "FILE_TOO_LARGE_TO_SCAN",
    "LONGEST_SCANNER_WAIT_SECONDS",
    "WAITING_FOR_SCANNER",
    "ScanContent",
    "ScanVerdict",
    "ScannerUnavailable",
    "note_scanner_wait",
    "scan",
]

logger = logging.getLogger(__name__)

#: The check state of a file whose scanner could not answer: it stays ``processing`` and is tried again.
WAITING_FOR_SCANNER = "waiting-for-scanner"
#: Seconds between two tries while a scanner is away: 1, 2, 4 ... at most this.
LONGEST_SCANNER_WAIT_SECONDS = 60.0

FILE_INFECTED = ProblemType(
    "file-infected",
    422,
    "File refused by the malware scanner",
    "The malware scanner found something harmful in this file, so it was not accepted and nothing of it"
    " was kept. Check the device the file came from, or send a different file.",
)
FILE_TOO_LARGE_TO_SCAN = ProblemType(
    "file-too-large-to-scan",
    422,
    "File too large to scan",
    "The file is larger (or holds more nested files) than the malware scanner can check, so it was not"
    " accepted. Send a smaller file, or ask the administrator to raise the scanner's limits.",
)


class ScannerUnavailable(Exception):
    """A scanner could not give a verdict now (not running, timed out, answered an error).

    The message is for the log: say what failed, never anything of the file.
    """


@attrs.frozen
class ScanContent:
    """The bytes a scanner checks: an uploaded file's original, streamed from the store.

    ``chunks()`` opens a new stream each time it is called (a scanner retrying inside one call may
    read again); the bytes are never held whole in memory.
    """

    file_id: str
    size: int
    sha256: str
    kind: str
    media_type: str
    _open: Callable[[], AsyncIterator[bytes]] = attrs.field(alias="open", repr=False)

    def chunks(self) -> AsyncIterator[bytes]:
        return self._open()


@attrs.frozen
class ScanVerdict:
    """A scanner's answer. ``signature`` (what it found) goes to the log only, never to an answer."""

    scanner: str
    verdict: Literal["clean", "infected", "too-large"]
    signature: str | None = None


async def scan(cs: Careshare, stored: StoredFile, key: str) -> list[dict[str, Any]]:
    """Run every scanner on the object at ``key`` (the file's held original).

    Returns what each scanner said of a clean file (for the check record; empty when no scanner
    is configured). Raises ``file-infected`` or ``file-too-large-to-scan`` to refuse the file, and
    ``ScannerUnavailable`` when a scanner could not answer and none refused it.
    """
    content = ScanContent(
        file_id=stored.id,
        size=stored.size,
        sha256=stored.sha256,
        kind=stored.kind,
        media_type=stored.media_type,
        open=lambda: cs.store.read_parts([key]),
    )
    results = list(cs.plugins.hook.careshare_scan(content=content, cs=cs))
    verdicts: list[ScanVerdict] = []
    unavailable: list[str] = []
    try:
        while results:
            result = results.pop(0)
            try:
                verdict = await result if inspect.isawaitable(result) else result
            except ScannerUnavailable as exc:
                unavailable.append(str(exc) or type(exc).__name__)
                continue
            if verdict is None:
                continue
            if verdict.verdict == "infected":
                # The signature is the scanner database's name for what it found, never file data.
                logger.warning(
                    "scan found malware file=%s scanner=%s signature=%s", stored.id, verdict.scanner, verdict.signature
                )
                raise Problem(FILE_INFECTED)
            verdicts.append(verdict)
    finally:
        for left in results:  # a refusal ends the scan: the scanners not awaited yet never run
            if inspect.iscoroutine(left):
                left.close()
    if unavailable:
        raise ScannerUnavailable("; ".join(unavailable))
    for verdict in verdicts:
        if verdict.verdict == "too-large":
            logger.warning(
                "scan over the scanner's limits file=%s scanner=%s reason=%s",
                stored.id,
                verdict.scanner,
                verdict.signature,
            )
            raise Problem(FILE_TOO_LARGE_TO_SCAN)
    return [{"scanner": v.scanner, "verdict": v.verdict} for v in verdicts]


async def note_scanner_wait(cs: Careshare, file_id: str, reason: str) -> float:
    """Mark a processing file as waiting for its scanner; returns the seconds until its check runs again."""
    async with cs.engine.begin() as conn:
        row = (
            await conn.execute(sa.select(db.files.c.status, db.files.c.check).where(db.files.c.id == file_id))
        ).first()
        if row is None or row.status != "processing":
            return 0.0
        waits = int(row.check.get("scanner_waits") or 0) + 1
        check = {
            **row.check,
            "state": WAITING_FOR_SCANNER,
            "scanner_waits": waits,
            "waiting_since": row.check.get("waiting_since") or db.utcnow().isoformat(),
        }
        await conn.execute(
            sa.update(db.files).where(db.files.c.id == file_id, db.files.c.status == "processing").values(check=check)
        )
    delay = min(2.0 ** (waits - 1), LONGEST_SCANNER_WAIT_SECONDS)
    logger.warning("scanner unavailable file=%s waits=%s retry_in=%s reason=%s", file_id, waits, delay, reason)
    return delay
