"""JSON shapes of the API: attrs values in, plain dicts out."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import attrs
from cattrs.preconf.json import make_converter
from litestar.params import QueryParameter

from careshare.core.models import BodyErrors, parse_time, structure_body
from careshare.core.problems import Problem
from careshare.core.targets import Attachment
from careshare.web.content import download_name
from careshare.web.problems import BAD_REQUEST, INVALID_REQUEST, REQUEST_TOO_LARGE

if TYPE_CHECKING:
    from litestar import Request

    from careshare.core.models import Patient, StoredFile

__all__ = [
    "PageLimit",
    "attachment_json",
    "aware_datetime",
    "file_json",
    "invalid",
    "output",
    "page_json",
    "parse_body",
    "patient_json",
    "shown",
]

T = TypeVar("T")

#: The ``limit`` query parameter of every list: 1 to 200 items a page, 50 by default.
PageLimit = Annotated[int, QueryParameter(ge=1, le=200)]


def file_json(f: StoredFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "owner": {"type": f.owner_type, "id": f.patient_id if f.owner_type == "patient" else f.org},
        "filename": f.filename,
        "kind": f.kind,
        "media_type": f.media_type,
        "size": f.size,
        "sha256": f.sha256,
        "status": f.status,
        "source": f.source,
        "metadata": f.metadata,
        "check": f.check,
        "renditions": [
            {
                "role": r.role,
                "media_type": r.media_type,
                "size": r.size,
                "sha256": r.sha256,
                "url": f"/v1/files/{f.id}/content?rendition={r.role}",
            }
            for r in f.renditions
        ],
        "uploaded_by": f.uploaded_by,
        "created_at": f.created_at.isoformat(),
        "seen": f.seen_at is not None,
        "seen_at": f.seen_at.isoformat() if f.seen_at else None,
    }


def patient_json(p: Patient) -> dict[str, Any]:
    return shown(p, hide={"org"})


def page_json(items: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


async def parse_body(request: Request[Any, Any, Any], cls: type[T], *, max_bytes: int | None = None) -> T:
    """Structure a JSON body into ``cls``; unknown or wrong fields are a 422 naming each one.

    ``max_bytes``: for a route whose body cap is off (it also takes uploads), the JSON is read up to
    this many bytes and a longer body is ``413 request-too-large``, before any of it is parsed.
    """
    if max_bytes is None:
        raw = await request.body()
    else:
        collected = bytearray()
        async for chunk in request.stream():
            collected += chunk
            if len(collected) > max_bytes:
                raise Problem(REQUEST_TOO_LARGE)
        raw = bytes(collected)
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(BAD_REQUEST, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise Problem(INVALID_REQUEST, "The body must be a JSON object.", errors=["$: expected an object"])
    try:
        return structure_body(data, cls)
    except BodyErrors as exc:
        raise Problem(INVALID_REQUEST, errors=exc.errors) from None


def invalid(*errors: str) -> Problem:
    """``invalid-request`` naming each field that is wrong (``"$.field: what to do"``), the first as the detail."""
    return Problem(INVALID_REQUEST, errors[0] if len(errors) == 1 else None, errors=list(errors))


def aware_datetime(value: str, field: str) -> datetime:
    """An ISO 8601 date and time with a UTC offset in the range any database keeps, or ``invalid-request``."""
    try:
        return parse_time(value)
    except ValueError as exc:
        raise invalid(f"{field}: {exc}") from None


def attachment_json(a: Attachment) -> dict[str, Any]:
    return {
        "id": a.id,
        "file_id": a.file_id,
        "filename": download_name(a.filename, a.media_type, a.role),
        "kind": a.kind,
        "media_type": a.media_type,
        "size": a.size,
        "sha256": a.sha256,
        "url": f"/v1/attachments/{a.id}/content",
    }


#: JSON out: an attrs value's fields, datetimes as ISO 8601 text, attachments in their public shape.
output = make_converter()
output.register_unstructure_hook(Attachment, attachment_json)


def shown(value: Any, *, hide: Collection[str] = (), **extra: Any) -> dict[str, Any]:
    """``value`` (an attrs instance) as its JSON through :data:`output`, less the fields in ``hide``, plus ``extra``.

    For the answers that are an item's own fields: what a caller must not see (the organisation,
    a reviewer's name for a patient) goes in ``hide``, what is computed (a URL) in ``extra``.
    """
    # Field by field, each value by its own class: the classes' annotations may be strings that
    # only a type checker resolves (``datetime`` imported under TYPE_CHECKING).
    fields = (f.name for f in attrs.fields(type(value)) if f.name not in hide)
    return {**{name: output.unstructure(getattr(value, name)) for name in fields}, **extra}
