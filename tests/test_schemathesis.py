"""The published OpenAPI, checked against a real server by schemathesis (issue 10).

A real uvicorn serves the app on 127.0.0.1 over a temporary data directory; a little of
everything is made through the API (:func:`careshare.testing.seed.seed`) so path parameters can
name real objects; the schema is read back from ``/schema/openapi.json``. Each operation is one
test: schemathesis generates requests (valid and invalid ones, with generated or real ids) and
every answer must be no server error and match the schema the server publishes. The stateful
test follows the OpenAPI links the server declares (a created patient, then its files ...).

Examples per operation follow the Hypothesis profile: a handful with ``CI=true``, many more with
``--hypothesis-profile=thorough``.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.config._checks import (
    MISSING_REQUIRED_HEADER_EXPECTED_STATUSES,
    NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES,
    POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import response_schema_conformance

from careshare.core.models import BodyErrors, structure_body
from careshare.core.problems import Problem
from careshare.host import create_app
from careshare.testing import bearer, make_pdf, make_settings, running_server
from careshare.testing.seed import PARAMETER, fill_path, prefixes, seed
from careshare.web.content import parse_range
from careshare.web.openapi import IDEMPOTENCY_KEY, NON_BLANK, TEXT, body_schema, limits

if TYPE_CHECKING:
    from collections.abc import Iterator

load_all_checks()
#: Every check schemathesis has: valid requests are taken, invalid ones refused, answers as declared ...
CHECKS = REGISTERED_CHECKS.get_all()
PROBLEM_JSON = "application/problem+json"
#: Examples per operation and per mode (valid, invalid): an eighth of the profile's count.
EXAMPLES = max(3, hypothesis_settings.default.max_examples // 8)


METHODS = ("get", "put", "post", "delete", "patch", "head")


def _in_process() -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The app's OpenAPI and ``(method, path, handler source)`` of its routes, read in process at collection."""
    folder = Path(tempfile.mkdtemp(prefix="careshare-openapi-"))
    try:
        app = create_app(make_settings(folder / "data"))
        document = app.openapi_schema.to_schema()
        handlers = [
            (method, PARAMETER.sub(lambda m: "{" + m.group(1) + "}", route.path), inspect.getsource(handler.fn))
            for route in app.routes
            for handler in getattr(route, "route_handlers", ())
            if handler.resolve_include_in_schema() and not route.path.startswith("/console")
            for method in handler.http_methods
        ]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return document, handlers


DOCUMENT, HANDLERS = _in_process()
# Deletions last, so the seeded objects they remove are still there for every other operation.
OPERATIONS = sorted(
    ((method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item if method in METHODS),
    key=lambda op: (op[0] == "DELETE", op),
)


#: Rules about other objects or the server's state, which no JSON schema can state: a request the
#: schema allows may break one and is then refused with 422 and the rule's code.
SERVER_RULES = {
    "POST /v1/consent-forms": "each information pack named exists in the organisation (information-pack-not-found)",
    "POST /v1/patients/{pid}/consents": "the consent form named exists in the organisation (consent-form-not-found)",
    "POST /v1/files/{fid}/render": "the file is of a type that renders again (render-not-supported)",
    "POST /v1/patients/{pid}/file-requests": "due_at lies ahead; accepted_kinds are kinds the loaded plugins know",
    "POST /v1/patients/{pid}/medications": "the schedule's end is not before its start",
    "POST /v1/letters/{lid}/send": '"email": true needs the server to have SMTP (email-not-configured)',
    "POST /v1/me/file-requests/{rid}/files": "the file is of a kind the request asks for (kind-not-requested)",
    "POST /v1/patients/{pid}/erase": "external_id is the patient's own, exactly (erasure-not-confirmed)",
    "GET /v1/patients/{pid}/files": "kind is a kind the loaded plugins know; before comes after since",
    "GET /v1/library/files": "kind is a kind the loaded plugins know; before comes after since",
}


def _protocol_statuses(operation: dict[str, Any], name: str = "") -> dict[str, list[str]]:
    """Statuses an HTTP protocol, not the schema, decides, by check: what schemathesis must also expect.

    tus 1.0.0 answers a missing or unknown ``Tus-Resumable`` with 412, an ``Upload-Length`` past the
    server's ``Tus-Max-Size`` with 413 and bytes that do not match their ``Upload-Checksum`` with
    460; RFC 9110 answers a range outside the file with 416; an upload whose bytes are no file type
    careshare shares is 415; a body past the size cap is 413; a rule of :data:`SERVER_RULES` is 422.
    """
    headers = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "header"}
    bodies = operation.get("requestBody", {}).get("content", {})
    refused, taken, missing = ["413"], [], []
    if "Tus-Resumable" in headers:
        refused.append("412")
        missing.append("412")
    if "Upload-Length" in headers:
        taken.append("413")
    if "Upload-Checksum" in headers:
        taken.append("460")
    if "Range" in headers:
        taken.append("416")
    if "application/octet-stream" in bodies:
        taken.append("415")
    if name in SERVER_RULES:
        taken.append("422")
    statuses = {"negative_data_rejection": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, *refused]}
    if taken:
        statuses["positive_data_acceptance"] = [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, *taken]
    if missing:
        statuses["missing_required_header"] = [*MISSING_REQUIRED_HEADER_EXPECTED_STATUSES, *missing]
    return statuses


