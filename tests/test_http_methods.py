"""HEAD and OPTIONS as outside clients use them (issue 13).

Video players, download managers and caches ask ``HEAD`` before they fetch: every route that
serves bytes answers it with the headers its ``GET`` has and no body. ``OPTIONS`` names in
``Allow`` exactly the methods the path has, which are the methods the OpenAPI documents for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar.routes import HTTPRoute

from careshare.core.problems import problem_types
from careshare.testing import bearer, make_pdf
from careshare.testing.seed import PARAMETER, fill_path, seed

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings

#: Headers that may differ between two answers to the same request.
VARYING = {"date", "content-length", "transfer-encoding"}


def _routes(client: AsyncTestClient[Any]) -> list[HTTPRoute]:
    return [r for r in client.app.routes if isinstance(r, HTTPRoute) and not r.path.startswith("/console")]


@pytest.fixture
async def seeded(client: AsyncTestClient[Any], clinician: dict[str, str], settings: Settings) -> dict[str, str]:
    return await seed(client, clinician, lambda pid: bearer(settings, "patient", "org-a", patient=pid), pdf=make_pdf(3))


async def test_head_answers_every_byte_route_as_its_get_without_the_bytes(
    client: AsyncTestClient[Any], clinician: dict[str, str], seeded: dict[str, str], settings: Settings
) -> None:
    patient = bearer(settings, "patient", "org-a", patient=seeded["patient"])
    # Routes whose one handler takes GET and HEAD (tus's HEAD is a protocol answer of its own).
    served = sorted(
        r.path for r in _routes(client) if any({"GET", "HEAD"} <= set(h.http_methods) for h in r.route_handlers)
    )
    # The host's and the letters channel's byte routes, at least.
    for expected in ("/v1/files/{fid:str}/content", "/v1/attachments/{aid:str}/content", "/v1/links/{token:str}"):
        assert expected in served
    assert any(p.endswith("/pdf") for p in served)
    answered = 0
    for template in served:
        path = fill_path(template, seeded)
        assert path is not None, f"the seed makes nothing for {template}"
        headers = patient if template.startswith("/v1/attachments") else clinician
        for extra in ({}, {"Range": "bytes=0-9"}):
            got = await client.get(path, headers={**headers, **extra})
            head = await client.head(path, headers={**headers, **extra})
            assert head.status_code == got.status_code, template
            assert head.content == b"", template
            same = {k: v for k, v in got.headers.items() if k not in VARYING}
            assert {k: v for k, v in head.headers.items() if k not in VARYING} == same, template
            if got.status_code in (200, 206):
                answered += 1
                assert head.headers["content-length"] == str(len(got.content)), template
    assert answered >= 6  # files, attachments and links each served whole and in part


async def test_head_elsewhere_is_405_naming_what_the_path_allows(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    answer = await client.head(f"/v1/patients/{patient_id}", headers=clinician)
    assert answer.status_code == 405 and answer.content == b""


async def test_options_allows_exactly_the_documented_methods(
    client: AsyncTestClient[Any], seeded: dict[str, str]
) -> None:
    document = client.app.openapi_schema.to_schema()
    checked = 0
    for route in _routes(client):
        plain = PARAMETER.sub(lambda m: "{" + m.group(1) + "}", route.path)
        path = fill_path(route.path, seeded) or PARAMETER.sub("x", route.path)
        answer = await client.options(path)
        assert answer.status_code == 204, route.path
        allowed = {m.strip() for m in answer.headers["allow"].split(",")}
        assert allowed == set(route.methods), route.path
        if plain in document["paths"]:
            documented = {m.upper() for m in document["paths"][plain]} & {
                "GET",
                "HEAD",
                "POST",
                "PUT",
                "PATCH",
                "DELETE",
            }
            assert allowed == documented | {"OPTIONS"}, route.path
            checked += 1
    assert checked >= 60  # every API path, not a handful


async def test_the_document_says_which_operations_need_the_bearer_token(
    client: AsyncTestClient[Any], seeded: dict[str, str]
) -> None:
    document = client.app.openapi_schema.to_schema()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert document["security"] == [{"bearer": []}]
    public, guarded = [], []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "head", "post", "put", "patch", "delete"}:
                continue
            filled = fill_path(path, seeded)
            assert filled is not None, f"the seed makes nothing for {path}"
            # No token at all (the tus header as tus clients send it: without it, tus answers 412 first).
            answer = await client.request(method.upper(), filled, headers={"Tus-Resumable": "1.0.0"})
            if operation.get("security") == []:
                public.append(path)
                assert answer.status_code != 401, (method, path)
            else:
                guarded.append(path)
                assert answer.status_code == 401, (method, path, answer.status_code)
                assert answer.headers["content-type"].startswith("application/problem+json"), (method, path)
    assert sorted(set(public)) == ["/healthz", "/v1/links/{token}"]
    assert len(guarded) >= 90


async def test_every_operation_refuses_with_the_problem_naming_every_code(client: AsyncTestClient[Any]) -> None:
    document = client.app.openapi_schema.to_schema()
    problem = document["components"]["schemas"]["ProblemDocument"]
    assert problem["properties"]["code"]["enum"] == sorted(problem_types())
    assert {"invalid-request", "pdf-password-protected", "draft-required", "video-not-allowed"} <= set(
        problem["properties"]["code"]["enum"]
    )  # the host's, a format plugin's, a channel's
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "head", "post", "put", "patch", "delete"}:
                continue
            for status in ("400", "default"):
                content = operation["responses"][status]["content"]
                assert content, (method, path)
                assert content == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}
                }
