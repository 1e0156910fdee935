"""Revoking a share through the HTTP API: per channel, one attachment or the whole item, racing a download, on PostgreSQL.

Every channel that shares is driven by its contract-kit adapter (:mod:`careshare.testing.channels`)
or, for the channels whose adapters do not share (reminders, consents, file requests), by their own
routes. After a revoke the patient finds the item nowhere (attachment content, archive, inbox,
the channel's own views, expiring links), the withdrawal notice names nothing of it, and the
clinic still sees who withdrew it, when and why.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import random
import threading
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pikepdf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from careshare import hookimpl
from careshare.core.plugins import get_plugin_manager
from careshare.core.sharing import MAX_REASON_CHARS, WITHDRAWN_KIND, WITHDRAWN_TITLE
from careshare.host import create_app
from careshare.plugins import consents
from careshare.testing import bearer, make_settings, running_server
from careshare.testing.api import assert_problem
from careshare.testing.contract import loaded_rules

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from litestar import Litestar

    from careshare.testing import PostgresCluster
    from careshare.testing.pytest_plugin import Tokens
    from careshare.testing.targets import Adapter, Sample, World

#: Every installed plugin: each channel that shares is tried.
careshare_plugins = None

REASON = "Sent to the wrong patient"
#: The patient's own view of each channel, as (list path, path of one item or None).
PATIENT_VIEWS = {
    "chat-message": ("/v1/me/messages", None),
    "appointment-type": ("/v1/me/appointments", None),
    "letter": ("/v1/me/letters", "/v1/me/letters/{id}"),
}


async def _get(client: Any, path: str, headers: dict[str, str], status: int = 200) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status_code == status, (path, response.text)
    return response.json() if response.content else None


async def _revoke(client: Any, path: str, headers: dict[str, str], reason: str = REASON) -> httpx.Response:
    return await client.post(path, json={"reason": reason}, headers=headers)


def _entry(archive: Mapping[str, Any], item_id: str) -> dict[str, Any] | None:
    return next((e for entries in archive["channels"].values() for e in entries if e["item_id"] == item_id), None)


async def _view(world: World, name: str, item_id: str) -> list[str] | None:
    """The attachment ids of the item in the channel's own patient list (None: not listed)."""
    listed, _ = PATIENT_VIEWS[name]
    items = (await _get(world.client, listed, world.patient))["items"]
    found = next((i for i in items if i["id"] == item_id), None)
    return None if found is None else [a["id"] for a in found["attachments"]]


async def _share_with_two_files(world: World, adapter: Adapter) -> tuple[str, dict[str, Any], list[Sample]]:
    """An item of ``adapter``'s channel shared with two library files; (item id, archive entry, samples)."""
    rules = (await loaded_rules(world.client, world.clinician))[adapter.target]
    files = [await world.sample("pdf", "library"), await world.sample("image", "library")]
    assert adapter.predict(rules, files, [], is_draft=True) is None, (adapter.target, rules)
    item = await adapter.new_item(world, rules)
    if not adapter.item_per_request:
        for file in files:
            response = await adapter.attach(world, item, [file])
            assert response.status_code == 201, response.text
    shared = await adapter.share(world, item, files)
    entry = _entry(await _get(world.client, "/v1/me/archive", world.patient), shared)
    assert entry is not None and len(entry["attachments"]) == 2, entry
    return shared, entry, files


