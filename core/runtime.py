"""One running careshare: settings, plugins, blob store and database, started and stopped together."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import TYPE_CHECKING

from careshare import PROJECT_NAME
from careshare.core import files as _files  # noqa: F401 (registers the check task with the job queue)
from careshare.core import recheck as _recheck  # noqa: F401 (and the recheck task)
from careshare.core.db import create_engine, migrate
from careshare.core.jobs import make_queue
from careshare.core.plugins import get_plugin_manager
from careshare.core.processing import Processor
from careshare.core.settings import check_settings
from careshare.core.storage import BlobStore

if TYPE_CHECKING:
    import pluggy
    from sqlalchemy.ext.asyncio import AsyncEngine

    from careshare.core.settings import Settings

__all__ = ["Careshare"]


class Careshare:
    """A plain class on purpose: the host hands it to handlers as a dependency, unvalidated."""

    def __init__(
        self,
        settings: Settings,
        plugins: pluggy.PluginManager,
        store: BlobStore,
        engine: AsyncEngine,
        reader: AsyncEngine | None = None,
    ) -> None:
        # Every plugin's settings are read now: a wrong value stops the start, naming its variable.
        check_settings(plugins, settings)
        self.settings = settings
        self.plugins = plugins
        self.store = store
        #: For transactions that write (or read, then write).
        self.engine = engine
        #: For read-only work; on SQLite its transactions never take the write lock.
        self.reader = reader or engine
        #: Runs file-type handlers in processes of their own, under the policy's limits.
        self.processor = Processor(plugins)
        #: Where checks and other background work wait for a worker (see ``careshare.core.jobs``).
        self.jobs = make_queue(
            settings.database_url, engine, engine_name=settings.queue_engine, lease_seconds=settings.job_lease_seconds
        )

    @classmethod
    def build(cls, settings: Settings, plugins: pluggy.PluginManager | None = None) -> Careshare:
        pm = plugins or get_plugin_manager(blocked=settings.disabled_plugins)
        tmp = settings.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return cls(
            settings=settings,
            plugins=pm,
            store=BlobStore(settings.storage_url, local_tmp=tmp),
            engine=create_engine(settings.database_url),
            reader=create_engine(settings.database_url, immediate=False)
            if settings.database_url.startswith("sqlite")
            else None,
        )

    async def start(self) -> None:
        """Run every pending migration (core and plugins) and sweep stale staging uploads."""
        dirs = [Path(p) for p in itertools.chain.from_iterable(self.plugins.hook.careshare_migrations())]
        dirs += [d for d in _blocked_plugin_migrations(self.settings.disabled_plugins) if d not in dirs]
        await asyncio.to_thread(migrate, self.settings.database_url, dirs)
        await asyncio.to_thread(self.store.sweep_staging)
        await self.jobs.open()
        apply_schema = getattr(self.jobs, "apply_schema", None)
        if apply_schema is not None:
            await apply_schema()

    async def run_workers(self, concurrency: int) -> None:
        """Run queued jobs (file checks ...) ``concurrency`` at a time until cancelled."""
        from careshare.core.files import run_requeue_loop

        await asyncio.to_thread(self.processor.warm)
        await asyncio.gather(self.jobs.work(self, concurrency), run_requeue_loop(self))

    async def close(self) -> None:
        await self.jobs.close()
        await self.engine.dispose()
        if self.reader is not self.engine:
            await self.reader.dispose()


def _blocked_plugin_migrations(blocked: frozenset[str]) -> list[Path]:
    """Migration directories of installed plugins that are disabled.

    A disabled plugin's tables stay migrated: its revisions may already be recorded in the database
    (Alembic refuses to start on a revision it cannot locate), and its data is kept for when it is
    enabled again. Only its ``careshare_migrations`` function runs; the plugin is not registered.
    """
    from importlib.metadata import entry_points

    dirs: list[Path] = []
    for entry in entry_points(group=PROJECT_NAME):
        if entry.name not in blocked:
            continue
        hook = getattr(entry.load(), "careshare_migrations", None)
        if callable(hook):
            dirs.extend(Path(p) for p in hook())
    return dirs
