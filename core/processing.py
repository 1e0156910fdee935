"""Run file-type handlers off the event loop, each file in a process of its own with a time and memory limit.

One hostile file (a decompression bomb, a PDF that makes qpdf spin, a video that hangs a decoder)
can then cost at most its own time limit: the process is killed and the file refused. Plugins
that are importable modules (every entry-point plugin is) run in the child; a plugin manager
holding a plugin that cannot be imported by name (an object built in a test) runs its handlers
in a thread instead, where the time limit refuses the file but cannot stop the work.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import os
import sys
from typing import TYPE_CHECKING, Any

from careshare.core.problems import FILE_UNPROCESSABLE, Problem, ProblemType

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    import pluggy

    from careshare.core.models import Processed, Source
    from careshare.core.policy import Policy

__all__ = ["PROCESSING_TIMEOUT", "Processor"]

logger = logging.getLogger(__name__)

PROCESSING_TIMEOUT = ProblemType(
    "processing-timeout",
    422,
    "File took too long to check",
    "Checking this file took longer than allowed, so it was not accepted."
    " Save or export it again (smaller, or in a common format) and upload the new copy.",
)


def _importable(plugin: object) -> str | None:
    name = getattr(plugin, "__name__", None)
    if isinstance(name, str) and sys.modules.get(name) is plugin and getattr(plugin, "__file__", None):
        return name
    return None


def _child(
    conn: Connection, modules: list[str], source: Source, kind: str, policy: Policy
) -> None:  # pragma: no cover - runs in the child process (its behaviour is tested through Processor)
    try:
        import resource

        limit = policy.memory_limit_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    try:
        from careshare.core.plugins import get_plugin_manager

        pm = get_plugin_manager(load_entrypoints=False, plugins=[importlib.import_module(m) for m in modules])
        conn.send(("ok", pm.hook.careshare_process(source=source, kind=kind, policy=policy)))
    except Problem as problem:
        t = problem.type
        conn.send(("problem", (t.code, t.status, t.title, t.detail), problem.detail, problem.extra))
    except MemoryError:
        conn.send(("error", "MemoryError"))
    except BaseException as exc:  # a handler bug or a library failure on hostile bytes
        conn.send(("error", type(exc).__name__))
    finally:
        conn.close()


class Processor:
    """Runs ``careshare_process`` for one file at a time per slot, never on the event loop."""

    def __init__(self, plugins: pluggy.PluginManager, *, max_workers: int | None = None) -> None:
        self.plugins = plugins
        self.slots = asyncio.Semaphore(max_workers or os.cpu_count() or 2)
        impls = plugins.hook.careshare_process.get_hookimpls()
        names = [_importable(impl.plugin) for impl in impls]
        self.modules: list[str] | None = None if None in names else [n for n in names if n]
        self.isolated = self.modules is not None
        if not self.isolated:
            logger.info("a careshare_process plugin is not importable by name: handlers run in threads")

    def warm(self) -> None:
        """Start the process the handlers fork from now, its modules imported, so the first check pays nothing for it."""
        if self.isolated:
            _context(self.modules or [])
            from multiprocessing import forkserver

            forkserver.ensure_running()

    async def process(self, source: Source, kind: str, policy: Policy) -> Processed | None:
        async with self.slots:
            if self.isolated:
                return await self._in_process(source, kind, policy)
            return await self._in_thread(source, kind, policy)

    async def _in_thread(self, source: Source, kind: str, policy: Policy) -> Processed | None:
        call = asyncio.to_thread(self.plugins.hook.careshare_process, source=source, kind=kind, policy=policy)
        try:
            return await asyncio.wait_for(call, policy.time_limit_seconds)
        except TimeoutError:
            raise Problem(PROCESSING_TIMEOUT) from None
        except Problem:
            raise
        except Exception as exc:
            logger.warning("handler failed kind=%s error=%s", kind, type(exc).__name__)
            raise Problem(FILE_UNPROCESSABLE) from None

    async def _in_process(self, source: Source, kind: str, policy: Policy) -> Processed | None:
        context = _context(self.modules or [])
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_child, args=(sender, self.modules, source, kind, policy), name="careshare-handler", daemon=True
        )
        child.start()
        sender.close()
        try:
            ready = await asyncio.to_thread(receiver.poll, policy.time_limit_seconds)
            if not ready:
                logger.warning("handler timed out kind=%s after=%ss", kind, policy.time_limit_seconds)
                raise Problem(PROCESSING_TIMEOUT)
            try:
                message = receiver.recv()
            except (EOFError, OSError):
                # Killed by the memory limit or a crash in a C library: the file is refused, we go on.
                logger.warning("handler process died kind=%s exitcode=%s", kind, child.exitcode)
                raise Problem(FILE_UNPROCESSABLE) from None
        finally:
            receiver.close()
            if child.is_alive():
                child.kill()
            await asyncio.to_thread(child.join, 5)
            child.close() if not child.is_alive() else None
        status, *rest = message
        if status == "ok":
            return rest[0]  # type: ignore[no-any-return]
        if status == "problem":
            (code, http_status, title, default), detail, extra = rest
            raise Problem(ProblemType(code, http_status, title, default), detail, **extra)
        logger.warning("handler failed kind=%s error=%s", kind, rest[0])
        raise Problem(FILE_UNPROCESSABLE)


_CONTEXTS: dict[str, Any] = {}


def _context(modules: list[str]) -> Any:
    """The forkserver context, its server preloaded with the handler modules (fork from a warm process)."""
    if "forkserver" not in _CONTEXTS:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["careshare.core.plugins", "careshare.core.processing", *modules])
        _CONTEXTS["forkserver"] = context
    return _CONTEXTS["forkserver"]