@pytest.mark.parametrize("name", sorted(PATIENT_VIEWS))
async def test_revoke_withdraws_the_item_everywhere_the_patient_looks(
    careshare_world: World, careshare_adapters: Mapping[str, Adapter], careshare_tokens: Tokens, name: str
) -> None:
    world = careshare_world
    client, clinician, me = world.client, world.clinician, world.patient
    shared, entry, files = await _share_with_two_files(world, careshare_adapters[name])
    target = entry["target"]
    first, second = (a["id"] for a in entry["attachments"])
    for aid in (first, second):
        response = await client.get(f"/v1/attachments/{aid}/content", headers=me)
        assert response.status_code == 200, response.text
    assert await _view(world, name, shared) == [first, second]
    made = await client.post(f"/v1/attachments/{first}/links", json={}, headers=clinician)
    assert made.status_code == 201, made.text
    link = made.json()["url"].split("/v1/", 1)[1]
    assert (await client.get(f"/v1/{link}")).status_code == 200

    # Who may revoke: the clinic's clinicians; a patient is refused, another organisation finds nothing.
    other_org = careshare_tokens.clinician(org="org-b", sub="dr-b")
    assert_problem(await _revoke(client, f"/v1/attachments/{first}/revoke", me), 403, "forbidden")
    assert_problem(await _revoke(client, f"/v1/attachments/{first}/revoke", other_org), 404, "not-found")
    assert_problem(await _revoke(client, f"/v1/shares/{target}/{shared}/revoke", other_org), 404, "not-found")
    assert_problem(await _get_raw(client, f"/v1/shares/{target}/{shared}", other_org), 404, "not-found")
    for body in ({}, {"reason": "   "}, {"reason": "x" * (MAX_REASON_CHARS + 1)}):
        response = await client.post(f"/v1/shares/{target}/{shared}/revoke", json=body, headers=clinician)
        assert_problem(response, 422, "invalid-request")

    # One attachment: it goes, the item and the other file stay.
    response = await _revoke(client, f"/v1/attachments/{first}/revoke", clinician, "Wrong scan attached")
    assert response.status_code == 200, response.text
    marked = {a["id"]: a["revoked"] for a in response.json()["attachments"]}
    assert marked[first]["reason"] == "Wrong scan attached" and marked[first]["revoked_by"] == "dr-a"
    assert marked[second] is None and response.json()["revoked"] is None
    assert_problem(await client.get(f"/v1/attachments/{first}/content", headers=me), 404, "not-found")
    assert (await client.get(f"/v1/attachments/{second}/content", headers=me)).status_code == 200
    assert (await client.get(f"/v1/attachments/{first}/content", headers=clinician)).status_code == 200
    entry = _entry(await _get(client, "/v1/me/archive", me), shared)
    assert entry is not None and [a["id"] for a in entry["attachments"]] == [second]
    assert await _view(world, name, shared) == [second]
    assert_problem(await client.get(f"/v1/{link}"), 410, "link-revoked")
    refused = await client.post(f"/v1/attachments/{first}/links", json={}, headers=clinician)
    assert_problem(refused, 409, "attachment-withdrawn")

    # The whole item: gone from every patient view, still the clinic's to see.
    response = await _revoke(client, f"/v1/shares/{target}/{shared}/revoke", clinician)
    assert response.status_code == 200, response.text
    first_revocation = response.json()["revoked"]
    assert first_revocation["reason"] == REASON and first_revocation["revoked_by"] == "dr-a"
    assert_problem(await client.get(f"/v1/attachments/{second}/content", headers=me), 404, "not-found")
    assert _entry(await _get(client, "/v1/me/archive", me), shared) is None
    assert await _view(world, name, shared) is None
    _, one = PATIENT_VIEWS[name]
    if one is not None:
        assert_problem(await client.get(one.format(id=shared), headers=me), 404, "not-found")
    if name == "letter":
        assert_problem(await client.get(f"/v1/letters/{shared}/pdf", headers=me), 404, "not-found")
        assert (await client.get(f"/v1/letters/{shared}/pdf", headers=clinician)).status_code == 200
    inbox = await _get(client, "/v1/me/notifications", me)
    about = [n for n in inbox["items"] if n["item_id"] == shared]
    assert about and all(n["kind"] == WITHDRAWN_KIND and n["title"] == WITHDRAWN_TITLE for n in about), about
    assert len(about) == 2  # one notice for the attachment, one for the item
    told = str(inbox)
    for secret in (world.clinical_text, world.patient_name, REASON, "Wrong scan", *(f"sample-{f.kind}" for f in files)):
        assert secret not in told, secret

    # Idempotent: a second revoke keeps the first, tells no one again.
    again = await _revoke(client, f"/v1/shares/{target}/{shared}/revoke", clinician, "Another reason")
    assert again.status_code == 200 and again.json()["revoked"] == first_revocation, again.text
    again = await _revoke(client, f"/v1/attachments/{first}/revoke", clinician, "Another reason")
    assert again.status_code == 200, again.text
    assert {a["id"]: a["revoked"] for a in again.json()["attachments"]}[first] == marked[first]
    assert len((await _get(client, "/v1/me/notifications", me))["items"]) == len(inbox["items"])

    # The clinic's record: the share view and the audit keep who, when and why.
    view = await _get(client, f"/v1/shares/{target}/{shared}", clinician)
    assert view["revoked"] == first_revocation and view["shares"][0]["reason"] == REASON
    audit = (await _get(client, f"/v1/patients/{world.patient_id}/audit", clinician))["items"]
    withdrawn = [e for e in audit if e["action"] == "item.revoked" and e["item_id"] == shared]
    assert len(withdrawn) == 1 and withdrawn[0]["actor"] == "dr-a" and withdrawn[0]["at"], withdrawn
    assert withdrawn[0]["reason"] == REASON
    detached = [e for e in audit if e["action"] == "attachment.revoked" and e["item_id"] == shared]
    assert len(detached) == 1 and detached[0]["reason"] == "Wrong scan attached", detached
    if name == "chat-message":
        messages = (await _get(client, f"/v1/patients/{world.patient_id}/messages", clinician))["items"]
        mine = next(m for m in messages if m["id"] == shared)
        assert mine["revoked"]["reason"] == REASON and len(mine["attachments"]) == 2
    if name == "letter":
        letter = await _get(client, f"/v1/letters/{shared}", clinician)
        assert letter["revoked"]["reason"] == REASON
        assert [a["revoked"] is not None for a in letter["attachments"]] == [True, False]


