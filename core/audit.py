"""Audit events: every share and every read is recorded (who, what, which rendition, when)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from careshare.core import db
from careshare.core.ids import new_id

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal

__all__ = ["record_event"]


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
