"""The clinic's web console and the patient's view: server-rendered pages under ``/console``.

The core here knows people, files and the library; every channel adds its own pages, templates and
links through ``careshare_console`` (``careshare.web.ConsolePages``), so a disabled plugin's pages
and links are gone with it. Pages are Jinja2 (autoescaped), enhanced by htmx and one small script
for uploads with a progress bar; both are served from ``static/``, nothing from elsewhere.

``/console/api/v1/...`` is the JSON API for the console's own script (uploads, file bytes,
thumbnails), with the session cookie where the API takes a bearer token: :func:`console_api_scope`
hands such a request to the API's own routes before routing (one set of handlers, the same limits),
marked so that ``caller`` reads the cookie. It is not in the OpenAPI document.
"""

from __future__ import annotations

import itertools
import zoneinfo
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader, select_autoescape
from litestar import Router
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from markupsafe import Markup

from careshare.core.problems import INVALID_TOKEN, NOT_FOUND, Problem
from careshare.core.sharing import MAX_REASON_CHARS
from careshare.host.console.session import DEV_LOGIN, console_caller, end_session, session_problem
from careshare.host.problems import INTERNAL_ERROR, exception_handlers
from careshare.web.console import CONSOLE, NOTICE_COOKIE, ConsolePages, NavEntry, leave_notice, read_notice
from careshare.web.problems import BAD_REQUEST

if TYPE_CHECKING:
    from litestar import Request
    from litestar.response import Response
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from careshare.core.runtime import Careshare

__all__ = [
    "CONSOLE_API",
    "CONSOLE_API_SCOPE",
    "console_api_scope",
    "console_pages",
    "console_routers",
    "template_config",
    "when",
]

HERE = Path(__file__).parent
#: The core's own links (each channel adds its own through careshare_console).
CORE_NAV = (
    NavEntry("Patients", "/patients", order=10),
    NavEntry("Library", "/library", order=20),
    NavEntry("Inbox", "/inbox", order=5),
    NavEntry("Files", "/patients/{pid}/files", place="patient", quick_action="Share a file", order=90),
    NavEntry("Inbox", "/me", audience="patient", order=10),
    NavEntry("My files", "/me/files", audience="patient", order=90),
)


def console_pages(cs: Careshare) -> list[ConsolePages]:
    """Every enabled plugin's console pages."""
    return list(itertools.chain.from_iterable(cs.plugins.hook.careshare_console()))


def navigation(pages: list[ConsolePages]) -> tuple[NavEntry, ...]:
    entries = [*CORE_NAV, *itertools.chain.from_iterable(p.nav for p in pages)]
    return tuple(sorted(entries, key=lambda e: (e.order, e.label)))


