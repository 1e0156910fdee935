"""Every attachment target x every file kind: attaching gives exactly what the target's declared rules predict.

Hypothesis draws a target (and for file requests the request's own rules), then a few requests,
each attaching files of drawn kinds from drawn places (the patient's files, the library, another
patient's files). :func:`careshare.testing.targets.predict` says from the rules of
``GET /v1/targets`` alone what each request must answer (success, or one problem code in core's
check order); the target's adapter does it through the channel's real HTTP routes; the two must
agree at every step. Each kind's sample file is uploaded once per place and reused by every example.

Adding a channel: write an adapter and put it in ``ADAPTERS`` under the target's name; the matrix
fails while a loaded target has none. About 15 lines, e.g. for a letter (draft only, 25 MB total)::

    class LetterAdapter(Adapter):
        can_finish = True  # sending a letter ends its draft state; the matrix then expects draft-required

        async def new_item(self, world, rules):
            response = await world.client.post(
                f"/v1/patients/{world.patient_id}/letters", json={"body": "Dear patient"}, headers=world.clinician
            )
            return response.json()["id"]

        async def attach(self, world, item, files):
            [file] = files  # batch = 1: one file per request
            return await world.client.post(
                f"/v1/letters/{item}/attachments", json={"file_id": file.file_id}, headers=world.clinician
            )

        async def finish(self, world, item):
            await world.client.post(f"/v1/letters/{item}/send", headers=world.clinician)

Override ``predict`` only where the channel checks something before core does (as chat does with
its message size), ``batch`` when one request carries several files, ``item_per_request`` when each
request makes a new item, ``sources`` when files can only come from some places.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careshare.core import db
from careshare.core.models import RenditionRecord, StoredFile
from careshare.core.problems import Problem
from careshare.core.targets import ALL_KINDS, Attachment, Item, Target, check_declared
from careshare.plugins.chat import MAX_FILES
from careshare.testing.targets import (
    KINDS,
    SOURCES,
    Adapter,
    Sample,
    World,
    outcome,
    predict,
    predict_batch,
    sample_file,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import httpx
    from hypothesis.strategies import DrawFn
    from litestar.testing import AsyncTestClient

#: Requests one example makes on its item (a sequence of attachments).
MAX_STEPS = 5
FAR_FUTURE = "2999-01-01T00:00:00+00:00"


# -- the adapters --------------------------------------------------------------------------------


class ChatMessage(Adapter):
    batch = MAX_FILES + 1  # one more than a message carries: the count rule is tried too
    item_per_request = True

    def predict(
        self, rules: Mapping[str, Any], files: Sequence[Sample], attached: Sequence[int], *, is_draft: bool
    ) -> str | None:
        # Chat refuses a message of more files than it carries before it looks at any of them.
        if len(files) > rules["max_count"]:
            return "too-many-attachments"
        return predict_batch(rules, files, attached, is_draft=is_draft)

    async def attach(self, world: World, item: Any, files: Sequence[Sample]) -> httpx.Response:
        return await world.client.post(
            f"/v1/patients/{world.patient_id}/messages",
            json={"file_ids": [f.file_id for f in files]},
            headers=world.clinician,
        )


class Template(Adapter):
    """A template (information pack, appointment or medication type): made empty, then files attach one by one."""

    def __init__(self, base: str) -> None:
        self.base = base

    async def new_item(self, world: World, rules: Mapping[str, Any]) -> str:
        response = await world.client.post(self.base, json={"name": "Template"}, headers=world.clinician)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def attach(self, world: World, item: Any, files: Sequence[Sample]) -> httpx.Response:
        [file] = files
        return await world.client.post(
            f"{self.base}/{item}/attachments", json={"file_id": file.file_id}, headers=world.clinician
        )


class Letter(Adapter):
    """A draft for the patient takes files one by one; once sent, every attachment is ``draft-required``."""

    can_finish = True

    async def new_item(self, world: World, rules: Mapping[str, Any]) -> str:
        response = await world.client.post(
            f"/v1/patients/{world.patient_id}/letters",
            json={"subject": "Your results", "body": "Dear patient"},
            headers=world.clinician,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def attach(self, world: World, item: Any, files: Sequence[Sample]) -> httpx.Response:
        [file] = files
        return await world.client.post(
            f"/v1/letters/{item}/attachments", json={"file_id": file.file_id}, headers=world.clinician
        )

    async def finish(self, world: World, item: Any) -> None:
        response = await world.client.post(f"/v1/letters/{item}/send", json={"email": False}, headers=world.clinician)
        # A plan may send twice: a sent letter is not sent again.
        assert response.status_code == 200 or outcome(response) == "draft-required", response.text


class FileRequest(Adapter):
    """Not a declared target: each request says which kinds and how many; the patient answers by uploading."""

    declared = False
    sources = ("patient",)

    def draw_rules(self, draw: DrawFn, declared: Mapping[str, Any] | None) -> Mapping[str, Any]:
        kinds = draw(st.frozensets(st.sampled_from(KINDS), min_size=1))
        return {"accepts": sorted(kinds), "max_count": draw(st.integers(1, 4)), "rendition": "original"}

    def predict(
        self, rules: Mapping[str, Any], files: Sequence[Sample], attached: Sequence[int], *, is_draft: bool
    ) -> str | None:
        [file] = files
        # The count is checked before the upload is read, the kind once the bytes are identified.
        if len(attached) >= rules["max_count"]:
            return "too-many-files-for-request"
        return None if file.kind in rules["accepts"] else "kind-not-requested"

    async def new_item(self, world: World, rules: Mapping[str, Any]) -> str:
        body = {"message": "Please send", "accepted_kinds": rules["accepts"], "max_files": rules["max_count"]}
        response = await world.client.post(
            f"/v1/patients/{world.patient_id}/file-requests",
            json={**body, "due_at": FAR_FUTURE},
            headers=world.clinician,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def attach(self, world: World, item: Any, files: Sequence[Sample]) -> httpx.Response:
        [file] = files
        return await world.client.post(
            f"/v1/me/file-requests/{item}/files", content=sample_file(file.kind), headers=world.patient
        )


ADAPTERS: dict[str, Adapter] = {
    "chat-message": ChatMessage(),
    "information-pack": Template("/v1/information-packs"),
    "appointment-type": Template("/v1/appointment-types"),
    "medication-type": Template("/v1/medication-types"),
    "letter": Letter(),
    "file-request": FileRequest(),
}


# -- the matrix ----------------------------------------------------------------------------------


async def loaded_rules(client: AsyncTestClient[Any], headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = await client.get("/v1/targets", headers=headers)
    assert response.status_code == 200, response.text
    return {t["name"]: t for t in response.json()["items"]}


def check_coverage(loaded: Mapping[str, Any]) -> None:
    missing = sorted(set(loaded) - set(ADAPTERS))
    assert not missing, f"targets without an adapter in tests/test_attachment_matrix.py: {missing}"
    stale = sorted(name for name, adapter in ADAPTERS.items() if adapter.declared and name not in loaded)
    assert not stale, f"adapters for targets no plugin declares: {stale}"


@pytest.fixture
async def world(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> World:
    other = await client.post("/v1/patients", json={"name": "Pat Two", "external_id": "MRN-2"}, headers=clinician)
    assert other.status_code == 201, other.text
    return World(client, clinician, patient, patient_id, other.json()["id"])


async def test_every_loaded_target_has_an_adapter(client: AsyncTestClient[Any], clinician: dict[str, str]) -> None:
    loaded = await loaded_rules(client, clinician)
    assert {"chat-message", "information-pack"} <= set(loaded)
    check_coverage(loaded)
    with pytest.raises(AssertionError, match="without an adapter"):
        check_coverage({**loaded, "voice-note": {}})


@st.composite
def plans(draw: DrawFn, loaded: Mapping[str, Mapping[str, Any]]) -> tuple[str, Mapping[str, Any], list[Any]]:
    """A target, its rules, and the requests to make: each a list of (kind, source), or "finish"."""
    name = draw(st.sampled_from(sorted(ADAPTERS)))
    adapter = ADAPTERS[name]
    rules = adapter.draw_rules(draw, loaded.get(name))
    file = st.tuples(st.sampled_from(KINDS), st.sampled_from(adapter.sources))
    request: st.SearchStrategy[Any] = st.lists(file, min_size=1, max_size=adapter.batch, unique=adapter.batch > 1)
    if adapter.can_finish:
        request = request | st.just("finish")
    return name, rules, draw(st.lists(request, min_size=1, max_size=MAX_STEPS))


@pytest.mark.slow
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_attaching_gives_what_the_declared_rules_predict(world: World, data: st.DataObject) -> None:
    loaded = await loaded_rules(world.client, world.clinician)
    check_coverage(loaded)
    name, rules, requests = data.draw(plans(loaded), label="plan")
    adapter = ADAPTERS[name]
    item = await adapter.new_item(world, rules)
    attached: list[int] = []  # sizes of what the item carries, as the rules count them
    is_draft = True
    for step in requests:
        if step == "finish":
            await adapter.finish(world, item)
            is_draft = False
            continue
        files = [await world.sample(kind, source) for kind, source in step]
        expected = adapter.predict(rules, files, attached, is_draft=is_draft)
        response = await adapter.attach(world, item, files)
        assert outcome(response) == expected, (name, step, response.text)
        if expected is None and not adapter.item_per_request:
            attached += [f.sizes[rules["rendition"]] for f in files]


# -- the prediction itself, against core's own check ---------------------------------------------


@st.composite
def declared_targets(draw: DrawFn) -> Target:
    limit = st.none() | st.integers(1, 400)
    return Target(
        name="probe",
        channel="probe",
        accepts=draw(st.frozensets(st.sampled_from(sorted(ALL_KINDS)), min_size=1)),
        max_file_bytes=draw(limit),
        max_total_bytes=draw(limit),
        max_count=draw(st.none() | st.integers(1, 4)),
        video_allowed=draw(st.booleans()),
        draft_required=draw(st.booleans()),
        sources=draw(st.frozensets(st.sampled_from(("patient", "library")), min_size=1)),
    )


def stored(kind: str, source: str, size: int) -> StoredFile:
    patient = {"patient": "p1", "other-patient": "p2"}.get(source)
    return StoredFile(
        id="f1",
        org="org-a",
        owner_type="library" if patient is None else "patient",
        patient_id=patient,
        filename="x",
        kind=kind,
        media_type="application/octet-stream",
        size=size,
        sha256="0" * 64,
        status="ready",
        source="clinic",
        metadata={},
        check={},
        renditions=(RenditionRecord("shareable", "application/octet-stream", size, "0" * 64),),
        uploaded_by="dr-a",
        created_at=db.utcnow(),
    )


@given(
    target=declared_targets(),
    kind=st.sampled_from(KINDS),
    source=st.sampled_from(SOURCES),
    size=st.integers(0, 300),
    attached=st.lists(st.integers(0, 200), max_size=5),
    is_draft=st.booleans(),
)
def test_the_prediction_follows_core_check_order(
    target: Target, kind: str, source: str, size: int, attached: list[int], is_draft: bool
) -> None:
    """``predict`` reads ``Target.rules()`` as an app would; core's ``check_declared`` must agree on every input."""
    item = Item(target="probe", id="i1", org="org-a", patient_id="p1", is_draft=is_draft)
    pinned = [
        Attachment("a", "probe", "i1", "f0", "shareable", "0" * 64, "application/pdf", s, "x", "pdf", n)
        for n, s in enumerate(attached)
    ]
    try:
        check_declared(target, item, stored(kind, source, size), pinned)
        code = None
    except Problem as problem:
        code = problem.code
    expected = predict(
        target.rules(),
        kind=kind,
        size=size,
        source=source,
        attached_count=len(attached),
        attached_bytes=sum(attached),
        is_draft=is_draft,
    )
    assert expected == code
