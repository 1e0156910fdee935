"""Console pages of appointments: appointment types (a catalogue), booking for a patient, the patient's own."""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from careshare.core.patients import get_patient
from careshare.plugins.appointments import APPOINTMENT_TARGET, APPOINTMENT_TYPES
from careshare.plugins.appointments.bookings import book, list_appointments
from careshare.web import (
    ConsolePages,
    NavEntry,
    aware_datetime,
    catalogue_pages,
    clinician,
    console_page,
    form_data,
    form_text,
    invalid,
    patient,
    see_other,
)

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["pages"]

PAGE = 50
#: A clinic's clock: what a ``datetime-local`` field means unless the form names another zone.
DEFAULT_TIMEZONE = "Europe/London"
CLINICIAN = {"principal": Provide(clinician)}


def _starts_at(fields: dict[str, Any]) -> datetime:
    """The ``datetime-local`` field read in the form's time zone (the clinic's by default)."""
    given, zone = form_text(fields, "starts_at"), form_text(fields, "timezone") or DEFAULT_TIMEZONE
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise invalid("$.timezone: expected a time zone name such as Europe/London or UTC") from None
    try:
        local = datetime.fromisoformat(given)
    except ValueError:
        raise invalid("$.starts_at: give the date and time of the appointment") from None
    return aware_datetime((local if local.tzinfo else local.replace(tzinfo=tz)).isoformat(), "$.starts_at")


@get("/patients/{pid:str}/appointments", dependencies=CLINICIAN)
async def patient_appointments(
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
    cursor: FromQuery[str | None] = None,
) -> Template:
    async with cs.reader.connect() as conn:
        who = await get_patient(conn, principal, pid)
        booked, next_cursor = await list_appointments(conn, principal, pid, cursor=cursor, limit=PAGE)
        kinds, _ = await APPOINTMENT_TYPES.page(conn, principal, cursor=None, limit=PAGE)
    return console_page(
        "appointments/patient.html",
        title=f"Appointments of {who.name}",
        patient=who,
        appointments=booked,
        next_cursor=next_cursor,
        types=kinds,
        timezone=DEFAULT_TIMEZONE,
    )


@post("/patients/{pid:str}/appointments", status_code=303, dependencies=CLINICIAN)
async def book_appointment(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
) -> Redirect:
    fields = await form_data(request)
    type_id = form_text(fields, "type_id")
    if not type_id:
        raise invalid("$.type_id: choose the type of appointment")
    starts_at = _starts_at(fields)
    async with cs.engine.begin() as conn:
        await book(conn, cs.plugins, principal, pid, type_id=type_id, starts_at=starts_at)
    return see_other(f"/patients/{pid}/appointments", "Appointment booked.")


@get("/me/appointments", dependencies={"principal": Provide(patient)})
async def my_appointments(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        booked, next_cursor = await list_appointments(
            conn, principal, principal.patient or "", cursor=cursor, limit=PAGE
        )
    return console_page("appointments/mine.html", title="My appointments", appointments=booked, next_cursor=next_cursor)


def pages() -> list[ConsolePages]:
    catalogue, types_entry = catalogue_pages(
        APPOINTMENT_TYPES,
        path="/appointment-types",
        noun="appointment type",
        plural="appointment types",
        about="An appointment type carries files and videos: every appointment booked from it gives the patient those files.",
        order=40,
    )
    nav = [
        types_entry,
        NavEntry(
            "Appointments",
            "/patients/{pid}/appointments",
            place="patient",
            quick_action="Book an appointment",
            order=50,
        ),
        NavEntry("Appointments", "/me/appointments", audience="patient", order=50),
    ]
    routes = [
        *catalogue,
        patient_appointments,
        book_appointment,
        my_appointments,
    ]
    return [
        ConsolePages(
            "appointments",
            routes=routes,
            templates=Path(__file__).parent / "console_templates",
            nav=nav,
            item_pages={APPOINTMENT_TARGET: "/me/appointments#appointment-{item_id}"},
        )
    ]
