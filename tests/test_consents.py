"""The consents channel end to end over HTTP: information packs, consent forms, asking a patient, the decision.

Packs take library files but never video (every container and codec the video handler accepts is
tried); a consent request carries copies of its packs as they were when asked; the patient decides
once; nobody else sees any of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from careshare.core import db
from careshare.host import create_app
from careshare.plugins.consents import MAX_PACK_FILES, careshare_migrations
from careshare.plugins.consents.consents import CONSENT_TITLE, PACK_TITLE
from careshare.plugins.consents.tables import information_packs
from careshare.testing import bearer, make_pdf, make_settings
from careshare.testing.strategies.images import FORMATS, encode, quadrants
from careshare.testing.strategies.video import AUDIO_CODECS, VIDEO_CODECS, VideoSpec, make_video
from careshare.testing.targets import outcome, sample_file

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from careshare.core.settings import Settings
    from careshare.testing import PostgresCluster

#: Every container the video strategies write (all the video handler streams), each of its video codecs and
#: each of its sound tracks (none included) at least once.
VIDEO_VARIANTS = [
    (container, codecs[i % len(codecs)], AUDIO_CODECS[container][i % len(AUDIO_CODECS[container])])
    for container, codecs in VIDEO_CODECS.items()
    for i in range(max(len(codecs), len(AUDIO_CODECS[container])))
]


def problem(response: httpx.Response, code: str) -> dict[str, Any]:
    assert outcome(response) == code, response.text
    return dict(response.json())


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def library_file(client: AsyncTestClient[Any], clinician: dict[str, str], data: bytes, name: str) -> str:
    response = await client.post("/v1/library/files", content=data, params={"filename": name}, headers=clinician)
    return str(ok(response, 201)["id"])


async def new_pack(client: AsyncTestClient[Any], clinician: dict[str, str], name: str = "Knee surgery") -> str:
    response = await client.post(
        "/v1/information-packs", json={"name": name, "description": "Read before your operation"}, headers=clinician
    )
    return str(ok(response, 201)["id"])


async def attach(client: AsyncTestClient[Any], clinician: dict[str, str], pack_id: str, file_id: str) -> httpx.Response:
    return await client.post(
        f"/v1/information-packs/{pack_id}/attachments", json={"file_id": file_id}, headers=clinician
    )


async def ask(client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, pack_ids: list[str]) -> str:
    form = ok(
        await client.post(
            "/v1/consent-forms", json={"name": "Knee arthroscopy", "information_pack_ids": pack_ids}, headers=clinician
        ),
        201,
    )
    assert form["information_pack_ids"] == pack_ids
    asked = ok(
        await client.post(f"/v1/patients/{patient_id}/consents", json={"form_id": form["id"]}, headers=clinician), 201
    )
    return str(asked["id"])


def pack_files(consent: dict[str, Any]) -> list[list[tuple[str, str]]]:
    return [[(a["sha256"], a["filename"]) for a in p["attachments"]] for p in consent["information_packs"]]


# -- the whole flow ----------------------------------------------------------------------------


async def test_a_patient_reads_the_packs_and_gives_consent(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    await consent_flow(client, clinician, patient, patient_id)


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A new empty database of the session's PostgreSQL cluster (made before the test's event loop runs)."""
    return postgres.create_database(f"consents_{uuid.uuid4().hex}")


async def test_the_same_flow_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=pg_url)
    clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=create_app(settings)) as client:
        pid = ok(await client.post("/v1/patients", json={"name": "P", "external_id": "P1"}, headers=clinician), 201)[
            "id"
        ]
        await consent_flow(client, clinician, bearer(settings, "patient", "org-a", patient=pid), pid)


