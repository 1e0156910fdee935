"""Audit events: every share and every read is recorded (who, what, which rendition, when)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from careshare.core import db
from careshare.core.ids import new_id

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from careshare.core.models import Principal

__all__ = ["event_json", "export_events", "record_event"]


async def record_event(
    conn: AsyncConnection,
    principal: Principal,
    action: str,
    *,
    patient_id: str | None = None,
    file_id: str | None = None,
    rendition: str | None = None,
    target: str | None = None,
    item_id: str | None = None,
) -> str:
    """Write one audit event in the caller's transaction; returns its id."""
    event_id = new_id()
    await conn.execute(
        db.audit_events.insert().values(
            id=event_id,
            org_id=principal.org,
            actor=principal.subject,
            actor_role=principal.role,
            action=action,
            patient_id=patient_id,
            file_id=file_id,
            rendition=rendition,
            target=target,
            item_id=item_id,
            at=db.utcnow(),
        )
    )
    return event_id


def event_json(row: Any) -> dict[str, Any]:
    """One audit event as the API and ``careshare audit export`` show it (ids only, no patient data)."""
    return {
        "id": row.id,
        "action": row.action,
        "actor": row.actor,
        "actor_role": row.actor_role,
        "file_id": row.file_id,
        "rendition": row.rendition,
        "target": row.target,
        "item_id": row.item_id,
        "at": row.at.isoformat(),
    }


async def export_events(
    engine: AsyncEngine, *, since: datetime, org: str | None = None, batch: int = 1000
) -> AsyncIterator[dict[str, Any]]:
    """Every event at or after ``since``, oldest first, in batches (``careshare audit export``)."""
    events = db.audit_events
    after: str | None = None
    while True:
        query = sa.select(events).where(events.c.at >= since)
        if org is not None:
            query = query.where(events.c.org_id == org)
        if after is not None:
            query = query.where(events.c.id > after)
        async with engine.connect() as conn:
            rows = list(await conn.execute(query.order_by(events.c.id).limit(batch)))
        for row in rows:
            yield {"org": row.org_id, "patient_id": row.patient_id, **event_json(row)}
        if len(rows) < batch:
            return
        after = rows[-1].id
