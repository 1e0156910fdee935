"""Attachment targets: where a channel lets files attach, its declarative limits, and attaching itself.

A channel plugin declares its targets (``careshare_targets``); core checks every declared limit and
asks ``careshare_check_attachment`` for the channel's own rules, then pins the rendition the
patient receives by its hash. What is pinned stays readable whatever later happens to the file.

Core names no kind of file: a target accepts every kind the file-type plugins declare
(``accepts=None``) or the ones it lists, and a kind left out reads as that kind declares
(:class:`~careshare.core.kinds.KindRefusal`), else as ``kind-not-allowed``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.files import get_file
from careshare.core.ids import new_id
from careshare.core.kinds import Kind, kinds
from careshare.core.problems import NOT_FOUND, Problem, ProblemType

if TYPE_CHECKING:
    from datetime import datetime

    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal, StoredFile

__all__ = [
    "Attachment",
    "Item",
    "Target",
    "attach",
    "attachments_of",
    "copy_attachments",
    "detach",
    "find_target",
    "resolve",
    "targets",
]

FILE_TOO_LARGE = ProblemType(
    "file-too-large", 422, "File too large for this item", "This file is larger than this item accepts."
)
ATTACHMENTS_TOO_LARGE = ProblemType(
    "attachments-too-large",
    422,
    "Attachments too large together",
    "The files attached to this item would be larger together than it accepts. Remove a file or attach a smaller one.",
)
TOO_MANY_ATTACHMENTS = ProblemType(
    "too-many-attachments", 422, "Too many files", "This item already carries as many files as it accepts."
)
KIND_NOT_ALLOWED = ProblemType(
    "kind-not-allowed", 422, "File type not allowed here", "This kind of file cannot be attached to this item."
)
FILE_NOT_READY = ProblemType(
    "file-not-ready",
    409,
    "File still being checked",
    "This file is still being checked. Attach it once its status is 'ready'.",
)
FILE_REJECTED = ProblemType(
    "file-rejected", 422, "File was refused", "This file was refused when it was checked, so it cannot be shared."
)
DRAFT_REQUIRED = ProblemType(
    "draft-required",
    409,
    "Already sent: only a draft can change",
    "Files can only be attached while this item is a draft; it has been sent. Start a new one.",
)
ITEM_ALREADY_SHARED = ProblemType(
    "item-already-shared",
    409,
    "Item already shared",
    "This item has reached a patient, so the files it carries stay as they were sent.",
)
FILE_NOT_AVAILABLE = ProblemType(
    "file-not-available",
    422,
    "File not available for this patient",
    "This file belongs to another patient's record. Attach files from this patient's files or the organisation library.",
)


@attrs.frozen
class Target:
    """Where files attach in a channel, and the rules every attachment there must meet.

    ``None`` for a limit means no limit. Sizes count the rendition the patient receives.
    """

    name: str
    channel: str
    #: The kinds of file accepted; None: every kind the loaded file-type plugins declare.
    accepts: frozenset[str] | None = None
    max_file_bytes: int | None = None
    max_total_bytes: int | None = None
    max_count: int | None = None
    draft_required: bool = False
    #: Which rendition the patient receives (a format phones cannot open is sent as its rendering).
    rendition: str = "shareable"
    #: Files may come from the item's patient's files, the organisation library, or both.
    sources: frozenset[Literal["patient", "library"]] = frozenset({"patient", "library"})
    #: What the patient receives, in a few words (shown to product teams by ``GET /v1/targets``).
    description: str = ""
    #: The kinds loaded when the target was resolved (:func:`resolve`): what ``accepts=None``
    #: means, and how a kind left out is refused. Filled in by core, never declared.
    kinds: tuple[Kind, ...] = attrs.field(default=(), repr=False)

    def accepted(self) -> frozenset[str]:
        """The kinds accepted: those declared, or every loaded kind (none before :func:`resolve`)."""
        return frozenset(k.name for k in self.kinds) if self.accepts is None else self.accepts

    def rules(self) -> dict[str, Any]:
        """The rules as ``GET /v1/targets`` shows them; each kind's own refusal adds its boolean rule."""
        accepted = self.accepted()
        return {
            "name": self.name,
            "channel": self.channel,
            "accepts": sorted(accepted),
            "max_file_bytes": self.max_file_bytes,
            "max_total_bytes": self.max_total_bytes,
            "max_count": self.max_count,
            **{k.refusal.rule: k.name in accepted for k in self.kinds if k.refusal is not None},
            "draft_required": self.draft_required,
            "rendition": self.rendition,
            "sources": sorted(self.sources),
            "description": self.description,
        }


@attrs.frozen
class Item:
    """The thing files attach to (a message, a template ...) as core needs to see it."""

    target: str
    id: str
    org: str
    #: The patient the item is for; None for the organisation's templates.
    patient_id: str | None
    is_draft: bool = False
    #: The channel's own record, for ``careshare_check_attachment`` implementations.
    record: Any = None


