"""Notifications: written with the share (outbox), listed as the patient's inbox, delivered at least once.

Every ``careshare_deliver`` plugin gets its own delivery row per notification, retried with
exponential backoff until it answers True (delivered) or None (not for it), or until the attempts
run out (``failed``, with the error's type). Receivers de-duplicate by ``dedupe_key``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.ids import new_id

if TYPE_CHECKING:
    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["Notification", "backoff", "deliver_due", "enqueue", "inbox", "mark_read", "run_delivery_loop"]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
FIRST_RETRY_SECONDS = 2.0
LONGEST_RETRY_SECONDS = 3600.0


@attrs.frozen
class Notification:
    """What a patient is told: never file contents, never clinical text beyond a title."""

    id: str
    org: str
    patient_id: str
    kind: str
    title: str
    target: str | None
    item_id: str | None
    dedupe_key: str
    created_at: datetime
    read_at: datetime | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "target": self.target,
            "item_id": self.item_id,
            "dedupe_key": self.dedupe_key,
            "created_at": self.created_at.isoformat(),
            "read": self.read_at is not None,
            "read_at": self.read_at.isoformat() if self.read_at else None,
        }


def _from_row(row: sa.Row[object]) -> Notification:
    return Notification(
        id=row.id,  # type: ignore[attr-defined]
        org=row.org_id,  # type: ignore[attr-defined]
        patient_id=row.patient_id,  # type: ignore[attr-defined]
        kind=row.kind,  # type: ignore[attr-defined]
        title=row.title,  # type: ignore[attr-defined]
        target=row.target,  # type: ignore[attr-defined]
        item_id=row.item_id,  # type: ignore[attr-defined]
        dedupe_key=row.dedupe_key,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
        read_at=row.read_at,  # type: ignore[attr-defined]
    )


def delivery_channels(pm: pluggy.PluginManager) -> list[str]:
    return sorted({str(pm.get_name(impl.plugin)) for impl in pm.hook.careshare_deliver.get_hookimpls()})


async def enqueue(
    conn: AsyncConnection,
    pm: pluggy.PluginManager,
    *,
    org: str,
    patient_id: str,
    kind: str,
    title: str,
    target: str | None,
    item_id: str | None,
    dedupe_key: str,
) -> Notification:
    """Write a notification and its pending deliveries in the caller's transaction (idempotent by key)."""
    existing = (
        await conn.execute(sa.select(db.notifications).where(db.notifications.c.dedupe_key == dedupe_key))
    ).first()
    if existing is not None:
        return _from_row(existing)
    notification = Notification(
        id=new_id(),
        org=org,
        patient_id=patient_id,
        kind=kind,
        title=title[:200],
        target=target,
        item_id=item_id,
        dedupe_key=dedupe_key,
        created_at=db.utcnow(),
    )
    await conn.execute(
        db.notifications.insert().values(
            id=notification.id,
            org_id=org,
            patient_id=patient_id,
            dedupe_key=dedupe_key,
            kind=kind,
            title=notification.title,
            target=target,
            item_id=item_id,
            created_at=notification.created_at,
        )
    )
    channels = delivery_channels(pm)
    if channels:
        await conn.execute(
            db.deliveries.insert(),
            [
                {
                    "notification_id": notification.id,
                    "channel": channel,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": notification.created_at,
                }
                for channel in channels
            ],
        )
    return notification


async def inbox(
    conn: AsyncConnection, org: str, patient_id: str, *, cursor: str | None, limit: int, unread_only: bool = False
) -> tuple[list[Notification], str | None]:
    query = sa.select(db.notifications).where(
        db.notifications.c.org_id == org, db.notifications.c.patient_id == patient_id
    )
    if unread_only:
        query = query.where(db.notifications.c.read_at.is_(None))
    if cursor:
        query = query.where(db.notifications.c.id < cursor)
    rows = list(await conn.execute(query.order_by(db.notifications.c.id.desc()).limit(limit + 1)))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return [_from_row(row) for row in rows[:limit]], next_cursor


async def mark_read(conn: AsyncConnection, org: str, patient_id: str, notification_id: str) -> Notification | None:
    row = (
        await conn.execute(
            sa.select(db.notifications).where(
                db.notifications.c.id == notification_id,
                db.notifications.c.org_id == org,
                db.notifications.c.patient_id == patient_id,
            )
        )
    ).first()
    if row is None:
        return None
    if row.read_at is None:
        now = db.utcnow()
        await conn.execute(
            sa.update(db.notifications).where(db.notifications.c.id == notification_id).values(read_at=now)
        )
        return attrs.evolve(_from_row(row), read_at=now)
    return _from_row(row)


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures: 2, 4, 8 ... capped at an hour."""
    return float(min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), LONGEST_RETRY_SECONDS))


async def deliver_due(
    engine: AsyncEngine, pm: pluggy.PluginManager, *, now: datetime | None = None, batch: int = 50
) -> int:
    """Try every delivery that is due once; returns how many were tried. Safe to run in several processes
    (a delivery may then be tried twice: delivery is at least once)."""
    now = now or db.utcnow()
    impls = {str(pm.get_name(impl.plugin)): impl for impl in pm.hook.careshare_deliver.get_hookimpls()}
    async with engine.connect() as conn:
        due = list(
            await conn.execute(
                sa.select(db.deliveries, db.notifications)
                .join(db.notifications, db.notifications.c.id == db.deliveries.c.notification_id)
                .where(db.deliveries.c.state == "pending", db.deliveries.c.next_attempt_at <= now)
                .order_by(db.deliveries.c.next_attempt_at)
                .limit(batch)
            )
        )
    for row in due:
        impl = impls.get(row.channel)
        notification = _from_row(row)
        outcome, error = await _try(impl, notification) if impl else (None, None)
        attempts = row.attempts + 1
        values: dict[str, object] = {"attempts": attempts, "last_error": error}
        if outcome is None or outcome is True:
            values.update(state="delivered", delivered_at=db.utcnow())
        elif attempts >= MAX_ATTEMPTS:
            values.update(state="failed")
            logger.warning("delivery failed for good channel=%s notification=%s", row.channel, notification.id)
        else:
            values.update(next_attempt_at=db.utcnow() + timedelta(seconds=backoff(attempts)))
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(db.deliveries)
                .where(db.deliveries.c.notification_id == notification.id, db.deliveries.c.channel == row.channel)
                .values(**values)
            )
    return len(due)


async def _try(impl: pluggy.HookImpl, notification: Notification) -> tuple[bool | None, str | None]:
    try:
        kwargs = {"notification": notification} if "notification" in impl.argnames else {}
        result = await asyncio.to_thread(impl.function, **kwargs)
    except Exception as exc:  # a receiver that is down must not stop the others
        logger.warning("delivery error channel=%s error=%s", impl.plugin_name, type(exc).__name__)
        return False, type(exc).__name__
    return (bool(result) if result is not None else None), None if result in (True, None) else "not delivered"


async def run_delivery_loop(engine: AsyncEngine, pm: pluggy.PluginManager, interval: float = 1.0) -> None:
    """Deliver due notifications until cancelled (the host runs this beside the API)."""
    while True:
        try:
            await deliver_due(engine, pm)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be briefly unavailable: try again next round
            logger.warning("delivery round failed error=%s", type(exc).__name__)
        await asyncio.sleep(interval)
