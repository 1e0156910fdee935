"""HTTP routes of appointments: types (templates) and bookings for clinicians, a patient's own appointments."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from careshare.plugins.appointments import APPOINTMENT_TYPES
from careshare.plugins.appointments.bookings import Appointment, book, list_appointments
from careshare.web import (
    AWARE_DATE_TIME,
    attachment_json,
    aware_datetime,
    clinician,
    documented,
    limits,
    page_route,
    parse_body,
    patient,
    template_routes,
)

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["ClinicianAppointments", "PatientAppointments", "appointment_json", "routes"]


@attrs.frozen
class NewAppointment:
    type_id: str
    starts_at: str = attrs.field(metadata=limits(**AWARE_DATE_TIME))


def appointment_json(a: Appointment, *, for_clinician: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": a.id,
        "patient_id": a.patient_id,
        "type": {"id": a.type_id, "name": a.type_name, "description": a.type_description},
        "starts_at": a.starts_at.isoformat(),
        "booked_at": a.created_at.isoformat(),
        "attachments": [attachment_json(x) for x in a.attachments],
    }
    if for_clinician:
        shown["booked_by"] = a.booked_by
    return shown


class ClinicianAppointments(Controller):
    path = "/v1/patients/{pid:str}/appointments"
    dependencies = {"principal": Provide(clinician)}
    tags = ["appointments"]

    @post("/", status_code=201, operation_class=documented(NewAppointment))
    async def book_appointment(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
    ) -> dict[str, Any]:
        """Book ``{"type_id", "starts_at"}``: it carries the type's files as they are now; the patient is notified."""
        body = await parse_body(request, NewAppointment)
        starts_at = aware_datetime(body.starts_at, "$.starts_at")
        async with cs.engine.begin() as conn:
            booked = await book(conn, cs.plugins, principal, pid, type_id=body.type_id, starts_at=starts_at)
        return appointment_json(booked, for_clinician=True)

    list_for_patient = page_route("/", list_appointments, partial(appointment_json, for_clinician=True), of="patient")


class PatientAppointments(Controller):
    path = "/v1/me/appointments"
    dependencies = {"principal": Provide(patient)}
    tags = ["me"]

    #: The signed-in patient's appointments, most recently booked first, with their files.
    mine = page_route("/", list_appointments, partial(appointment_json, for_clinician=False), of="caller")


def routes() -> list[type[Controller]]:
    return [
        template_routes(APPOINTMENT_TYPES, base="/v1/appointment-types", tag="appointments"),
        ClinicianAppointments,
        PatientAppointments,
    ]
