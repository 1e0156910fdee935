"""The console kit: how a plugin adds its pages to the clinic's web console and to the patient's view.

A plugin answers ``careshare_console`` with :class:`ConsolePages`: Litestar handlers (paths under
``/console``), a folder of Jinja templates (found as ``<name>/<file>``) and its navigation entries.
The console's core (``careshare.host.console``) mounts them behind the session cookie: the guards
``clinician``, ``patient`` and ``signed_in`` work in console handlers exactly as in API handlers.

Pages follow post/redirect/get: a form posts, the handler acts and answers :func:`see_other` with a
notice; a :class:`~careshare.core.problems.Problem` raised by the action goes back to the page the
form was on with the problem's title and sentence shown (the console's exception handler does it).
Nothing a patient typed travels in a URL: searches are posted, ids are opaque.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

import attrs
from litestar.response import Redirect, Template

from careshare.core.problems import Problem
from careshare.web.problems import INVALID_REQUEST, REQUEST_TOO_LARGE

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from litestar import Request

__all__ = [
    "CONSOLE",
    "NOTICE_COOKIE",
    "ConsolePages",
    "NavEntry",
    "console_page",
    "form_data",
    "form_text",
    "form_values",
    "leave_notice",
    "read_notice",
    "see_other",
]

#: Where the console is served; every path of a plugin's console handlers is below it.
CONSOLE = "/console"
#: The one-shot notice the next page shows (a short sentence, never patient data).
NOTICE_COOKIE = "careshare_notice"
#: A console form is a few fields of text; uploads go through the API's upload routes.
MAX_FORM_BYTES = 256 * 1024

Audience = Literal["clinician", "patient"]
Place = Literal["sidebar", "patient"]


@attrs.frozen
class NavEntry:
    """One link of the console's navigation.

    ``place="sidebar"`` is the sidebar of ``audience`` (clinicians or the patient's view);
    ``place="patient"`` is a tab of the patient's profile, its ``path`` holding ``{pid}``, and with
    ``quick_action`` it is also a button among the profile's Quick Actions.
    """

    label: str
    path: str
    audience: Audience = "clinician"
    place: Place = "sidebar"
    quick_action: str | None = None
    #: Lower comes first; the core's own entries use 10 (patients), 20 (library), 90 (files).
    order: int = 50

    def href(self, **values: str) -> str:
        return CONSOLE + self.path.format(**values)


@attrs.frozen
class ConsolePages:
    """What one plugin adds to the console: handlers, templates, navigation."""

    #: The templates' namespace: ``<name>/thread.html`` is ``templates / "thread.html"``.
    name: str
    routes: Sequence[Any] = ()
    templates: Path | None = None
    nav: Sequence[NavEntry] = ()
    #: Where the patient reads an item of each of the plugin's targets: ``{"chat-message": "/me/chat"}``
    #: (``{item_id}`` is filled in). The inbox links each notification there.
    item_pages: Mapping[str, str] = attrs.field(factory=dict)
    #: Where a clinician reads an item of each target, for the clinic's inbox (what a patient sent):
    #: ``{"chat-message": "/patients/{patient_id}/chat"}`` (``{patient_id}``, ``{item_id}`` filled in).
    clinic_pages: Mapping[str, str] = attrs.field(factory=dict)


def console_page(template: str, *, title: str, status_code: int = 200, **context: Any) -> Template:
    """The page ``template`` (extending ``console/base.html``) with ``title`` in the heading and the tab."""
    return Template(template_name=template, context={"title": title, **context}, status_code=status_code)


def see_other(path: str, notice: str | None = None) -> Redirect:
    """Answer a form: ``303`` to ``path`` (under :data:`CONSOLE`), the next page showing ``notice``."""
    response = Redirect(path=path if path.startswith(CONSOLE) else CONSOLE + path, status_code=303)
    if notice:
        leave_notice(response, {"kind": "ok", "text": notice})
    return response


def leave_notice(response: Redirect, notice: Mapping[str, Any]) -> Redirect:
    """Set the one-shot notice the next page shows (``kind``, ``title``, ``text``, ``code``, ``errors``)."""
    errors = [str(e)[:300] for e in notice.get("errors") or []][:12]  # a cookie holds about 4 KB
    packed = json.dumps({**notice, "errors": errors}, separators=(",", ":")).encode()
    value = base64.urlsafe_b64encode(packed).decode().rstrip("=")
    response.set_cookie(NOTICE_COOKIE, value, path=CONSOLE, httponly=True, samesite="strict", max_age=60)
    return response


def read_notice(value: str | None) -> dict[str, Any] | None:
    """The notice :func:`leave_notice` set, or None for no (or a mangled) cookie."""
    if not value:
        return None
    try:
        notice = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except ValueError:
        return None
    if not isinstance(notice, dict):
        return None
    shown: dict[str, Any] = {key: str(notice.get(key) or "") for key in ("kind", "title", "text", "code")}
    errors = notice.get("errors")
    shown["errors"] = [str(e) for e in errors] if isinstance(errors, list) else []
    return shown


async def form_data(request: Request[Any, Any, Any]) -> dict[str, str | list[str]]:
    """The posted form's fields (urlencoded), a field given more than once as a list of its values."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Problem(REQUEST_TOO_LARGE)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Problem(
            INVALID_REQUEST, "The form was not sent as UTF-8 text. Reload the page and send it again."
        ) from None
    fields: dict[str, str | list[str]] = {}
    for key, value in pairs:
        held = fields.get(key)
        if held is None:
            fields[key] = value
        else:
            fields[key] = [*held, value] if isinstance(held, list) else [held, value]
    return fields


def form_values(fields: Mapping[str, str | list[str]], name: str) -> list[str]:
    """Every value of the field ``name`` (checkboxes, multi-selects), in the order sent."""
    held = fields.get(name)
    if held is None:
        return []
    return list(held) if isinstance(held, list) else [held]


def form_text(fields: Mapping[str, str | list[str]], name: str) -> str:
    """The field's one value, stripped ("" when absent)."""
    held = fields.get(name)
    if isinstance(held, list):
        held = held[-1]
    return (held or "").strip()