async def _get_raw(client: Any, path: str, headers: dict[str, str]) -> httpx.Response:
    return await client.get(path, headers=headers)


async def _made(client: Any, path: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code in (200, 201), (path, response.text)
    return dict(response.json())


async def test_revoke_reminders_consents_and_file_requests(careshare_world: World) -> None:
    """The channels whose adapters share nothing: a reminder, a consent request and its pack, a file request."""
    world = careshare_world
    client, clinician, me, pid = world.client, world.clinician, world.patient, world.patient_id
    library = (await world.sample("pdf", "library")).file_id

    kind = await _made(client, "/v1/medication-types", clinician, {"name": "Type"})
    await _made(client, f"/v1/medication-types/{kind['id']}/attachments", clinician, {"file_id": library})
    schedule = {"times": ["09:00"], "start": "2030-01-01"}
    medication = await _made(
        client, f"/v1/patients/{pid}/medications", clinician, {"type_id": kind["id"], "schedule": schedule}
    )
    reminder = await _made(client, f"/v1/medications/{medication['id']}/reminders", clinician, {})
    reminders = f"/v1/medications/{medication['id']}/reminders"
    assert reminder["id"] in str(await _get(client, reminders, me))

    pack = await _made(client, "/v1/information-packs", clinician, {"name": "Pack"})
    await _made(client, f"/v1/information-packs/{pack['id']}/attachments", clinician, {"file_id": library})
    form = await _made(client, "/v1/consent-forms", clinician, {"name": "Form", "information_pack_ids": [pack["id"]]})
    consent = await _made(client, f"/v1/patients/{pid}/consents", clinician, {"form_id": form["id"]})
    [copy] = consent["information_packs"]
    [pack_file] = copy["attachments"]

    due = "2999-01-01T00:00:00+00:00"
    body = {"message": "Please send", "accepted_kinds": ["pdf"], "max_files": 1, "due_at": due}
    asked = await _made(client, f"/v1/patients/{pid}/file-requests", clinician, body)
    assert asked["id"] in str(await _get(client, "/v1/me/file-requests", me))

    archive = await _get(client, "/v1/me/archive", me)
    targets = {item: _entry(archive, item)["target"] for item in (reminder["id"], consent["id"], asked["id"])}  # type: ignore[index]

    # The pack's file alone: the consent and its pack stay, the file goes.
    response = await _revoke(client, f"/v1/attachments/{pack_file['id']}/revoke", clinician)
    assert response.status_code == 200, response.text
    shown = await _get(client, f"/v1/me/consents/{consent['id']}", me)
    assert shown["information_packs"] and shown["information_packs"][0]["attachments"] == []
    assert_problem(await client.get(pack_file["url"], headers=me), 404, "not-found")

    for item, target in targets.items():
        response = await _revoke(client, f"/v1/shares/{target}/{item}/revoke", clinician)
        assert response.status_code == 200, response.text
    assert reminder["id"] not in str(await _get(client, reminders, me))
    assert consent["id"] not in str(await _get(client, "/v1/me/consents", me))
    # The consent's pack copies went with it (careshare_withdrawn_with), without a notice of their own.
    archive_now = await _get(client, "/v1/me/archive", me)
    assert _entry(archive_now, copy["id"]) is None, archive_now
    assert_problem(await client.get(f"/v1/me/consents/{consent['id']}", headers=me), 404, "not-found")
    decided = await client.post(f"/v1/me/consents/{consent['id']}/decision", json={"decision": "given"}, headers=me)
    assert_problem(decided, 404, "not-found")
    assert asked["id"] not in str(await _get(client, "/v1/me/file-requests", me))
    assert_problem(await client.get(f"/v1/me/file-requests/{asked['id']}", headers=me), 404, "not-found")
    archive = str(await _get(client, "/v1/me/archive", me))
    assert not [item for item in targets if item in archive]
    inbox = (await _get(client, "/v1/me/notifications", me))["items"]
    left = [n for n in inbox if n["item_id"] in targets]
    assert left and all(n["kind"] == WITHDRAWN_KIND for n in left), left
    # The clinic still reads each, marked withdrawn.
    assert reminder["id"] in str(await _get(client, reminders, clinician))
    assert (await _get(client, f"/v1/consents/{consent['id']}", clinician))["id"] == consent["id"]


async def test_hook_careshare_withdrawn_with() -> None:
    """The hook names what goes with a withdrawn item; the consents plugin names only a request's pack copies.

    Its effect through the API (a consent's pack copies leave the archive) is checked above.
    """

    class Parts:
        @hookimpl
        def careshare_withdrawn_with(self, target: str, item_id: str) -> list[tuple[str, str]]:
            return [("part", f"{item_id}-1")] if target == "whole" else []

    pm = get_plugin_manager(load_entrypoints=False, plugins=[Parts(), consents])
    results = pm.hook.careshare_withdrawn_with(conn=None, target="whole", item_id="w1")
    found = [await r if inspect.isawaitable(r) else r for r in results]
    assert sorted(found) == [[], [("part", "w1-1")]]


async def test_revoke_needs_a_shared_item(careshare_world: World) -> None:
    """A draft or a template was never shared: ``409 item-not-shared``; an unknown item ``404``."""
    world = careshare_world
    client, clinician, pid = world.client, world.clinician, world.patient_id
    library = (await world.sample("pdf", "library")).file_id
    draft = await _made(client, f"/v1/patients/{pid}/letters", clinician, {"subject": "Draft", "body": "B"})
    letter = await _made(client, f"/v1/letters/{draft['id']}/attachments", clinician, {"file_id": library})
    [attached] = letter["attachments"]
    assert_problem(await _revoke(client, f"/v1/attachments/{attached['id']}/revoke", clinician), 409, "item-not-shared")
    assert_problem(await _revoke(client, f"/v1/shares/letter/{draft['id']}/revoke", clinician), 409, "item-not-shared")
    kind = await _made(client, "/v1/appointment-types", clinician, {"name": "Type"})
    kind = await _made(client, f"/v1/appointment-types/{kind['id']}/attachments", clinician, {"file_id": library})
    template_file = kind["attachments"][0]["id"]
    assert_problem(await _revoke(client, f"/v1/attachments/{template_file}/revoke", clinician), 409, "item-not-shared")
    unknown = "0" * 26
    assert_problem(await _revoke(client, f"/v1/shares/letter/{unknown}/revoke", clinician), 404, "not-found")
    assert_problem(await _revoke(client, f"/v1/attachments/{unknown}/revoke", clinician), 404, "not-found")
    assert_problem(await client.get(f"/v1/shares/letter/{draft['id']}", headers=clinician), 404, "not-found")


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    reason=st.one_of(
        st.text(alphabet=" \t\n\r\u00a0\u2003", max_size=8),
        st.text(min_size=1, max_size=MAX_REASON_CHARS + 40),
    )
)
async def test_reason_is_required_and_bounded(careshare_world: World, reason: str) -> None:
    """A blank, over-long or NUL-bearing reason is ``422`` and withdraws nothing; any other is kept, trimmed."""
    world = careshare_world
    client, clinician, me = world.client, world.clinician, world.patient
    response = await client.post(
        f"/v1/patients/{world.patient_id}/messages", json={"body": "Hello", "file_ids": []}, headers=clinician
    )
    assert response.status_code == 201, response.text
    message = response.json()["id"]
    answer = await _revoke(client, f"/v1/shares/chat-message/{message}/revoke", clinician, reason)
    kept = reason.strip()
    if not kept or len(kept) > MAX_REASON_CHARS or "\x00" in reason:
        assert_problem(answer, 422, "invalid-request")
        assert message in str(await _get(client, "/v1/me/messages", me))
    else:
        assert answer.status_code == 200, answer.text
        assert answer.json()["revoked"]["reason"] == kept
        assert message not in str(await _get(client, "/v1/me/messages", me))


