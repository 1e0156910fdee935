"""Background jobs: work that leaves the request path, at least once, on one interface and two engines.

A task is an ``async def task(cs, *, attempts, **args)`` registered by name with :func:`task`;
its effect must be once however often it runs (check the state it changes before changing it).
``cs.jobs.defer(name, key=..., **args)`` queues it; one job per ``key`` waits or runs at a time.

- :class:`LocalQueue`, the embedded default: a table in careshare's own database, run by a pool
  in the API process (or by ``careshare worker`` beside it). A job is leased while it runs and
  the lease is renewed; a process that dies lets its lease lapse and another run takes the job.
- :class:`ProcrastinateQueue`, for PostgreSQL: procrastinate's queue (its own tables in the same
  database), run by ``careshare worker`` processes and, unless told not to, by the API process.
  Workers send heartbeats; a worker that stops sending them (SIGKILL) has its jobs retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from careshare.core import db
from careshare.core.ids import new_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from careshare.core.runtime import Careshare

__all__ = [
    "MAX_ATTEMPTS",
    "TASKS",
    "Doorbell",
    "JobQueue",
    "LocalQueue",
    "ProcrastinateQueue",
    "RetryLater",
    "make_queue",
    "task",
]

logger = logging.getLogger(__name__)

#: Runs of one job before it is given up: a task sees ``attempts`` and settles its work on the last.
MAX_ATTEMPTS = 8
#: Seconds between two runs of a failed job: 2, 4, 8 ... at most this.
LONGEST_RETRY_SECONDS = 300.0
#: How often an idle pool looks for jobs deferred by other processes (its own wake it at once, and
#: on SQLite so do those of other processes on the same host: see :class:`Doorbell`).
IDLE_POLL_SECONDS = 1.0
#: The longest path a unix socket can be bound at (``sun_path`` on Linux, less its NUL).
_SOCKET_PATH_MAX = 107

TASKS: dict[str, Callable[..., Awaitable[None]]] = {}


def task(name: str) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """Register ``async def fn(cs, *, attempts, **args)`` as the task ``name`` (args must be JSON)."""

    def register(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        TASKS[name] = fn
        return fn

    return register


class RetryLater(Exception):
    """Raised by a task whose work waits on something outside careshare (a malware scanner that is down).

    The job runs again after ``seconds`` and this run does not count toward ``MAX_ATTEMPTS``: the
    task sees the same ``attempts`` next time, so an outage never makes it give its work up. The
    task picks its own backoff (it keeps its count of waits in its own state).
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = max(float(seconds), 0.0)


#: The argument a procrastinate job carries the runs of earlier jobs in (RetryLater defers a new job).
_SPENT_ARG = "_careshare_spent_attempts"


def retry_delay(attempts: int) -> float:
    return min(2.0**attempts, LONGEST_RETRY_SECONDS)


class JobQueue(Protocol):
    """What the rest of careshare uses of a queue engine."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def defer(self, name: str, *, key: str, **args: Any) -> None:
        """Queue ``name(**args)``; a job with the same ``key`` already waiting or running makes this a no-op."""

    async def waiting(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` have a job waiting or running."""

    async def work(self, cs: Careshare, concurrency: int) -> None:
        """Run jobs with ``concurrency`` at once until cancelled."""


async def _run(cs: Careshare, name: str, args: dict[str, Any], attempts: int) -> None:
    fn = TASKS.get(name)
    if fn is None:
        raise LookupError(f"no careshare task named {name!r}")
    await fn(cs, attempts=attempts, **args)