async def consent_flow(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    leaflet = make_pdf(2, text="knee leaflet")
    photo = encode([quadrants((40, 30))], "JPEG")
    pdf_id = await library_file(client, clinician, leaflet, "leaflet.pdf")
    photo_id = await library_file(client, clinician, photo, "knee.jpg")
    first, second = await new_pack(client, clinician, "What happens"), await new_pack(client, clinician, "Risks")
    pinned = [ok(await attach(client, clinician, first, fid), 201)["attachments"][-1] for fid in (pdf_id, photo_id)]
    ok(await attach(client, clinician, second, pdf_id), 201)
    shown = ok(await client.get(f"/v1/information-packs/{first}", headers=clinician))
    assert [a["id"] for a in shown["attachments"]] == [a["id"] for a in pinned]

    cid = await ask(client, clinician, patient_id, [first, second])

    [notification] = ok(await client.get("/v1/me/notifications", headers=patient))["items"]
    assert (notification["kind"], notification["title"]) == ("consent", CONSENT_TITLE)
    assert (notification["target"], notification["item_id"]) == ("consent-request", cid)
    [listed] = ok(await client.get("/v1/me/consents", headers=patient))["items"]
    mine = ok(await client.get(f"/v1/me/consents/{cid}", headers=patient))
    assert listed == mine
    assert mine["status"] == "requested" and mine["form"]["name"] == "Knee arthroscopy"
    assert [p["name"] for p in mine["information_packs"]] == ["What happens", "Risks"]
    assert "requested_by" not in mine
    assert [[a["kind"] for a in p["attachments"]] for p in mine["information_packs"]] == [["pdf", "image"], ["pdf"]]
    for pack in mine["information_packs"]:
        for a in pack["attachments"]:
            assert set(a) == {"id", "file_id", "filename", "kind", "media_type", "size", "sha256", "url"}
            content = await client.get(a["url"], headers=patient)
            assert content.status_code == 200 and hashlib.sha256(content.content).hexdigest() == a["sha256"]
    # What the patient reads is the library file's shareable copy, pinned when asked.
    library_pdf = ok(await client.get(f"/v1/files/{pdf_id}", headers=clinician))
    shareable = next(r for r in library_pdf["renditions"] if r["role"] == "shareable")
    assert mine["information_packs"][0]["attachments"][0]["sha256"] == shareable["sha256"]
    archive = ok(await client.get("/v1/me/archive", headers=patient))["channels"]["consents"]
    assert sorted(entry["title"] for entry in archive) == sorted([CONSENT_TITLE, PACK_TITLE, PACK_TITLE])

    given = ok(await client.post(f"/v1/me/consents/{cid}/decision", json={"decision": "given"}, headers=patient))
    assert given["status"] == "given" and given["decided_at"] is not None

    seen = ok(await client.get(f"/v1/consents/{cid}", headers=clinician))
    assert seen["status"] == "given" and seen["decided_by"] == f"patient:{patient_id}"
    assert seen["requested_by"] == "dr-a"
    assert [
        c["id"] for c in ok(await client.get(f"/v1/patients/{patient_id}/consents", headers=clinician))["items"]
    ] == [cid]
    audit = ok(await client.get(f"/v1/patients/{patient_id}/audit", headers=clinician))["items"]
    actions = [(e["action"], e["target"]) for e in audit]
    assert ("consent.given", "consent-request") in actions
    assert ("item.shared", "consent-request") in actions
    assert actions.count(("file.shared", "consent-pack")) == 3
    assert actions.count(("file.read", "consent-pack")) == 3


async def test_pack_edits_after_the_request_do_not_change_what_the_patient_sees(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    old = await library_file(client, clinician, make_pdf(1, text="version 1"), "v1.pdf")
    new = await library_file(client, clinician, make_pdf(1, text="version 2"), "v2.pdf")
    pack = await new_pack(client, clinician)
    first = ok(await attach(client, clinician, pack, old), 201)["attachments"][-1]
    cid = await ask(client, clinician, patient_id, [pack])
    before = ok(await client.get(f"/v1/me/consents/{cid}", headers=patient))

    removed = await client.delete(f"/v1/information-packs/{pack}/attachments/{first['id']}", headers=clinician)
    assert ok(removed)["attachments"] == []  # the pack as it is now
    ok(await attach(client, clinician, pack, new), 201)
    async with client.app.state.careshare.engine.begin() as conn:
        await conn.execute(sa.update(information_packs).values(name="Renamed", description="Changed"))

    after = ok(await client.get(f"/v1/me/consents/{cid}", headers=patient))
    assert after == before
    assert pack_files(after) == [[(first["sha256"], "v1.pdf")]]
    [copy] = after["information_packs"][0]["attachments"]
    assert copy["id"] != first["id"]
    assert (await client.get(copy["url"], headers=patient)).status_code == 200
    # A consent asked now carries the pack as it is now.
    later = ok(await client.get(f"/v1/me/consents/{await ask(client, clinician, patient_id, [pack])}", headers=patient))
    assert [name for _, name in pack_files(later)[0]] == ["v2.pdf"]
    assert later["information_packs"][0]["name"] == "Renamed"


async def test_removing_a_file_closes_the_gap_in_the_pack(
    client: AsyncTestClient[Any], clinician: dict[str, str]
) -> None:
    pack = await new_pack(client, clinician)
    ids = [await library_file(client, clinician, make_pdf(1, text=f"part {n}"), f"part-{n}.pdf") for n in range(3)]
    pinned = [ok(await attach(client, clinician, pack, fid), 201)["attachments"][-1] for fid in ids]
    assert (
        await client.delete(f"/v1/information-packs/{pack}/attachments/{pinned[0]['id']}", headers=clinician)
    ).status_code == 200
    ok(await attach(client, clinician, pack, ids[0]), 201)
    shown = ok(await client.get(f"/v1/information-packs/{pack}", headers=clinician))
    assert [a["filename"] for a in shown["attachments"]] == ["part-1.pdf", "part-2.pdf", "part-0.pdf"]
    again = await client.delete(f"/v1/information-packs/{pack}/attachments/{pinned[0]['id']}", headers=clinician)
    problem(again, "not-found")


# -- what a pack takes -------------------------------------------------------------------------


async def test_a_pack_refuses_every_video_format(client: AsyncTestClient[Any], clinician: dict[str, str]) -> None:
    pack = await new_pack(client, clinician)
    for container, video_codec, audio_codec in VIDEO_VARIANTS:
        spec = VideoSpec(container, video_codec, width=16, height=16, frames=2, audio_codec=audio_codec)
        stored = ok(await client.post("/v1/library/files", content=make_video(spec), headers=clinician), 201)
        assert (stored["kind"], stored["status"]) == ("video", "ready"), spec
        refused = problem(await attach(client, clinician, pack, stored["id"]), "video-not-allowed")
        assert "information packs can't contain streaming video" in refused["detail"]
        assert refused["rule"] == "video_allowed of target 'information-pack' (consents)"
    tried = {(c, v) for c, v, _ in VIDEO_VARIANTS} | {(c, a) for c, _, a in VIDEO_VARIANTS}
    every = itertools.chain(VIDEO_CODECS.items(), AUDIO_CODECS.items())
    assert tried == {(container, codec) for container, codecs in every for codec in codecs}
    assert ok(await client.get(f"/v1/information-packs/{pack}", headers=clinician))["attachments"] == []


async def test_a_pack_takes_pdfs_images_of_every_format_and_dicom(
    client: AsyncTestClient[Any], clinician: dict[str, str]
) -> None:
    pack = await new_pack(client, clinician)
    files = [(encode([quadrants((24, 16))], fmt), "image") for fmt in sorted(FORMATS)]
    files += [(make_pdf(1, text="leaflet"), "pdf"), (sample_file("dicom"), "dicom")]
    for data, kind in files:
        answer = await attach(client, clinician, pack, await library_file(client, clinician, data, kind))
        attached = ok(answer, 201)["attachments"][-1]
        assert attached["kind"] == kind
    shown = ok(await client.get(f"/v1/information-packs/{pack}", headers=clinician))["attachments"]
    assert [a["kind"] for a in shown] == [kind for _, kind in files]
    # DICOM is never sent as DICOM: the pack pins its rendering.
    assert shown[-1]["media_type"] == "image/png"


async def test_a_pack_takes_library_files_only_and_ten_at_most(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    pack = await new_pack(client, clinician)
    mine = ok(
        await client.post(f"/v1/patients/{patient_id}/files", content=make_pdf(1, text="record"), headers=clinician),
        201,
    )
    refused = problem(await attach(client, clinician, pack, mine["id"]), "file-not-available")
    assert refused["detail"] == "Files attached to information packs come from the organisation library only."
    leaflet = await library_file(client, clinician, make_pdf(), "leaflet.pdf")
    for _ in range(MAX_PACK_FILES):
        ok(await attach(client, clinician, pack, leaflet), 201)
    problem(await attach(client, clinician, pack, leaflet), "too-many-attachments")
    problem(await attach(client, clinician, pack, "01zzzzzzzzzzzzzzzzzzzzzzzz"), "not-found")


# -- forms and requests ------------------------------------------------------------------------


async def test_a_form_naming_unknown_packs_is_refused_naming_them(
    client: AsyncTestClient[Any], clinician: dict[str, str], settings: Settings
) -> None:
    known = await new_pack(client, clinician)
    elsewhere = await new_pack(client, bearer(settings, "clinician", "org-b", sub="dr-b"))
    missing = "01zzzzzzzzzzzzzzzzzzzzzzzz"
    body = {"name": "Form", "information_pack_ids": [known, elsewhere, missing]}
    refused = problem(
        await client.post("/v1/consent-forms", json=body, headers=clinician), "information-pack-not-found"
    )
    assert refused["information_pack_ids"] == [elsewhere, missing]
    assert elsewhere in refused["detail"] and missing in refused["detail"]
    assert ok(await client.get("/v1/consent-forms", headers=clinician))["items"] == []
    for invalid in (
        {"name": "Form", "information_pack_ids": []},
        {"name": " ", "information_pack_ids": [known]},
        {"name": "Form", "information_pack_ids": [known, known]},
        {"name": "Form"},
    ):
        problem(await client.post("/v1/consent-forms", json=invalid, headers=clinician), "invalid-request")
    problem(await client.post("/v1/information-packs", json={"name": ""}, headers=clinician), "invalid-request")


async def test_asking_with_an_unknown_form_or_for_an_unknown_patient_is_refused(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    missing = "01zzzzzzzzzzzzzzzzzzzzzzzz"
    refused = await client.post(f"/v1/patients/{patient_id}/consents", json={"form_id": missing}, headers=clinician)
    assert problem(refused, "consent-form-not-found")["form_id"] == missing
    pack = await new_pack(client, clinician)
    form = ok(
        await client.post("/v1/consent-forms", json={"name": "F", "information_pack_ids": [pack]}, headers=clinician),
        201,
    )
    problem(
        await client.post(f"/v1/patients/{missing}/consents", json={"form_id": form["id"]}, headers=clinician),
        "not-found",
    )


# -- the decision ------------------------------------------------------------------------------


async def test_a_decision_is_made_once(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    pack = await new_pack(client, clinician)
    for first, second in itertools.product(("given", "declined"), repeat=2):
        cid = await ask(client, clinician, patient_id, [pack])
        decided = ok(await client.post(f"/v1/me/consents/{cid}/decision", json={"decision": first}, headers=patient))
        again = await client.post(f"/v1/me/consents/{cid}/decision", json={"decision": second}, headers=patient)
        if first == second:
            assert ok(again) == decided  # idempotent: nothing changes, not even the time
        else:
            assert problem(again, "consent-already-decided")["decision"] == first
        assert ok(await client.get(f"/v1/consents/{cid}", headers=clinician))["status"] == first
        audit = ok(await client.get(f"/v1/patients/{patient_id}/audit", headers=clinician))["items"]
        assert [(e["action"], e["item_id"]) for e in audit].count((f"consent.{first}", cid)) == 1
    for invalid in ({"decision": "maybe"}, {}, {"decision": "given", "extra": 1}):
        problem(await client.post(f"/v1/me/consents/{cid}/decision", json=invalid, headers=patient), "invalid-request")
    first_page = ok(await client.get("/v1/me/consents", params={"limit": 3}, headers=patient))
    rest = ok(await client.get("/v1/me/consents", params={"cursor": first_page["next_cursor"]}, headers=patient))
    pages = [c["id"] for c in first_page["items"] + rest["items"]]
    assert len(first_page["items"]) == 3 and len(set(pages)) == 4 and pages[0] == cid  # newest first
    assert rest["next_cursor"] is None


async def test_nobody_else_sees_or_decides_a_consent(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
    settings: Settings,
) -> None:
    leaflet = await library_file(client, clinician, make_pdf(), "leaflet.pdf")
    pack = await new_pack(client, clinician)
    ok(await attach(client, clinician, pack, leaflet), 201)
    cid = await ask(client, clinician, patient_id, [pack])
    url = ok(await client.get(f"/v1/me/consents/{cid}", headers=patient))["information_packs"][0]["attachments"][0][
        "url"
    ]
    other_id = ok(
        await client.post("/v1/patients", json={"name": "Pat Two", "external_id": "MRN-2"}, headers=clinician), 201
    )["id"]
    other = bearer(settings, "patient", "org-a", patient=other_id)
    outsider = bearer(settings, "clinician", "org-b", sub="dr-b")

    for path in (f"/v1/me/consents/{cid}", url):
        problem(await client.get(path, headers=other), "not-found")
    assert ok(await client.get("/v1/me/consents", headers=other))["items"] == []
    problem(
        await client.post(f"/v1/me/consents/{cid}/decision", json={"decision": "given"}, headers=other), "not-found"
    )
    for path in (f"/v1/consents/{cid}", f"/v1/information-packs/{pack}", f"/v1/patients/{patient_id}/consents", url):
        problem(await client.get(path, headers=outsider), "not-found")
    problem(await attach(client, outsider, pack, leaflet), "not-found")
    problem(await client.get(f"/v1/consents/{cid}", headers=patient), "forbidden")
    problem(await client.post("/v1/information-packs", json={"name": "x"}, headers=patient), "forbidden")
    assert ok(await client.get(f"/v1/me/consents/{cid}", headers=patient))["status"] == "requested"


# -- plugin wiring -----------------------------------------------------------------------------


async def test_the_target_is_declared_with_its_rules(client: AsyncTestClient[Any], clinician: dict[str, str]) -> None:
    rules = {t["name"]: t for t in ok(await client.get("/v1/targets", headers=clinician))["items"]}["information-pack"]
    assert rules["channel"] == "consents"
    assert rules["accepts"] == ["dicom", "image", "pdf"] and rules["video_allowed"] is False
    assert rules["sources"] == ["library"] and rules["max_count"] == MAX_PACK_FILES


async def test_the_migration_creates_the_tables_as_defined(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'consents.db'}"
    await asyncio.to_thread(db.migrate, url, careshare_migrations())
    ours = {name for name in db.metadata.tables if name.startswith(("information_", "consent_"))}
    assert len(ours) == 5
    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert ours <= tables
