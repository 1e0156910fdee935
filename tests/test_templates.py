"""Templates (appointment types, medication types) and the core functions items made from them rely on.

``core.targets.copy_attachments`` pins a template's files onto an item as they are at that moment;
``core.targets.detach`` edits a template and never what reached a patient. The HTTP routes of both
built-in template kinds come from one factory, so every route test runs against both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from careshare.core.ids import new_id
from careshare.core.models import Principal
from careshare.core.problems import Problem
from careshare.core.sharing import share
from careshare.core.targets import Item, Target, attach, attachments_of, copy_attachments, detach
from careshare.host.app import CareshareInit
from careshare.testing import bearer, make_pdf
from careshare.testing.api import assert_problem, upload
from careshare.testing.strategies.images import encode, quadrants
from careshare.testing.strategies.video import VideoSpec, make_video

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings

TEMPLATE_ROUTES = ("/v1/appointment-types", "/v1/medication-types")
CLINICIAN = Principal(subject="dr-a", role="clinician", org="org-a")
TEMPLATE = Target(name="demo-template", channel="demo", sources=frozenset({"library"}))
COPY = "demo-copy"


def png(seed: int) -> bytes:
    return encode([quadrants((40, 30), noise=4, seed=seed)], "PNG")


async def library_files(client: AsyncTestClient[Any], clinician: dict[str, str], count: int) -> list[dict[str, Any]]:
    return [await upload(client, clinician, make_pdf(text=f"leaflet {n}"), f"leaflet-{n}.pdf") for n in range(count)]


async def new_template(client: AsyncTestClient[Any], clinician: dict[str, str], base: str, name: str) -> str:
    response = await client.post(base, json={"name": name, "description": "  what to expect  "}, headers=clinician)
    assert response.status_code == 201, response.text
    assert response.json()["description"] == "what to expect"
    return str(response.json()["id"])


def system(client: AsyncTestClient[Any]) -> Careshare:
    return client.app.plugins.get(CareshareInit).cs


async def _attach_and_detach(
    client: AsyncTestClient[Any], clinician: dict[str, str], base: str, video: dict[str, Any], image: dict[str, Any]
) -> None:
    tid = await new_template(client, clinician, base, "Inhaler")
    for file in (video, image):
        response = await client.post(f"{base}/{tid}/attachments", json={"file_id": file["id"]}, headers=clinician)
        assert response.status_code == 201, response.text
    shown = (await client.get(f"{base}/{tid}", headers=clinician)).json()
    assert [(a["file_id"], a["kind"]) for a in shown["attachments"]] == [(video["id"], "video"), (image["id"], "image")]
    shareable = {r["role"]: r["sha256"] for r in video["renditions"]}["shareable"]
    assert shown["attachments"][0]["sha256"] == shareable

    removed = await client.delete(f"{base}/{tid}/attachments/{shown['attachments'][0]['id']}", headers=clinician)
    assert removed.status_code == 200, removed.text
    assert [a["file_id"] for a in removed.json()["attachments"]] == [image["id"]]
    again = await client.delete(f"{base}/{tid}/attachments/{shown['attachments'][0]['id']}", headers=clinician)
    assert_problem(again, 404, "not-found")


async def _kept_apart(client: AsyncTestClient[Any], settings: Settings, clinician: dict[str, str], base: str) -> None:
    outsider = bearer(settings, "clinician", "org-b", sub="dr-b")
    tid = await new_template(client, clinician, base, "Clinic")
    theirs = await upload(client, outsider, make_pdf(text="b"), "b.pdf")
    assert_problem(await client.get(f"{base}/{tid}", headers=outsider), 404, "not-found")
    assert_problem(await client.patch(f"{base}/{tid}", json={"name": "x"}, headers=outsider), 404, "not-found")
    mine = await client.post(f"{base}/{tid}/attachments", json={"file_id": theirs["id"]}, headers=clinician)
    assert_problem(mine, 404, "not-found")
    assert (await client.get(base, headers=outsider)).json()["items"] == []
    newer = await new_template(client, clinician, base, "Clinic 2")
    first = (await client.get(base, params={"limit": 1}, headers=clinician)).json()
    assert [t["id"] for t in first["items"]] == [newer]
    rest = (await client.get(base, params={"limit": 1, "cursor": first["next_cursor"]}, headers=clinician)).json()
    assert ([t["id"] for t in rest["items"]], rest["next_cursor"]) == ([tid], None)


# -- core: copy_attachments and detach ----------------------------------------------------------


async def test_copy_attachments_pins_the_rows_as_they_are_and_later_edits_stay_on_the_source(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    files = await library_files(client, clinician, 3)
    cs = system(client)
    template = Item(target=TEMPLATE.name, id=new_id(), org="org-a", patient_id=None)
    first, second = new_id(), new_id()
    async with cs.engine.begin() as conn:
        pinned = await attach(conn, cs.plugins, CLINICIAN, TEMPLATE, template, [f["id"] for f in files[:2]])
        copied = await copy_attachments(conn, CLINICIAN, TEMPLATE.name, template.id, COPY, first)
    fields = ("file_id", "role", "sha256", "media_type", "size", "filename", "kind", "position")
    assert [tuple(getattr(a, f) for f in fields) for a in copied] == [
        tuple(getattr(a, f) for f in fields) for a in pinned
    ]
    assert {a.id for a in copied}.isdisjoint(a.id for a in pinned)
    assert {(a.target, a.item_id) for a in copied} == {(COPY, first)}

    async with cs.engine.begin() as conn:
        await detach(conn, CLINICIAN, TEMPLATE, template, pinned[0].id)
        await attach(conn, cs.plugins, CLINICIAN, TEMPLATE, template, [files[2]["id"]])
        await copy_attachments(conn, CLINICIAN, TEMPLATE.name, template.id, COPY, second)
        found = await attachments_of(conn, COPY, [first, second])
        on_template = (await attachments_of(conn, TEMPLATE.name, [template.id]))[template.id]
    assert [a.file_id for a in found[first]] == [files[0]["id"], files[1]["id"]]
    assert [a.file_id for a in found[second]] == [files[1]["id"], files[2]["id"]]
    # Detaching closed the gap: positions stay 0, 1, ... in order.
    assert [(a.file_id, a.position) for a in on_template] == [(files[1]["id"], 0), (files[2]["id"], 1)]
    # Another organisation's principal copies nothing from this template.
    outsider = Principal(subject="dr-b", role="clinician", org="org-b")
    async with cs.engine.begin() as conn:
        assert await copy_attachments(conn, outsider, TEMPLATE.name, template.id, COPY, new_id()) == []


async def test_detach_refuses_an_item_that_reached_a_patient(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    (file,) = await library_files(client, clinician, 1)
    cs = system(client)
    note = Target(name="demo-note", channel="demo")
    item = Item(target=note.name, id=new_id(), org="org-a", patient_id=patient_id)
    async with cs.engine.begin() as conn:
        (pinned,) = await attach(conn, cs.plugins, CLINICIAN, note, item, [file["id"]])
        await share(
            conn,
            cs.plugins,
            CLINICIAN,
            channel="demo",
            target=note.name,
            item_id=item.id,
            patient_id=patient_id,
            title="t",
        )
    with pytest.raises(Problem) as refused:
        async with cs.engine.begin() as conn:
            await detach(conn, CLINICIAN, note, item, pinned.id)
    assert refused.value.code == "item-already-shared"
    async with cs.reader.connect() as conn:
        assert [a.id for a in (await attachments_of(conn, note.name, [item.id]))[item.id]] == [pinned.id]


# -- the template routes, for both kinds --------------------------------------------------------


async def test_a_video_and_an_image_from_the_library_attach_to_both_types_and_detach(
    client: AsyncTestClient[Any], clinician: dict[str, str]
) -> None:
    video = await upload(client, clinician, make_video(VideoSpec(frames=4, width=32, height=24)), "how-to.mp4")
    image = await upload(client, clinician, png(1), "chart.png")
    assert (video["kind"], image["kind"]) == ("video", "image")
    for base in TEMPLATE_ROUTES:
        await _attach_and_detach(client, clinician, base, video, image)


async def test_patient_files_are_refused_for_templates(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    own = await upload(client, clinician, make_pdf(text="scan"), "scan.pdf", to=f"/v1/patients/{patient_id}/files")
    for base in TEMPLATE_ROUTES:
        tid = await new_template(client, clinician, base, "Clinic")
        response = await client.post(f"{base}/{tid}/attachments", json={"file_id": own["id"]}, headers=clinician)
        assert_problem(response, 422, "file-not-available")
        assert (await client.get(f"{base}/{tid}", headers=clinician)).json()["attachments"] == []


async def test_templates_belong_to_their_organisation_and_page(
    client: AsyncTestClient[Any], settings: Settings, clinician: dict[str, str]
) -> None:
    for base in TEMPLATE_ROUTES:
        await _kept_apart(client, settings, clinician, base)


async def test_renaming_bad_bodies_and_the_targets_rules(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str]
) -> None:
    for base in TEMPLATE_ROUTES:
        tid = await new_template(client, clinician, base, "Clinic")
        renamed = await client.patch(f"{base}/{tid}", json={"name": " Follow-up clinic "}, headers=clinician)
        assert renamed.status_code == 200, renamed.text
        assert (renamed.json()["name"], renamed.json()["description"]) == ("Follow-up clinic", "what to expect")
        for body, field in (({"name": "  "}, "$.name"), ({"name": "x" * 201}, "$.name"), ({"nom": "x"}, "$")):
            problem = assert_problem(await client.post(base, json=body, headers=clinician), 422, "invalid-request")
            assert any(field in e for e in problem["errors"]), problem
        assert_problem(await client.post(base, json={"name": "x"}, headers=patient), 403, "forbidden")
    rules = {t["name"]: t for t in (await client.get("/v1/targets", headers=clinician)).json()["items"]}
    for name in ("appointment-type", "medication-type"):
        assert rules[name]["sources"] == ["library"]
        assert rules[name]["video_allowed"] is True
        assert rules[name]["accepts"] == ["dicom", "image", "pdf", "video"]
