"""The application factory: a Litestar app wired from the plugin manager by one InitPlugin."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.plugins import InitPlugin
from litestar.routes import HTTPRoute

from careshare import __version__
from careshare.core.models import Principal
from careshare.core.runtime import Careshare
from careshare.core.settings import Settings
from careshare.host.routes.docs import swagger_asset, swagger_page
from careshare.web.openapi import BEARER, SECURITY_SCHEMES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import pluggy
    from litestar.types import Message, Receive, Scope, Send

__all__ = ["CareshareInit", "create_app", "start_background"]

logger = logging.getLogger("careshare.host")


def _report_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        logger.error("background job stopped job=%s error=%s", task.get_name(), type(error).__name__)


async def _awaited(job: Awaitable[object]) -> object:
    return await job


async def _after(event: asyncio.Event, job: Callable[[], Awaitable[object]]) -> object:
    await event.wait()
    return await job()


def start_background(cs: Careshare) -> list[asyncio.Task[object]]:
    """Start every plugin's ``careshare_background`` job as a task (the caller cancels them)."""
    tasks: list[asyncio.Task[object]] = []
    for job in itertools.chain.from_iterable(cs.plugins.hook.careshare_background(cs=cs)):
        name = f"careshare-{getattr(job, '__qualname__', 'job')}"
        task = asyncio.create_task(_awaited(job() if callable(job) else job), name=name)
        task.add_done_callback(_report_failure)
        tasks.append(task)
    return tasks


class CareshareInit(InitPlugin):
    """Mounts the host's routes and every plugin's, and provides ``cs`` and ``caller`` to handlers."""

    def __init__(self, cs: Careshare) -> None:
        self.cs = cs

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        from careshare.core.idempotency import IDEMPOTENCY_WAIT
        from careshare.host.auth import principal
        from careshare.host.idempotency import idempotency_middleware
        from careshare.host.limits import client_limits
        from careshare.host.logging import access_log_middleware
        from careshare.host.problems import exception_handlers, refuse_unstorable_addresses
        from careshare.host.routes.files import FileController
        from careshare.host.routes.health import healthz
        from careshare.host.routes.library import LibraryController
        from careshare.host.routes.links import ROUTES as LINK_ROUTES
        from careshare.host.routes.me import MeController
        from careshare.host.routes.notifications import ClinicNotificationController
        from careshare.host.routes.patients import PatientController
        from careshare.host.routes.render import RenderController
        from careshare.host.routes.sharing import AttachmentController, AuditController, InboxController
        from careshare.host.routes.tus import ClinicUploadController, PatientUploadController

        cs = self.cs
        from careshare.host.console import console_setup
        from careshare.host.console.session import CONSOLE_ON

        plugin_routes = list(itertools.chain.from_iterable(cs.plugins.hook.careshare_routes()))
        api = [
            PatientController,
            LibraryController,
            FileController,
            RenderController,
            AttachmentController,
            InboxController,
            ClinicNotificationController,
            AuditController,
            MeController,
            PatientUploadController,
            ClinicUploadController,
            *plugin_routes,
        ]
        app_config.route_handlers.extend([healthz, swagger_asset, *api, *LINK_ROUTES])
        if cs.settings.get(CONSOLE_ON):
            console = console_setup(cs)  # its pages; its script reaches the API under /console/api (CareshareApp)
            app_config.route_handlers.extend(console.routers)
            app_config.template_config = console.templates
            app_config.state.update(
                {
                    "console_nav": console.nav,
                    "console_item_pages": console.item_pages,
                    "console_clinic_pages": console.clinic_pages,
                }
            )
        app_config.dependencies.update(
            {"cs": Provide(lambda: cs, use_cache=True, sync_to_thread=False), "caller": Provide(principal)}
        )
        app_config.exception_handlers.update(exception_handlers)
        app_config.middleware.insert(0, access_log_middleware)
        app_config.middleware.insert(1, refuse_unstorable_addresses)
        app_config.middleware.insert(2, client_limits)  # body timeouts, upload caps (host/limits.py)
        app_config.middleware.insert(3, idempotency_middleware)  # Idempotency-Key on POSTs (host/idempotency.py)
        cs.settings.get(IDEMPOTENCY_WAIT)  # a wrong value stops the server at start-up, not at a retry
        app_config.signature_namespace.update({"Careshare": Careshare, "Principal": Principal})

        @asynccontextmanager
        async def lifespan(_app: Litestar) -> AsyncIterator[None]:
            from careshare.core.notifications import run_delivery_loop
            from careshare.core.tus import run_sweeper

            await cs.start()
            delivery = asyncio.create_task(run_delivery_loop(cs.engine, cs.plugins, cs=cs), name="careshare-delivery")
            swept = asyncio.Event()
            sweeper = asyncio.create_task(run_sweeper(cs, first_round=swept), name="careshare-upload-sweeper")
            tasks = [delivery, sweeper, *start_background(cs)]
            if cs.settings.workers > 0:
                # Checks start once the start-up sweep has judged what a crash left, not while it does.
                workers = _after(swept, lambda: cs.run_workers(cs.settings.workers))
                tasks.append(asyncio.create_task(workers, name="careshare-workers"))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                    # A job that failed earlier was logged by _report_failure; shutdown goes on.
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                await cs.close()

        app_config.lifespan.append(lifespan)
        return app_config


