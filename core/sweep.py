"""Crash leftovers swept by age: staging files, work directories, held copies and blobs no row owns.

A process killed mid-upload or mid-check leaves bytes that nothing will ever read. What owns
what: a staging file belongs to the request streaming it; a ``tmp/careshare-*`` entry to the check
using it; ``held/<file id>`` to its file while that file is ``processing``; a content blob to its
``blobs`` row (every file, rendition, attachment and letter refers to blobs through that table).
Anything else is removed once it is older than the age guard (``CARESHARE_SWEEP_AGE_SECONDS``), so
live work in any process sharing the store is never touched; this process's own live work is
spared whatever its age (``BlobStore.in_use``). Works on a local store and on a bucket alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from typing import TYPE_CHECKING

import attrs
import obstore
import sqlalchemy as sa
from obstore.exceptions import NotFoundError

from careshare.core import db
from careshare.core.idempotency import sweep_keys
from careshare.core.storage import DOWNLOAD_PREFIX, STAGING_ROOT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from careshare.core.runtime import Careshare
    from careshare.core.storage import BlobStore

__all__ = ["HELD_ROOT", "PARTIAL_MARKS", "Swept", "sweep_leftovers"]

logger = logging.getLogger(__name__)

HELD_ROOT = "held/"
BLOBS_ROOT = "sha256/"
PARTS_ROOT = "uploads/"
#: Names of half-written objects: ours (``<key>.<id>.tmp``) and obstore LocalStore's (``<key>#<n>``).
PARTIAL_MARKS = (".tmp", "#")
#: Ids per database query (well under SQLite's parameter limit).
_BATCH = 500


@attrs.frozen
class Swept:
    """What one sweep removed, by kind."""

    staging: int = 0
    work: int = 0
    held: int = 0
    blobs: int = 0
    partial: int = 0
    #: Expired Idempotency-Keys (answers past their day, claims whose process died): rows, not bytes.
    keys: int = 0

    @property
    def total(self) -> int:
        return self.staging + self.work + self.held + self.blobs + self.partial + self.keys


async def sweep_leftovers(cs: Careshare, *, older_than: float | None = None) -> Swept:
    """Remove every leftover older than ``older_than`` seconds (default: the settings' age guard)."""
    age = cs.settings.sweep_age_seconds if older_than is None else older_than
    cutoff = time.time() - age
    store = cs.store
    swept = Swept(
        staging=await _sweep_unowned(store, STAGING_ROOT, cutoff, lambda _keys: _none()),
        work=await asyncio.to_thread(_sweep_tmp, store, cutoff),
        held=await _sweep_unowned(store, HELD_ROOT, cutoff, lambda keys: _processing(cs, keys)),
        blobs=await _sweep_unowned(store, BLOBS_ROOT, cutoff, lambda keys: _recorded(cs, keys)),
        partial=await _sweep_partials(store, cutoff),
        keys=await sweep_keys(cs.engine),  # by their own expiry, not the age guard
    )
    if swept.total:
        logger.info(
            "swept leftovers staging=%d work=%d held=%d blobs=%d partial=%d keys=%d",
            swept.staging,
            swept.work,
            swept.held,
            swept.blobs,
            swept.partial,
            swept.keys,
        )
    return swept


async def _none() -> set[str]:
    return set()


def _old(modified: float, cutoff: float) -> bool:
    return modified <= cutoff


def _spared(store: BlobStore, key: str) -> bool:
    """In use by this process (keys for objects, absolute paths for local temporary files)."""
    if key in store.in_use:
        return True
    return store.local_root is not None and str(store.local_root / key) in store.in_use


async def _sweep_unowned(
    store: BlobStore,
    root: str,
    cutoff: float,
    owned: Callable[[list[str]], Awaitable[set[str]]],
) -> int:
    """Remove the objects under ``root`` that are old, not in use, and not among ``owned(keys)``."""
    metas = await store.list_prefix(root)
    old = [
        str(m["path"])
        for m in metas
        if _old(m["last_modified"].timestamp(), cutoff)
        and not _spared(store, str(m["path"]))
        and not _partial(str(m["path"]))
    ]
    if not old:
        return 0
    keep: set[str] = set()
    for start in range(0, len(old), _BATCH):
        keep |= await owned(old[start : start + _BATCH])
    removed = 0
    for key in old:
        if key in keep or _spared(store, key):
            continue
        if not await _still_old(store, key, cutoff):
            continue  # written or touched again since it was listed (a dedupe found it)
        await store.discard(key)
        removed += 1
    return removed


async def _still_old(store: BlobStore, key: str, cutoff: float) -> bool:
    try:
        meta = await obstore.head_async(store.store, key)
    except (NotFoundError, FileNotFoundError):
        return False
    return _old(meta["last_modified"].timestamp(), cutoff)


async def _processing(cs: Careshare, keys: list[str]) -> set[str]:
    """The held keys whose file is still ``processing`` (its check will promote or drop them)."""
    ids = {key.removeprefix(HELD_ROOT): key for key in keys}
    async with cs.reader.connect() as conn:
        live = (
            await conn.execute(
                sa.select(db.files.c.id).where(db.files.c.id.in_(list(ids)), db.files.c.status == "processing")
            )
        ).scalars()
        return {ids[file_id] for file_id in live}


async def _recorded(cs: Careshare, keys: list[str]) -> set[str]:
    """The content keys a ``blobs`` row records (what files, renditions, attachments and letters use)."""
    hashes = {key.rsplit("/", 1)[-1]: key for key in keys}
    async with cs.reader.connect() as conn:
        known = (await conn.execute(sa.select(db.blobs.c.sha256).where(db.blobs.c.sha256.in_(list(hashes))))).scalars()
        return {hashes[sha256] for sha256 in known}


def _partial(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.endswith(PARTIAL_MARKS[0]) or PARTIAL_MARKS[1] in name


async def _sweep_partials(store: BlobStore, cutoff: float) -> int:
    """Half-written objects a crash left beside blobs and upload parts (local stores write them)."""
    removed = 0
    for root in (BLOBS_ROOT, PARTS_ROOT):
        for meta in await store.list_prefix(root):
            key = str(meta["path"])
            if _partial(key) and _old(meta["last_modified"].timestamp(), cutoff) and not _spared(store, key):
                await store.discard(key)
                removed += 1
    return removed


def _newest(path: Path) -> float:
    """The latest modification time in a file or a directory tree (a work directory is live while written to)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                with contextlib.suppress(FileNotFoundError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return newest


def _sweep_tmp(store: BlobStore, cutoff: float) -> int:
    """Work directories and downloaded originals (``tmp/careshare-*``) of checks that died."""
    if store.local_tmp is None or not store.local_tmp.is_dir():
        return 0
    removed = 0
    for entry in store.local_tmp.iterdir():
        if not entry.name.startswith(DOWNLOAD_PREFIX) or str(entry) in store.in_use:
            continue
        try:
            if not _old(_newest(entry), cutoff):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed
