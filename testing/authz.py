"""Who may call each route, read from the route table, and eight callers to try it (``careshare.testing.authz``).

The routes come from a real app's ``routes``; who may call each is read from its handler's guard
(the ``principal`` dependency: ``clinician``, ``patient`` or ``signed_in`` of
:mod:`careshare.web.guards`), never from a hand list, so a new route is covered without edits. A
plugin's routes are the ones an app serves with it and not without it (:func:`route_table`), so
the kit finds a channel's routes from its entry point name alone. :func:`check` says what each
caller must get: the unauthenticated 401, the foreign 403/404 and nothing of the seeded objects,
the wrong role 403, the one the route is for neither 401 nor 403 (and a read of a seeded object 200).
"""

from __future__ import annotations

import base64
import inspect
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import jwt

from careshare.testing import bearer, make_settings
from careshare.testing.seed import PARAMETER, fill_path

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

    import httpx
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings

__all__ = [
    "CALLERS",
    "FOREIGN",
    "UNAUTHENTICATED",
    "Access",
    "Route",
    "call",
    "caller_headers",
    "check",
    "leaks",
    "route_table",
    "routes_of",
]

CALLERS = (
    "anonymous",
    "wrong key",
    "expired",
    "alg=none",
    "other organisation's clinician",
    "other patient",
    "the patient",
    "the clinician",
)
UNAUTHENTICATED = CALLERS[:4]
FOREIGN = ("other organisation's clinician", "other patient")


@attrs.frozen
class Route:
    method: str
    path: str  # the OpenAPI's spelling: /v1/patients/{pid}
    guard: str  # clinician, patient, signed_in or public
    automatic: bool  # Litestar's own OPTIONS answer (no handler of ours runs)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def _reached(handler: Any, deps: dict[str, Any]) -> set[str]:
    """The dependency names the handler's signature reaches, through the providers' own signatures."""
    todo = list(inspect.signature(handler.fn).parameters)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in deps:
            continue
        seen.add(name)
        todo.extend(inspect.signature(deps[name].dependency).parameters)
    return seen


def _guard(handler: Any) -> str:
    from careshare.web import guards

    deps = handler.resolve_dependencies()
    reached = _reached(handler, deps)
    if "principal" in reached:
        provider = deps["principal"].dependency
        names = {guards.clinician: "clinician", guards.patient: "patient", guards.signed_in: "signed_in"}
        if provider not in names:
            raise AssertionError(f"{handler}: its principal comes from {provider!r}, not a guard of careshare.web")
        return names[provider]
    return "signed_in" if "caller" in reached else "public"


def routes_of(app: Litestar) -> list[Route]:
    """Every (method, path) ``app`` serves, with its guard; deletions last (the objects stay for the rest)."""
    from careshare.web.console import CONSOLE

    routes = []
    for route in app.routes:
        if route.path == CONSOLE or route.path.startswith(CONSOLE + "/"):
            continue  # the console's pages (and its API mirror) sign in by cookie: tests/test_console*.py
        for handler in getattr(route, "route_handlers", ()):
            path = PARAMETER.sub(lambda m: "{" + m.group(1) + "}", route.path)
            automatic = handler.fn.__module__.startswith("litestar.") and "OPTIONS" in handler.http_methods
            for method in sorted(handler.http_methods):
                routes.append(Route(method, path, _guard(handler), automatic))
    return sorted(set(routes), key=lambda r: (r.method == "DELETE", r.path, r.method))


def route_table(plugins: Collection[str] | None = None, *, disabled: Iterable[str] = ()) -> list[Route]:
    """The routes of ``plugins`` (entry point names): what an app serves with them and not without them.

    None: every route of an app with every installed plugin, the host's own included. Built once,
    at collection, on apps that are never started (no database is touched).
    """
    from careshare.host import create_app

    folder = Path(tempfile.mkdtemp(prefix="careshare-routes-"))
    try:
        with_them = routes_of(create_app(make_settings(folder / "a", CARESHARE_DISABLE_PLUGINS=",".join(disabled))))
        if plugins is None:
            return with_them
        without = {
            r.label
            for r in routes_of(
                create_app(make_settings(folder / "b", CARESHARE_DISABLE_PLUGINS=",".join({*disabled, *plugins})))
            )
        }
        return [r for r in with_them if r.label not in without]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def caller_headers(settings: Settings, patient_id: str, other_patient_id: str) -> dict[str, dict[str, str]]:
    """The headers of each of :data:`CALLERS`, around a clinician ``dr-a`` and a patient of ``org-a``."""
    now = int(time.time())
    claims = {"sub": "dr-a", "role": "clinician", "org": "org-a", "iat": now, "exp": now + 600}
    return {
        "anonymous": {},
        "wrong key": {"Authorization": "Bearer " + jwt.encode(claims, "another-secret-key-0123456789abcdef", "HS256")},
        "expired": {
            "Authorization": "Bearer "
            + jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, settings.secret_key, "HS256")
        },
        "alg=none": {"Authorization": "Bearer " + _unsigned(claims)},
        "other organisation's clinician": bearer(settings, "clinician", "org-b", sub="dr-b"),
        "other patient": bearer(settings, "patient", "org-a", patient=other_patient_id),
        "the patient": bearer(settings, "patient", "org-a", patient=patient_id),
        "the clinician": bearer(settings, "clinician", "org-a", sub="dr-a"),
    }


