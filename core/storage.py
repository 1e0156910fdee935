"""Content-addressed blob store on obstore: local disk and S3 behind one API.

Uploads stream to a staging key while their SHA-256 and length are computed; the byte limit is
enforced while streaming. A staged blob becomes a content blob (``sha256/ab/cd/<hash>``) only
once its file has passed its checks; the same bytes are stored once however often they arrive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import attrs
import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError, NotModifiedError, PreconditionError
from obstore.store import LocalStore, S3Store

from careshare.core.ids import new_id
from careshare.core.problems import INSUFFICIENT_STORAGE, UPLOAD_EMPTY, Problem, upload_too_large

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator

    from obstore import ObjectMeta

__all__ = [
    "DOWNLOAD_PREFIX",
    "HEAD_BYTES",
    "STAGING_ROOT",
    "WORKDIR_PREFIX",
    "BlobStore",
    "InsufficientStorage",
    "StagedBlob",
    "content_key",
    "database_out_of_space",
    "held_key",
    "start_writeback",
]

logger = logging.getLogger(__name__)

#: How much of the start of an upload the identify hook sees.
HEAD_BYTES = 64 * 1024
#: Multipart part size for staging writes to S3 (S3 minimum is 5 MiB).
_PART_BYTES = 8 * 1024 * 1024
#: Parts in flight per upload. obstore holds each in memory until written, so this bounds an
#: upload's memory to about (1 + this) parts when S3 is slower than the client.
_PART_CONCURRENCY = 2
#: Network chunks travel in blocks of at least this size: each hand-off (to a writer thread, or
#: to obstore's runtime) costs far more than a block's worth of per-chunk bookkeeping.
_BLOCK_BYTES = 1024 * 1024
_READ_CHUNK = 256 * 1024
#: writev() takes at most this many buffers (Linux and macOS).
_IOV_MAX = 1024
#: errno values that mean the disk takes no more bytes: full (ENOSPC) or over a quota (EDQUOT).
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})
#: A stored blob found again (dedupe) older than this is written again on a bucket, so that its
#: age, which the sweep reads, says it is in use (a local one is touched instead).
_REFRESH_SECONDS = 600.0
#: Where uploads stream before they are held or promoted.
STAGING_ROOT = "staging/"
#: Handlers' work directories in the local temporary directory (``tmp/careshare-work-*``).
WORKDIR_PREFIX = "careshare-work-"
#: Originals downloaded from a bucket for a check (``tmp/careshare-*`` files).
DOWNLOAD_PREFIX = "careshare-"


class InsufficientStorage(Problem):
    """The disk or the bucket refused a write (``507``): the server's trouble, never the file's fault."""

    def __init__(self) -> None:
        super().__init__(INSUFFICIENT_STORAGE)


#: SQLite's SQLITE_FULL message and PostgreSQL's ``disk_full`` SQLSTATE.
_DATABASE_FULL_MESSAGE = "database or disk is full"
_DATABASE_FULL_STATES = frozenset({"53100"})


def database_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (a driver error, maybe wrapped by SQLAlchemy) is the database's disk being full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_ROOM:
            return True
        if _DATABASE_FULL_MESSAGE in str(current).lower():
            return True
        if str(getattr(current, "sqlstate", "") or getattr(current, "pgcode", "")) in _DATABASE_FULL_STATES:
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def content_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def held_key(file_id: str) -> str:
    """An accepted upload's bytes while its check has not ended."""
    return f"held/{file_id}"


@attrs.define
class StagedBlob:
    """An upload that has arrived whole under a staging key, not yet accepted."""

    key: str
    sha256: str
    size: int
    head: bytes