class Doorbell:
    """Wakes the idle pools of the other processes on one SQLite database as soon as a job is queued.

    SQLite has nothing like PostgreSQL's LISTEN/NOTIFY, and a ``careshare worker`` beside the API
    process would otherwise see a new job only at its next poll (half of ``IDLE_POLL_SECONDS`` on
    average, for every upload). Each pool binds a unix datagram socket in a folder beside the
    database file (mode 0700, so only careshare's own user can ring), and each defer sends one
    byte to every socket there. Best effort: a datagram that is lost leaves the job to the poll.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sock: socket.socket | None = None
        self._path: str | None = None

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> Doorbell | None:
        """The doorbell of a file-backed SQLite database (``careshare.db`` -> ``careshare.db.wake/``), else None."""
        database = engine.url.database
        if engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return None
        path = Path(database).resolve()
        return cls(path.with_name(f"{path.name}.wake"))

    def listen(self, wake: asyncio.Event) -> None:
        """Set ``wake`` whenever another process rings (from this event loop); polling only if the socket cannot be made."""
        path = str(self.folder / f"{os.getpid()}-{secrets.token_hex(4)}.sock")
        if len(os.fsencode(path)) > _SOCKET_PATH_MAX:
            logger.info("job doorbell off (its folder's path is too long for a socket): polling only")
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            sock.setblocking(False)
            sock.bind(path)
        except OSError as exc:
            sock.close()
            logger.info("job doorbell off error=%s: polling only", type(exc).__name__)
            return

        def rung() -> None:
            with contextlib.suppress(OSError):  # BlockingIOError once every datagram is read
                while sock.recv(16):
                    pass
            wake.set()

        asyncio.get_running_loop().add_reader(sock.fileno(), rung)
        self._sock, self._path = sock, path

    def close(self) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self._path or "")
        self._sock = self._path = None

    def ring(self) -> None:
        """Send a byte to every pool listening on this database (its own excepted); never raises."""
        try:
            entries = [e.path for e in os.scandir(self.folder) if e.name.endswith(".sock") and e.path != self._path]
        except OSError:
            return
        if not entries:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for path in entries:
                try:
                    sock.sendto(b"\0", path)
                except (ConnectionRefusedError, FileNotFoundError):  # a socket left by a process that is gone
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                except OSError:  # its queue is full (it has been rung already), or anything else: the poll remains
                    pass


class LocalQueue:
    """Jobs in careshare's own ``jobs`` table, leased while they run (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, lease_seconds: float = 30.0) -> None:
        self.engine = engine
        self.lease = timedelta(seconds=lease_seconds)
        self._wake = asyncio.Event()
        self.doorbell = Doorbell.for_engine(engine)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def defer(self, name: str, *, key: str, **args: Any) -> None:
        now = db.utcnow()
        row = {
            "id": new_id(),
            "task": name,
            "key": key,
            "args": args,
            "attempts": 0,
            "run_after": now,
            "created_at": now,
        }
        async with self.engine.begin() as conn:
            await conn.execute(db.insert_ignore(conn, db.jobs).values(**row))
        self._wake.set()
        if self.doorbell is not None:
            self.doorbell.ring()

    async def waiting(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        if not keys:
            return set()
        async with self.engine.connect() as conn:
            return set((await conn.execute(sa.select(db.jobs.c.key).where(db.jobs.c.key.in_(keys)))).scalars())

    async def claim(self) -> sa.Row[Any] | None:
        """Lease the job due first (compare-and-set on ``attempts``), or None if none is due."""
        now = db.utcnow()
        free = sa.or_(db.jobs.c.leased_until.is_(None), db.jobs.c.leased_until < now)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(db.jobs).where(db.jobs.c.run_after <= now, free).order_by(db.jobs.c.run_after).limit(1)
                )
            ).first()
            if row is None:
                return None
            claimed = await conn.execute(
                sa.update(db.jobs)
                .where(db.jobs.c.id == row.id, db.jobs.c.attempts == row.attempts, free)
                .values(attempts=row.attempts + 1, leased_until=now + self.lease)
            )
            if claimed.rowcount != 1:
                return None
        if row.leased_until is not None:
            logger.warning("taking over a job whose lease lapsed task=%s attempt=%s", row.task, row.attempts + 1)
        return row

    async def _renew(self, job_id: str, attempts: int) -> None:
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            async with self.engine.begin() as conn:
                await conn.execute(
                    sa.update(db.jobs)
                    .where(db.jobs.c.id == job_id, db.jobs.c.attempts == attempts)
                    .values(leased_until=db.utcnow() + self.lease)
                )

    async def run_one(self, cs: Careshare, row: sa.Row[Any]) -> None:
        attempts = row.attempts + 1
        mine = sa.and_(db.jobs.c.id == row.id, db.jobs.c.attempts == attempts)
        renew = asyncio.create_task(self._renew(row.id, attempts))
        try:
            await _run(cs, row.task, dict(row.args), attempts)
        except asyncio.CancelledError:
            # Shutting down: let the job go at once rather than when its lease lapses (best effort,
            # bounded: a database that does not answer leaves the lease to lapse).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    async with self.engine.begin() as conn:
                        await conn.execute(sa.update(db.jobs).where(mine).values(leased_until=None))
            raise
        except RetryLater as later:
            logger.info("job waits task=%s attempt=%s retry_in=%s", row.task, attempts, later.seconds)
            async with self.engine.begin() as conn:
                retry_at = db.utcnow() + timedelta(seconds=later.seconds)
                await conn.execute(
                    sa.update(db.jobs)
                    .where(mine)
                    .values(attempts=row.attempts, leased_until=None, run_after=retry_at)  # this run does not count
                )
        except Exception as exc:
            logger.warning("job failed task=%s attempt=%s error=%s", row.task, attempts, type(exc).__name__)
            async with self.engine.begin() as conn:
                if attempts >= MAX_ATTEMPTS:
                    await conn.execute(sa.delete(db.jobs).where(mine))
                else:
                    retry_at = db.utcnow() + timedelta(seconds=retry_delay(attempts))
                    await conn.execute(sa.update(db.jobs).where(mine).values(leased_until=None, run_after=retry_at))
        else:
            async with self.engine.begin() as conn:
                await conn.execute(sa.delete(db.jobs).where(mine))
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew

    async def work(self, cs: Careshare, concurrency: int) -> None:
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()
        if self.doorbell is not None:
            self.doorbell.listen(self._wake)
        try:
            while True:
                await slots.acquire()
                try:
                    row = await self.claim()
                except Exception as exc:  # the database is busy or away: try again shortly
                    logger.warning("job claim failed error=%s", type(exc).__name__)
                    row = None
                if row is None:
                    slots.release()
                    self._wake.clear()
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                    # that races its timeout, and this loop would then never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_POLL_SECONDS):
                            await self._wake.wait()
                    continue
                job = asyncio.create_task(self.run_one(cs, row))
                running.add(job)
                job.add_done_callback(lambda done: (running.discard(done), slots.release()))
        finally:
            if self.doorbell is not None:
                self.doorbell.close()
            for job in running:
                job.cancel()
            await asyncio.gather(*running, return_exceptions=True)