CONFIG = schemathesis.Config.from_dict(
    {
        # Each request carries the token the test chose: none is generated, or removed.
        "generation": {"with-security-parameters": False},
        "operations": [
            {
                "include-name": f"{method.upper()} {path}",
                "checks": {
                    check: {"expected-statuses": codes}
                    for check, codes in _protocol_statuses(operation, f"{method.upper()} {path}").items()
                },
            }
            for path, item in DOCUMENT["paths"].items()
            for method, operation in item.items()
            if method in METHODS
        ],
    }
)
# A tus PATCH body is raw bytes under its own media type.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


def test_every_body_a_handler_reads_is_declared() -> None:
    """A handler that parses JSON or takes an upload itself must say so in the OpenAPI (Litestar cannot see it)."""
    readers = [h for h in HANDLERS if "parse_body(request" in h[2] or "Upload(request" in h[2]]
    assert len(readers) >= 20, readers  # the source test still finds the handlers it is about
    undeclared = []
    for method, path, source in readers:
        declared = DOCUMENT["paths"].get(path, {}).get(method.lower(), {}).get("requestBody", {}).get("content", {})
        if "parse_body(request" in source and "application/json" not in declared:
            undeclared.append(f"{method} {path}: JSON body")
        if "Upload(request" in source and "application/octet-stream" not in declared:
            undeclared.append(f"{method} {path}: upload body")
    assert not undeclared, "declare them with operation_class=documented(...) (host/openapi.py): " + ", ".join(
        undeclared
    )


@dataclass
class Api:
    base_url: str
    schema: Any
    ids: dict[str, str]
    clinician: dict[str, str]
    patient: dict[str, str]

    def headers_for(self, path: str) -> dict[str, str]:
        return self.patient if path == "/v1/me" or path.startswith("/v1/me/") else self.clinician

    def real_parameters(self, path: str) -> dict[str, str] | None:
        if fill_path(path, self.ids) is None:
            return None
        return {name: self.ids[prefix] for name, prefix in prefixes(path)}


async def _seed_over_http(base_url: str, settings: Any) -> dict[str, str]:
    clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        return dict(
            await seed(client, clinician, lambda pid: bearer(settings, "patient", "org-a", patient=pid), pdf=make_pdf())
        )


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, migrated_database: Path) -> Iterator[Api]:
    # Thousands of generated requests from one address, many with refused tokens or patient
    # uploads: the rate limits (tested on their own) would answer 429 and hide everything else.
    settings = make_settings(
        tmp_path_factory.mktemp("schemathesis") / "data",
        CARESHARE_TOKEN_FAILURES_PER_MINUTE="0",
        CARESHARE_PATIENT_UPLOADS_PER_HOUR="0",
    )
    database = Path(settings.database_url.split("///", 1)[1])
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_database, database)
    with running_server(create_app(settings)) as base_url:
        ids = asyncio.run(_seed_over_http(base_url, settings))
        schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json", config=CONFIG)
        yield Api(
            base_url,
            schema,
            ids,
            bearer(settings, "clinician", "org-a", sub="dr-a"),
            bearer(settings, "patient", "org-a", patient=ids["patient"]),
        )