class CareshareApp(Litestar):
    """Litestar, with the console's ``/console/api/v1/...`` handed to the API's routes before routing,
    and an ``OPTIONS`` answer whose ``Allow`` lists every method of the path."""

    _allowed: dict[str, bytes] | None = None
    #: ``console_api_scope`` when the console is served; without it, /console/api is no address.
    _console_api: Callable[[Scope], Scope] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._console_api is not None:
            scope = self._console_api(scope)
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            send = self._with_allow(scope, send)
        await super().__call__(scope, receive, send)

    def _with_allow(self, scope: Scope, send: Send) -> Send:
        """``send`` with the path's ``Allow``: Litestar's own names only the methods of the first
        handlers registered for a path (a plugin's ``POST`` beside the host's ``GET`` went missing)."""
        if self._allowed is None:
            self._allowed = {
                route.path_format: ", ".join(sorted(route.methods)).encode()
                for route in self.routes
                if isinstance(route, HTTPRoute)
            }
        allowed = self._allowed

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                allow = allowed.get(scope.get("path_template", ""))
                if allow is not None:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                    message = {**message, "headers": [*headers, (b"allow", allow)]}
            await send(message)

        return sending


def create_app(settings: Settings | None = None, plugins: pluggy.PluginManager | None = None) -> Litestar:
    """The careshare API; ``settings`` default to the ``CARESHARE_*`` environment."""
    cs = Careshare.build(settings or Settings.from_env(), plugins)
    app = CareshareApp(
        plugins=[CareshareInit(cs)],
        openapi_config=OpenAPIConfig(
            title="careshare",
            version=__version__,
            path="/schema",
            render_plugins=[swagger_page()],  # its assets from this server (host/routes/docs.py)
            components=Components(security_schemes=SECURITY_SCHEMES),
            security=[{BEARER: []}],  # every operation, but those documented as public
        ),
        request_max_body_size=1024 * 1024,
        # Logging is the process's (careshare serve --log-json), not Litestar's default.
        logging_config=None,
    )
    app.state.careshare = cs
    from careshare.host.console import console_api_scope
    from careshare.host.console.session import CONSOLE_ON

    if cs.settings.get(CONSOLE_ON):
        app._console_api = console_api_scope
    from careshare.web.openapi import document_problems

    document_problems(app)  # refusals are RFC 9457 problems: the OpenAPI says so (host/openapi.py)
    return app