# -- racing a download on a real server --------------------------------------------------------------


def _pdf_of(size: int) -> bytes:
    """A valid PDF of about ``size`` bytes (random padding: neither store nor rendition shrinks it)."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    pdf.Root.Padding = pikepdf.Stream(pdf, random.Random(7).randbytes(size))
    out = io.BytesIO()
    pdf.save(out, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    return out.getvalue()


def test_revoke_racing_a_download(careshare_app: Litestar, careshare_tokens: Tokens) -> None:
    """A download in flight when the item is withdrawn may finish; every request after the revoke is ``404``."""
    clinician = careshare_tokens.clinician()
    with running_server(careshare_app) as url, httpx.Client(base_url=url, timeout=60) as http:
        made = http.post("/v1/patients", json={"name": "Race Patient", "external_id": "race-1"}, headers=clinician)
        assert made.status_code == 201, made.text
        pid = made.json()["id"]
        me = careshare_tokens.patient(pid)
        body = _pdf_of(6 * 1024 * 1024)
        stored = http.post(f"/v1/patients/{pid}/files", params={"filename": "big.pdf"}, content=body, headers=clinician)
        assert stored.status_code == 201, stored.text
        sent = http.post(
            f"/v1/patients/{pid}/messages", json={"body": "Big", "file_ids": [stored.json()["id"]]}, headers=clinician
        )
        assert sent.status_code == 201, sent.text
        message = sent.json()
        [attachment] = message["attachments"]
        revoked = threading.Event()
        received = 0
        with http.stream("GET", attachment["url"], headers=me) as stream:
            assert stream.status_code == 200
            for chunk in stream.iter_bytes(64 * 1024):
                received += len(chunk)
                if not revoked.is_set():
                    answer = http.post(
                        f"/v1/shares/chat-message/{message['id']}/revoke", json={"reason": REASON}, headers=clinician
                    )
                    assert answer.status_code == 200, answer.text
                    revoked.set()
                    after = http.get(attachment["url"], headers=me)
                    assert after.status_code == 404, after.text
        # The stream that began before the revoke was served whole (a grant checked when it starts).
        assert revoked.is_set() and received == attachment["size"]
        assert http.get(attachment["url"], headers=me).status_code == 404
        ranged = http.get(attachment["url"], headers={**me, "Range": "bytes=0-99"})
        assert ranged.status_code == 404


# -- PostgreSQL ----------------------------------------------------------------------------------------


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A new empty database of the session's cluster, for this test alone."""
    return postgres.create_database(f"revoke_{uuid.uuid4().hex}")


