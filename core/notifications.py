"""Notifications: written with the share (outbox), listed as the patient's inbox, delivered at least once.

Every ``careshare_deliver`` plugin gets its own delivery row per notification, retried with
exponential backoff until it answers True (delivered) or None (not for it), or until the attempts
run out (``failed``, with the error's type); a plugin that raises :class:`Undeliverable` ends it
``failed`` at once. Receivers de-duplicate by ``dedupe_key``.

A notification's ``audience`` says who it is for: ``patient`` (the patient's inbox, their phone)
or ``clinic`` (the organisation's clinicians: one shared inbox, :func:`clinic_inbox`, telling them
what a patient sent; read once for the whole organisation). A clinic notification names the kind
of event, the patient's id and the item, never its text, a file name or the patient's name.

A round claims its due rows before calling any plugin (compare-and-set on ``attempts``, and
``next_attempt_at`` pushed ``CLAIM_SECONDS`` ahead), so concurrent rounds, in one process or
several, do not try the same delivery twice; a worker that dies mid-call leaves its rows to be
tried again once the claim lapses (at least once, never silently dropped).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.ids import new_id

if TYPE_CHECKING:
    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from careshare.core.runtime import Careshare

__all__ = [
    "AUDIENCES",
    "CLINIC",
    "PATIENT",
    "PATIENT_UPLOAD",
    "PATIENT_UPLOAD_TITLE",
    "Delivery",
    "Notification",
    "Undeliverable",
    "backoff",
    "clinic_inbox",
    "deliver_due",
    "deliveries_of",
    "delivery_channels",
    "enqueue",
    "inbox",
    "mark_clinic_read",
    "mark_read",
    "notify_clinic",
    "run_delivery_loop",
]

logger = logging.getLogger(__name__)

#: Tries before a delivery is ``failed``: 2 s, 4 s ... then hourly; about five hours in all, so a
#: push gateway that is down for an afternoon still gets every notification.
MAX_ATTEMPTS = 16
FIRST_RETRY_SECONDS = 2.0
LONGEST_RETRY_SECONDS = 3600.0
#: How long a claimed delivery stays out of other rounds: longer than any plugin call should take.
CLAIM_SECONDS = 300.0
#: Plugin calls in flight at once per round (each runs in a worker thread).
CONCURRENT_DELIVERIES = 8


class Undeliverable(Exception):
    """Raised by a ``careshare_deliver`` plugin: this notification can never go over this channel.

    The delivery ends ``failed`` at once, without the retries a ``False`` gets (an email larger
    than the mail server takes at all, an address the server refuses for good). The message is kept
    as the delivery's ``last_error`` and logged, so it must name the cause, never the patient.
    """


#: What ``_try`` answers for an :class:`Undeliverable`: ``failed`` now, no retry.
GIVE_UP: Literal["give-up"] = "give-up"
PATIENT = "patient"
CLINIC = "clinic"
AUDIENCES = (PATIENT, CLINIC)
#: Core's own clinic notification: a file the patient sent has passed its check. Channels bring
#: theirs (a message, an answer), each a kind and a fixed title naming no patient data.
PATIENT_UPLOAD = "patient.upload"
PATIENT_UPLOAD_TITLE = "A patient sent a file"


@attrs.frozen
class Notification:
    """What a patient (or, ``audience="clinic"``, the clinic) is told: never file contents, never clinical text beyond a title."""

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
    #: ``patient``: for the patient; ``clinic``: for every clinician of ``org`` (about ``patient_id``).
    audience: str = PATIENT
    #: Clinic notifications: the clinician who marked it read (read is the organisation's).
    read_by: str | None = None

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

    def clinic_json(self) -> dict[str, object]:
        """The clinic inbox's view: the patient's view plus whom it concerns and who read it."""
        return {**self.to_json(), "audience": self.audience, "patient_id": self.patient_id, "read_by": self.read_by}


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
        audience=row.audience,  # type: ignore[attr-defined]
        read_by=row.read_by,  # type: ignore[attr-defined]
    )


@attrs.frozen
class Delivery:
    """One notification over one channel: ``pending`` -> ``delivered`` | ``failed``."""

    notification_id: str
    channel: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None


def _delivery_impls(pm: pluggy.PluginManager) -> dict[str, pluggy.HookImpl]:
    # Wrappers (timing, audit) wrap deliveries; they are not channels of their own.
    return {
        str(pm.get_name(impl.plugin)): impl
        for impl in pm.hook.careshare_deliver.get_hookimpls()
        if not (impl.wrapper or impl.hookwrapper)
    }


def delivery_channels(pm: pluggy.PluginManager) -> list[str]:
    """The names of the plugins that deliver notifications: one delivery row each per notification."""
    return sorted(_delivery_impls(pm))


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
    audience: str = PATIENT,
) -> Notification:
    """Write a notification and its pending deliveries in the caller's transaction (idempotent by key)."""
    assert audience in AUDIENCES
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
        audience=audience,
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
            audience=audience,
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
    # What was withdrawn (core.sharing.revoke) leaves the inbox; the notice of the withdrawal stays.
    withdrawn = sa.exists().where(
        db.shares.c.target == db.notifications.c.target,
        db.shares.c.item_id == db.notifications.c.item_id,
        db.shares.c.patient_id == db.notifications.c.patient_id,
        db.shares.c.revoked_at.is_not(None),
    )
    query = sa.select(db.notifications).where(
        db.notifications.c.org_id == org,
        db.notifications.c.patient_id == patient_id,
        db.notifications.c.audience == PATIENT,
        sa.or_(db.notifications.c.kind == "item.withdrawn", ~withdrawn),
    )
    if unread_only:
        query = query.where(db.notifications.c.read_at.is_(None))
    rows, next_cursor = await db.newest_first(conn, query, db.notifications.c.id, cursor=cursor, limit=limit)
    return [_from_row(row) for row in rows], next_cursor


