"""Content-addressed blob store on obstore: local disk and S3 behind one API.

Uploads stream to a staging key while their SHA-256 and length are computed; the byte limit is
enforced while streaming. A staged blob becomes a content blob (``sha256/ab/cd/<hash>``) only
once its file has passed its checks; the same bytes are stored once however often they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import attrs
import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError
from obstore.store import LocalStore, S3Store

from careshare.core.ids import new_id
from careshare.core.problems import UPLOAD_EMPTY, UPLOAD_TOO_LARGE, Problem

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Iterator

__all__ = ["HEAD_BYTES", "BlobStore", "StagedBlob", "content_key"]

#: How much of the start of an upload the identify hook sees.
HEAD_BYTES = 64 * 1024
#: Multipart part size for staging writes (S3 minimum is 5 MiB).
_PART_BYTES = 8 * 1024 * 1024
#: Parts in flight per upload. obstore holds each in memory until written, so this bounds an
#: upload's memory to about (1 + this) parts when the disk or S3 is slower than the client.
_PART_CONCURRENCY = 2
#: Chunks go to obstore in blocks of at least this size: each hand-off from the event loop to
#: obstore's runtime costs far more than joining a few 256 KiB network chunks.
_BLOCK_BYTES = 1024 * 1024
_READ_CHUNK = 256 * 1024


def content_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


@attrs.define
class StagedBlob:
    """An upload that has arrived whole under a staging key, not yet accepted."""

    key: str
    sha256: str
    size: int
    head: bytes


class _Meter:
    """Hashes, counts and enforces the limit on chunks as they pass through."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = bytearray()

    async def metered(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        block: list[bytes] = []
        held = 0
        async for chunk in chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.limit is not None and self.size > self.limit:
                raise Problem(
                    UPLOAD_TOO_LARGE,
                    f"The file is larger than the {self.limit:,} bytes this server accepts. Send a smaller file.",
                    limit=self.limit,
                )
            self.digest.update(chunk)
            if len(self.head) < HEAD_BYTES:
                self.head += chunk[: HEAD_BYTES - len(self.head)]
            block.append(chunk)
            held += len(chunk)
            if held >= _BLOCK_BYTES:
                yield b"".join(block)
                block.clear()
                held = 0
        if block:
            yield b"".join(block)


class BlobStore:
    """Blobs under one obstore store; ``url`` is ``file:///dir`` or ``s3://bucket/prefix``."""

    def __init__(self, url: str, *, local_tmp: Path | None = None) -> None:
        self.url = url
        parsed = urlparse(url)
        self.local_root: Path | None = None
        if parsed.scheme == "file":
            self.local_root = Path(parsed.path)
            self.local_root.mkdir(parents=True, exist_ok=True)
            self.store: LocalStore | S3Store = LocalStore(self.local_root, mkdir=True)
        elif parsed.scheme == "s3":
            # Credentials and endpoint come from the standard AWS_* environment variables.
            self.store = S3Store.from_url(url)
        else:
            raise ValueError(f"CARESHARE_STORAGE_URL must be file:// or s3://, not {parsed.scheme!r}")
        self.local_tmp = local_tmp

    async def stage(self, chunks: AsyncIterable[bytes], *, limit: int | None) -> StagedBlob:
        """Stream ``chunks`` to a new staging key; hash, count and cap them on the way.

        Raises ``upload-too-large`` as soon as ``limit`` is crossed and ``upload-empty`` for no
        bytes; in both cases, and on any other error, nothing is left under the staging key.
        """
        key = f"staging/{new_id()}"
        meter = _Meter(limit)
        await obstore.put_async(
            self.store, key, meter.metered(chunks), chunk_size=_PART_BYTES, max_concurrency=_PART_CONCURRENCY
        )
        if meter.size == 0:
            await self.discard(key)
            raise Problem(UPLOAD_EMPTY)
        return StagedBlob(key=key, sha256=meter.digest.hexdigest(), size=meter.size, head=bytes(meter.head))

    async def discard(self, key: str) -> None:
        with contextlib.suppress(NotFoundError, FileNotFoundError):
            await obstore.delete_async(self.store, key)

    async def promote(self, staged: StagedBlob) -> str:
        """Move a staged blob to its content key; if those bytes are already stored, drop the copy."""
        key = content_key(staged.sha256)
        try:
            await obstore.rename_async(self.store, staged.key, key, overwrite=False)
        except AlreadyExistsError:
            await self.discard(staged.key)
        else:
            await asyncio.to_thread(self._make_durable, key)
        return key

    async def put_file(self, path: Path) -> tuple[str, int]:
        """Store a local file (a rendition) by content; returns its SHA-256 and size."""
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(1024 * 1024):
                digest.update(block)
        sha256, size = digest.hexdigest(), path.stat().st_size
        key = content_key(sha256)
        if not await self.exists(sha256):
            await obstore.put_async(self.store, key, path, mode="overwrite", max_concurrency=_PART_CONCURRENCY)
            await asyncio.to_thread(self._make_durable, key)
        return sha256, size

    async def exists(self, sha256: str) -> bool:
        try:
            await obstore.head_async(self.store, content_key(sha256))
        except (NotFoundError, FileNotFoundError):
            return False
        return True

    async def read(self, sha256: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream a content blob, or the byte range ``[start, end)`` of it."""
        if end is not None and end <= start:
            return
        options = (
            {} if start == 0 and end is None else {"range": (start, end) if end is not None else {"offset": start}}
        )
        result = await obstore.get_async(self.store, content_key(sha256), options=options)  # type: ignore[arg-type]
        async for chunk in result.stream(min_chunk_size=_READ_CHUNK):
            yield bytes(chunk)

    async def read_all(self, sha256: str) -> bytes:
        result = await obstore.get_async(self.store, content_key(sha256))
        return bytes(await result.bytes_async())

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """A path on local disk holding the object at ``key`` (the file itself on a local store)."""
        if self.local_root is not None:
            yield self.local_root / key
            return
        with tempfile.NamedTemporaryFile(dir=self.local_tmp, prefix="careshare-") as handle:
            result = obstore.get(self.store, key)
            for chunk in result:
                handle.write(chunk)
            handle.flush()
            yield Path(handle.name)

    def _make_durable(self, key: str) -> None:
        # LocalStore renames without fsync; an accepted file must survive a power cut.
        if self.local_root is None:
            return
        path = self.local_root / key
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def workdir(self) -> contextlib.AbstractContextManager[str]:
        return tempfile.TemporaryDirectory(dir=self.local_tmp, prefix="careshare-work-")

    def sweep_staging(self, older_than_seconds: float = 24 * 3600) -> int:
        """Remove staging leftovers of crashed processes (local stores; S3 uses lifecycle rules).

        Only old entries go: another process sharing the store may be streaming into a new one.
        """
        if self.local_root is None:
            return 0
        cutoff, removed = time.time() - older_than_seconds, 0
        for entry in (self.local_root / "staging").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
        return removed
