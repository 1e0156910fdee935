"""Templates: organisation items (an appointment type, a medication type) that patients' items are made from.

A channel owns its template table (``template_table``) and the target its files attach to; the
:class:`Templates` of the two does the rest. A template is never shared: items made from it carry
a copy of its attachments as they were then (:meth:`Templates.hand_out`), so editing it
(``Templates.detach``, ``Templates.attach``) changes later items only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.ids import new_id
from careshare.core.problems import NOT_FOUND, Problem
from careshare.core.sharing import Shared, share
from careshare.core.targets import Attachment, Item, Target, attach, attachments_of, copy_attachments, detach

if TYPE_CHECKING:
    from datetime import datetime

    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal

__all__ = ["MAX_DESCRIPTION_CHARS", "MAX_NAME_CHARS", "Template", "Templates", "template_table"]

MAX_NAME_CHARS = 200
#: Room for a few paragraphs of instructions (an information pack's, an appointment type's).
MAX_DESCRIPTION_CHARS = 4000


def template_table(name: str) -> sa.Table:
    """A channel's template table on the shared metadata (the channel ships its migration)."""
    return sa.Table(
        name,
        db.metadata,
        sa.Column("id", db.ID, primary_key=True),
        sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
        sa.Column("name", sa.String(MAX_NAME_CHARS), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", db.UTCDateTime, nullable=False),
        sa.Column("updated_at", db.UTCDateTime, nullable=False),
        sa.Index(f"ix_{name}_org", "org_id", "id"),
    )


@attrs.frozen
class Template:
    id: str
    org: str
    name: str
    description: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    attachments: tuple[Attachment, ...]


@attrs.frozen(eq=False)
class Templates:
    """One channel's templates: the table that holds them and the target their files attach to."""

    table: sa.Table
    target: Target

    def item(self, template_id: str, org: str) -> Item:
        return Item(target=self.target.name, id=template_id, org=org, patient_id=None)

    async def load(self, conn: AsyncConnection, rows: list[Any]) -> list[Template]:
        """Templates from rows of the table, each with its files (one query for all)."""
        attached = await attachments_of(conn, self.target.name, [row.id for row in rows])
        return [
            Template(
                id=row.id,
                org=row.org_id,
                name=row.name,
                description=row.description,
                created_by=row.created_by,
                created_at=row.created_at,
                updated_at=row.updated_at,
                attachments=tuple(attached[row.id]),
            )
            for row in rows
        ]

    async def create(self, conn: AsyncConnection, principal: Principal, *, name: str, description: str) -> Template:
        now = db.utcnow()
        template_id = new_id()
        await conn.execute(
            self.table.insert().values(
                id=template_id,
                org_id=principal.org,
                name=name,
                description=description,
                created_by=principal.subject,
                created_at=now,
                updated_at=now,
            )
        )
        return await self.get(conn, principal, template_id)

    async def get(
        self, conn: AsyncConnection, principal: Principal, template_id: str, *, for_update: bool = False
    ) -> Template:
        """The template if it belongs to the principal's organisation, else ``not-found``.

        ``for_update``: PostgreSQL queues edits of one template here (positions, the file count);
        SQLite writers are serial anyway.
        """
        query = sa.select(self.table).where(self.table.c.id == template_id, self.table.c.org_id == principal.org)
        row = (await conn.execute(query.with_for_update() if for_update else query)).first()
        if row is None:
            raise Problem(NOT_FOUND)
        return (await self.load(conn, [row]))[0]

    async def page(
        self, conn: AsyncConnection, principal: Principal, *, cursor: str | None, limit: int
    ) -> tuple[list[Template], str | None]:
        """A page of the organisation's templates, newest first, and the next cursor."""
        query = sa.select(self.table).where(self.table.c.org_id == principal.org)
        rows, next_cursor = await db.newest_first(conn, query, self.table.c.id, cursor=cursor, limit=limit)
        return await self.load(conn, rows), next_cursor

    async def update(
        self,
        conn: AsyncConnection,
        principal: Principal,
        template_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Template:
        await self.get(conn, principal, template_id)
        values: dict[str, object] = {"updated_at": db.utcnow()}
        if name is not None:
            values["name"] = name
        if description is not None:
            values["description"] = description
        await conn.execute(sa.update(self.table).where(self.table.c.id == template_id).values(**values))
        return await self.get(conn, principal, template_id)

    async def attach(
        self,
        conn: AsyncConnection,
        pm: pluggy.PluginManager,
        principal: Principal,
        template_id: str,
        file_ids: list[str],
    ) -> Template:
        """Attach files to the template under its target's rules (or raise the first rule broken)."""
        await self.get(conn, principal, template_id, for_update=True)
        await attach(conn, pm, principal, self.target, self.item(template_id, principal.org), file_ids)
        return await self.update(conn, principal, template_id)

    async def detach(
        self, conn: AsyncConnection, principal: Principal, template_id: str, attachment_id: str
    ) -> Template:
        await self.get(conn, principal, template_id, for_update=True)
        await detach(conn, principal, self.target, self.item(template_id, principal.org), attachment_id)
        return await self.update(conn, principal, template_id)

    async def hand_out(
        self,
        conn: AsyncConnection,
        pm: pluggy.PluginManager,
        principal: Principal,
        template_id: str,
        *,
        channel: str,
        target: str,
        item_id: str,
        patient_id: str,
        title: str,
        notification_kind: str | None = None,
        notification_key: str | None = None,
    ) -> Shared:
        """Pin the template's files as they are now onto the patient's item made from it, and share that item.

        In the caller's transaction, after the channel wrote its own row (a booking, a reminder, a
        pack's copy): what a booked appointment, a reminder and a consent's pack have in common.
        """
        await copy_attachments(conn, principal, self.target.name, template_id, target, item_id)
        return await share(
            conn,
            pm,
            principal,
            channel=channel,
            target=target,
            item_id=item_id,
            patient_id=patient_id,
            title=title,
            notification_kind=notification_kind,
            notification_key=notification_key,
        )
