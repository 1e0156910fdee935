"""Hostile input gets a clean answer: text no database keeps, times out of range, NUL in addresses,
clients that go away, tokens of organisations nobody registered, and the audit export."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from careshare.core.models import EARLIEST, LATEST, BodyErrors, check_text, structure_body
from careshare.core.patients import register_organisation
from careshare.host import create_app
from careshare.host.cli import app as cli
from careshare.testing import bearer, make_pdf, make_settings, running_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from careshare.core.settings import Settings
    from careshare.testing import PostgresCluster

HOSTILE = st.sampled_from(["\x00", "\ud800", "\udfff", "\udc00\ud800"])
#: Text around a hostile character: any other characters, surrogates excluded (they are the point).
AROUND = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)


def _raw_json(value: Any) -> bytes:
    """JSON with lone surrogates escaped as ``\\udxxx`` (what a hostile client can send)."""
    return json.dumps(value, ensure_ascii=True).encode()


# --- text ------------------------------------------------------------------------------------------


@given(before=AROUND, bad=HOSTILE, after=AROUND)
def test_check_text_refuses_nul_and_lone_surrogates(before: str, bad: str, after: str) -> None:
    with pytest.raises(ValueError, match="NUL characters or unpaired surrogates"):
        check_text(before + bad + after)


@given(text=AROUND)
def test_check_text_keeps_any_other_text(text: str) -> None:
    assert check_text(text) is text


@given(bad=HOSTILE, depth=st.integers(min_value=0, max_value=5), as_key=st.booleans())
def test_structure_body_names_the_field_at_any_depth(bad: str, depth: int, as_key: bool) -> None:
    import attrs

    @attrs.frozen
    class Body:
        name: str
        extra: dict[str, Any]

    nested: Any = {f"x{bad}": 1} if as_key else bad
    for _ in range(depth):
        nested = {"inner": [nested]}
    with pytest.raises(BodyErrors) as caught:
        structure_body({"name": "ok", "extra": {"deep": nested}}, Body)
    (error,) = caught.value.errors
    path = "$.extra.deep" + ".inner[0]" * depth
    assert error == (f"{path} (a key): " if as_key else f"{path}: ") + (
        "must not contain NUL characters or unpaired surrogates (\\u0000, \\ud800-\\udfff)"
    )


async def test_lone_surrogate_in_a_patient_name_is_422_naming_the_field(
    client: AsyncTestClient[Any], clinician: dict[str, str]
) -> None:
    body = _raw_json({"name": "\ud800", "external_id": "MRN-S"})
    assert b"\\ud800" in body
    response = await client.post(
        "/v1/patients", content=body, headers={**clinician, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid-request"
    assert problem["errors"] == [
        "$.name: must not contain NUL characters or unpaired surrogates (\\u0000, \\ud800-\\udfff)"
    ]
    listed = await client.post("/v1/patients", json={"name": "Pat", "external_id": "MRN-S"}, headers=clinician)
    assert listed.status_code == 201, "the refused request left a patient behind"


@hypothesis_settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=AROUND, bad=HOSTILE, field=st.sampled_from(["name", "external_id", "email"]))
async def test_hostile_text_in_any_patient_field_is_422(
    client: AsyncTestClient[Any], clinician: dict[str, str], before: str, bad: str, field: str
) -> None:
    body = {"name": "Pat", "external_id": f"MRN-{uuid.uuid4().hex}", "email": "pat@example.org"}
    body[field] = before + bad
    response = await client.post(
        "/v1/patients", content=_raw_json(body), headers={**clinician, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0].startswith(f"$.{field}: must not contain NUL")


async def test_nul_in_a_chat_form_field_is_422(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    response = await client.post(
        f"/v1/patients/{patient_id}/messages",
        files={"body": (None, b"hello\x00there")},
        headers=clinician,
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        "$.body: must not contain NUL characters or unpaired surrogates (\\u0000, \\ud800-\\udfff)"
    ]


# --- addresses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["/v1/patients/%00", "/v1/patients/abc%00def/files", "/v1/files/x%00", "/v1/patients/{pid}/files?cursor=%00"],
)
async def test_nul_in_an_address_is_400(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, address: str
) -> None:
    response = await client.get(address.replace("{pid}", patient_id), headers=clinician)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad-request"
    assert "%00" in response.json()["detail"]


async def test_nul_in_a_filename_parameter_is_cleaned_not_refused(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    response = await client.post(
        f"/v1/patients/{patient_id}/files?filename=scan%00.pdf", content=make_pdf(), headers=clinician
    )
    assert response.status_code == 201, response.text
    assert "\x00" not in response.json()["filename"]
    assert response.json()["filename"].endswith(".pdf")


async def test_a_10_kb_file_name_is_cut_alike_from_the_query_and_from_multipart(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    name = "n" * 10_000 + ".pdf"
    by_query = await client.post(
        f"/v1/patients/{patient_id}/files", params={"filename": name}, content=make_pdf(), headers=clinician
    )
    by_form = await client.post(
        f"/v1/patients/{patient_id}/files",
        files={"file": (name, make_pdf(), "application/pdf")},
        headers=clinician,
    )
    assert by_query.status_code == 201, by_query.text
    assert by_form.status_code == 201, by_form.text
    assert len(by_form.json()["filename"]) <= 255
    assert by_form.json()["filename"] == by_query.json()["filename"]


@pytest.fixture
def pg_settings(tmp_path: Path, postgres: PostgresCluster) -> Settings:
    return make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=postgres.create_database("nul_addresses"))


async def test_nul_in_an_address_is_400_on_postgresql(pg_settings: Settings) -> None:
    settings = pg_settings
    headers = bearer(settings, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=create_app(settings)) as client:
        for address in ("/v1/patients/%00", "/v1/library/files?cursor=%00", "/v1/files/a%00b/content"):
            response = await client.get(address, headers=headers)
            assert response.status_code == 400, (address, response.text)
        body = _raw_json({"name": "P\x00t", "external_id": "MRN-\ud800"})
        response = await client.post(
            "/v1/patients", content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert len(response.json()["errors"]) == 2


# --- times -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00", "1899-12-31T23:59:59+00:00", "3000-01-01T00:00:00Z"],
)
async def test_times_out_of_range_are_422_naming_the_field(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, value: str
) -> None:
    asked = await client.post(
        f"/v1/patients/{patient_id}/file-requests",
        json={"message": "Your scan, please", "accepted_kinds": ["pdf"], "max_files": 1, "due_at": value},
        headers=clinician,
    )
    assert asked.status_code == 422, asked.text
    assert asked.json()["errors"] == ["$.due_at: give a time between 1900-01-01 and 2999-12-31 (UTC)"]
    kind = await client.post("/v1/appointment-types", json={"name": "Clinic visit"}, headers=clinician)
    assert kind.status_code == 201, kind.text
    booked = await client.post(
        f"/v1/patients/{patient_id}/appointments",
        json={"type_id": kind.json()["id"], "starts_at": value},
        headers=clinician,
    )
    assert booked.status_code == 422, booked.text
    assert booked.json()["errors"] == ["$.starts_at: give a time between 1900-01-01 and 2999-12-31 (UTC)"]


OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@hypothesis_settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moment=st.datetimes(timezones=OFFSETS))
async def test_any_aware_time_is_booked_or_refused_never_500(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, moment: datetime
) -> None:
    kind = await client.post("/v1/appointment-types", json={"name": "Visit"}, headers=clinician)
    booked = await client.post(
        f"/v1/patients/{patient_id}/appointments",
        json={"type_id": kind.json()["id"], "starts_at": moment.isoformat()},
        headers=clinician,
    )
    try:
        in_range = EARLIEST <= moment.astimezone(UTC) <= LATEST
    except OverflowError:
        in_range = False
    assert booked.status_code == (201 if in_range else 422), booked.text
    if in_range:
        kept = datetime.fromisoformat(booked.json()["starts_at"])
        assert kept == moment


# --- clients that go away --------------------------------------------------------------------------


def test_a_client_closing_mid_body_gets_no_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path / "data")
    token = bearer(settings, "clinician", "org-a", sub="dr-a")["Authorization"]
    caplog.set_level(logging.INFO)
    with running_server(create_app(settings)) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(
                b"POST /v1/patients HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: " + token.encode() + b"\r\nContent-Length: 100\r\n\r\n" + b'{"name": "Pat'
            )
        # The server keeps serving, and says what happened without an error.
        for _ in range(50):
            if any("client closed the request early" in r.getMessage() for r in caplog.records):
                break
            httpx.get(f"{base}/healthz", timeout=5)
        answered = httpx.post(
            f"{base}/v1/patients",
            json={"name": "Pat", "external_id": "MRN-1"},
            headers={"Authorization": token},
            timeout=10,
        )
    assert answered.status_code == 201, answered.text
    messages = [r.getMessage() for r in caplog.records]
    assert any("client closed the request early method=POST path=/v1/patients" in m for m in messages), messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], messages
    assert not any("Pat" in m for m in messages), [m for m in messages if "Pat" in m]


# --- who may ask -----------------------------------------------------------------------------------


async def test_targets_need_a_token(client: AsyncTestClient[Any], clinician: dict[str, str]) -> None:
    anonymous = await client.get("/v1/targets")
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["code"] == "authentication-required"
    signed_in = await client.get("/v1/targets", headers=clinician)
    assert signed_in.status_code == 200
    assert signed_in.json()["items"]


@pytest.fixture
async def closed_client(tmp_path: Path) -> AsyncIterator[tuple[AsyncTestClient[Any], Settings]]:
    """A server that allows no organisation by configuration: only registered ones."""
    settings = make_settings(tmp_path / "data", CARESHARE_ORGS="")
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client, settings


async def test_a_token_of_an_unregistered_organisation_is_refused_until_it_is_registered(
    closed_client: tuple[AsyncTestClient[Any], Settings],
) -> None:
    client, settings = closed_client
    headers = bearer(settings, "clinician", "org-new", sub="dr-n")
    refused = await client.get("/v1/library/files", headers=headers)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "organisation-unknown"
    assert "careshare org create" in refused.json()["detail"]
    cs = client.app.state.careshare
    assert await register_organisation(cs.engine, "org-new") is True
    assert await register_organisation(cs.engine, "org-new") is False
    accepted = await client.get("/v1/library/files", headers=headers)
    assert accepted.status_code == 200, accepted.text
    other = await client.get("/v1/library/files", headers=bearer(settings, "clinician", "org-other", sub="dr-o"))
    assert other.status_code == 403


async def test_an_allowed_organisation_is_accepted_and_made_on_first_sight(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", CARESHARE_ORGS=" org-x , org-y")
    assert settings.allowed_orgs == frozenset({"org-x", "org-y"})
    async with AsyncTestClient(app=create_app(settings)) as client:
        for org, status in (("org-x", 200), ("org-y", 200), ("org-z", 403)):
            response = await client.get("/v1/library/files", headers=bearer(settings, "clinician", org, sub="dr"))
            assert response.status_code == status, (org, response.text)


def _cli(data_dir: Path, *args: str) -> Any:
    env = {
        "CARESHARE_DATA_DIR": str(data_dir),
        "CARESHARE_SECRET_KEY": "cli-secret-0123456789abcdef0123456789",
        "CARESHARE_DATABASE_URL": None,
        "CARESHARE_STORAGE_URL": None,
        "CARESHARE_ORGS": None,
        "CARESHARE_DISABLE_PLUGINS": None,
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_org_commands_token_registration_and_audit_export(tmp_path: Path) -> None:
    data = tmp_path / "data"
    started = datetime.now(UTC)
    created = _cli(data, "org", "create", "clinic-1")
    assert created.exit_code == 0, created.output
    again = _cli(data, "org", "create", "clinic-1")
    assert "registered already" in again.output
    minted = _cli(data, "token", "--role", "clinician", "--org", "clinic-2", "--sub", "dr-2")
    assert minted.exit_code == 0, minted.output
    unregistered = _cli(data, "token", "--role", "clinician", "--org", "clinic-3", "--sub", "dr-3", "--no-register")
    assert unregistered.exit_code == 0
    listed = _cli(data, "org", "list")
    assert listed.stdout.split() == ["clinic-1", "clinic-2"]

    settings = make_settings(data, CARESHARE_SECRET_KEY="cli-secret-0123456789abcdef0123456789", CARESHARE_ORGS="")
    token = minted.stdout.strip()

    async def use() -> tuple[str, int]:
        async with AsyncTestClient(app=create_app(settings)) as client:
            headers = {"Authorization": f"Bearer {token}"}
            made = await client.post(
                "/v1/patients", json={"name": "Pat Secret", "external_id": "MRN-9"}, headers=headers
            )
            assert made.status_code == 201, made.text
            pid = made.json()["id"]
            uploaded = await client.post(
                f"/v1/patients/{pid}/files?filename=secret-name.pdf", content=make_pdf(), headers=headers
            )
            assert uploaded.status_code == 201, uploaded.text
            refused = await client.get(
                "/v1/library/files", headers={"Authorization": f"Bearer {unregistered.stdout.strip()}"}
            )
        return uploaded.json()["id"], refused.status_code

    file_id, refused_status = asyncio.run(use())
    assert refused_status == 403

    exported = _cli(data, "audit", "export", "--since", started.isoformat())
    assert exported.exit_code == 0, exported.output
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    assert any(e["action"] == "file.uploaded" and e["file_id"] == file_id for e in events), events
    assert all(e["org"] in ("clinic-1", "clinic-2") for e in events)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert "Pat Secret" not in exported.stdout and "secret-name" not in exported.stdout
    only_one = _cli(data, "audit", "export", "--since", started.isoformat(), "--org", "clinic-1")
    assert [(e["org"], e["action"]) for e in map(json.loads, only_one.stdout.splitlines())] == [
        ("clinic-1", "organisation.created")
    ]
    future = _cli(data, "audit", "export", "--since", (datetime.now(UTC) + timedelta(days=1)).isoformat())
    assert future.stdout.strip() == ""
    bad = _cli(data, "audit", "export", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "--since" in bad.output