class _Meter:
    """Counts the bytes and keeps the head as chunks arrive; refuses them as soon as the limit is crossed."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.size = 0
        self.head = bytearray()

    async def blocks(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[list[bytes]]:
        """The non-empty chunks, metered one by one, in blocks of at least ``_BLOCK_BYTES`` (the last may be less)."""
        block: list[bytes] = []
        held = 0
        async for chunk in chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.limit is not None and self.size > self.limit:
                raise upload_too_large(self.limit)
            if len(self.head) < HEAD_BYTES:
                self.head += chunk[: HEAD_BYTES - len(self.head)]
            block.append(chunk)
            held += len(chunk)
            if held >= _BLOCK_BYTES:
                yield block
                block = []
                held = 0
        if block:
            yield block


def _hash_block(digest: hashlib._Hash, block: list[bytes]) -> None:
    # hashlib lets go of the GIL for buffers of 2 KiB and more, so a worker thread hashes in parallel.
    for chunk in block:
        digest.update(chunk)


class _StagingFile:
    """A local staging file, hashed and written block by block on worker threads, blocks in order.

    The event loop only meters and groups the chunks; hashing and the page-cache copy, the two
    costs that scale with the bytes, run on a thread while the loop receives the next block.
    At most one block is in flight, so an upload holds about two blocks in memory. On Linux,
    writeback of what is written starts on the side as the upload goes (PostgreSQL's
    ``*_flush_after`` does the same), so the fsync before the file is accepted waits for little.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        self.digest = hashlib.sha256()
        self.written = 0
        self.flushed = 0
        self._writing: concurrent.futures.Future[None] | None = None
        self._flushing: concurrent.futures.Future[None] | None = None

    async def write(self, block: list[bytes]) -> None:
        """Wait for the block before, then hand this one to a worker thread and return at once."""
        await self.settle()
        self._start_writeback()
        self._writing = _threads().submit(self._write, block)

    async def settle(self) -> None:
        """Wait until the block in flight is written (raises its error, if it failed)."""
        if self._writing is not None:
            await asyncio.wrap_future(self._writing)

    def _write(self, block: list[bytes]) -> None:
        _hash_block(self.digest, block)
        for start in range(0, len(block), _IOV_MAX):
            batch = block[start : start + _IOV_MAX]
            size = sum(map(len, batch))
            done = os.writev(self.fd, batch)
            if done < size:  # a short write (rare on a regular file): finish it plainly
                rest = memoryview(b"".join(batch))[done:]
                while rest:
                    rest = rest[os.write(self.fd, rest) :]
            self.written += size

    def _start_writeback(self) -> None:
        # On its own thread: a busy disk may block the request, and must not hold up the hashing.
        if _SYNC_FILE_RANGE is None or self.written == self.flushed:
            return
        if self._flushing is not None and not self._flushing.done():
            return  # the next request covers this range too
        start, self.flushed = self.flushed, self.written
        self._flushing = _threads().submit(_SYNC_FILE_RANGE, self.fd, start, self.written - start, _WRITEBACK)

    def close(self) -> None:
        """Done writing (after ``settle``): the file closes once its last writeback request is made."""
        self._start_writeback()
        _after([self._writing, self._flushing], lambda: os.close(self.fd))

    async def abort(self) -> None:
        """Close and remove the file once no thread uses it, even if the caller is cancelled meanwhile."""

        def remove() -> None:
            os.close(self.fd)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

        await asyncio.shield(asyncio.wrap_future(_after([self._writing, self._flushing], remove)))


def _after(
    futures: list[concurrent.futures.Future[None] | None], action: Callable[[], None]
) -> concurrent.futures.Future[None]:
    """Run ``action`` once every future is done (at once if they are, else on the thread finishing last)."""
    outcome: concurrent.futures.Future[None] = concurrent.futures.Future()
    waiting = [future for future in futures if future is not None]

    def step(_: object = None) -> None:
        if waiting:
            waiting.pop().add_done_callback(step)
            return
        try:
            action()
        except BaseException as exc:
            outcome.set_exception(exc)
        else:
            outcome.set_result(None)

    step()
    return outcome


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    buffer = bytearray(_BLOCK_BYTES)  # one buffer read into, not a new bytes object a block
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        # A handler just wrote it: its writeback runs while we hash, so the fsync after is short.
        start_writeback(handle.fileno())
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest(), path.stat().st_size


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _load_sync_file_range()
#: SYNC_FILE_RANGE_WRITE: start writeback of the range's dirty pages, do not wait for it.
_WRITEBACK = 2


