"""Rendering a stored file again with other options (DICOM frame and window), replacing its shareable copy."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.files import ORIGINAL, check_record, get_file, replace_renditions, run_handler
from careshare.core.problems import Problem, ProblemType
from careshare.core.storage import content_key

if TYPE_CHECKING:
    from careshare.core.models import Principal, StoredFile
    from careshare.core.runtime import Careshare

__all__ = ["RENDER_NOT_SUPPORTED", "RenderOptions", "rerender"]

RENDER_NOT_SUPPORTED = ProblemType(
    "render-not-supported",
    422,
    "File cannot be rendered again",
    "Only images with frames and windows (DICOM) can be rendered again; this file is shared as it is.",
)


def _positive_frame(_instance: Any, _attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError("frame counts from 1")


def _finite(_instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number")


def _positive_width(_instance: Any, _attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError("window_width must be a number greater than 0")


@attrs.frozen
class RenderOptions:
    """What the clinician asks for; a field left out takes the file's default (middle frame, its own window)."""

    #: 1-based, as DICOM numbers frames.
    frame: int | None = attrs.field(default=None, validator=_positive_frame)
    window_center: float | None = attrs.field(default=None, validator=_finite)
    window_width: float | None = attrs.field(default=None, validator=_positive_width)


async def rerender(cs: Careshare, principal: Principal, file_id: str, options: RenderOptions) -> StoredFile:
    """Run the file's handler again on its original with ``options``; its shareable copy and thumbnail are replaced.

    Old rendition blobs stay in the store: attachments already sent pin them by hash. Refusals
    (a frame out of range, ...) come from the handler and leave the file as it was.
    """
    async with cs.reader.connect() as conn:
        stored = await get_file(conn, principal, file_id)
    original = stored.rendition(ORIGINAL)
    if not stored.check.get("renderable") or original is None:
        raise Problem(RENDER_NOT_SUPPORTED)
    policy = attrs.evolve(
        cs.settings.policy,
        dicom_frame=options.frame,
        dicom_window_center=options.window_center,
        dicom_window_width=options.window_width,
    )
    started = time.perf_counter()
    processed, renditions, handler_seconds = await run_handler(
        cs, stored, content_key(original.sha256), policy, missing=RENDER_NOT_SUPPORTED
    )

    check = {
        **check_record(processed, original, renditions, started, handler_seconds),
        "rendered_by": principal.subject,
        "render_options": attrs.asdict(options),
    }
    async with cs.engine.begin() as conn:
        # Again inside the transaction: the file may have been deleted while it was rendering.
        await get_file(conn, principal, file_id)
        await replace_renditions(conn, file_id, renditions)
        await conn.execute(
            sa.update(db.files).where(db.files.c.id == file_id).values(metadata=dict(processed.metadata), check=check)
        )
        await record_event(
            conn, principal, "file.rendered", patient_id=stored.patient_id, file_id=file_id, rendition="shareable"
        )
        return await get_file(conn, principal, file_id)
