"""Finding and editing patients, and searching files, through the HTTP API on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from careshare.core.patients import fold
from careshare.testing import bearer, make_pdf
from careshare.testing.api import assert_problem, register
from careshare.testing.api import post_file as upload
from careshare.testing.api import upload as library_upload
from careshare.testing.strategies.images import encode, quadrants

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings


@pytest.fixture
def dr(any_settings: Settings) -> dict[str, str]:
    return bearer(any_settings, "clinician", "org-a", sub="dr-a")


async def _new(api: AsyncTestClient[Any], dr: dict[str, str], name: str, external_id: str, **extra: Any) -> str:
    response = await api.post("/v1/patients", json={"name": name, "external_id": external_id, **extra}, headers=dr)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _all(api: AsyncTestClient[Any], headers: dict[str, str], url: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, following its cursor two at a time."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = await api.get(
            url, params={**params, "limit": 2, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert response.status_code == 200, response.text
        found += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return found


# -- patients ---------------------------------------------------------------------------------------


async def test_patients_list_searches_name_and_external_id_in_any_case(
    api: AsyncTestClient[Any], dr: dict[str, str], any_settings: Settings
) -> None:
    ids = {
        "strasse": await _new(api, dr, "Anna Straße", "MRN-100"),
        "bob": await _new(api, dr, "Bob Jones", "MRN-200"),
        "percent": await _new(api, dr, "Carl 100% Sure", "X_9"),
        "zoe": await _new(api, dr, "Zoë Quinn", "mrn-300"),
    }
    everyone = await _all(api, dr, "/v1/patients")
    assert [p["id"] for p in everyone] == sorted(ids.values(), reverse=True)  # newest first, every page
    assert {p["name"] for p in everyone} == {"Anna Straße", "Bob Jones", "Carl 100% Sure", "Zoë Quinn"}

    async def search(q: str) -> set[str]:
        return {p["id"] for p in await _all(api, dr, "/v1/patients", q=q)}

    assert await search("STRASSE") == {ids["strasse"]}  # ß folds to ss
    assert await search("  zoË ") == {ids["zoe"]}
    assert await search("mrn-") == {ids["strasse"], ids["bob"], ids["zoe"]}  # the external id, any case
    assert await search("%") == {ids["percent"]}  # LIKE's wildcards match themselves
    assert await search("x_") == {ids["percent"]}
    assert await search("nobody") == set()
    # Another organisation sees none of them; a patient may not list patients.
    other = bearer(any_settings, "clinician", "org-b", sub="dr-b")
    assert (await api.get("/v1/patients", headers=other)).json()["items"] == []
    me = bearer(any_settings, "patient", "org-a", patient=ids["bob"])
    assert_problem(await api.get("/v1/patients", headers=me), 403, "forbidden")


async def test_patient_edit_changes_name_and_email_and_is_audited(
    api: AsyncTestClient[Any], dr: dict[str, str], any_settings: Settings
) -> None:
    pid = await _new(api, dr, "Pat Old", "MRN-1")
    changed = await api.patch(
        f"/v1/patients/{pid}", json={"name": "  Pat New ", "email": "pat@example.org"}, headers=dr
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() | {"created_at": None} == {
        "id": pid,
        "name": "Pat New",
        "external_id": "MRN-1",
        "email": "pat@example.org",
        "created_at": None,
    }
    assert (await api.get(f"/v1/patients/{pid}", headers=dr)).json()["email"] == "pat@example.org"
    # The search follows the new name at once; the old one finds nothing.
    assert [p["id"] for p in (await api.get("/v1/patients?q=new", headers=dr)).json()["items"]] == [pid]
    assert (await api.get("/v1/patients?q=old", headers=dr)).json()["items"] == []
    # A field left out stays; "email": null removes the address.
    kept = await api.patch(f"/v1/patients/{pid}", json={"name": "Pat Newer"}, headers=dr)
    assert kept.json()["email"] == "pat@example.org"
    cleared = await api.patch(f"/v1/patients/{pid}", json={"email": None}, headers=dr)
    assert cleared.json()["email"] is None
    assert cleared.json()["name"] == "Pat Newer"
    # The same values again change nothing and write no audit event.
    same = await api.patch(f"/v1/patients/{pid}", json={"name": "Pat Newer", "email": None}, headers=dr)
    assert (await api.patch(f"/v1/patients/{pid}", json={"name": None}, headers=dr)).json()["name"] == "Pat Newer"
    assert same.status_code == 200
    audit = (await api.get(f"/v1/patients/{pid}/audit", headers=dr)).json()["items"]
    assert [e["action"] for e in audit].count("patient.updated") == 3
    assert "Pat" not in str(audit)  # the audit says that the record changed, never what it said
    assert "example.org" not in str(audit)


@pytest.mark.parametrize(
    ("body", "wrong"),
    [
        ({"name": "   "}, "$.name"),
        ({"email": "not an address"}, "$.email"),
        ({"name": "x" * 501}, "$.name"),
        ({"external_id": "MRN-2"}, "external_id"),
        ({"name": 12}, "$.name"),
    ],
)
async def test_patient_edit_refuses_what_a_patient_record_cannot_hold(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, body: dict[str, Any], wrong: str
) -> None:
    problem = assert_problem(
        await client.patch(f"/v1/patients/{patient_id}", json=body, headers=clinician), 422, "invalid-request"
    )
    assert any(wrong in error for error in problem["errors"]), problem
    assert (await client.get(f"/v1/patients/{patient_id}", headers=clinician)).json()["name"] == "Pat One"


async def test_patient_edit_of_another_organisations_patient_is_404(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings
) -> None:
    other = bearer(settings, "clinician", "org-b", sub="dr-b")
    assert_problem(
        await client.patch(f"/v1/patients/{patient_id}", json={"name": "X"}, headers=other), 404, "not-found"
    )
    missing = "01hzzzzzzzzzzzzzzzzzzzzzzz"
    assert_problem(
        await client.patch(f"/v1/patients/{missing}", json={"name": "X"}, headers=clinician), 404, "not-found"
    )
    me = bearer(settings, "patient", "org-a", patient=patient_id)
    assert_problem(await client.patch(f"/v1/patients/{patient_id}", json={"name": "X"}, headers=me), 403, "forbidden")
    assert (await client.get(f"/v1/patients/{patient_id}", headers=clinician)).json()["name"] == "Pat One"


_NAME_PARTS = st.sampled_from(["Ann", "ANN", "ß", "ss", "%", "_", "\\", "é", "É", " ", "1"])


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(st.lists(_NAME_PARTS, min_size=1, max_size=4).map("".join), min_size=1, max_size=5),
    query=st.lists(_NAME_PARTS, min_size=1, max_size=2).map("".join),
)
async def test_patient_search_finds_exactly_the_names_that_hold_the_query(
    client: AsyncTestClient[Any], settings: Settings, names: list[str], query: str
) -> None:
    # Patients of earlier examples stay in the organisation: only this example's are compared.
    dr = bearer(settings, "clinician", "org-a", sub="dr")
    # The search also reads the external id, so the expectation does too (a "1" query finds "E-1-...").
    made = {}
    for name in names:
        if name.strip():
            external_id = f"E-{len(made)}-{uuid.uuid4().hex}"
            made[await _new(client, dr, name, external_id)] = (name, external_id)
    response = await client.get("/v1/patients", params={"q": query, "limit": 200}, headers=dr)
    assert response.status_code == 200, response.text
    found = {p["id"] for p in response.json()["items"]}
    wanted = fold(query.strip())
    assert found & set(made) == {
        pid for pid, (name, external_id) in made.items() if wanted in fold(name.strip()) or wanted in fold(external_id)
    }


# -- file search ------------------------------------------------------------------------------------


async def test_file_search_by_name_kind_status_and_time(
    api: AsyncTestClient[Any], dr: dict[str, str], any_settings: Settings
) -> None:
    pid = await _new(api, dr, "Pat", "MRN-1")
    letter = (await upload(api, dr, pid, make_pdf(text="letter"), "Discharge LETTER.pdf")).json()
    scan = (await upload(api, dr, pid, encode([quadrants((16, 16))], "PNG"), "Röntgen_1.png")).json()
    locked = await upload(api, dr, pid, make_pdf(user_password="u", owner_password="o"), "locked letter.pdf")
    assert locked.status_code == 422
    refused = (await api.get(f"/v1/patients/{pid}/files?status=rejected", headers=dr)).json()["items"]
    assert [f["filename"] for f in refused] == ["locked letter.pdf"]
    base = f"/v1/patients/{pid}/files"

    async def names(**params: Any) -> list[str]:
        return [f["filename"] for f in await _all(api, dr, base, **params)]

    assert await names() == ["locked letter.pdf", "Röntgen_1.png", "Discharge LETTER.pdf"]
    assert await names(name="letter") == ["locked letter.pdf", "Discharge LETTER.pdf"]
    assert await names(name="RÖNTGEN") == ["Röntgen_1.png"]
    assert await names(name="_1") == ["Röntgen_1.png"]
    assert await names(name="%") == []
    assert await names(kind="image") == ["Röntgen_1.png"]
    assert await names(kind="pdf", status="ready") == ["Discharge LETTER.pdf"]
    assert await names(kind="video") == []
    assert await names(source="patient") == []
    # since is inclusive, before exclusive: the letter's own time splits the list around it.
    at = letter["created_at"]
    assert await names(since=at) == ["locked letter.pdf", "Röntgen_1.png", "Discharge LETTER.pdf"]
    assert await names(before=at) == []
    after_scan = (datetime.fromisoformat(scan["created_at"]) + timedelta(microseconds=1)).isoformat()
    assert await names(since=at, before=after_scan) == ["Röntgen_1.png", "Discharge LETTER.pdf"]
    # The library takes the same search.
    await library_upload(api, dr, make_pdf(text="leaflet"), "Leaflet knee.pdf")
    await library_upload(api, dr, make_pdf(text="other"), "Other.pdf")
    assert [f["filename"] for f in await _all(api, dr, "/v1/library/files", name="KNEE")] == ["Leaflet knee.pdf"]


@pytest.mark.parametrize(
    ("query", "wrong"),
    [
        ({"kind": "spreadsheet"}, "kind: one of dicom, image, pdf or video"),
        ({"since": "2030-01-01"}, "since:"),
        ({"before": "2030-01-01T00:00:00"}, "before: give the time zone offset"),
        ({"since": "2030-01-02T00:00:00Z", "before": "2030-01-01T00:00:00Z"}, "before: must come after since"),
    ],
)
async def test_file_search_refuses_a_query_it_cannot_answer(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, query: dict[str, str], wrong: str
) -> None:
    for url in (f"/v1/patients/{patient_id}/files", "/v1/library/files"):
        problem = assert_problem(await client.get(url, params=query, headers=clinician), 422, "invalid-request")
        assert problem["errors"][0].startswith(wrong), problem
    assert_problem(
        await client.get(f"/v1/patients/{patient_id}/files?status=lost", headers=clinician), 400, "bad-request"
    )
    await register(client, clinician, "MRN-unused")  # the refusals stored nothing and the API goes on