def start_writeback(fd: int) -> None:
    """Have the kernel start writing the file's dirty pages to disk, without waiting (Linux; elsewhere a no-op).

    For a file being written that will be made durable: the fsync later finds little left to do,
    and the disk works while the writer goes on.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _WRITEBACK)


_THREADS: list[concurrent.futures.ThreadPoolExecutor] = []


def _threads() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that hash, write and flush staging files (per upload, one block and one flush at a time)."""
    if not _THREADS:
        workers = min(32, (os.cpu_count() or 2) + 4)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="careshare-stage")
        _THREADS.append(pool)
    return _THREADS[0]


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
            # Promotion renames without overwriting: plain S3 does that only by a conditional
            # multipart copy; AWS_COPY_IF_NOT_EXISTS names another way (R2: header:...).
            copy_if_not_exists = os.environ.get("AWS_COPY_IF_NOT_EXISTS") or "multipart"
            self.store = S3Store.from_url(url, copy_if_not_exists=copy_if_not_exists)
        else:
            raise ValueError(f"CARESHARE_STORAGE_URL must be file:// or s3://, not {parsed.scheme!r}")
        self.local_tmp = local_tmp
        #: Keys (and local temporary paths) this process is writing or about to record: the sweep
        #: leaves them alone whatever their age. Other processes' are safe by the sweep's age guard.
        self.in_use: set[str] = set()

    def _no_room(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the disk or the bucket refusing a write (not a bug, not the client)."""
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return True
        if isinstance(exc, (AlreadyExistsError, PreconditionError, NotModifiedError)):
            return False  # answers to a conditional write, which the callers handle
        if self.local_root is None:
            # A bucket that refuses (quota, policy, missing) answers a write with an obstore error.
            return isinstance(exc, (BaseError, FileNotFoundError, PermissionError))
        # LocalStore wraps the OS error in its message ("No space left on device (os error 28)").
        return isinstance(exc, BaseError) and any(f"(os error {n})" in str(exc) for n in _NO_ROOM)

    @contextlib.contextmanager
    def _storing(self, step: str) -> Iterator[None]:
        """Turn the store refusing a write into ``insufficient-storage``; every other error passes."""
        try:
            yield
        except Problem:
            raise
        except Exception as exc:
            if not self._no_room(exc):
                raise
            # The error's text names keys and paths: only the step and the type are logged.
            logger.warning("storage refused a write step=%s error=%s", step, type(exc).__name__)
            raise InsufficientStorage from None

    def release(self, key: str) -> None:
        """The caller has recorded (or given up) ``key``: from now on the sweep judges it by its rows."""
        self.in_use.discard(key)

    async def stage(
        self, chunks: AsyncIterable[bytes], *, limit: int | None, remote_key: str | None = None
    ) -> StagedBlob:
        """Stream ``chunks`` to a new staging key; hash, count and cap them on the way.

        Raises ``upload-too-large`` as soon as ``limit`` is crossed and ``upload-empty`` for no
        bytes; in both cases, and on any other error, nothing is left under the staging key.
        On a bucket the bytes go straight to ``remote_key`` when given (a rename there is a copy
        of every byte); on local disk they go to ``staging/`` and a rename moves them in no time.
        """
        meter = _Meter(limit)
        key = f"{STAGING_ROOT}{new_id()}" if self.local_root is not None or remote_key is None else remote_key
        self.in_use.add(key)
        try:
            with self._storing("stage"):
                if self.local_root is not None:
                    sha256 = await self._stage_local(key, meter, chunks)
                else:
                    sha256 = await self._stage_remote(key, meter, chunks)
        except BaseException:
            self.release(key)
            raise
        if meter.size == 0:
            await self.discard(key)
            raise Problem(UPLOAD_EMPTY)
        return StagedBlob(key=key, sha256=sha256, size=meter.size, head=bytes(meter.head))

    async def _stage_local(self, key: str, meter: _Meter, chunks: AsyncIterable[bytes]) -> str:
        # Plain writes to the file obstore's LocalStore would make: it copies every part once more.
        assert self.local_root is not None
        staging = _StagingFile(self.local_root / key)
        try:
            async for block in meter.blocks(chunks):
                await staging.write(block)
            await staging.settle()
        except BaseException:
            await staging.abort()
            raise
        staging.close()
        return staging.digest.hexdigest()

    async def _stage_remote(self, key: str, meter: _Meter, chunks: AsyncIterable[bytes]) -> str:
        digest = hashlib.sha256()

        async def joined() -> AsyncIterator[bytes]:
            async for block in meter.blocks(chunks):
                await asyncio.to_thread(_hash_block, digest, block)
                yield b"".join(block)

        await obstore.put_async(self.store, key, joined(), chunk_size=_PART_BYTES, max_concurrency=_PART_CONCURRENCY)
        return digest.hexdigest()

    async def discard(self, key: str) -> None:
        with contextlib.suppress(NotFoundError, FileNotFoundError):
            await obstore.delete_async(self.store, key)
        self.release(key)

    async def promote(self, staged: StagedBlob) -> str:
        """Move a staged blob to its content key; if those bytes are already stored, drop the copy."""
        key = content_key(staged.sha256)
        try:
            with self._storing("promote"):
                await obstore.rename_async(self.store, staged.key, key, overwrite=False)
        except AlreadyExistsError:
            await self.discard(staged.key)
        else:
            self.release(staged.key)
            with self._storing("promote"):
                await asyncio.to_thread(self._make_durable, key)
        return key

    async def hold(self, staged: StagedBlob, file_id: str) -> str:
        """Keep a staged upload durably under ``held/<file id>`` until its check ends; returns the key.

        Acknowledging an upload needs its bytes on disk (or in the bucket), not its check: the
        check runs later, maybe in another process, and then promotes or discards the held copy.
        """
        key = held_key(file_id)
        self.in_use.add(key)  # until the caller has recorded its row (``release``)
        try:
            with self._storing("hold"):
                if staged.key != key:
                    await obstore.rename_async(self.store, staged.key, key, overwrite=True)
                await asyncio.to_thread(self._make_durable, key)
        except InsufficientStorage:
            await self.discard(key)  # half held (renamed, not durable): no copy stays
            raise
        except BaseException:
            self.release(key)  # whatever a failed rename left is the sweep's, once old
            raise
        if staged.key != key:
            self.release(staged.key)
        return key

    async def promote_held(self, file_id: str, sha256: str) -> None:
        """Move a held upload to its content key (idempotent: a second call finds it done)."""
        key = content_key(sha256)
        try:
            # On a bucket a missing source is NotFound too, so that is sorted out before mapping.
            await obstore.rename_async(self.store, held_key(file_id), key, overwrite=False)
        except AlreadyExistsError:
            await self.discard(held_key(file_id))
        except (NotFoundError, FileNotFoundError):
            if not await self.exists(sha256):
                raise
        except Exception as exc:
            with self._storing("promote"):
                raise exc from None
        else:
            with self._storing("promote"):
                await asyncio.to_thread(self._make_durable, key)

    async def held_or_stored(self, file_id: str, sha256: str) -> str | None:
        """Where a file's original is while it is checked: held, already promoted, or (None) gone."""
        for key in (held_key(file_id), content_key(sha256)):
            try:
                await obstore.head_async(self.store, key)
            except (NotFoundError, FileNotFoundError):
                continue
            return key
        return None

    async def put_file(self, path: Path) -> tuple[str, int]:
        """Store a local file (a rendition) by content; returns its SHA-256 and size.

        Hashed on a worker thread. On a local store, a file in our own temporary directory (a
        handler's work directory) is moved into place rather than copied: it is not used again.
        """
        sha256, size = await asyncio.to_thread(_hash_file, path)
        key = content_key(sha256)
        if await self._still_fresh(key):
            return sha256, size
        with self._storing("rendition"):
            if self.local_root is not None and self.local_tmp is not None and path.is_relative_to(self.local_tmp):
                await asyncio.to_thread(self._move_in, path, key)
            else:
                await obstore.put_async(self.store, key, path, mode="overwrite", max_concurrency=_PART_CONCURRENCY)
            await asyncio.to_thread(self._make_durable, key)
        return sha256, size

    async def _still_fresh(self, key: str) -> bool:
        """Whether ``key`` is stored and young, so the sweep spares it until its row is written."""
        try:
            meta = await obstore.head_async(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return False
        if self.local_root is not None:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.utime, self.local_root / key)
                return True
            return False
        return bool(time.time() - meta["last_modified"].timestamp() < _REFRESH_SECONDS)

    def _move_in(self, path: Path, key: str) -> None:
        assert self.local_root is not None
        target = self.local_root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError:  # another filesystem after all: copy beside the target, then rename it in whole
            partial = target.with_name(f"{target.name}.{new_id()}.tmp")
            try:
                shutil.copyfile(path, partial)
                os.replace(partial, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()

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

    @contextlib.asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        """A path on local disk holding the object at ``key`` (the file itself on a local store).

        From a bucket the object is downloaded to a temporary file first, streamed and written on
        a worker thread, so the event loop goes on serving while a large original arrives.
        """
        if self.local_root is not None:
            yield self.local_root / key
            return
        with self._storing("download"):
            fd, name = tempfile.mkstemp(dir=self.local_tmp, prefix=DOWNLOAD_PREFIX)
        self.in_use.add(name)
        try:
            with os.fdopen(fd, "wb") as handle, self._storing("download"):
                result = await obstore.get_async(self.store, key)
                async for chunk in result.stream(min_chunk_size=_BLOCK_BYTES):
                    await asyncio.to_thread(handle.write, chunk)
            yield Path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            self.release(name)

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

    @contextlib.contextmanager
    def workdir(self) -> Iterator[str]:
        """A new empty directory for a handler's outputs, removed (with what is left in it) afterwards."""
        with self._storing("workdir"):
            name = tempfile.mkdtemp(dir=self.local_tmp, prefix=WORKDIR_PREFIX)
        self.in_use.add(name)
        try:
            yield name
        finally:
            shutil.rmtree(name, ignore_errors=True)
            self.release(name)

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

    # -- objects at keys the caller names (the parts of resumable uploads) --------------------------

    async def put_part(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Stream ``chunks`` durably to ``key``, replacing what is there; returns the bytes written.

        All or nothing: if ``chunks`` raises (or anything fails), the object at ``key`` is as it
        was. No bytes at all write nothing and return 0. On a bucket the object exists once the
        put completes; on local disk it is written to a new file, fsynced, then renamed over.
        """
        meter = _Meter(None)
        blocks = aiter(meter.blocks(chunks))
        first = await anext(blocks, None)
        if first is None:
            return 0
        if self.local_root is None:

            async def joined() -> AsyncIterator[bytes]:
                yield b"".join(first)
                async for block in blocks:
                    yield b"".join(block)

            with self._storing("part"):
                await obstore.put_async(
                    self.store, key, joined(), chunk_size=_PART_BYTES, max_concurrency=_PART_CONCURRENCY
                )
            return meter.size
        path = self.local_root / key
        with self._storing("part"):
            writing = _StagingFile(path.with_name(f"{path.name}.{new_id()}.tmp"))
        self.in_use.add(str(writing.path))
        try:
            with self._storing("part"):
                try:
                    await writing.write(first)
                    async for block in blocks:
                        await writing.write(block)
                    await writing.settle()
                    await asyncio.to_thread(os.replace, writing.path, path)
                except BaseException:
                    await writing.abort()
                    raise
                writing.close()
                await asyncio.to_thread(self._make_durable, key)
        finally:
            self.in_use.discard(str(writing.path))
        return meter.size

    async def read_parts(self, keys: Iterable[str]) -> AsyncIterator[bytes]:
        """Stream the objects at ``keys`` one after another, as one body."""
        for key in keys:
            result = await obstore.get_async(self.store, key)
            async for chunk in result.stream(min_chunk_size=_BLOCK_BYTES):
                yield bytes(chunk)

    async def list_prefix(self, prefix: str) -> list[ObjectMeta]:
        """Every object under ``prefix``: its key (``path``), ``size`` and ``last_modified``."""
        try:
            return await obstore.list(self.store, prefix=prefix).collect_async()
        except (NotFoundError, FileNotFoundError):
            return []  # a local folder removed while it was listed

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix`` (a folder, ending in ``/``); returns how many there were."""
        keys = [meta["path"] for meta in await self.list_prefix(prefix)]
        if keys:
            try:
                await obstore.delete_async(self.store, keys)
            except (NotFoundError, FileNotFoundError):
                for key in keys:  # another process removed some first: remove the rest one by one
                    await self.discard(key)
        if self.local_root is not None:
            with contextlib.suppress(OSError):
                (self.local_root / prefix).rmdir()  # LocalStore leaves the emptied folder behind
        return len(keys)
