"""The web kit's route factories through a real app: every item once, in order, page after page; the guard holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Controller
from litestar.di import Provide
from litestar.testing import TestClient

from careshare import hookimpl
from careshare.core.plugins import get_plugin_manager
from careshare.core.problems import NOT_FOUND, Problem
from careshare.core.targets import Attachment
from careshare.core.templates import Template
from careshare.host import create_app
from careshare.testing import bearer, make_settings
from careshare.web import attachment_json, clinician, page_route, show_route, shown

if TYPE_CHECKING:
    from careshare.core.models import Principal

#: The items the routes serve: ids sort by creation, as core's ids do, so the newest is the largest.
ITEMS: list[str] = []


async def _load_page(
    _conn: Any, principal: Principal, *, cursor: str | None, limit: int
) -> tuple[list[str], str | None]:
    assert principal.is_clinician
    newest_first = sorted((i for i in ITEMS if cursor is None or i < cursor), reverse=True)
    page = newest_first[:limit]
    return page, (page[-1] if len(newest_first) > limit else None)


async def _load_one(_conn: Any, _principal: Principal, item_id: str) -> str:
    if item_id not in ITEMS:
        raise Problem(NOT_FOUND)
    return item_id


class Things(Controller):
    path = "/v1/things"
    dependencies = {"principal": Provide(clinician)}

    everything = page_route("/", _load_page, lambda item: {"id": item}, of="organisation")
    one = show_route("/{thing_id:str}", _load_one, lambda item: {"id": item, "shown": True})


class ThingsPlugin:
    @hookimpl
    def careshare_routes(self) -> list[Any]:
        return [Things]


@pytest.fixture(scope="module")
def things(tmp_path_factory: pytest.TempPathFactory) -> Any:
    conf = make_settings(Path(tmp_path_factory.mktemp("kit")) / "data")
    pm = get_plugin_manager(plugins=[ThingsPlugin()])
    with TestClient(app=create_app(conf, plugins=pm)) as client:
        yield client, bearer(conf, "clinician", "org-a", sub="dr-k"), bearer(conf, "patient", "org-a", patient="p1")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 30), limit=st.integers(1, 7))
def test_pages_give_every_item_once_newest_first(things: Any, count: int, limit: int) -> None:
    client, headers, _ = things
    ITEMS[:] = [f"{n:04d}" for n in range(count)]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(count + 2):
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = client.get("/v1/things", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["items"]) <= limit
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ITEMS, reverse=True)


def test_show_route_takes_the_paths_own_parameter_and_its_loaders_refusal(things: Any) -> None:
    client, headers, _ = things
    ITEMS[:] = ["0001"]
    assert client.get("/v1/things/0001", headers=headers).json() == {"id": "0001", "shown": True}
    missing = client.get("/v1/things/0002", headers=headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "not-found")
    operation = client.app.openapi_schema.to_schema()["paths"]["/v1/things/{thing_id}"]["get"]
    assert [(p["name"], p["in"]) for p in operation["parameters"]] == [("thing_id", "path")]


def test_the_controllers_guard_holds_for_both_routes(things: Any) -> None:
    client, _, patient = things
    for path in ("/v1/things", "/v1/things/0001"):
        refused = client.get(path, headers=patient)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert client.get("/v1/things").status_code == 401


def test_a_limit_out_of_range_is_refused_before_the_loader(things: Any) -> None:
    client, headers, _ = things
    for limit in ("0", "201", "many"):
        refused = client.get("/v1/things", params={"limit": limit}, headers=headers)
        assert refused.status_code == 400, (limit, refused.text)


def test_factories_refuse_what_they_cannot_serve() -> None:
    with pytest.raises(ValueError, match="of must be"):
        page_route("/", _load_page, str, of="everyone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="names no path parameter"):
        show_route("/", _load_one, str)


@given(
    name=st.text(max_size=20),
    at=st.datetimes(timezones=st.just(UTC)),
    hidden=st.sets(st.sampled_from(["org", "name"])),
)
def test_shown_is_the_fields_in_json_less_the_hidden_plus_the_extra(name: str, at: datetime, hidden: set[str]) -> None:
    attachment = Attachment(
        id="a1",
        target="t",
        item_id="i",
        file_id="f1",
        role="shareable",
        sha256="0" * 64,
        media_type="application/pdf",
        size=3,
        filename="x.pdf",
        kind="pdf",
        position=0,
    )
    template = Template(
        id="t1",
        org="org-a",
        name=name,
        description="",
        created_by="dr",
        created_at=at,
        updated_at=at,
        attachments=(attachment,),
    )
    answer = shown(template, hide=hidden, url="/v1/x")
    assert set(answer) == {f.name for f in attrs.fields(Template)} - hidden | {"url"}
    assert answer["created_at"] == at.isoformat() and answer["url"] == "/v1/x"
    assert answer["attachments"] == [attachment_json(attachment)]
    assert json.loads(json.dumps(answer)) == answer