class ProcrastinateQueue:
    """procrastinate on PostgreSQL: workers in any process, heartbeats, stalled jobs retried."""

    def __init__(self, database_url: str, *, heartbeat_seconds: float = 5.0, stalled_seconds: float = 20.0) -> None:
        import procrastinate

        self.heartbeat = heartbeat_seconds
        self.stalled = stalled_seconds
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=_conninfo(database_url)))
        self._opened = False
        self._known: set[str] = set()

    def _register(self, name: str) -> None:
        # procrastinate retries a failed job; the task sees how many runs it had.
        if name in self._known:
            return
        from procrastinate import RetryStrategy

        async def run(context: Any, **args: Any) -> None:
            cs = context.additional_context["careshare"]
            spent = int(args.pop(_SPENT_ARG, 0))
            try:
                await _run(cs, name, args, spent + context.job.attempts + 1)
            except RetryLater as later:
                # procrastinate counts every run of a job, so the wait is a new job under the same
                # key carrying the runs that counted; this one ends (the key's lock keeps them apart).
                logger.info("job waits task=%s retry_in=%s", name, later.seconds)
                key = context.job.queueing_lock or context.job.lock
                await self._defer(name, key, {**args, _SPENT_ARG: spent + context.job.attempts}, later.seconds)

        retry = RetryStrategy(max_attempts=MAX_ATTEMPTS - 1, exponential_wait=2)
        self.app.task(name=name, pass_context=True, retry=retry)(run)
        self._known.add(name)

    async def open(self) -> None:
        if not self._opened:
            await self.app.open_async()
            self._opened = True
        for name in TASKS:
            self._register(name)

    async def close(self) -> None:
        if self._opened:
            await self.app.close_async()
            self._opened = False

    async def apply_schema(self) -> None:
        """Create procrastinate's tables once (an advisory lock serialises processes starting together)."""
        async with self.app.connector.pool.connection() as conn, conn.transaction():  # type: ignore[attr-defined]
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('careshare:procrastinate-schema'))")
            exists = await (await conn.execute("SELECT to_regclass('procrastinate_jobs')")).fetchone()
            if exists and exists[0] is not None:
                return
            await conn.execute(self.app.schema_manager.get_schema())

    async def defer(self, name: str, *, key: str, **args: Any) -> None:
        self._register(name)
        await self._defer(name, key, args, None)

    async def _defer(self, name: str, key: str, args: dict[str, Any], in_seconds: float | None) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        later = {} if in_seconds is None else {"schedule_in": {"seconds": in_seconds}}
        with contextlib.suppress(AlreadyEnqueued):
            await self.app.configure_task(name, lock=key, queueing_lock=key, **later).defer_async(**args)

    async def waiting(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        if not keys:
            return set()
        rows = await self.app.connector.execute_query_all_async(
            "SELECT lock FROM procrastinate_jobs WHERE status IN ('todo', 'doing') AND lock = ANY(%(keys)s)",
            keys=keys,
        )
        return {row["lock"] for row in rows}

    async def _retry_stalled(self) -> None:
        while True:
            await asyncio.sleep(self.stalled / 2)
            try:
                for job in await self.app.job_manager.get_stalled_jobs(seconds_since_heartbeat=self.stalled):
                    logger.warning("retrying a stalled job task=%s", job.task_name)
                    await self.app.job_manager.retry_job(job)
                await self.app.job_manager.prune_stalled_workers(seconds_since_heartbeat=self.stalled)
            except Exception as exc:
                logger.warning("stalled-job round failed error=%s", type(exc).__name__)

    async def work(self, cs: Careshare, concurrency: int) -> None:
        recovery = asyncio.create_task(self._retry_stalled())
        try:
            await self.app.run_worker_async(
                concurrency=concurrency,
                install_signal_handlers=False,
                additional_context={"careshare": cs},
                update_heartbeat_interval=self.heartbeat,
                stalled_worker_timeout=self.stalled,
                delete_jobs="successful",
                name=f"careshare-{os.getpid()}",
            )
        finally:
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery


def make_queue(database_url: str, engine: AsyncEngine, *, engine_name: str, lease_seconds: float) -> JobQueue:
    """``engine_name`` ``procrastinate`` (PostgreSQL only) or ``local``."""
    if engine_name == "procrastinate":
        return ProcrastinateQueue(database_url, heartbeat_seconds=lease_seconds / 4, stalled_seconds=lease_seconds)
    return LocalQueue(engine, lease_seconds=lease_seconds)


def _conninfo(database_url: str) -> str:
    """A libpq URL from an SQLAlchemy one (``postgresql+asyncpg://`` -> ``postgresql://``)."""
    scheme, sep, rest = database_url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"