@attrs.frozen
class Attachment:
    id: str
    target: str
    item_id: str
    file_id: str
    role: str
    sha256: str
    media_type: str
    size: int
    filename: str
    kind: str
    position: int


def resolve(target: Target, pm: pluggy.PluginManager) -> Target:
    """``target`` with the loaded kinds: ``accepts=None`` then lists them, and each refuses as it declares."""
    return attrs.evolve(target, kinds=tuple(kinds(pm).values()))


def targets(pm: pluggy.PluginManager) -> dict[str, Target]:
    """Every target of every loaded plugin, by name, resolved (a name declared twice is an error)."""
    found: dict[str, Target] = {}
    loaded = tuple(kinds(pm).values())
    for target in itertools.chain.from_iterable(pm.hook.careshare_targets()):
        if target.name in found:
            raise ValueError(f"attachment target {target.name!r} is declared twice")
        found[target.name] = attrs.evolve(target, kinds=loaded)
    return found


def find_target(pm: pluggy.PluginManager, name: str) -> Target:
    target = targets(pm).get(name)
    if target is None:
        raise LookupError(f"no attachment target {name!r} is loaded")
    return target


async def attachments_of(conn: AsyncConnection, target: str, item_ids: list[str]) -> dict[str, list[Attachment]]:
    """The attachments of each item, in the order they were attached."""
    by_item: dict[str, list[Attachment]] = {item_id: [] for item_id in item_ids}
    if not item_ids:
        return by_item
    rows = await conn.execute(
        sa.select(db.attachments, db.files.c.kind)
        .join(db.files, db.files.c.id == db.attachments.c.file_id)
        .where(db.attachments.c.target == target, db.attachments.c.item_id.in_(item_ids))
        .order_by(db.attachments.c.item_id, db.attachments.c.position)
    )
    for row in rows:
        by_item[row.item_id].append(_attachment(row))
    return by_item


def _where(target: Target, rule: str) -> str:
    return f"{rule} of target '{target.name}' ({target.channel})"


def check_declared(target: Target, item: Item, file: StoredFile, attached: list[Attachment]) -> None:
    """Raise the first declared rule ``file`` breaks on ``item``; the detail names the rule and target."""
    if target.draft_required and not item.is_draft:
        raise Problem(DRAFT_REQUIRED, rule=_where(target, "draft_required"))
    if file.status == "processing":
        raise Problem(FILE_NOT_READY)
    if file.status == "rejected":
        raise Problem(FILE_REJECTED)
    if file.owner_type not in target.sources:
        where = "the organisation library" if target.sources == {"library"} else "the patient's files"
        raise Problem(
            FILE_NOT_AVAILABLE,
            f"Files attached to {target.description or target.name} come from {where} only.",
            rule=_where(target, "sources"),
        )
    if file.owner_type == "patient" and file.patient_id != item.patient_id:
        raise Problem(FILE_NOT_AVAILABLE)
    if target.accepts is not None and file.kind not in target.accepts:
        refusal = next((k.refusal for k in target.kinds if k.name == file.kind), None)
        if refusal is not None:
            where = target.description or target.name
            raise Problem(refusal.problem, refusal.detail.format(target=where), rule=_where(target, refusal.rule))
        raise Problem(
            KIND_NOT_ALLOWED,
            f"A {file.kind} file cannot be attached here; this accepts {', '.join(sorted(target.accepts))}.",
            rule=_where(target, "accepts"),
        )
    rendition = file.rendition(target.rendition)
    if rendition is None:
        raise Problem(FILE_NOT_READY, f"This file has no '{target.rendition}' copy to send yet.")
    if target.max_count is not None and len(attached) + 1 > target.max_count:
        raise Problem(
            TOO_MANY_ATTACHMENTS,
            f"This item carries at most {target.max_count} files.",
            rule=_where(target, "max_count"),
            limit=target.max_count,
        )
    if target.max_file_bytes is not None and rendition.size > target.max_file_bytes:
        raise Problem(
            FILE_TOO_LARGE,
            f"This file is {rendition.size:,} bytes; this item accepts files of at most {target.max_file_bytes:,} bytes.",
            rule=_where(target, "max_file_bytes"),
            limit=target.max_file_bytes,
            size=rendition.size,
        )
    current = sum(a.size for a in attached)
    total = current + rendition.size
    if target.max_total_bytes is not None and total > target.max_total_bytes:
        raise Problem(
            ATTACHMENTS_TOO_LARGE,
            f"The files attached already total {current:,} bytes; with this one ({rendition.size:,} bytes) they"
            f" would total {total:,} bytes, and this item accepts at most {target.max_total_bytes:,} bytes."
            " Remove a file or attach a smaller one.",
            rule=_where(target, "max_total_bytes"),
            limit=target.max_total_bytes,
            total=total,
            current=current,
            size=rendition.size,
        )


