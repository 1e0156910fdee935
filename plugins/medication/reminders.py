"""Medications prescribed from a type, and their reminders: each one pins the type's files as they are then.

Scheduled reminders come from :func:`produce_due_reminders`, which the server's loop and
``careshare reminders run-due`` (cron) both call. Each is keyed ``medication:<id>:<due instant>``
under a unique constraint, so however many of them run, every dose is reminded of once. A dose
missed while nothing ran is still reminded of within :data:`CATCH_UP`; older ones are skipped.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from careshare.core import db
from careshare.core.ids import new_id
from careshare.core.models import Principal
from careshare.core.patients import get_patient
from careshare.core.problems import NOT_FOUND, Problem
from careshare.core.sharing import patient_attachments, visible_to_patient
from careshare.core.targets import Attachment, attachments_of
from careshare.plugins.medication import CHANNEL, MEDICATION_TYPES, REMINDER_TARGET
from careshare.plugins.medication.schedule import Schedule, due_instants
from careshare.plugins.medication.tables import medication_reminders, medications

if TYPE_CHECKING:
    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.runtime import Careshare

__all__ = [
    "CATCH_UP",
    "LOOP_SECONDS",
    "NOTIFICATION_KIND",
    "REMINDER_TITLE",
    "SCHEDULER",
    "Medication",
    "Reminder",
    "get_medication",
    "list_medications",
    "list_reminders",
    "prescribe",
    "produce_due_reminders",
    "remind_now",
    "reminder_key",
    "run_reminder_loop",
]

logger = logging.getLogger(__name__)

#: What the patient's inbox and push gateways show: never the medicine's name.
REMINDER_TITLE = "Time for your medication"
NOTIFICATION_KIND = "medication-reminder"
#: A dose missed while no loop or cron ran is reminded of up to a day late; an older one is not
#: (a reminder days late invites a double dose, and a long outage must not end in a flood).
CATCH_UP = timedelta(hours=24)
#: How often the server's loop looks for due doses: a reminder is at most this late.
LOOP_SECONDS = 30.0
#: Who the audit trail names for scheduled reminders.
SCHEDULER = "careshare-reminders"


@attrs.frozen
class Medication:
    id: str
    org: str
    patient_id: str
    type_id: str
    type_name: str
    schedule: Schedule
    prescribed_by: str
    created_at: datetime


@attrs.frozen
class Reminder:
    id: str
    medication_id: str
    patient_id: str
    kind: str  # scheduled | manual
    due_at: datetime
    created_by: str
    created_at: datetime
    attachments: tuple[Attachment, ...]


def reminder_key(medication_id: str, due_at: datetime) -> str:
    """The notification key of the scheduled reminder of one dose (unique in the database)."""
    return f"medication:{medication_id}:{due_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _medication(row: sa.Row[object]) -> Medication:
    return Medication(
        id=row.id,  # type: ignore[attr-defined]
        org=row.org_id,  # type: ignore[attr-defined]
        patient_id=row.patient_id,  # type: ignore[attr-defined]
        type_id=row.type_id,  # type: ignore[attr-defined]
        type_name=row.type_name,  # type: ignore[attr-defined]
        schedule=Schedule(
            times=tuple(time.fromisoformat(t) for t in row.times),  # type: ignore[attr-defined]
            start=row.start_date,  # type: ignore[attr-defined]
            end=row.end_date,  # type: ignore[attr-defined]
            timezone=row.timezone,  # type: ignore[attr-defined]
        ),
        prescribed_by=row.prescribed_by,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
    )


async def prescribe(
    conn: AsyncConnection, principal: Principal, patient_id: str, *, type_id: str, schedule: Schedule
) -> Medication:
    """Prescribe a medication of ``type_id`` to the patient; reminders follow ``schedule`` from now on."""
    await get_patient(conn, principal, patient_id)
    kind = await MEDICATION_TYPES.get(conn, principal, type_id)
    medication_id = new_id()
    await conn.execute(
        medications.insert().values(
            id=medication_id,
            org_id=principal.org,
            patient_id=patient_id,
            type_id=kind.id,
            type_name=kind.name,
            times=[t.strftime("%H:%M") for t in schedule.times],
            start_date=schedule.start,
            end_date=schedule.end,
            timezone=schedule.timezone,
            prescribed_by=principal.subject,
            created_at=db.utcnow(),
        )
    )
    return await get_medication(conn, principal, medication_id)


async def get_medication(conn: AsyncConnection, principal: Principal, medication_id: str) -> Medication:
    """The medication for clinicians of its organisation and for its patient; ``not-found`` for anyone else."""
    query = sa.select(medications).where(medications.c.id == medication_id, medications.c.org_id == principal.org)
    if not principal.is_clinician:
        query = query.where(medications.c.patient_id == principal.patient)
    row = (await conn.execute(query)).first()
    if row is None:
        raise Problem(NOT_FOUND)
    return _medication(row)


async def list_medications(
    conn: AsyncConnection, principal: Principal, patient_id: str, *, cursor: str | None, limit: int
) -> tuple[list[Medication], str | None]:
    """A page of the patient's medications, newest first."""
    await get_patient(conn, principal, patient_id)
    query = sa.select(medications).where(medications.c.org_id == principal.org, medications.c.patient_id == patient_id)
    rows, next_cursor = await db.newest_first(conn, query, medications.c.id, cursor=cursor, limit=limit)
    return [_medication(row) for row in rows], next_cursor


