"""The attachment matrix for plugin authors: what a target's declared rules predict, and a harness to try it over HTTP.

:func:`predict` reads a target's rules as ``GET /v1/targets`` gives them (``Target.rules()``) and
says which problem code attaching a file must give, in core's check order
(:func:`careshare.core.targets.check_declared`), or None when the file attaches. A channel's
:class:`Adapter` does the same through its real routes; :class:`World` holds one small real file
of each kind (made by :mod:`careshare.testing.strategies`' builders), uploaded once to each place
and reused by every example. The contract kit (:mod:`careshare.testing.contract`) runs every loaded
target this way, with the adapters the channels give it (``careshare_contract``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from careshare.core.problems import problem_types
from careshare.testing import make_pdf
from careshare.testing.strategies.dicom import build_dataset, to_bytes
from careshare.testing.strategies.images import encode, quadrants
from careshare.testing.strategies.video import VideoSpec, make_video

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import httpx
    from hypothesis.strategies import DrawFn
    from litestar.testing import AsyncTestClient

__all__ = ["KINDS", "SOURCES", "Adapter", "Sample", "World", "outcome", "predict", "predict_batch", "sample_file"]

KINDS = ("pdf", "image", "dicom", "video")
#: Where a picked file lives: the item's patient's files, the library, or another patient's files.
SOURCES = ("patient", "library", "other-patient")


@functools.cache
def sample_file(kind: str) -> bytes:
    """A small real file of ``kind`` (a few KB), the same bytes on every call."""
    if kind == "pdf":
        return make_pdf(1, text="attachment matrix")
    if kind == "image":
        return encode([quadrants((32, 24))], "PNG")
    if kind == "dicom":
        return to_bytes(build_dataset(np.arange(64, dtype=np.uint8).reshape(8, 8)))
    if kind == "video":
        return make_video(VideoSpec(frames=4, width=32, height=24, moov_at_end=False))
    raise ValueError(f"no sample file of kind {kind!r}")


@attrs.frozen
class Sample:
    """A stored file of one kind, where it lives, and the size of each of its renditions."""

    kind: str
    source: str
    file_id: str
    sizes: Mapping[str, int]


def predict(
    rules: Mapping[str, Any],
    *,
    kind: str,
    size: int,
    source: str,
    attached_count: int,
    attached_bytes: int,
    is_draft: bool = True,
    refusals: Mapping[str, tuple[str, str]] | None = None,
) -> str | None:
    """The problem code the declared ``rules`` give for attaching one file, or None: it attaches.

    A kind with a refusal of its own shows it as a boolean rule of ``GET /v1/targets``; ``refusals``
    maps the kind to (that rule, its problem code), by default the habit of the file-type plugins
    (``video_allowed`` false refuses a video as ``video-not-allowed``); any other kind left out of
    ``accepts`` is ``kind-not-allowed``.
    """
    owner = "library" if source == "library" else "patient"
    rule, refused_as = (refusals or {}).get(kind, (f"{kind}_allowed", f"{kind}-not-allowed"))
    own_refusal = rules.get(rule) is False
    checks = (
        (rules["draft_required"] and not is_draft, "draft-required"),
        (owner not in rules["sources"] or source == "other-patient", "file-not-available"),
        (own_refusal, refused_as),
        (kind not in rules["accepts"], "kind-not-allowed"),
        (rules["max_count"] is not None and attached_count + 1 > rules["max_count"], "too-many-attachments"),
        (rules["max_file_bytes"] is not None and size > rules["max_file_bytes"], "file-too-large"),
        (
            rules["max_total_bytes"] is not None and attached_bytes + size > rules["max_total_bytes"],
            "attachments-too-large",
        ),
    )
    return next((code for broken, code in checks if broken), None)


def predict_batch(
    rules: Mapping[str, Any], files: Sequence[Sample], attached: Sequence[int], *, is_draft: bool = True
) -> str | None:
    """The first code ``files`` attached in one request give (all or nothing), after ``attached`` (their sizes)."""
    sizes = list(attached)
    for file in files:
        size = file.sizes[rules["rendition"]]
        code = predict(
            rules,
            kind=file.kind,
            size=size,
            source=file.source,
            attached_count=len(sizes),
            attached_bytes=sum(sizes),
            is_draft=is_draft,
        )
        if code is not None:
            return code
        sizes.append(size)
    return None


def outcome(response: httpx.Response) -> str | None:
    """None for a success; else the problem's code, once its body and status are checked to agree."""
    if response.is_success:
        return None
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    code = str(response.json()["code"])
    assert response.status_code == problem_types()[code].status, response.text
    return code