def template_config(pages: list[ConsolePages]) -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja2 with the core's templates (``console/...``) and each plugin's under its name."""
    prefixed = {p.name: FileSystemLoader(p.templates) for p in pages if p.templates is not None}
    environment = Environment(
        loader=ChoiceLoader([FileSystemLoader(HERE / "templates"), PrefixLoader(prefixed)]),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals.update(
        nav_for=_nav_for,
        notice_of=_notice_of,
        item_page=_item_page,
        clinic_page=_clinic_page,
        max_reason=MAX_REASON_CHARS,
        CONSOLE=CONSOLE,
        file_size=file_size,
        when=when,
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def when(instant: datetime | str | None, zone: str | None = None, *, date_only: bool = False) -> Markup:
    """``<time>`` of ``instant``: in ``zone`` when given (a schedule's own), else in the reader's.

    Without a zone the text is UTC and marked ``data-local``: the console's script rewrites it in
    the browser's own time zone (a page read without scripts still says which zone it is in).
    A date alone (a due date, a date of birth) is shown as the date it is, never shifted.
    """
    if not instant:
        return Markup("")
    if isinstance(instant, str):  # an API view's ISO 8601 text
        instant = datetime.fromisoformat(instant)
    aware = instant if instant.tzinfo else instant.replace(tzinfo=UTC)
    try:
        shown = aware.astimezone(zoneinfo.ZoneInfo(zone)) if zone else aware.astimezone(UTC)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        shown = aware.astimezone(UTC)
    if date_only:
        return Markup('<time datetime="{}">{}</time>').format(shown.date().isoformat(), shown.strftime("%d %b %Y"))
    local = "" if zone else Markup(" data-local")
    text = f"{shown.strftime('%d %b %Y %H:%M')} {shown.tzname() or 'UTC'}"
    return Markup('<time datetime="{}"{}>{}</time>').format(aware.isoformat(), local, text)


def file_size(size: int | None) -> str:
    """``1.4 MB``: a size as people read it."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} bytes"


def _nav_for(request: Request[Any, Any, Any], place: str = "sidebar", **values: str) -> list[dict[str, Any]]:
    """The links ``place`` shows to whoever is signed in, each with its ``href`` and whether it is the current page."""
    who = request.state.get("careshare_principal")
    if who is None:
        return []
    audience = "clinician" if who.is_clinician else "patient"
    entries = [e for e in request.app.state.console_nav if e.audience == audience and e.place == place]
    shown = []
    for entry in entries:
        href = entry.href(**values)
        current = request.url.path == href or (href != CONSOLE + "/me" and request.url.path.startswith(href + "/"))
        shown.append({"entry": entry, "href": href, "current": current})
    return shown


def _item_page(request: Request[Any, Any, Any], notification: Any) -> str | None:
    """Where the patient's view shows the item a notification is about (None: no page for its target)."""
    path = request.app.state.console_item_pages.get(notification.target)
    if path is None or not notification.item_id:
        return None
    return CONSOLE + path.format(item_id=notification.item_id)


def _clinic_page(request: Request[Any, Any, Any], notification: Any) -> str:
    """Where a clinician reads what a clinic notification is about: its plugin's page, a file, else the patient."""
    if notification.target is None and notification.item_id:  # a patient's own upload: the file itself
        return f"{CONSOLE}/files/{notification.item_id}"
    path = request.app.state.console_clinic_pages.get(notification.target)
    if path is None:
        return f"{CONSOLE}/patients/{notification.patient_id}"
    return CONSOLE + path.format(patient_id=notification.patient_id, item_id=notification.item_id or "")


def _notice_of(request: Request[Any, Any, Any]) -> dict[str, Any] | None:
    """The one-shot notice the last form left (``see_other`` or a refused form), if any."""
    return read_notice(request.cookies.get(NOTICE_COOKIE))


def notice_once(app: ASGIApp) -> ASGIApp:
    """Clears the notice cookie on the first page that is not a redirect (the page that shows it)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        had_notice = NOTICE_COOKIE.encode() in headers.get(b"cookie", b"")

        async def sending(message: Message) -> None:
            if had_notice and message["type"] == "http.response.start" and not 300 <= message["status"] < 400:
                cleared = f"{NOTICE_COOKIE}=; Path={CONSOLE}; Max-Age=0; HttpOnly; SameSite=Strict"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cleared.encode())]}
            await send(message)

        await app(scope, receive, sending)

    return middleware


def _back(request: Request[Any, Any, Any]) -> str:
    """Where a refused form goes back to: the console page it was sent from, else the console's home."""
    referer = request.headers.get("referer", "")
    base = str(request.base_url).rstrip("/")
    if referer.startswith(base + CONSOLE):
        return referer[len(base) :]
    return CONSOLE + "/"


def _refused(request: Request[Any, Any, Any], problem: Problem) -> Response[Any]:
    """A problem on a console page: sign in again, back to the form with its sentence, or a page that says it."""
    if session_problem(problem) and request.url.path != CONSOLE + "/login":
        response = end_session(Redirect(path=CONSOLE + "/login", status_code=303))
        if problem.type is INVALID_TOKEN:  # a session that was there has ended (expired, or a new key)
            leave_notice(
                response, {"kind": "error", "text": "Your session has ended. Sign in again.", "code": problem.code}
            )
        return response
    if request.method != "GET":
        return leave_notice(Redirect(path=_back(request), status_code=303), _notice(problem))
    from careshare.web.console import console_page

    return console_page(
        "console/problem.html", title=problem.type.title, problem=problem, status_code=problem.type.status
    )


def _notice(problem: Problem) -> dict[str, Any]:
    """A refusal as the form's page shows it: its title, its sentence (or each field's), its code."""
    errors = [_error_line(e) for e in problem.extra.get("errors") or []]
    text = "" if len(errors) > 1 else problem.detail
    return {"kind": "error", "title": problem.type.title, "text": text, "code": problem.code, "errors": errors}


def _error_line(error: Any) -> str:
    """``name: give the patient's name``: an API error naming a form field as the form names it."""
    if isinstance(error, dict):
        error = f"{error.get('field') or ''}: {error.get('message') or ''}".strip(": ")
    return str(error).removeprefix("$.")


def _console_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, Problem):
        return _refused(request, exc)
    if isinstance(exc, NotFoundException):
        return _refused(request, Problem(NOT_FOUND))
    if isinstance(exc, ValidationException | HTTPException) and 400 <= exc.status_code < 500:
        return _refused(request, Problem(BAD_REQUEST, "This page could not use what was sent. Go back and try again."))
    exception_handlers[Exception](request, exc)  # logged as the API logs it: type and frames, no message
    return _refused(request, Problem(INTERNAL_ERROR))


