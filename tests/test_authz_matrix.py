"""Every route of the app x eight callers, generated from the route table (issue 10).

The routes come from ``create_app(...).routes``; who may call each is read from its handler's
guard (the ``principal`` dependency: ``clinician``, ``patient`` or ``signed_in`` in
``host/auth.py``), never from a hand list, so a new route is covered without edits. Path
parameters are filled with real objects of organisation ``org-a`` and its patient (made through
the API by :func:`careshare.testing.seed.seed`); a route whose parameter no seeded object fills
fails, naming the route, until the seed makes one. The only hand list is what is public by design.
"""

from __future__ import annotations

import base64
import inspect
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from careshare.host import auth as guards
from careshare.host import create_app
from careshare.testing import bearer, make_pdf, make_settings
from careshare.testing.seed import PARAMETER, fill_path, seed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from careshare.core.settings import Settings

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")  # the tests share one app and its event loop

#: Public by design: liveness, the OpenAPI description (everything under ``/schema``), tus
#: discovery (``OPTIONS`` of the upload routes, which the tus protocol asks before sign-in) and
#: the expiring links for people outside the app (the token in the address is the credential).
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/v1/links/{token}"),
    ("HEAD", "/v1/links/{token}"),
    ("OPTIONS", "/v1/me/uploads"),
    ("OPTIONS", "/v1/me/uploads/{uid}"),
    ("OPTIONS", "/v1/patients/{pid}/uploads"),
    ("OPTIONS", "/v1/patients/{pid}/uploads/{uid}"),
}
PUBLIC_PREFIXES = ("/schema",)

#: Reads whose seeded object is there but not readable by design, so they are not held to 200.
NOT_READABLE: dict[tuple[str, str], str] = {
    ("GET", "/v1/letters/{lid}/pdf"): "the seeded letter of /v1/letters/{lid} is a draft (for PATCH): no PDF",
}

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
PDF = make_pdf()
TUS = {"Tus-Resumable": "1.0.0"}


@dataclass(frozen=True)
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
    deps = handler.resolve_dependencies()
    reached = _reached(handler, deps)
    if "principal" in reached:
        provider = deps["principal"].dependency
        names = {guards.clinician: "clinician", guards.patient: "patient", guards.signed_in: "signed_in"}
        if provider not in names:
            raise AssertionError(f"{handler}: its principal comes from {provider!r}, not a guard of host/auth.py")
        return names[provider]
    return "signed_in" if "caller" in reached else "public"


def route_table() -> list[Route]:
    """Every (method, path) the app serves, with its guard; built once, at collection."""
    folder = Path(tempfile.mkdtemp(prefix="careshare-routes-"))
    try:
        app = create_app(make_settings(folder / "data"))
        routes = []
        for route in app.routes:
            for handler in getattr(route, "route_handlers", ()):
                path = PARAMETER.sub(lambda m: "{" + m.group(1) + "}", route.path)
                automatic = handler.fn.__module__.startswith("litestar.") and "OPTIONS" in handler.http_methods
                for method in sorted(handler.http_methods):
                    routes.append(Route(method, path, _guard(handler), automatic))
        # Deletions last, so the objects they remove are still there for every other route.
        return sorted(set(routes), key=lambda r: (r.method == "DELETE", r.path, r.method))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


ROUTES = route_table()
CHECKED = [r for r in ROUTES if not r.automatic]


def _is_public(route: Route) -> bool:
    return (route.method, route.path) in PUBLIC or route.path.startswith(PUBLIC_PREFIXES)


