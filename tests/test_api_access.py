"""The API's access rules, patients, pagination and error shape, over HTTP (split from test_api_files.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from careshare.core import db
from careshare.host.auth import mint_token
from careshare.testing import bearer, make_pdf
from careshare.testing.api import PROBLEM_JSON, assert_problem, count_rows, register, stored_objects
from careshare.testing.api import post_file as upload
from careshare.testing.api import post_file_ok as upload_ok

if TYPE_CHECKING:
    import httpx
    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings

# Hypothesis reuses the function's fixtures across examples; each property below is written so
# that what earlier examples stored cannot change what a later one must see.
reuses_fixtures = hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- who may see what -------------------------------------------------------------------------------------


@pytest.fixture
def other_org_clinician(settings: Settings) -> dict[str, str]:
    return bearer(settings, "clinician", "org-b", sub="dr-b")


async def test_other_organisation_gets_404_everywhere(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient_id: str,
    other_org_clinician: dict[str, str],
) -> None:
    fid = (await upload_ok(client, clinician, patient_id, make_pdf()))["id"]
    outsider = other_org_clinician
    assert_problem(await client.get(f"/v1/files/{fid}", headers=outsider), 404, "not-found")
    assert_problem(await client.get(f"/v1/files/{fid}/content", headers=outsider), 404, "not-found")
    assert_problem(
        await client.get(f"/v1/files/{fid}/content", headers={**outsider, "Range": "bytes=0-3"}), 404, "not-found"
    )
    assert_problem(await client.get(f"/v1/patients/{patient_id}", headers=outsider), 404, "not-found")
    assert_problem(await client.get(f"/v1/patients/{patient_id}/files", headers=outsider), 404, "not-found")
    assert_problem(await upload(client, outsider, patient_id, make_pdf()), 404, "not-found")
    # The answers are the same as for ids that do not exist at all: nothing leaks.
    assert_problem(await client.get("/v1/files/01hzzzzzzzzzzzzzzzzzzzzzzz", headers=outsider), 404, "not-found")
    # Their own organisation's library does not show org-a's files either.
    library = await client.get("/v1/library/files", headers=outsider)
    assert library.json()["items"] == []


async def test_patient_of_another_organisation_naming_this_patient_gets_404(
    client: AsyncTestClient[Any], settings: Settings, patient_id: str
) -> None:
    impostor = bearer(settings, "patient", "org-b", patient=patient_id)
    assert_problem(await client.get("/v1/me", headers=impostor), 404, "not-found")
    assert_problem(await client.get("/v1/me/", headers=impostor), 404, "not-found")
    response = await client.post("/v1/me/files?filename=x.pdf", content=make_pdf(), headers=impostor)
    assert_problem(response, 404, "not-found")


async def test_patient_sees_own_uploads_but_not_clinic_files_yet(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, patient: dict[str, str]
) -> None:
    clinic_file = (await upload_ok(client, clinician, patient_id, make_pdf(text="from the clinic")))["id"]
    body = make_pdf(text="from the patient")
    response = await client.post("/v1/me/files?filename=my scan.pdf", content=body, headers=patient)
    assert response.status_code == 201, response.text
    own = response.json()
    assert own["owner"] == {"type": "patient", "id": patient_id}
    assert own["uploaded_by"] == f"patient:{patient_id}"

    # Their own upload: metadata, bytes and listing.
    assert (await client.get(f"/v1/files/{own['id']}", headers=patient)).json() == own
    content = await client.get(f"/v1/files/{own['id']}/content", headers=patient)
    assert content.status_code == 200 and content.content == body
    mine = await client.get("/v1/me/files", headers=patient)
    assert [item["id"] for item in mine.json()["items"]] == [own["id"]]

    # The clinic's file on their record is shared with them later, through items (a later issue).
    assert_problem(await client.get(f"/v1/files/{clinic_file}", headers=patient), 404, "not-found")
    assert_problem(await client.get(f"/v1/files/{clinic_file}/content", headers=patient), 404, "not-found")

    # The clinic sees both, and can tell them apart.
    listing = await client.get(f"/v1/patients/{patient_id}/files", headers=clinician)
    assert {item["id"] for item in listing.json()["items"]} == {clinic_file, own["id"]}
    by_patient = await client.get(f"/v1/patients/{patient_id}/files?source=patient", headers=clinician)
    assert [item["id"] for item in by_patient.json()["items"]] == [own["id"]]


async def test_another_patient_gets_404_for_files(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient_id: str,
    patient: dict[str, str],
    settings: Settings,
) -> None:
    response = await client.post("/v1/me/files?filename=mine.pdf", content=make_pdf(), headers=patient)
    assert response.status_code == 201, response.text
    fid = response.json()["id"]
    other_id = await register(client, clinician, "MRN-2")
    other = bearer(settings, "patient", "org-a", patient=other_id)

    assert_problem(await client.get(f"/v1/files/{fid}", headers=other), 404, "not-found")
    assert_problem(await client.get(f"/v1/files/{fid}/content", headers=other), 404, "not-found")
    assert (await client.get("/v1/me/files", headers=other)).json() == {"items": [], "next_cursor": None}
    assert (await client.get("/v1/me", headers=other)).json()["id"] == other_id
    # The clinicians' patient routes are not for patients at all.
    assert_problem(await client.get(f"/v1/patients/{patient_id}", headers=other), 403, "forbidden")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/patients"),
        ("GET", "/v1/patients/{pid}"),
        ("GET", "/v1/patients/{pid}/files"),
        ("POST", "/v1/patients/{pid}/files"),
        ("GET", "/v1/library/files"),
        ("POST", "/v1/library/files"),
    ],
)
async def test_patient_calling_clinician_routes_is_403(
    client: AsyncTestClient[Any], patient: dict[str, str], patient_id: str, method: str, path: str
) -> None:
    response = await client.request(
        method, path.format(pid=patient_id), content=make_pdf() if method == "POST" else None, headers=patient
    )
    assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/me"), ("GET", "/v1/me/files"), ("POST", "/v1/me/files")])
async def test_clinician_calling_patient_routes_is_403(
    client: AsyncTestClient[Any], clinician: dict[str, str], method: str, path: str
) -> None:
    response = await client.request(method, path, content=make_pdf() if method == "POST" else None, headers=clinician)
    assert_problem(response, 403, "forbidden")


PROTECTED = [
    ("POST", "/v1/patients"),
    ("GET", "/v1/patients/{pid}/files"),
    ("POST", "/v1/patients/{pid}/files"),
    ("GET", "/v1/files/{fid}"),
    ("GET", "/v1/files/{fid}/content"),
    ("GET", "/v1/me/files"),
    ("POST", "/v1/library/files"),
]


async def request_every_protected_route(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, headers: dict[str, str]
) -> dict[str, httpx.Response]:
    """Call each route of ``PROTECTED`` with ``headers`` (on a real patient and file): responses by route."""
    fid = (await upload_ok(client, clinician, patient_id, make_pdf()))["id"]
    return {
        f"{method} {path}": await client.request(
            method, path.format(pid=patient_id, fid=fid), content=b"%PDF-", headers=headers
        )
        for method, path in PROTECTED
    }


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"],
    ids=["absent", "empty", "no-token", "blank-token", "basic", "other-scheme"],
)
async def test_missing_token_is_401(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for route, response in (await request_every_protected_route(client, clinician, patient_id, headers)).items():
        assert response.status_code == 401, route
        assert_problem(response, 401, "authentication-required")


def bad_tokens(settings: Settings) -> dict[str, str]:
    secret = settings.secret_key
    now = 1_700_000_000
    return {
        "garbage": "not-a-jwt",
        "three-dots": "a.b.c",
        "expired": mint_token(secret, role="clinician", org="org-a", sub="dr-a", ttl_seconds=-60),
        "wrong-key": mint_token("another-secret-key-0123456789abcdef", role="clinician", org="org-a", sub="dr-a"),
        "alg-none": jwt.encode(
            {"sub": "dr-a", "role": "clinician", "org": "org-a", "exp": 4_000_000_000}, None, "none"
        ),
        "unknown-role": jwt.encode(
            {"sub": "x", "role": "admin", "org": "org-a", "exp": 4_000_000_000, "iat": now}, secret, "HS256"
        ),
        "no-org": jwt.encode({"sub": "dr-a", "role": "clinician", "exp": 4_000_000_000}, secret, "HS256"),
        "no-exp": jwt.encode({"sub": "dr-a", "role": "clinician", "org": "org-a"}, secret, "HS256"),
        "patient-without-id": jwt.encode(
            {"sub": "p", "role": "patient", "org": "org-a", "exp": 4_000_000_000}, secret, "HS256"
        ),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "three-dots",
        "expired",
        "wrong-key",
        "alg-none",
        "unknown-role",
        "no-org",
        "no-exp",
        "patient-without-id",
    ],
)
async def test_bad_token_is_401(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings, kind: str
) -> None:
    headers = {"Authorization": f"Bearer {bad_tokens(settings)[kind]}"}
    for route, response in (await request_every_protected_route(client, clinician, patient_id, headers)).items():
        assert response.status_code == 401, route
        assert_problem(response, 401, "invalid-token")


# -- patients ------------------------------------------------------------------------------------------------


async def test_register_patient(client: AsyncTestClient[Any], clinician: dict[str, str]) -> None:
    response = await client.post(
        "/v1/patients",
        json={"name": "  Ada Lovelace ", "external_id": " MRN-42 ", "email": "ada@example.org"},
        headers=clinician,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "Ada Lovelace"
    assert created["external_id"] == "MRN-42"
    assert created["email"] == "ada@example.org"
    assert isinstance(created["id"], str) and created["id"]
    shown = await client.get(f"/v1/patients/{created['id']}", headers=clinician)
    assert shown.json() == created


async def test_duplicate_external_id_is_409_within_an_organisation_only(
    client: AsyncTestClient[Any], clinician: dict[str, str], settings: Settings
) -> None:
    first = await register(client, clinician, "MRN-7")
    again = await client.post("/v1/patients", json={"name": "Someone", "external_id": "MRN-7"}, headers=clinician)
    assert_problem(again, 409, "patient-exists")
    # Surrounding spaces do not make a different external id.
    spaced = await client.post("/v1/patients", json={"name": "Someone", "external_id": " MRN-7 "}, headers=clinician)
    assert_problem(spaced, 409, "patient-exists")
    other_org = bearer(settings, "clinician", "org-b", sub="dr-b")
    second = await register(client, other_org, "MRN-7")
    assert second != first
    # A colleague in the first organisation still gets 409.
    colleague = bearer(settings, "clinician", "org-a", sub="dr-c")
    assert_problem(
        await client.post("/v1/patients", json={"name": "X", "external_id": "MRN-7"}, headers=colleague),
        409,
        "patient-exists",
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": "Only a name"},
        {"external_id": "MRN-1"},
        {"name": "", "external_id": "MRN-1"},
        {"name": "   ", "external_id": "MRN-1"},
        {"name": "N", "external_id": "  "},
        {"name": "N", "external_id": "MRN-1", "email": "not-an-email"},
        {"name": "N", "external_id": "MRN-1", "unexpected": True},
        {"name": "N" * 501, "external_id": "MRN-1"},
        {"name": "N", "external_id": "M" * 201},
        # Not strings: refused, never stored as "None", "['a']" or "12345".
        {"name": None, "external_id": "MRN-1"},
        {"name": ["a"], "external_id": "MRN-1"},
        {"name": {"first": "a"}, "external_id": "MRN-1"},
        {"name": "N", "external_id": 12345},
        {"name": "N", "external_id": "MRN-1", "email": 5},
        [],
        ["name", "external_id"],
        "a string",
        42,
        None,
    ],
)
async def test_invalid_patient_bodies_are_422(
    client: AsyncTestClient[Any], clinician: dict[str, str], body: Any
) -> None:
    response = await client.post(
        "/v1/patients", content=json.dumps(body), headers={**clinician, "Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert isinstance(problem["errors"], list) and problem["errors"]
    assert await count_rows(client, db.patients) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"not json",
        b"\xff\xfe\x00",
        b'{"name": "a", "external_id": "b"',
        b"[" * 100_000,  # deeper than the JSON parser recurses: still a 400, never a 500
    ],
    ids=["truncated", "text", "binary", "unterminated", "deeply-nested"],
)
async def test_non_json_patient_body_is_400(
    client: AsyncTestClient[Any], clinician: dict[str, str], raw: bytes
) -> None:
    response = await client.post("/v1/patients", content=raw, headers={**clinician, "Content-Type": "application/json"})
    assert_problem(response, 400, "bad-request")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
patient_like = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values | st.text(max_size=600),
        "external_id": json_values | st.text(max_size=250),
        "email": json_values | st.emails(),
    },
)


@reuses_fixtures
@given(body=st.dictionaries(st.text(max_size=12), json_values, max_size=5) | patient_like)
async def test_arbitrary_json_objects_never_cause_a_500(
    client: AsyncTestClient[Any], clinician: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.post("/v1/patients", json=body, headers=clinician)
    assert response.status_code in {201, 409, 422}, response.text
    if response.status_code == 201:
        created = response.json()
        # Only strings are taken, as given (trimmed): nothing is coerced from another JSON type.
        assert isinstance(body["name"], str) and isinstance(body["external_id"], str)
        assert created["name"] == body["name"].strip()
        assert created["external_id"] == body["external_id"].strip()
    else:
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert response.json()["code"] in {"patient-exists", "invalid-request"}


# -- pagination -------------------------------------------------------------------------------------------------


async def test_pagination_returns_each_file_once_newest_first(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    uploaded = [
        (await upload_ok(client, clinician, patient_id, make_pdf(text=f"file {i}"), f"{i}.pdf"))["id"] for i in range(7)
    ]
    newest_first = list(reversed(uploaded))
    for limit in range(1, 9):
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor is not None:
                params["cursor"] = cursor
            response = await client.get(f"/v1/patients/{patient_id}/files", params=params, headers=clinician)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= limit
            seen.extend(item["id"] for item in page["items"])
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert pages <= len(uploaded), "the cursor never ends"
        assert seen == newest_first, f"limit={limit}"
        assert pages == max(1, -(-len(uploaded) // limit))


@pytest.mark.parametrize("limit", ["0", "-1", "201", "many"])
async def test_bad_page_limit_is_a_problem(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, limit: str
) -> None:
    response = await client.get(f"/v1/patients/{patient_id}/files?limit={limit}", headers=clinician)
    assert_problem(response, 400, "bad-request")


# -- health, schema and error shape ------------------------------------------------------------------------------


async def test_healthz(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert "pdf" in body["plugins"]


async def test_openapi_lists_the_api(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/v1/patients" in paths
    assert "/v1/patients/{pid}/files" in paths
    assert "/v1/files/{fid}/content" in paths


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "not-found"),
        ("DELETE", "/v1/patients", 405, "method-not-allowed"),
        ("GET", "/v1/files/{fid}/nope", 404, "not-found"),
    ],
)
async def test_router_errors_are_problems(
    client: AsyncTestClient[Any], clinician: dict[str, str], method: str, path: str, status: int, code: str
) -> None:
    response = await client.request(method, path, headers=clinician)
    assert_problem(response, status, code)


async def test_upload_to_unknown_patient_is_404(
    client: AsyncTestClient[Any], clinician: dict[str, str], settings: Settings
) -> None:
    response = await upload(client, clinician, "01hzzzzzzzzzzzzzzzzzzzzzzz", make_pdf())
    assert_problem(response, 404, "not-found")
    assert stored_objects(settings)["staging"] == []
