"""The content-addressed blob store on a real obstore ``LocalStore`` in a temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from careshare.core.problems import Problem
from careshare.core.storage import HEAD_BYTES, BlobStore, content_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

MIB = 1024 * 1024


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def stream(chunks: list[bytes], pulled: list[int] | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if pulled is not None:
            pulled.append(len(chunk))
        yield chunk


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def stored_files(root: Path) -> list[str]:
    """Every file under the store, as keys (``staging/...``, ``sha256/...``)."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def content_files(root: Path) -> list[str]:
    return [key for key in stored_files(root) if key.startswith("sha256/")]


def staging_files(root: Path) -> list[str]:
    return [key for key in stored_files(root) if not key.startswith("sha256/")]


@contextlib.contextmanager
def fresh_store() -> Iterator[tuple[BlobStore, Path]]:
    """A store of its own for one Hypothesis example (function-scoped fixtures are shared by examples)."""
    with tempfile.TemporaryDirectory(prefix="careshare-blobs-") as directory:
        root = Path(directory) / "blobs"
        yield BlobStore(root.as_uri()), root


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def store(store_root: Path) -> BlobStore:
    return BlobStore(store_root.as_uri())


def cut(data: bytes, positions: list[int]) -> list[bytes]:
    """``data`` cut at ``positions``; repeated positions make empty chunks."""
    bounds = [0, *sorted(positions), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


@st.composite
def chunked(draw: st.DrawFn, min_size: int = 0) -> tuple[bytes, list[bytes]]:
    """Bytes and an arbitrary way of cutting them into chunks, empty chunks included."""
    data = draw(
        st.one_of(
            st.binary(min_size=min_size, max_size=2048),
            st.builds(random_bytes, st.integers(max(min_size, HEAD_BYTES - 8), HEAD_BYTES * 5), st.integers()),
        )
    )
    return data, cut(data, draw(st.lists(st.integers(0, len(data)), max_size=12)))


# -- stage -> promote -> read ----------------------------------------------------------------------


@given(chunked())
@example((b"", []))
@example((b"", [b"", b""]))
@example((b"x", [b"", b"x", b""]))
def test_any_bytes_in_any_chunking_round_trip(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case

    async def run() -> None:
        with fresh_store() as (store, root):
            if not data:
                with pytest.raises(Problem) as refused:
                    await store.stage(stream(chunks), limit=None)
                assert refused.value.code == "upload-empty"
                assert stored_files(root) == []
                return
            staged = await store.stage(stream(chunks), limit=None)
            sha256 = hashlib.sha256(data).hexdigest()
            assert (staged.sha256, staged.size, staged.head) == (sha256, len(data), data[:HEAD_BYTES])
            assert staged.key.startswith("staging/")
            assert stored_files(root) == [staged.key]
            assert not await store.exists(sha256)

            assert await store.promote(staged) == content_key(sha256)
            assert stored_files(root) == [content_key(sha256)]
            assert await store.exists(sha256)
            assert await store.read_all(sha256) == data
            assert await collect(store.read(sha256)) == data

    asyncio.run(run())


async def test_a_multipart_upload_round_trips(store: BlobStore, store_root: Path) -> None:
    # Larger than one 8 MiB part, in chunks that do not line up with parts or the head.
    data = random_bytes(8 * MIB + 12_345, seed=1)
    chunks = [data[i : i + 1_000_003] for i in range(0, len(data), 1_000_003)]
    staged = await store.stage(stream(chunks), limit=len(data))
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size == len(data)
    await store.promote(staged)
    assert await collect(store.read(staged.sha256)) == data
    assert stored_files(store_root) == [content_key(staged.sha256)]


# -- the byte limit ---------------------------------------------------------------------------------


@given(chunked(min_size=1))
@example((b"a", [b"a"]))
@example((b"ab", [b"a", b"b"]))
def test_the_limit_is_exact(case: tuple[bytes, list[bytes]]) -> None:
    """N bytes pass a limit of N; the same N bytes are N+1 for a limit of N-1 and are refused."""
    data, chunks = case
    size = len(data)

    async def run() -> None:
        with fresh_store() as (store, root):
            with pytest.raises(Problem) as refused:
                await store.stage(stream(chunks), limit=size - 1)
            assert refused.value.code == "upload-too-large"
            assert refused.value.status == 413
            assert refused.value.extra["limit"] == size - 1
            assert stored_files(root) == []

            staged = await store.stage(stream(chunks), limit=size)
            assert staged.size == size
            assert staged.sha256 == hashlib.sha256(data).hexdigest()

    asyncio.run(run())


@pytest.mark.parametrize("chunk_size", [1024, MIB])
async def test_the_limit_stops_reading_at_the_chunk_that_crosses_it(
    store: BlobStore, store_root: Path, chunk_size: int
) -> None:
    pulled: list[int] = []
    limit = 10 * chunk_size + 1  # crossed by the 11th chunk; 20 MiB (multipart) for the larger size
    chunks = [random_bytes(chunk_size, seed) for seed in range(20 if chunk_size == MIB else 1000)]
    with pytest.raises(Problem) as refused:
        await store.stage(stream(chunks, pulled), limit=limit)
    assert refused.value.code == "upload-too-large"
    assert len(pulled) == 11
    assert stored_files(store_root) == []


@pytest.mark.parametrize("size", [5, 9 * MIB])
async def test_a_stream_that_breaks_leaves_nothing(store: BlobStore, store_root: Path, size: int) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield random_bytes(size)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.stage(broken(), limit=None)
    assert stored_files(store_root) == []


# -- content addressing ----------------------------------------------------------------------------


@given(chunked(min_size=1), st.data())
def test_the_same_bytes_promoted_twice_are_stored_once(case: tuple[bytes, list[bytes]], data: st.DataObject) -> None:
    content, chunks = case
    other_chunks = cut(content, data.draw(st.lists(st.integers(0, len(content)), max_size=5)))

    async def run() -> None:
        with fresh_store() as (store, root):
            first = await store.stage(stream(chunks), limit=None)
            second = await store.stage(stream(other_chunks), limit=None)
            assert first.key != second.key
            assert first.sha256 == second.sha256
            assert await store.promote(first) == await store.promote(second)
            assert stored_files(root) == [content_key(first.sha256)]
            assert await store.read_all(first.sha256) == content

    asyncio.run(run())


async def test_different_bytes_get_different_content_files(store: BlobStore, store_root: Path) -> None:
    one = await store.promote(await store.stage(stream([b"one"]), limit=None))
    two = await store.promote(await store.stage(stream([b"two"]), limit=None))
    assert one != two
    assert content_files(store_root) == sorted([one, two])
    assert (store_root / one).read_bytes() == b"one"


def test_content_key_layout() -> None:
    sha256 = hashlib.sha256(b"x").hexdigest()
    assert content_key(sha256) == f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


# -- ranged reads and the head -----------------------------------------------------------------------

# Spans several 256 KiB read chunks, so ranges cross chunk boundaries.
RANGED = random_bytes(700_001, seed=2)


@pytest.fixture(scope="module")
def ranged_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[BlobStore, str]:
    store = BlobStore((tmp_path_factory.mktemp("ranged") / "blobs").as_uri())

    async def put() -> str:
        return await store.promote(await store.stage(stream([RANGED]), limit=None))

    asyncio.run(put())
    return store, hashlib.sha256(RANGED).hexdigest()


@given(st.integers(0, len(RANGED) - 1), st.integers(1, len(RANGED)))
@example(0, len(RANGED))
@example(len(RANGED) - 1, len(RANGED))
@example(256 * 1024 - 1, 256 * 1024 + 1)
@example(0, 1)
def test_a_ranged_read_is_the_slice(ranged_store: tuple[BlobStore, str], a: int, b: int) -> None:
    store, sha256 = ranged_store
    start, end = min(a, b - 1), max(a + 1, b)
    assert asyncio.run(collect(store.read(sha256, start, end))) == RANGED[start:end]


@given(st.integers(0, len(RANGED) - 1))
@example(0)
@example(len(RANGED) - 1)
def test_an_open_ended_read_runs_to_the_end(ranged_store: tuple[BlobStore, str], start: int) -> None:
    store, sha256 = ranged_store
    assert asyncio.run(collect(store.read(sha256, start))) == RANGED[start:]


@pytest.mark.parametrize("chunk_size", [7, 1000, HEAD_BYTES - 1, HEAD_BYTES, HEAD_BYTES + 1, 5 * HEAD_BYTES])
async def test_the_head_is_the_first_64_kib(store: BlobStore, chunk_size: int) -> None:
    assert HEAD_BYTES == 64 * 1024
    data = random_bytes(3 * HEAD_BYTES + 7, seed=3)
    if chunk_size < 100:
        data = data[: HEAD_BYTES + 10]  # tiny chunks are slow; crossing the head is enough
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    staged = await store.stage(stream(chunks), limit=None)
    assert staged.head == data[:HEAD_BYTES]


async def test_the_head_of_a_small_file_is_all_of_it(store: BlobStore) -> None:
    staged = await store.stage(stream([b"%PDF-", b"1.7\n"]), limit=None)
    assert staged.head == b"%PDF-1.7\n"


# -- put_file, local_path ------------------------------------------------------------------------------


async def test_put_file_stores_a_local_file_by_content(store: BlobStore, store_root: Path, tmp_path: Path) -> None:
    data = random_bytes(3 * MIB + 5, seed=4)
    rendition = tmp_path / "rendition.pdf"
    rendition.write_bytes(data)

    sha256, size = await store.put_file(rendition)
    assert (sha256, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert await store.exists(sha256)
    assert await store.read_all(sha256) == data
    assert rendition.read_bytes() == data, "the source file is left alone"

    copy = tmp_path / "copy.bin"
    copy.write_bytes(data)
    assert await store.put_file(copy) == (sha256, size)
    assert stored_files(store_root) == [content_key(sha256)]


async def test_put_file_and_upload_of_the_same_bytes_share_one_blob(
    store: BlobStore, store_root: Path, tmp_path: Path
) -> None:
    staged = await store.stage(stream([b"same bytes"]), limit=None)
    await store.promote(staged)
    path = tmp_path / "same.txt"
    path.write_bytes(b"same bytes")
    assert await store.put_file(path) == (staged.sha256, 10)
    assert stored_files(store_root) == [content_key(staged.sha256)]


async def test_local_path_of_a_local_store_is_the_stored_file(store: BlobStore) -> None:
    staged = await store.stage(stream([b"on disk"]), limit=None)
    key = await store.promote(staged)
    async with store.local_path(key) as path:
        assert path.read_bytes() == b"on disk"


# -- sweeping staging leftovers ---------------------------------------------------------------------


async def test_sweep_staging_removes_only_old_staging_entries(store: BlobStore, store_root: Path) -> None:
    old = await store.stage(stream([b"crashed upload"]), limit=None)
    new = await store.stage(stream([b"upload in progress"]), limit=None)
    kept = await store.promote(await store.stage(stream([b"accepted long ago"]), limit=None))
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(store_root / old.key, (two_days_ago, two_days_ago))
    os.utime(store_root / kept, (two_days_ago, two_days_ago))

    assert store.sweep_staging(older_than_seconds=24 * 3600) == 1
    assert stored_files(store_root) == sorted([kept, new.key])
    assert store.sweep_staging(older_than_seconds=24 * 3600) == 0


async def test_sweep_staging_honours_the_age(store: BlobStore, store_root: Path) -> None:
    staged = await store.stage(stream([b"an hour old"]), limit=None)
    an_hour_ago = time.time() - 3600
    os.utime(store_root / staged.key, (an_hour_ago, an_hour_ago))
    assert store.sweep_staging() == 0, "the default keeps a day"
    assert store.sweep_staging(older_than_seconds=60) == 1
    assert stored_files(store_root) == []


def test_sweep_staging_on_an_empty_store(store: BlobStore) -> None:
    assert store.sweep_staging() == 0


def test_unknown_storage_schemes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file:// or s3://"):
        BlobStore(f"ftp://example.org/{tmp_path.name}")


# -- staging blocks: chunks are grouped for the writer thread ------------------------------------------

BLOCK = 1024 * 1024  # core.storage._BLOCK_BYTES: the tests below cut around it


@st.composite
def chunked_across_blocks(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """1-3 blocks' worth of bytes, cut anywhere and also right at, before and after block boundaries."""
    size = draw(st.integers(1, 3 * BLOCK + 3))
    data = random_bytes(size, draw(st.integers(0, 2**16)))
    near_blocks = st.builds(lambda k, d: min(max(k * BLOCK + d, 0), size), st.integers(1, 3), st.integers(-2, 2))
    positions = draw(st.lists(st.one_of(st.integers(0, size), near_blocks), max_size=12))
    return data, cut(data, positions)


@given(chunked_across_blocks())
@example((b"x" * BLOCK, [b"x" * BLOCK]))
@example((b"x" * (BLOCK + 1), [b"x" * BLOCK, b"x"]))
@example((b"x" * (BLOCK + 1), [b"x", b"x" * BLOCK]))
def test_any_chunking_across_blocks_stores_the_same_bytes_and_hash(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case

    async def run() -> None:
        with fresh_store() as (store, root):
            staged = await store.stage(stream(chunks), limit=len(data))
            assert (staged.sha256, staged.size) == (hashlib.sha256(data).hexdigest(), len(data))
            assert staged.head == data[:HEAD_BYTES]
            assert (root / staged.key).read_bytes() == data

            with pytest.raises(Problem) as refused:
                await store.stage(stream(chunks), limit=len(data) - 1)
            assert refused.value.code == "upload-too-large"
            assert stored_files(root) == [staged.key], "the refused upload left nothing"

    asyncio.run(run())


async def test_a_block_of_more_chunks_than_one_writev_takes(store: BlobStore, store_root: Path) -> None:
    # 1 MiB in 500-byte chunks is about 2,100 buffers for one block: more than IOV_MAX (1024).
    data = random_bytes(BLOCK + 777, seed=6)
    chunks = [data[i : i + 500] for i in range(0, len(data), 500)]
    staged = await store.stage(stream(chunks), limit=None)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert (store_root / staged.key).read_bytes() == data


async def test_a_staging_file_is_readable_by_its_owner_only(store: BlobStore, store_root: Path) -> None:
    staged = await store.stage(stream([b"patient data"]), limit=None)
    assert (store_root / staged.key).stat().st_mode & 0o777 == 0o600


async def test_cancelling_an_upload_mid_stream_leaves_nothing(store: BlobStore, store_root: Path) -> None:
    """A request task cancelled while a block is being written (the client went away) removes its file."""
    sent = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        for seed in range(3):
            yield random_bytes(BLOCK, seed)
        sent.set()
        await asyncio.Event().wait()  # the client never sends the rest
        yield b"never"

    task = asyncio.ensure_future(store.stage(stalls(), limit=None))
    await sent.wait()
    assert len(staging_files(store_root)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stored_files(store_root) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux only")
def test_staging_starts_writeback_on_linux() -> None:
    """The early writeback that keeps the final fsync short is found (a failed lookup would silently drop it)."""
    from careshare.core import storage

    assert storage._SYNC_FILE_RANGE is not None
    with tempfile.NamedTemporaryFile() as handle:
        handle.write(b"x" * 8192)
        handle.flush()
        assert storage._SYNC_FILE_RANGE(handle.fileno(), 0, 8192, storage._WRITEBACK) == 0
        assert storage._SYNC_FILE_RANGE(-1, 0, 8192, storage._WRITEBACK) == -1


@contextlib.contextmanager
def object_store() -> Iterator[BlobStore]:
    """A blob store on obstore's in-memory store: the same object-store API as S3, so the S3 staging path runs."""
    from obstore.store import MemoryStore

    with tempfile.TemporaryDirectory(prefix="careshare-blobs-") as directory:
        store = BlobStore((Path(directory) / "blobs").as_uri())
        store.store, store.local_root = MemoryStore(), None
        yield store


def object_keys(store: BlobStore) -> list[str]:
    import obstore

    return sorted(meta["path"] for page in obstore.list(store.store) for meta in page)


@given(chunked_across_blocks())
@example((b"x" * (BLOCK + 1), [b"x", b"x" * BLOCK]))
def test_object_store_staging_of_any_chunking_keeps_bytes_hash_and_limit(case: tuple[bytes, list[bytes]]) -> None:
    import obstore

    data, chunks = case

    async def run() -> None:
        with object_store() as store:
            with pytest.raises(Problem) as refused:
                await store.stage(stream(chunks), limit=len(data) - 1)
            assert refused.value.code == "upload-too-large"
            assert object_keys(store) == []

            staged = await store.stage(stream(chunks), limit=len(data))
            assert (staged.sha256, staged.size) == (hashlib.sha256(data).hexdigest(), len(data))
            assert bytes(obstore.get(store.store, staged.key).bytes()) == data
            assert await store.promote(staged) == content_key(staged.sha256)
            assert object_keys(store) == [content_key(staged.sha256)]

    asyncio.run(run())
