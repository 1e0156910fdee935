"""Rendering a stored file again with other options (a frame, a window), replacing its shareable copy.

The options are the file-type plugin's (``Kind.render_options``): :func:`render_options` says which
class a file's body is read into, and :func:`rerender` hands them to the handler as its policy
section, so core names no format.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.files import ORIGINAL, RenditionsGone, check_record, get_file, replace_renditions, run_handler
from careshare.core.kinds import kinds
from careshare.core.problems import Problem, ProblemType
from careshare.core.storage import content_key

if TYPE_CHECKING:
    from careshare.core.models import Principal, StoredFile
    from careshare.core.runtime import Careshare

__all__ = ["RENDER_BODY_SCHEMA", "RENDER_NOT_SUPPORTED", "render_options", "rerender"]

RENDER_NOT_SUPPORTED = ProblemType(
    "render-not-supported",
    422,
    "File cannot be rendered again",
    "Only files whose type has rendering options (a frame, a window) can be rendered again;"
    " this file is shared as it is.",
)

#: The body of a re-render as the host documents it: an object whose members the file's kind
#: defines (``Kind.render_options``), read once the file's kind is known (:func:`render_options`).
RENDER_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The rendering options of the file's kind; a member left out takes the file's default.",
}


async def render_options(cs: Careshare, principal: Principal, file_id: str) -> type:
    """The class a re-render body of this file is read into: its kind's ``render_options``.

    Asked before the body is read, so a file that cannot be rendered again is
    ``render-not-supported`` whatever the body holds, and a missing file ``not-found``.
    """
    async with cs.reader.connect() as conn:
        stored = await get_file(conn, principal, file_id)
    return _render_options(cs, stored)


def _render_options(cs: Careshare, stored: StoredFile) -> type:
    kind = kinds(cs.plugins).get(stored.kind)
    if kind is None or kind.render_options is None or not stored.check.get("renderable"):
        raise Problem(RENDER_NOT_SUPPORTED)
    return kind.render_options


async def rerender(cs: Careshare, principal: Principal, file_id: str, options: object) -> StoredFile:
    """Run the file's handler again on its original with ``options``; its shareable copy and thumbnail are replaced.

    ``options`` is an instance of the class :func:`render_options` gave: it reaches the handler as
    its policy section. Old rendition blobs stay in the store: attachments already sent pin them
    by hash. Refusals (a frame out of range, ...) come from the handler and leave the file as it was.
    """
    for _ in range(2):
        try:
            return await _rerender_once(cs, principal, file_id, options)
        except RenditionsGone:  # another file's deletion took bytes this run found stored: run again
            continue
    return await _rerender_once(cs, principal, file_id, options)


async def _rerender_once(cs: Careshare, principal: Principal, file_id: str, options: object) -> StoredFile:
    async with cs.reader.connect() as conn:
        stored = await get_file(conn, principal, file_id)
    original = stored.rendition(ORIGINAL)
    if not isinstance(options, _render_options(cs, stored)) or original is None:
        raise Problem(RENDER_NOT_SUPPORTED)
    policy = cs.settings.policy.with_section(options)
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
        await replace_renditions(conn, cs, file_id, renditions)
        await conn.execute(
            sa.update(db.files).where(db.files.c.id == file_id).values(metadata=dict(processed.metadata), check=check)
        )
        await record_event(
            conn, principal, "file.rendered", patient_id=stored.patient_id, file_id=file_id, rendition="shareable"
        )
        return await get_file(conn, principal, file_id)