async def test_revoke_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """Revoke a message's attachment, then the message, twice, on PostgreSQL; the patient loses both."""
    url = pg_url
    cs_settings = make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=url)
    clinician = bearer(cs_settings, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=create_app(cs_settings)) as client:
        made = await client.post("/v1/patients", json={"name": "Pg Patient", "external_id": "pg-1"}, headers=clinician)
        pid = made.json()["id"]
        me = bearer(cs_settings, "patient", "org-a", patient=pid)
        ids = []
        for name in ("one.pdf", "two.pdf"):
            response = await client.post(
                f"/v1/patients/{pid}/files",
                params={"filename": name},
                content=_pdf_of(100 + len(ids)),
                headers=clinician,
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        sent = await client.post(
            f"/v1/patients/{pid}/messages", json={"body": "Results", "file_ids": ids}, headers=clinician
        )
        assert sent.status_code == 201, sent.text
        message = sent.json()
        first, second = (a["id"] for a in message["attachments"])
        path = f"/v1/shares/chat-message/{message['id']}/revoke"
        # Two revokes at once: one revocation, one notice.
        answers = await asyncio.gather(
            _revoke(client, f"/v1/attachments/{first}/revoke", clinician, "A"),
            _revoke(client, f"/v1/attachments/{first}/revoke", clinician, "B"),
        )
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert_problem(await client.get(f"/v1/attachments/{first}/content", headers=me), 404, "not-found")
        assert (await client.get(f"/v1/attachments/{second}/content", headers=me)).status_code == 200
        for reason in (REASON, "Later"):
            assert (await _revoke(client, path, clinician, reason)).status_code == 200
        assert_problem(await client.get(f"/v1/attachments/{second}/content", headers=me), 404, "not-found")
        assert (await _get(client, "/v1/me/messages", me))["items"] == []
        assert _entry(await _get(client, "/v1/me/archive", me), message["id"]) is None
        inbox = (await _get(client, "/v1/me/notifications", me))["items"]
        assert sorted(n["kind"] for n in inbox) == [WITHDRAWN_KIND, WITHDRAWN_KIND], inbox
        view = await _get(client, f"/v1/shares/chat-message/{message['id']}", clinician)
        assert view["revoked"]["reason"] == REASON
        assert {a["revoked"]["reason"] for a in view["attachments"] if a["revoked"]} <= {"A", "B"}