#: Requests under this prefix are the API's, made by the console's script with the session cookie.
CONSOLE_API = CONSOLE + "/api"
#: The scope key marking a request that came in under :data:`CONSOLE_API` (``caller`` is then the cookie's).
CONSOLE_API_SCOPE = "careshare.console_api"


def console_api_scope(scope: Scope) -> Scope:
    """``/console/api/v1/x`` as the API's ``/v1/x`` (marked, the prefix kept as ``root_path``); others as they are.

    The console's script reaches the API under ``/console`` so that the session cookie (path
    ``/console``, SameSite=Strict) goes with it. Handing the request on before routing keeps one set
    of route handlers: the API's limits, problems and checks are the console's, word for word.
    ``root_path`` keeps the address the browser used in ``request.url`` (a tus ``Location``, a
    problem's ``instance``).
    """
    if scope["type"] != "http" or not scope["path"].startswith(CONSOLE_API + "/v1/"):
        return scope
    raw = scope.get("raw_path") or b""
    forwarded: dict[str, Any] = {
        **scope,
        "path": scope["path"][len(CONSOLE_API) :],
        "root_path": scope.get("root_path", "") + CONSOLE_API,
        CONSOLE_API_SCOPE: True,
    }
    if raw.startswith(CONSOLE_API.encode()):
        forwarded["raw_path"] = raw[len(CONSOLE_API) :]
    return forwarded  # type: ignore[return-value]


def console_routers(cs: Careshare) -> list[Any]:
    """The console's routers: its pages (the core's and every plugin's) and its static files."""
    from careshare.host.console.pages import CORE_PAGES

    pages = console_pages(cs)
    session = {"caller": Provide(console_caller)}
    plugin_routes = list(itertools.chain.from_iterable(p.routes for p in pages))
    return [
        Router(
            CONSOLE,
            route_handlers=[*CORE_PAGES, *plugin_routes],
            dependencies=session,
            exception_handlers=dict.fromkeys(exception_handlers, _console_problem),
            middleware=[notice_once],
            include_in_schema=False,
        ),
        create_static_files_router(
            path=CONSOLE + "/static", directories=[HERE / "static"], include_in_schema=False, name="console-static"
        ),
    ]


@attrs.frozen
class ConsoleSetup:
    """What the app factory needs: the routers, the template config, the navigation for app.state."""

    routers: list[Any]
    templates: TemplateConfig[JinjaTemplateEngine]
    nav: tuple[NavEntry, ...]
    #: target -> the patient's page of such an item (``{item_id}`` in it), from every plugin.
    item_pages: dict[str, str]
    #: target -> the clinician's page of such an item (``{patient_id}``, ``{item_id}``), from every plugin.
    clinic_pages: dict[str, str]


def console_setup(cs: Careshare) -> ConsoleSetup:
    cs.settings.get(DEV_LOGIN)  # a wrong value stops the server at start-up, not at the first sign-in
    pages = console_pages(cs)
    item_pages = {target: path for p in pages for target, path in p.item_pages.items()}
    clinic_pages = {target: path for p in pages for target, path in p.clinic_pages.items()}
    return ConsoleSetup(console_routers(cs), template_config(pages), navigation(pages), item_pages, clinic_pages)