@attrs.define
class Access:
    """A seeded app to call: ids by route prefix, each caller's headers, bodies, what is public or secret."""

    client: AsyncTestClient[Any]
    ids: dict[str, str]
    callers: dict[str, dict[str, str]]
    bodies: dict[tuple[str, str], dict[str, Any]]
    #: What a foreign caller must never read: seeded ids and the patient's name.
    secrets: list[str]
    public: frozenset[tuple[str, str]] = frozenset()
    public_prefixes: tuple[str, ...] = ()
    #: Reads whose seeded object is there but not readable by design, so they are not held to 200.
    not_readable: Mapping[tuple[str, str], str] = attrs.field(factory=dict)

    def is_public(self, route: Route) -> bool:
        return (route.method, route.path) in self.public or route.path.startswith(self.public_prefixes)


class Unfilled(LookupError):
    """A route names a parameter no seeded object fills."""


async def call(access: Access, route: Route, who: str) -> httpx.Response:
    """``route`` called as ``who``, its parameters filled with seeded ids, with the route's body."""
    path = fill_path(route.path, access.ids)
    if path is None:
        missing = [m.group(0) for m in PARAMETER.finditer(route.path)]
        raise Unfilled(
            f"{route.label}: no seeded object fills {', '.join(missing)}; make one in the seed of the "
            "plugin's contract (careshare_contract) so this route is checked against every caller"
        )
    spec = access.bodies.get((route.method, route.path), {})
    headers = {**spec.get("headers", {}), **access.callers[who]}
    extra = {k: v for k, v in spec.items() if k != "headers"}
    return await access.client.request(route.method, path, headers=headers, **extra)


def leaks(response: httpx.Response, secrets: list[str]) -> list[str]:
    """The secrets in the answer that the request did not carry itself (an id it named, echoed back)."""
    sent = str(response.request.url) + response.request.content.decode("utf-8", "replace")
    secrets = [secret for secret in secrets if secret not in sent]
    try:
        body = response.json()
    except ValueError:
        text = response.text
    else:
        if isinstance(body, dict):
            body.pop("instance", None)  # a problem names the address asked for, ids and all
        text = json.dumps(body)
    return [secret for secret in secrets if secret in text]


def _expect_problem(response: httpx.Response, statuses: tuple[int, ...], what: str) -> None:
    assert response.status_code in statuses, f"{what}: {response.status_code} {response.text[:300]}"
    if response.request.method != "HEAD":
        assert response.headers.get("content-type", "").startswith("application/problem+json"), what


def check(access: Access, route: Route, who: str, response: httpx.Response) -> None:
    """Raise AssertionError unless ``who`` got what the route's guard says they get."""
    what = f"{route.label} as {who}"
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if access.is_public(route):
        assert response.status_code not in (401, 403), f"{what}: public by design, answered {response.status_code}"
        return
    if who in UNAUTHENTICATED:
        _expect_problem(response, (401,), what)
        if response.request.method != "HEAD":
            code = response.json()["code"]
            assert code == ("authentication-required" if who == "anonymous" else "invalid-token"), what
        return
    if who in FOREIGN:
        names_object = PARAMETER.search(route.path) is not None
        refused = (route.guard == "clinician" and who == "other patient") or (
            route.guard == "patient" and who == "other organisation's clinician"
        )
        if names_object or refused:
            _expect_problem(response, (403, 404), what)
        shown = leaks(response, access.secrets)
        assert not shown, f"{what}: the answer shows {shown}"
        return
    own_role = "clinician" if who == "the clinician" else "patient"
    if route.guard in ("clinician", "patient") and route.guard != own_role:
        _expect_problem(response, (403,), what)
        return
    if route.guard == "signed_in" and who == "the patient":
        assert response.status_code != 401, f"{what}: {response.text[:300]}"
        return
    assert response.status_code not in (401, 403), f"{what}: {response.status_code} {response.text[:300]}"
    # The ids are real: a read by the one the route is for finds its object.
    if route.method == "GET" and (route.method, route.path) not in access.not_readable:
        assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"