@attrs.define
class World:
    """A clinician, their patient, another patient of the clinic, and the sample files uploaded so far."""

    client: AsyncTestClient[Any]
    clinician: dict[str, str]
    patient: dict[str, str]
    patient_id: str
    other_patient_id: str
    samples: dict[tuple[str, str], Sample] = attrs.field(factory=dict)
    #: The other patient's headers (they must never see this patient's items).
    other_patient: dict[str, str] = attrs.field(factory=dict)
    #: Text an adapter writes into its items where clinical text would go (a message body, a letter's
    #: subject): the kit looks for it, and for the patient's name, where neither may appear.
    clinical_text: str = "Contract clinical text 7f3a"
    patient_name: str = ""
    #: A patient's headers from their id (a seed signs in as the patients it makes).
    patient_of: Callable[[str], dict[str, str]] | None = None

    async def sample(self, kind: str, source: str) -> Sample:
        """The sample of ``kind`` stored at ``source``, uploaded on first use."""
        if (kind, source) not in self.samples:
            owner = {"patient": self.patient_id, "other-patient": self.other_patient_id}.get(source)
            path = "/v1/library/files" if owner is None else f"/v1/patients/{owner}/files"
            response = await self.client.post(
                path, content=sample_file(kind), params={"filename": f"sample-{kind}"}, headers=self.clinician
            )
            assert response.status_code == 201, response.text
            body = response.json()
            assert body["kind"] == kind, body
            sizes = {r["role"]: r["size"] for r in body["renditions"]}
            self.samples[(kind, source)] = Sample(kind, source, body["id"], sizes)
        return self.samples[(kind, source)]


class Adapter:
    """How one target is tried through its channel's HTTP routes. Override ``new_item`` and ``attach``.

    ``batch``: how many files one request may carry (a chat message takes several, drawn without
    repeats). ``item_per_request``: every request makes a new item (a chat message). ``sources``:
    where the files drawn for it may live. ``declared``: False for a channel whose rules come from
    each item rather than from ``GET /v1/targets`` (file requests); it then overrides ``draw_rules``.
    """

    #: The name of the target this adapter drives (as ``GET /v1/targets`` lists it).
    target = ""
    batch = 1
    item_per_request = False
    sources: tuple[str, ...] = SOURCES
    declared = True
    #: True when ``finish`` turns a draft into a sent item (letters).
    can_finish = False
    #: True when ``share`` makes what reaches the patient from an item (checked in archive and inbox).
    shares = False

    def draw_rules(self, draw: DrawFn, declared: Mapping[str, Any] | None) -> Mapping[str, Any]:
        assert declared is not None
        return declared

    def predict(
        self, rules: Mapping[str, Any], files: Sequence[Sample], attached: Sequence[int], *, is_draft: bool
    ) -> str | None:
        return predict_batch(rules, files, attached, is_draft=is_draft)

    async def new_item(self, world: World, rules: Mapping[str, Any]) -> Any:
        """Make an empty item (None when items are made by ``attach``)."""
        return None

    async def attach(self, world: World, item: Any, files: Sequence[Sample]) -> httpx.Response:
        raise NotImplementedError

    async def finish(self, world: World, item: Any) -> None:
        raise NotImplementedError

    async def share(self, world: World, item: Any, files: Sequence[Sample]) -> str:
        """Make what reaches the patient from ``item``, which carries ``files``; its id in the archive.

        A message is shared as it is sent (``item`` is None: send one with ``files``), a letter by
        sending it, an appointment type by booking one. The kit then expects the patient's archive
        to list that id with exactly ``files`` and the patient's inbox to name it.
        """
        raise NotImplementedError