def test_the_server_publishes_the_operations_collected(api: Api) -> None:
    served = sorted((op.method.upper(), op.path) for op in (r.ok() for r in api.schema.get_all_operations()))
    assert served == sorted(OPERATIONS)


def _param(operation: tuple[str, str]) -> Any:
    return pytest.param(operation, id=" ".join(operation))


def _fresh_idempotency_key(case: Any) -> None:
    """A generated ``Idempotency-Key`` the schema allows, made unique (still allowed).

    Hypothesis draws the same few keys again and again (``"0"``), and a key an earlier generated
    request used for another request is rightly ``422 idempotency-key-reused``; a key against the
    schema is left as drawn, to be refused. tests/test_idempotency.py tests replays and reuse.
    """
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(IDEMPOTENCY_KEY.schema.pattern, key) and len(key) <= 200:
        case.headers["Idempotency-Key"] = f"{key[:160]}-{uuid.uuid4().hex}"


@pytest.mark.parametrize("operation", [_param(op) for op in OPERATIONS])
def test_operation_keeps_to_the_published_schema(api: Api, operation: tuple[str, str]) -> None:
    method, path = operation
    endpoint = api.schema[path][method]
    real = api.real_parameters(path)
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(endpoint.as_strategy(generation_mode=mode))
        if real:
            strategies.append(endpoint.as_strategy(generation_mode=mode, path_parameters=real))
    headers = api.headers_for(path)

    @given(case=st.one_of(strategies))
    @hypothesis_settings(
        max_examples=EXAMPLES * len(strategies),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        _fresh_idempotency_key(case)
        case.call_and_validate(base_url=api.base_url, headers=headers, checks=CHECKS, timeout=60)

    run()


def test_the_schema_declares_problems_and_the_check_reads_them(api: Api) -> None:
    """Refusals are declared as RFC 9457 problems, so the check above validates them for real:
    a body in Litestar's own error shape (what the schema used to promise) is refused."""
    endpoint = api.schema["/v1/patients/{pid}"]["GET"]
    case = endpoint.Case(path_parameters={"pid": "no-such-patient"})
    response = case.call(base_url=api.base_url, headers=api.clinician, timeout=60)
    assert response.status_code == 404
    case.validate_response(response, checks=[response_schema_conformance])
    litestar_shaped = Response(
        status_code=404,
        headers={"content-type": [PROBLEM_JSON]},
        content=b'{"status_code": 404, "detail": "Not Found"}',
        request=response.request,
        elapsed=0.0,
        verify=True,
    )
    with pytest.raises(FailureGroup):
        case.validate_response(litestar_shaped, checks=[response_schema_conformance])
    for label, item in api.schema.raw_schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head"):
                declared = operation["responses"]
                assert PROBLEM_JSON in declared["default"]["content"], f"{method.upper()} {label}"
                assert PROBLEM_JSON in declared["400"]["content"], f"{method.upper()} {label}"


def test_a_range_of_thousands_of_digits_is_no_server_error(api: Api) -> None:
    """Found while declaring ``Range``: Python refuses ``int()`` of over 4300 digits (a 500 before)."""
    # A file of its own: DELETE /v1/files/{fid}, generated above, may have removed the seeded one.
    uploaded = httpx.post(
        f"{api.base_url}/v1/patients/{api.ids['patient']}/files",
        params={"filename": "range.pdf"},
        content=make_pdf(),
        headers={**api.clinician, "Prefer": "wait=30"},
        timeout=60,
    )
    assert uploaded.status_code == 201, uploaded.text
    url = f"{api.base_url}/v1/files/{uploaded.json()['id']}/content"
    for header, status in (
        ("bytes=" + "9" * 5000 + "-", 416),
        ("bytes=0-" + "9" * 5000, 206),
        ("bytes=-" + "9" * 5000, 206),
    ):
        response = httpx.get(url, headers={**api.clinician, "Range": header}, timeout=60)
        assert response.status_code == status, (header[:20], response.status_code, response.text[:200])


def test_tus_numbers_of_thousands_of_digits_are_no_server_error(api: Api) -> None:
    """The same for ``Upload-Length`` and ``Upload-Offset``: refused as too large, or at the wrong offset."""
    huge, tus = "9" * 5000, {"Tus-Resumable": "1.0.0"}
    created = httpx.post(
        f"{api.base_url}/v1/me/uploads", headers={**api.patient, **tus, "Upload-Length": huge}, timeout=60
    )
    assert created.status_code == 413, created.text[:300]
    made = httpx.post(f"{api.base_url}/v1/me/uploads", headers={**api.patient, **tus, "Upload-Length": "4"}, timeout=60)
    assert made.status_code == 201, made.text[:300]
    patched = httpx.patch(
        api.base_url + made.headers["location"],
        headers={
            **api.patient,
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": huge,
            "Content-Type": "application/offset+octet-stream",
        },
        content=b"x",
        timeout=60,
    )
    assert patched.status_code == 409, patched.text[:300]


@given(
    first=st.text("0123456789", max_size=6000), last=st.text("0123456789", max_size=6000), size=st.integers(1, 10**12)
)
def test_parse_range_answers_any_digits_within_the_file(first: str, last: str, size: int) -> None:
    try:
        span = parse_range(f"bytes={first}-{last}", size)
    except Problem as problem:
        assert problem.code == "range-not-satisfiable"
        return
    if span is not None:
        start, end = span
        assert 0 <= start < end <= size


def test_non_blank_means_what_strip_keeps() -> None:
    """The schema's notion of blank is the server's (``str.strip()``), character by character."""
    for code in range(1, sys.maxunicode + 1):
        char = chr(code)
        assert (re.search(NON_BLANK, f" {char} ") is not None) == bool(char.strip()), hex(code)
    assert re.search(NON_BLANK, "a\x00") is None
    assert re.search(TEXT, "a\x00") is None


@attrs.frozen
class _Limited:
    name: str = attrs.field(metadata=limits(maxLength=5, pattern=NON_BLANK))
    note: str | None = attrs.field(default=None, metadata=limits(maxLength=9))
    tags: list[str] = attrs.field(factory=list, metadata=limits(maxItems=2, items={"minLength": 1}))
    count: int = attrs.field(default=1, metadata=limits(minimum=1))


def test_limits_land_on_the_value_not_on_null() -> None:
    properties = body_schema(_Limited)["properties"]
    assert properties["name"] == {"type": "string", "maxLength": 5, "pattern": NON_BLANK}
    assert properties["note"] == {"anyOf": [{"type": "string", "pattern": TEXT, "maxLength": 9}, {"type": "null"}]}
    assert properties["tags"] == {
        "type": "array",
        "items": {"type": "string", "pattern": TEXT, "minLength": 1},
        "maxItems": 2,
    }
    assert properties["count"] == {"type": "integer", "minimum": 1}


def test_an_integral_number_is_an_integer_as_json_schema_says() -> None:
    assert structure_body({"name": "a", "count": 5.0}, _Limited).count == 5
    for wrong in (5.5, True, "5"):
        with pytest.raises(BodyErrors):
            structure_body({"name": "a", "count": wrong}, _Limited)


def _linked_operations(raw: dict[str, Any]) -> set[str]:
    """``METHOD /path`` of every operation a link starts from or leads to."""
    linked = set()
    for path, item in raw["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                for link in response.get("links", {}).values():
                    pointer = link["operationRef"].removeprefix("#/paths/")
                    target, _, target_method = pointer.rpartition("/")
                    linked.add(f"{method.upper()} {path}")
                    linked.add(f"{target_method.upper()} {target.replace('~1', '/').replace('~0', '~')}")
    return linked


def test_stateful_links_keep_to_the_published_schema(api: Api) -> None:
    """Sequences along the OpenAPI links (a created patient, then its files and audit ...)."""
    linked = _linked_operations(api.schema.raw_schema)
    assert {"POST /v1/patients", "GET /v1/patients/{pid}"} <= linked, sorted(linked)
    steps: list[tuple[str, str, int]] = []

    class Machine(api.schema.include(name=sorted(linked)).as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            _fresh_idempotency_key(case)

        def after_call(self, response: Any, case: Any) -> None:
            steps.append((case.method.upper(), case.path, response.status_code))

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": api.base_url, "headers": api.headers_for(case.path), "timeout": 60}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    Machine.run(
        settings=hypothesis_settings(
            max_examples=EXAMPLES * 2,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )
    # The links were followed: an object made by one step was found by a later one.
    followed = [step for step in steps if "{" in step[1] and 200 <= step[2] < 300]
    assert followed, sorted(set(steps))