# Bodies that would succeed for the clinician or patient the route is for, so that a refusal of a
# foreign caller is the access check and not the body check. A route not named here gets no body.
def _bodies(ids: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    upload = {"content": PDF, "params": {"filename": "matrix.pdf"}, "headers": {"Prefer": "respond-async"}}
    library = {"json": {"file_id": ids["library_file"]}}
    kind = {"json": {"name": "Matrix"}}
    return {
        ("POST", "/v1/patients"): {"json": {"name": "Matrix Patient", "external_id": f"matrix-{time.time_ns()}"}},
        ("POST", "/v1/patients/{pid}/files"): upload,
        ("POST", "/v1/library/files"): upload,
        ("POST", "/v1/me/files"): upload,
        ("POST", "/v1/me/file-requests/{rid}/files"): upload,
        ("POST", "/v1/files/{fid}/render"): {"json": {}},
        ("POST", "/v1/files/{fid}/links"): {"json": {}},
        ("POST", "/v1/attachments/{aid}/links"): {"json": {}},
        ("POST", "/v1/me/uploads"): {"headers": {**TUS, "Upload-Length": "10"}},
        ("POST", "/v1/patients/{pid}/uploads"): {"headers": {**TUS, "Upload-Length": "10"}},
        **{
            (method, path): {"headers": TUS}
            for path in ("/v1/me/uploads/{uid}", "/v1/patients/{pid}/uploads/{uid}")
            for method in ("HEAD", "GET", "DELETE")
        },
        **{
            ("PATCH", path): {
                "content": b"0123456789",
                "headers": {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
            }
            for path in ("/v1/me/uploads/{uid}", "/v1/patients/{pid}/uploads/{uid}")
        },
        **{("POST", f"/v1/{k}"): kind for k in ("appointment-types", "medication-types", "information-packs")},
        **{("PATCH", f"/v1/{k}/{{tid}}"): kind for k in ("appointment-types", "medication-types")},
        **{("POST", f"/v1/{k}/{{tid}}/attachments"): library for k in ("appointment-types", "medication-types")},
        ("POST", "/v1/information-packs/{pack_id}/attachments"): library,
        ("POST", "/v1/letters/{lid}/attachments"): library,
        ("POST", "/v1/patients/{pid}/medications"): {
            "json": {
                "type_id": ids["/v1/medication-types/{tid}"],
                "schedule": {"times": ["09:00"], "start": "2030-01-01"},
            }
        },
        ("POST", "/v1/patients/{pid}/appointments"): {
            "json": {"type_id": ids["/v1/appointment-types/{tid}"], "starts_at": "2030-05-01T10:00:00+00:00"}
        },
        ("POST", "/v1/letter-templates"): {"json": {"name": "M", "subject": "S", "body": "B"}},
        ("POST", "/v1/patients/{pid}/letters"): {"json": {"subject": "S", "body": "B"}},
        ("PATCH", "/v1/letters/{lid}"): {"json": {"subject": "Edited"}},
        ("POST", "/v1/letters/{lid}/send"): {"json": {"email": False}},
        ("PUT", "/v1/letter-settings"): {"json": {"organisation_name": "Matrix Clinic"}},
        ("POST", "/v1/patients/{pid}/file-requests"): {
            "json": {"message": "M", "accepted_kinds": ["pdf"], "max_files": 1, "due_at": "2030-01-01T00:00:00+00:00"}
        },
        ("POST", "/v1/file-requests/{rid}/files/{fid}/review"): {"json": {"decision": "accepted"}},
        ("POST", "/v1/consent-forms"): {
            "json": {"name": "F", "information_pack_ids": [ids["/v1/information-packs/{pack_id}"]]}
        },
        ("POST", "/v1/patients/{pid}/consents"): {"json": {"form_id": ids["/v1/consent-forms/{form_id}"]}},
        ("POST", "/v1/me/consents/{cid}/decision"): {"json": {"decision": "given"}},
        ("POST", "/v1/patients/{pid}/messages"): {"json": {"body": "Hello"}},
        ("POST", "/v1/me/messages"): {"json": {"body": "Hello"}},
    }


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def caller_headers(settings: Settings, patient_id: str, other_patient_id: str) -> dict[str, dict[str, str]]:
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


@dataclass
class World:
    client: AsyncTestClient[Any]
    ids: dict[str, str]
    callers: dict[str, dict[str, str]]
    bodies: dict[tuple[str, str], dict[str, Any]]
    secrets: list[str]  # what a foreign caller must never read: seeded ids and the patient's name


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, migrated_database: Path) -> AsyncIterator[World]:
    # Hundreds of refused tokens and patient uploads from one address: the rate limits (tested in
    # their own tests) would answer 429 and hide what this matrix looks at, so they are off here.
    settings = make_settings(
        tmp_path_factory.mktemp("authz") / "data",
        CARESHARE_TOKEN_FAILURES_PER_MINUTE="0",
        CARESHARE_PATIENT_UPLOADS_PER_HOUR="0",
    )
    database = Path(settings.database_url.split("///", 1)[1])
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_database, database)
    async with AsyncTestClient(app=create_app(settings)) as client:
        clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
        ids = await seed(client, clinician, lambda pid: bearer(settings, "patient", "org-a", patient=pid), pdf=PDF)
        other = await client.post(
            "/v1/patients", json={"name": "Other One", "external_id": "other-1"}, headers=clinician
        )
        assert other.status_code == 201, other.text
        callers = caller_headers(settings, ids["patient"], other.json()["id"])
        secrets = sorted({v for k, v in ids.items() if k != "/v1/links/{token}"} | {"Seed Patient"})
        # The schema's own files (``/schema/{path}``) are named, not made.
        ids["/schema/{path}"] = "openapi.yaml"
        yield World(client, dict(ids), callers, _bodies(ids), secrets)