def _row(attachment: Attachment, org: str, now: datetime) -> dict[str, Any]:
    """The ``attachments`` row of ``attachment`` (``kind`` lives on the file, not the row)."""
    row = attrs.asdict(attachment)
    del row["kind"]
    return {**row, "org_id": org, "created_at": now}


async def attach(
    conn: AsyncConnection,
    pm: pluggy.PluginManager,
    principal: Principal,
    target: Target,
    item: Item,
    file_ids: list[str],
) -> list[Attachment]:
    """Attach files to ``item`` in the caller's transaction, or raise the first rule broken.

    Every declared rule is checked, then ``careshare_check_attachment``; all files attach or none
    (the caller's transaction rolls back on a Problem). The rendition is pinned by hash.
    """
    if item.org != principal.org:
        raise Problem(NOT_FOUND)
    target = resolve(target, pm)
    attached = (await attachments_of(conn, target.name, [item.id]))[item.id]
    added: list[Attachment] = []
    for file_id in file_ids:
        file = await get_file(conn, principal, file_id)
        check_declared(target, item, file, attached)
        for problems in pm.hook.careshare_check_attachment(target=target, item=item, file=file, attached=attached):
            if problems:
                raise problems[0]
        rendition = file.rendition(target.rendition)
        assert rendition is not None  # check_declared refused files without it
        attachment = Attachment(
            id=new_id(),
            target=target.name,
            item_id=item.id,
            file_id=file.id,
            role=rendition.role,
            sha256=rendition.sha256,
            media_type=rendition.media_type,
            size=rendition.size,
            filename=file.filename,
            kind=file.kind,
            position=len(attached),
        )
        await conn.execute(db.attachments.insert(), [_row(attachment, item.org, db.utcnow())])
        attached = [*attached, attachment]
        added.append(attachment)
    return added


def _attachment(row: Any) -> Attachment:
    return Attachment(
        id=row.id,
        target=row.target,
        item_id=row.item_id,
        file_id=row.file_id,
        role=row.role,
        sha256=row.sha256,
        media_type=row.media_type,
        size=row.size,
        filename=row.filename,
        kind=row.kind,
        position=row.position,
    )


async def copy_attachments(
    conn: AsyncConnection,
    principal: Principal,
    source_target: str,
    source_item_id: str,
    dest_target: str,
    dest_item_id: str,
) -> list[Attachment]:
    """Pin the attachments ``source_item_id`` carries now onto ``dest_item_id`` too, in the caller's transaction.

    For items made from a template (an item booked or sent from the organisation's template):
    the copy keeps the pinned rows (hash, rendition role, media type, size, filename,
    order), so later edits of the template reach later items only. Nothing is checked again: each
    row was checked when it was pinned. Copies follow what ``dest_item_id`` already carries.
    """
    rows = list(
        await conn.execute(
            sa.select(db.attachments, db.files.c.kind)
            .join(db.files, db.files.c.id == db.attachments.c.file_id)
            .where(
                db.attachments.c.org_id == principal.org,
                db.attachments.c.target == source_target,
                db.attachments.c.item_id == source_item_id,
            )
            .order_by(db.attachments.c.position)
        )
    )
    already = len((await attachments_of(conn, dest_target, [dest_item_id]))[dest_item_id])
    now = db.utcnow()
    copies = [
        attrs.evolve(
            _attachment(row),
            id=new_id(),
            target=dest_target,
            item_id=dest_item_id,
            position=already + index,
        )
        for index, row in enumerate(rows)
    ]
    if copies:
        await conn.execute(db.attachments.insert(), [_row(a, principal.org, now) for a in copies])
    return copies


async def detach(
    conn: AsyncConnection, principal: Principal, target: Target, item: Item, attachment_id: str
) -> Attachment:
    """Remove one attachment from an item that has not reached a patient, in the caller's transaction.

    This is how a template is edited: items made from it earlier keep their own copies. An item
    already shared keeps what it carries (``item-already-shared``); the files after the removed one
    move up one place.
    """
    if item.org != principal.org:
        raise Problem(NOT_FOUND)
    if target.draft_required and not item.is_draft:
        raise Problem(
            DRAFT_REQUIRED,
            "Files can only be removed while this item is a draft.",
            rule=_where(target, "draft_required"),
        )
    shared = (
        await conn.execute(
            sa.select(db.shares.c.id).where(db.shares.c.target == target.name, db.shares.c.item_id == item.id).limit(1)
        )
    ).first()
    if shared is not None:
        raise Problem(ITEM_ALREADY_SHARED)
    found = next(
        (a for a in (await attachments_of(conn, target.name, [item.id]))[item.id] if a.id == attachment_id), None
    )
    if found is None:
        raise Problem(NOT_FOUND)
    await conn.execute(sa.delete(db.attachments).where(db.attachments.c.id == attachment_id))
    await conn.execute(
        sa.update(db.attachments)
        .where(
            db.attachments.c.target == target.name,
            db.attachments.c.item_id == item.id,
            db.attachments.c.position > found.position,
        )
        .values(position=db.attachments.c.position - 1)
    )
    return found
