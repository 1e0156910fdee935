"""The console's session: the signed token in an HttpOnly cookie, and the checks of a browser's forms.

The cookie holds the same JWT the API takes as a bearer token, so one verifier serves both. It is
``HttpOnly`` (no script reads it), ``SameSite=Strict`` and scoped to ``/console``; over HTTPS it is
``Secure``. A form that changes something must come from the console's own pages: its ``Origin``
(or ``Sec-Fetch-Site: same-origin``) is checked on every unsafe method, login included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.di import NamedDependency

from careshare.core.problems import INVALID_TOKEN, MISSING_TOKEN, Problem, ProblemType
from careshare.core.settings import Setting
from careshare.host.auth import known_organisation, verify_token
from careshare.host.limits import token_failures
from careshare.web.console import CONSOLE

if TYPE_CHECKING:
    from litestar import Request
    from litestar.response import Response

    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = [
    "CONSOLE_ON",
    "CROSS_SITE_FORM",
    "DEV_LOGIN",
    "SESSION_COOKIE",
    "console_caller",
    "end_session",
    "start_session",
]

SESSION_COOKIE = "careshare_session"
#: A working day: the clinician signs in again the next morning (the token's own expiry still applies).
SESSION_SECONDS = 12 * 3600
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _flag(raw: str) -> bool:
    flags = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if raw.lower() not in flags:
        raise ValueError(raw)
    return flags[raw.lower()]


DEV_LOGIN: Setting[bool] = Setting(
    "CARESHARE_DEV_LOGIN",
    False,
    "1 shows a development sign-in form on the console's login page (any role, organisation and subject)",
    _flag,
    "1 or 0",
)

CONSOLE_ON: Setting[bool] = Setting(
    "CARESHARE_CONSOLE",
    True,
    "0 serves the HTTP API alone: no web console (/console) on this server",
    _flag,
    "1 or 0",
)

CROSS_SITE_FORM = ProblemType(
    "cross-site-form",
    403,
    "Form not sent from the console",
    "This form did not come from a careshare page on this server. Open the page again and send the form from it.",
)


def same_origin(request: Request[Any, Any, Any]) -> bool:
    """Whether a browser says the request comes from this server's own pages."""
    if request.headers.get("sec-fetch-site") == "same-origin":
        return True
    origin = request.headers.get("origin")
    if not origin:
        return False
    host = request.headers.get("host", "")
    return origin in {f"http://{host}", f"https://{host}"}


async def console_caller(request: Request[Any, Any, Any], cs: NamedDependency[Careshare]) -> Principal:
    """Who is signed in, from the session cookie: what ``caller`` is inside the console."""
    if request.method in UNSAFE and not same_origin(request):
        raise Problem(CROSS_SITE_FORM)
    token = request.cookies.get(SESSION_COOKIE, "").strip()
    if not token:
        raise Problem(MISSING_TOKEN, "Sign in to the console to see this page.")
    with token_failures(request):  # a forged cookie counts as a failed token
        who = verify_token(cs.settings.secret_key, token)
    await known_organisation(request, cs, who)
    request.state.careshare_principal = who
    return who


def start_session(response: Response[Any], request: Request[Any, Any, Any], token: str) -> Response[Any]:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path=CONSOLE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=SESSION_SECONDS,
    )
    return response


def end_session(response: Response[Any]) -> Response[Any]:
    response.delete_cookie(SESSION_COOKIE, path=CONSOLE)
    return response


def session_problem(problem: Problem) -> bool:
    """Problems that mean: sign in (again)."""
    return problem.type in (MISSING_TOKEN, INVALID_TOKEN)
