"""Domain values the core, the plugins and the host exchange: frozen attrs classes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs
from cattrs import ClassValidationError, transform_error
from cattrs.preconf.json import make_converter

__all__ = [
    "BodyErrors",
    "Identification",
    "Patient",
    "Principal",
    "Processed",
    "RenditionOutput",
    "RenditionRecord",
    "Source",
    "StoredFile",
    "TextError",
    "check_text",
    "converter",
    "parse_time",
    "structure_body",
]

T = TypeVar("T")

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

#: NUL ends strings in C and in PostgreSQL text; an unpaired surrogate cannot be stored as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class TextError(ValueError):
    """A string that cannot be kept as text: it holds NUL or an unpaired UTF-16 surrogate."""

    sentence = "must not contain NUL characters or unpaired surrogates (\\u0000, \\ud800-\\udfff)"


def check_text(value: str) -> str:
    """``value`` itself, or :class:`TextError` when it holds a character no database keeps as text."""
    if _UNSTORABLE.search(value):
        raise TextError(TextError.sentence)
    return value


def _strict(kind: type) -> Any:
    # cattrs' JSON converter would turn null, 12 or ["a"] into "None", "12", "['a']": refuse instead.
    def structure(value: Any, _type: Any) -> Any:
        if kind is int and type(value) is float and value.is_integer():
            return int(value)  # 5.0 is the integer 5 to JSON Schema, so to the published schema too
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise TypeError(f"expected {kind.__name__}")
        return value

    return structure


for _kind in (str, int, float, bool):
    converter.register_structure_hook(_kind, _strict(_kind))


def structure_body(data: Any, cls: type[T]) -> T:
    """Structure a parsed JSON body into ``cls``; :class:`BodyErrors` names each field that is wrong.

    Every string in the body, keys and ``dict``/``Any`` fields included, is checked as
    :func:`check_text` checks it, so no JSON string reaches the database unchecked.
    """
    bad = _unstorable_paths(data, "$")
    if bad:
        raise BodyErrors([f"{path}: {TextError.sentence}" for path in bad])
    try:
        return converter.structure(data, cls)
    except ClassValidationError as exc:
        raise BodyErrors(_sentences(exc)) from None
    except (TypeError, ValueError) as exc:
        raise BodyErrors([f"$: {type(exc).__name__}"]) from None


def _sentences(exc: ClassValidationError) -> list[str]:
    """One sentence per problem: a validator's own ``"$.field: ..."`` message as it is, the rest as cattrs words them."""
    own = [str(e) for e in exc.exceptions if type(e) is ValueError and str(e).startswith("$.")]
    rest = [e for e in exc.exceptions if not (type(e) is ValueError and str(e).startswith("$."))]
    if rest:
        own += transform_error(ClassValidationError(exc.message, rest, exc.cl), path="$")
    return own


class BodyErrors(ValueError):
    """What is wrong with a JSON body, one ``"$.field: sentence"`` per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors[0] if errors else "invalid body")
        self.errors = errors


def _unstorable_paths(data: Any, root: str, most: int = 20) -> list[str]:
    """Paths of the strings in ``data`` (keys too) that :func:`check_text` refuses; iterative, any depth."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(data, root)]
    while stack and len(found) < most:
        value, path = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                found.append(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    found.append(f"{path} (a key)")
                else:
                    stack.append((item, f"{path}.{key}"))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(value))
    return sorted(found)


#: The times a request may name: wide enough for any record a clinic keeps, narrow enough that
#: every offset converts to UTC and back on every database.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)


def parse_time(value: str) -> datetime:
    """An ISO 8601 date and time with its UTC offset, between :data:`EARLIEST` and :data:`LATEST`.

    Raises ``ValueError`` with a sentence that says what to send instead.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "expected an ISO 8601 date and time with its offset, such as 2030-01-31T09:30:00+00:00"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("give the time zone offset (Z or +01:00, for example)")
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:
        in_utc = None
    if in_utc is None or not EARLIEST <= in_utc <= LATEST:
        raise ValueError(f"give a time between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return parsed