async def _call(world: World, route: Route, who: str) -> httpx.Response:
    path = fill_path(route.path, world.ids)
    if path is None:
        missing = [m.group(0) for m in PARAMETER.finditer(route.path)]
        pytest.fail(
            f"{route.label}: no seeded object fills {', '.join(missing)}; make one in careshare.testing.seed "
            "so this route is checked against every caller"
        )
    spec = world.bodies.get((route.method, route.path), {})
    headers = {**spec.get("headers", {}), **world.callers[who]}
    extra = {k: v for k, v in spec.items() if k != "headers"}
    return await world.client.request(route.method, path, headers=headers, **extra)


def _leaks(response: httpx.Response, secrets: list[str]) -> list[str]:
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


def _check(route: Route, who: str, response: httpx.Response, secrets: list[str]) -> None:
    what = f"{route.label} as {who}"
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if _is_public(route):
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
        assert not _leaks(response, secrets), f"{what}: the answer shows {_leaks(response, secrets)}"
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
    if route.method == "GET" and (route.method, route.path) not in NOT_READABLE:
        assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"


def test_the_route_table_has_the_api() -> None:
    """The matrix below is only as good as the table it walks: it must hold the routes it should."""
    labels = {r.label for r in CHECKED}
    for expected in ("POST /v1/patients", "GET /v1/me", "GET /v1/files/{fid}/content", "GET /healthz"):
        assert expected in labels
    guards_seen = {r.guard for r in CHECKED}
    assert {"clinician", "patient", "signed_in", "public"} <= guards_seen
    unlisted = [r.label for r in CHECKED if r.guard == "public" and not _is_public(r)]
    assert not unlisted, f"routes without a sign-in guard that are not public by design: {unlisted}"


def _param(route: Route) -> Any:
    return pytest.param(route, id=route.label)


@MODULE_LOOP
@pytest.mark.parametrize("route", [_param(r) for r in CHECKED])
async def test_route_answers_each_caller_as_its_guard_says(world: World, route: Route) -> None:
    # The clinician calls last: the bodies above may change what the others would see.
    failures = []
    for who in CALLERS:
        response = await _call(world, route, who)
        try:
            _check(route, who, response, world.secrets)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)


@MODULE_LOOP
async def test_litestar_options_answers_show_nothing(world: World) -> None:
    """Litestar answers OPTIONS itself on every path (no handler of ours runs): no body, no data."""
    automatic = [r for r in ROUTES if r.automatic and not _is_public(r)]
    assert automatic
    for route in automatic:
        response = await _call(world, route, "anonymous")
        assert response.status_code == 204, f"{route.label}: {response.status_code}"
        assert response.content == b"", route.label
