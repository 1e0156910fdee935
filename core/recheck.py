"""Checking stored files again, so a handler upgrade reaches what is already stored.

Each file is one job (``careshare.recheck-file``) that runs the file's handler on its original and
replaces its renditions. What was already shared stays as it was: attachments pin their bytes
by hash, and the old blobs stay. New shares take the new renditions. A file the new handler
refuses becomes ``rejected`` with the new reason, so it can no longer be attached.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from careshare.core import db
from careshare.core.files import (
    ORIGINAL,
    RenditionsGone,
    _load,
    check_record,
    refusal_record,
    replace_renditions,
    run_handler,
)
from careshare.core.jobs import RetryLater, task
from careshare.core.problems import Problem
from careshare.core.storage import content_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from careshare.core.runtime import Careshare

__all__ = ["RECHECK_TASK", "handler_generation", "queue_rechecks", "recheck_file", "stored_for_recheck"]

logger = logging.getLogger(__name__)

RECHECK_TASK = "careshare.recheck-file"
_LEADING_NUMBER = re.compile(r"^\s*(\d+)")


def handler_generation(version: object) -> int | None:
    """The leading number of a handler version (``"3 (pikepdf 10.18)"`` -> 3); None if it has none."""
    match = _LEADING_NUMBER.match(str(version or ""))
    return int(match.group(1)) if match else None


async def stored_for_recheck(cs: Careshare, *, kind: str | None = None, below: int | None = None) -> list[str]:
    """Ids of the ``ready`` files to check again: of ``kind``, and with a handler generation under ``below``."""
    query = sa.select(db.files.c.id, db.files.c.check).where(
        db.files.c.status == "ready", db.files.c.deleted_at.is_(None)
    )
    if kind is not None:
        query = query.where(db.files.c.kind == kind)
    async with cs.reader.connect() as conn:
        rows = list(await conn.execute(query.order_by(db.files.c.id)))
    chosen = []
    for row in rows:
        generation = handler_generation((row.check or {}).get("handler_version"))
        if below is None or generation is None or generation < below:
            chosen.append(row.id)
    return chosen


async def queue_rechecks(cs: Careshare, file_ids: list[str], progress: Callable[[int], None] | None = None) -> int:
    """Queue one recheck job per file (a file already waiting for one is not queued twice)."""
    for done, file_id in enumerate(file_ids, start=1):
        await cs.jobs.defer(RECHECK_TASK, key=f"recheck:{file_id}", file_id=file_id)
        if progress is not None:
            progress(done)
    return len(file_ids)


@task(RECHECK_TASK)
async def recheck_file(cs: Careshare, *, file_id: str, attempts: int = 1) -> None:
    """Run a ready file's handler again and replace its renditions (the original stays).

    Running it twice replaces the renditions twice with the same set: one set, whatever the runs.
    """
    async with cs.reader.connect() as conn:
        stored = await _load(conn, file_id)
    if stored is None or stored.status != "ready":
        return
    original = stored.rendition(ORIGINAL)
    if original is None:
        return
    started = time.perf_counter()
    values: dict[str, Any]
    try:
        processed, renditions, handler_seconds = await run_handler(
            cs, stored, content_key(original.sha256), cs.settings.policy
        )
    except Problem as problem:
        logger.warning("recheck refused a stored file code=%s", problem.type.code)
        renditions = []
        check = {**stored.check, "state": "done", **refusal_record(problem), "rechecked": True}
        values = {"status": "rejected", "check": check}
    else:
        check = {**check_record(processed, original, renditions, started, handler_seconds), "rechecked": True}
        values = {"metadata": dict(processed.metadata), "check": check}
    try:
        async with cs.engine.begin() as conn:
            current = await _load(conn, file_id, for_update=True)
            if current is None or current.status != "ready":
                return
            if renditions:
                await replace_renditions(conn, cs, file_id, renditions)
            await conn.execute(sa.update(db.files).where(db.files.c.id == file_id).values(**values))
    except RenditionsGone:  # another file's deletion took bytes this run found stored: run again
        raise RetryLater(0.5) from None
