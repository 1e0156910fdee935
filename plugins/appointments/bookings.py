"""Booking an appointment from its type: one transaction writes it, pins the type's files as they are, tells the patient."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.ids import new_id
from careshare.core.patients import get_patient
from careshare.core.sharing import patient_attachments, visible_to_patient
from careshare.core.targets import Attachment, attachments_of
from careshare.plugins.appointments import APPOINTMENT_TARGET, APPOINTMENT_TYPES, CHANNEL
from careshare.plugins.appointments.tables import appointments

if TYPE_CHECKING:
    from datetime import datetime

    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal

__all__ = ["BOOKED_TITLE", "NOTIFICATION_KIND", "Appointment", "book", "list_appointments"]

#: What the patient's inbox and push gateways show: never the type's name (it may be clinical).
BOOKED_TITLE = "New appointment booked"
NOTIFICATION_KIND = "appointment"


@attrs.frozen
class Appointment:
    id: str
    org: str
    patient_id: str
    type_id: str
    type_name: str
    type_description: str
    starts_at: datetime
    booked_by: str
    created_at: datetime
    attachments: tuple[Attachment, ...]


async def book(
    conn: AsyncConnection,
    pm: pluggy.PluginManager,
    principal: Principal,
    patient_id: str,
    *,
    type_id: str,
    starts_at: datetime,
) -> Appointment:
    """Book an appointment of ``type_id`` for the patient, in the caller's transaction; the patient is notified."""
    await get_patient(conn, principal, patient_id)
    kind = await APPOINTMENT_TYPES.get(conn, principal, type_id)
    appointment_id = new_id()
    await conn.execute(
        appointments.insert().values(
            id=appointment_id,
            org_id=principal.org,
            patient_id=patient_id,
            type_id=kind.id,
            type_name=kind.name,
            type_description=kind.description,
            starts_at=starts_at,
            booked_by=principal.subject,
            created_at=db.utcnow(),
        )
    )
    await APPOINTMENT_TYPES.hand_out(
        conn,
        pm,
        principal,
        kind.id,
        channel=CHANNEL,
        target=APPOINTMENT_TARGET,
        item_id=appointment_id,
        patient_id=patient_id,
        title=BOOKED_TITLE,
        notification_kind=NOTIFICATION_KIND,
    )
    row = (await conn.execute(sa.select(appointments).where(appointments.c.id == appointment_id))).one()
    return (await _load(conn, [row]))[0]


async def _load(conn: AsyncConnection, rows: list[Any], *, for_patient: bool = False) -> list[Appointment]:
    # The patient's view leaves out what was withdrawn (core.sharing.revoke).
    load = patient_attachments if for_patient else attachments_of
    attached = await load(conn, APPOINTMENT_TARGET, [row.id for row in rows])
    return [
        Appointment(
            id=row.id,
            org=row.org_id,
            patient_id=row.patient_id,
            type_id=row.type_id,
            type_name=row.type_name,
            type_description=row.type_description,
            starts_at=row.starts_at,
            booked_by=row.booked_by,
            created_at=row.created_at,
            attachments=tuple(attached[row.id]),
        )
        for row in rows
    ]


async def list_appointments(
    conn: AsyncConnection, principal: Principal, patient_id: str, *, cursor: str | None, limit: int
) -> tuple[list[Appointment], str | None]:
    """A page of the patient's appointments, most recently booked first, each with its files."""
    await get_patient(conn, principal, patient_id)
    query = sa.select(appointments).where(
        appointments.c.org_id == principal.org, appointments.c.patient_id == patient_id
    )
    for_patient = not principal.is_clinician
    if for_patient:
        query = query.where(visible_to_patient(APPOINTMENT_TARGET, appointments.c.id))
    rows, next_cursor = await db.newest_first(conn, query, appointments.c.id, cursor=cursor, limit=limit)
    return await _load(conn, rows, for_patient=for_patient), next_cursor