async def list_reminders(
    conn: AsyncConnection, principal: Principal, medication_id: str, *, cursor: str | None, limit: int
) -> tuple[list[Reminder], str | None]:
    """A page of the medication's reminders, newest first, each with the files it carries."""
    await get_medication(conn, principal, medication_id)
    query = sa.select(medication_reminders).where(medication_reminders.c.medication_id == medication_id)
    for_patient = not principal.is_clinician
    if for_patient:  # a withdrawn reminder (core.sharing.revoke) leaves the patient's view
        query = query.where(visible_to_patient(REMINDER_TARGET, medication_reminders.c.id))
    rows, next_cursor = await db.newest_first(conn, query, medication_reminders.c.id, cursor=cursor, limit=limit)
    return await _reminders(conn, rows, for_patient=for_patient), next_cursor


async def _reminders(conn: AsyncConnection, rows: list[Any], *, for_patient: bool = False) -> list[Reminder]:
    load = patient_attachments if for_patient else attachments_of
    attached = await load(conn, REMINDER_TARGET, [row.id for row in rows])
    return [
        Reminder(
            id=row.id,
            medication_id=row.medication_id,
            patient_id=row.patient_id,
            kind=row.kind,
            due_at=row.due_at,
            created_by=row.created_by,
            created_at=row.created_at,
            attachments=tuple(attached[row.id]),
        )
        for row in rows
    ]


async def _remind(
    conn: AsyncConnection,
    pm: pluggy.PluginManager,
    principal: Principal,
    medication: Medication,
    *,
    kind: str,
    due_at: datetime,
    reminder_id: str,
    key: str,
) -> bool:
    """Write one reminder with the type's files as they are now and tell the patient; False if ``key`` exists."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                medication_reminders.insert().values(
                    id=reminder_id,
                    org_id=medication.org,
                    medication_id=medication.id,
                    patient_id=medication.patient_id,
                    kind=kind,
                    due_at=due_at,
                    notification_key=key,
                    created_by=principal.subject,
                    created_at=db.utcnow(),
                )
            )
    except IntegrityError:
        return False  # another loop or cron run made this reminder first
    await MEDICATION_TYPES.hand_out(
        conn,
        pm,
        principal,
        medication.type_id,
        channel=CHANNEL,
        target=REMINDER_TARGET,
        item_id=reminder_id,
        patient_id=medication.patient_id,
        title=REMINDER_TITLE,
        notification_kind=NOTIFICATION_KIND,
        notification_key=key,
    )
    return True


async def remind_now(
    conn: AsyncConnection, pm: pluggy.PluginManager, principal: Principal, medication_id: str
) -> Reminder:
    """A reminder at once, outside the schedule (a clinician asks for it); the patient is notified."""
    medication = await get_medication(conn, principal, medication_id)
    reminder_id = new_id()
    await _remind(
        conn,
        pm,
        principal,
        medication,
        kind="manual",
        due_at=db.utcnow(),
        reminder_id=reminder_id,
        key=f"medication:{medication.id}:manual:{reminder_id}",
    )
    row = (await conn.execute(sa.select(medication_reminders).where(medication_reminders.c.id == reminder_id))).one()
    return (await _reminders(conn, [row]))[0]


async def produce_due_reminders(cs: Careshare, now: datetime | None = None) -> int:
    """Make every scheduled reminder due at ``now`` (default: the clock) that does not exist yet; returns how many.

    Due means: a dose instant after the medication was prescribed, after its last scheduled
    reminder, within :data:`CATCH_UP` before ``now``, and not after ``now``. Tests pass ``now``.
    """
    now = now or db.utcnow()
    floor = now - CATCH_UP
    last_due = (
        sa.select(medication_reminders.c.medication_id, sa.func.max(medication_reminders.c.due_at).label("last_due"))
        .where(medication_reminders.c.kind == "scheduled")
        .group_by(medication_reminders.c.medication_id)
        .subquery()
    )
    # Local dates are at most a day off the UTC ones (UTC-12 to UTC+14).
    query = (
        sa.select(medications, last_due.c.last_due)
        .outerjoin(last_due, last_due.c.medication_id == medications.c.id)
        .where(
            medications.c.start_date <= (now + timedelta(days=1)).date(),
            sa.or_(medications.c.end_date.is_(None), medications.c.end_date >= (floor - timedelta(days=1)).date()),
            medications.c.created_at <= now,
        )
    )
    async with cs.reader.connect() as conn:
        rows = list(await conn.execute(query))
    produced = 0
    for row in rows:
        medication = _medication(row)
        last = row.last_due  # max() keeps the column's type: aware UTC on every database
        after = max(floor, medication.created_at, *([last] if last else []))
        due = due_instants(medication.schedule, after, now)
        if not due:
            continue
        principal = Principal(subject=SCHEDULER, role="clinician", org=medication.org)
        async with cs.engine.begin() as conn:
            for instant in due:
                made = await _remind(
                    conn,
                    cs.plugins,
                    principal,
                    medication,
                    kind="scheduled",
                    due_at=instant,
                    reminder_id=new_id(),
                    key=reminder_key(medication.id, instant),
                )
                produced += made
    return produced


async def run_reminder_loop(cs: Careshare, interval: float = LOOP_SECONDS) -> None:
    """Produce due reminders every ``interval`` seconds until cancelled (the server runs it in the background).

    The first round runs at once, so doses missed while the server was down are reminded of on start.
    """
    while True:
        try:
            produced = await produce_due_reminders(cs)
            if produced:
                logger.info("medication reminders produced count=%d", produced)
        except Exception as exc:  # the database briefly away: the next round tries again
            logger.warning("medication reminder round failed error=%s", type(exc).__name__)
        await asyncio.sleep(interval)