async def mark_read(conn: AsyncConnection, org: str, patient_id: str, notification_id: str) -> Notification | None:
    row = (
        await conn.execute(
            sa.select(db.notifications).where(
                db.notifications.c.id == notification_id,
                db.notifications.c.org_id == org,
                db.notifications.c.patient_id == patient_id,
                db.notifications.c.audience == PATIENT,
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


async def notify_clinic(
    conn: AsyncConnection,
    pm: pluggy.PluginManager,
    *,
    org: str,
    patient_id: str,
    kind: str,
    title: str,
    target: str | None,
    item_id: str,
    dedupe_key: str,
) -> Notification:
    """Tell ``org``'s clinicians that the patient sent something, in the caller's transaction.

    ``kind`` names the event (``patient.message``), ``title`` is one fixed sentence for it that
    names no patient data ("A patient sent a message"): never the text, a file name or a name.
    One notification per event (``dedupe_key``): a message with five files is one ``patient.message``;
    the same event written twice (a retried job, a replayed request) is still one.
    """
    return await enqueue(
        conn,
        pm,
        org=org,
        patient_id=patient_id,
        kind=kind,
        title=title,
        target=target,
        item_id=item_id,
        dedupe_key=f"clinic:{dedupe_key}",
        audience=CLINIC,
    )


async def clinic_inbox(
    conn: AsyncConnection, org: str, *, cursor: str | None, limit: int, unread_only: bool = False
) -> tuple[list[Notification], str | None]:
    """The organisation's clinic notifications, newest first (one inbox shared by its clinicians)."""
    query = sa.select(db.notifications).where(db.notifications.c.org_id == org, db.notifications.c.audience == CLINIC)
    if unread_only:
        query = query.where(db.notifications.c.read_at.is_(None))
    rows, next_cursor = await db.newest_first(conn, query, db.notifications.c.id, cursor=cursor, limit=limit)
    return [_from_row(row) for row in rows], next_cursor


async def mark_clinic_read(
    conn: AsyncConnection, org: str, clinician: str, notification_id: str
) -> Notification | None:
    """Mark a clinic notification read for the whole organisation (idempotent: the first reader stays)."""
    where = (
        db.notifications.c.id == notification_id,
        db.notifications.c.org_id == org,
        db.notifications.c.audience == CLINIC,
    )
    await conn.execute(
        sa.update(db.notifications)
        .where(*where, db.notifications.c.read_at.is_(None))
        .values(read_at=db.utcnow(), read_by=clinician)
    )
    row = (await conn.execute(sa.select(db.notifications).where(*where))).first()
    return None if row is None else _from_row(row)


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures: 2, 4, 8 ... capped at an hour."""
    exponent = min(max(attempts - 1, 0), 32)  # 2**32 s is far past the cap; keeps the float finite
    return float(min(FIRST_RETRY_SECONDS * 2**exponent, LONGEST_RETRY_SECONDS))


async def deliveries_of(conn: AsyncConnection, notification_id: str) -> list[Delivery]:
    """The delivery state of one notification, one entry per channel (for operators and tests)."""
    rows = await conn.execute(
        sa.select(db.deliveries)
        .where(db.deliveries.c.notification_id == notification_id)
        .order_by(db.deliveries.c.channel)
    )
    return [
        Delivery(
            notification_id=row.notification_id,
            channel=row.channel,
            state=row.state,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
            delivered_at=row.delivered_at,
        )
        for row in rows
    ]


async def deliver_due(
    engine: AsyncEngine,
    pm: pluggy.PluginManager,
    *,
    now: datetime | None = None,
    batch: int = 50,
    concurrency: int = CONCURRENT_DELIVERIES,
    cs: Careshare | None = None,
) -> int:
    """Try every delivery that is due once; returns how many were tried.

    ``now`` is the clock for this round: what is due, and when a retry falls due. Tests pass a
    time past the backoff instead of sleeping. Deliveries of channels that are not loaded (a
    plugin disabled since) wait, pending, for their plugin to come back. ``cs`` (the
    running :class:`~careshare.core.runtime.Careshare`) is handed to plugins that ask for it.
    """
    impls = _delivery_impls(pm)
    if not impls:
        return 0
    started = now or db.utcnow()
    claimed = await _claim(engine, list(impls), started, batch)
    gate = asyncio.Semaphore(max(concurrency, 1))

    async def one(row: sa.Row[Any]) -> None:
        notification = _from_row(row)
        async with gate:
            outcome, error = await _try(row.channel, impls[row.channel], notification, cs)
        await _record(engine, row, outcome, error, now)

    results = await asyncio.gather(*(one(row) for row in claimed), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result  # the others finished first; an unrecorded row comes back when its claim lapses
    return len(claimed)


async def _claim(engine: AsyncEngine, channels: list[str], now: datetime, batch: int) -> list[sa.Row[Any]]:
    """Take the due rows for this round: each counts its attempt and leaves other rounds' view."""
    async with engine.begin() as conn:
        due = list(
            await conn.execute(
                sa.select(db.deliveries, db.notifications)
                .join(db.notifications, db.notifications.c.id == db.deliveries.c.notification_id)
                .where(
                    db.deliveries.c.state == "pending",
                    db.deliveries.c.next_attempt_at <= now,
                    db.deliveries.c.channel.in_(channels),
                )
                .order_by(db.deliveries.c.next_attempt_at)
                .limit(batch)
            )
        )
        claimed = []
        for row in due:
            taken = await conn.execute(
                sa.update(db.deliveries)
                .where(
                    db.deliveries.c.notification_id == row.notification_id,
                    db.deliveries.c.channel == row.channel,
                    db.deliveries.c.state == "pending",
                    db.deliveries.c.attempts == row.attempts,  # another round got there first otherwise
                )
                .values(attempts=row.attempts + 1, next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
            )
            if taken.rowcount == 1:
                claimed.append(row)
    return claimed


async def _record(
    engine: AsyncEngine,
    row: sa.Row[Any],
    outcome: bool | Literal["give-up"] | None,
    error: str | None,
    now: datetime | None,
) -> None:
    attempts = row.attempts + 1
    values: dict[str, object] = {"last_error": error}
    if outcome is None or outcome is True:
        values.update(state="delivered", delivered_at=db.utcnow())
    elif outcome == GIVE_UP or attempts >= MAX_ATTEMPTS:
        values.update(state="failed")
        logger.warning(
            "delivery failed for good channel=%s notification=%s attempts=%d error=%s",
            row.channel,
            row.notification_id,
            attempts,
            error,
        )
    else:
        values.update(next_attempt_at=(now or db.utcnow()) + timedelta(seconds=backoff(attempts)))
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(db.deliveries)
            .where(
                db.deliveries.c.notification_id == row.notification_id,
                db.deliveries.c.channel == row.channel,
                db.deliveries.c.attempts == attempts,  # still our claim
            )
            .values(**values)
        )


async def _try(
    channel: str, impl: pluggy.HookImpl, notification: Notification, cs: Careshare | None
) -> tuple[bool | Literal["give-up"] | None, str | None]:
    """Call one plugin: True delivered, None not for it, False retry, ``GIVE_UP`` failed for good (with the reason to keep)."""
    offered = {"notification": notification, "cs": cs}
    kwargs = {name: value for name, value in offered.items() if name in impl.argnames}
    try:
        if inspect.iscoroutinefunction(impl.function):
            result = await impl.function(**kwargs)
        else:
            result = await asyncio.to_thread(impl.function, **kwargs)
    except Undeliverable as exc:  # the plugin's own sentence, written to hold no patient data
        return GIVE_UP, f"undeliverable: {exc}"[:200]
    except Exception as exc:  # a receiver that is down must not stop the others; its message may hold secrets
        logger.warning(
            "delivery error channel=%s notification=%s error=%s", channel, notification.id, type(exc).__name__
        )
        return False, type(exc).__name__[:200]
    if result is True or result is None:
        return result, None
    return False, "not delivered"


async def run_delivery_loop(
    engine: AsyncEngine, pm: pluggy.PluginManager, interval: float = 1.0, *, cs: Careshare | None = None
) -> None:
    """Deliver due notifications until cancelled (the host runs this beside the API).

    A failed round (the database briefly away) is logged and the loop goes on; a full batch is
    followed at once by the next round, so a backlog drains without waiting ``interval`` each time.
    """
    batch = 50
    while True:
        tried = 0
        try:
            tried = await deliver_due(engine, pm, batch=batch, cs=cs)
        except Exception as exc:
            logger.warning("delivery round failed error=%s", type(exc).__name__)
        if tried < batch:
            await asyncio.sleep(interval)
        else:
            await asyncio.sleep(0)
