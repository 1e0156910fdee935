"""Every attachment target x every file kind: attaching gives exactly what the target's declared rules predict.

The matrix is the contract kit's (:mod:`careshare.testing.contract`), run here on every installed
plugin as a channel's own suite runs it on one: Hypothesis draws a target (and for file requests
the request's own rules), then a few requests, each attaching files of drawn kinds from drawn
places (the patient's files, the library, another patient's files).
:func:`careshare.testing.targets.predict` says from the rules of ``GET /v1/targets`` alone what
each request must answer; the target's adapter (``careshare_contract``, here
:mod:`careshare.testing.channels`) does it through the channel's real HTTP routes; the two must
agree at every step. What is shared must then reach the patient's archive and inbox.

Adding a channel: give it a contract with an adapter per target (docs/plugins.md, "Testing a
channel: the contract kit"); the matrix fails while a loaded target has none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careshare.core import db
from careshare.core.models import RenditionRecord, StoredFile
from careshare.core.plugins import get_plugin_manager
from careshare.core.problems import Problem
from careshare.core.targets import Attachment, Item, Target, check_declared, resolve
from careshare.testing.contract import (
    check_coverage,
    test_contract_attaching_gives_what_the_declared_rules_predict,
    test_contract_every_target_has_an_adapter,
    test_contract_shared_items_reach_the_archive_and_inbox,
)
from careshare.testing.targets import KINDS, SOURCES, Adapter, predict

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hypothesis.strategies import DrawFn

__all__ = [
    "test_contract_attaching_gives_what_the_declared_rules_predict",
    "test_contract_every_target_has_an_adapter",
    "test_contract_shared_items_reach_the_archive_and_inbox",
]

#: Every installed plugin (the built-in channels): the kit's default, written out.
careshare_plugins = None


def test_the_built_in_targets_all_have_adapters(
    careshare_declared: Mapping[str, str], careshare_adapters: Mapping[str, Adapter]
) -> None:
    """The kit sees the built-in channels' targets, and a target without an adapter fails, naming it and its plugin."""
    assert {"chat-message", "information-pack", "letter", "appointment-type", "medication-type"} <= set(
        careshare_declared
    )
    assert "file-request" in careshare_adapters  # undeclared, driven all the same
    loaded = set(careshare_declared)
    check_coverage(careshare_declared, loaded, careshare_adapters)
    with pytest.raises(AssertionError, match=r"'voice-note' \(plugin 'voice'\).*careshare_contract"):
        check_coverage({**careshare_declared, "voice-note": "voice"}, loaded | {"voice-note"}, careshare_adapters)
    with pytest.raises(AssertionError, match="does not serve"):
        check_coverage(careshare_declared, loaded - {"letter"}, careshare_adapters)


# -- the prediction itself, against core's own check ---------------------------------------------


@st.composite
def declared_targets(draw: DrawFn) -> Target:
    limit = st.none() | st.integers(1, 400)
    target = Target(
        name="probe",
        channel="probe",
        accepts=draw(st.none() | st.frozensets(st.sampled_from(KINDS), min_size=1)),
        max_file_bytes=draw(limit),
        max_total_bytes=draw(limit),
        max_count=draw(st.none() | st.integers(1, 4)),
        draft_required=draw(st.booleans()),
        sources=draw(st.frozensets(st.sampled_from(("patient", "library")), min_size=1)),
    )
    return resolve(target, get_plugin_manager())  # the built-in kinds, each refusing as it declares


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
