"""Domain values the core, the plugins and the host exchange: frozen attrs classes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import attrs
from cattrs.preconf.json import make_converter

__all__ = [
    "Identification",
    "Patient",
    "Principal",
    "Processed",
    "RenditionOutput",
    "RenditionRecord",
    "Source",
    "StoredFile",
    "converter",
]

Role = Literal["clinician", "patient"]


@attrs.frozen
class Principal:
    """Who is asking: from a verified bearer token."""

    subject: str
    role: Role
    org: str
    patient: str | None = None

    @property
    def is_clinician(self) -> bool:
        return self.role == "clinician"


@attrs.frozen
class Patient:
    id: str
    org: str
    name: str
    external_id: str
    email: str | None
    created_at: datetime


@attrs.frozen
class Identification:
    """What a file is, decided from its bytes by a ``careshare_identify`` implementation."""

    kind: str
    media_type: str


@attrs.frozen
class Source:
    """A staged upload, as a file-type handler sees it: a local path it may read (never write)."""

    path: Path
    sha256: str
    size: int
    kind: str
    media_type: str
    workdir: Path
    """A private directory for rendition files; removed after ingest."""


@attrs.frozen
class RenditionOutput:
    """One rendition a handler made. ``path`` None means: the original bytes serve as this role."""

    role: str
    media_type: str
    path: Path | None = None


@attrs.frozen
class Processed:
    """A handler's verdict on an accepted file."""

    handler: str
    handler_version: str
    metadata: dict[str, Any] = attrs.field(factory=dict)
    renditions: tuple[RenditionOutput, ...] = ()
    changes: tuple[str, ...] = ()
    #: The handler reads the policy's render options (frame, window): a clinician may render again.
    renderable: bool = False


@attrs.frozen
class RenditionRecord:
    role: str
    media_type: str
    size: int
    sha256: str


@attrs.frozen
class StoredFile:
    """A logical file in a patient's files or the organisation library."""

    id: str
    org: str
    owner_type: Literal["patient", "library"]
    patient_id: str | None
    filename: str
    kind: str
    media_type: str
    size: int
    sha256: str
    status: Literal["processing", "ready", "rejected"]
    source: Literal["clinic", "patient"]
    metadata: dict[str, Any]
    check: dict[str, Any]
    renditions: tuple[RenditionRecord, ...]
    uploaded_by: str
    created_at: datetime
    #: When a clinician marked a file the patient sent as seen (None: still new).
    seen_at: datetime | None = None

    def rendition(self, role: str) -> RenditionRecord | None:
        return next((r for r in self.renditions if r.role == role), None)


converter = make_converter(forbid_extra_keys=True)


def _strict(kind: type) -> Any:
    # cattrs' JSON converter would turn null, 12 or ["a"] into "None", "12", "['a']": refuse instead.
    def structure(value: Any, _type: Any) -> Any:
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise TypeError(f"expected {kind.__name__}")
        return value

    return structure


for _kind in (str, int, float, bool):
    converter.register_structure_hook(_kind, _strict(_kind))
