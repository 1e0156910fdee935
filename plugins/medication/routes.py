"""HTTP routes of medication: types (templates), prescribing with a schedule, reminders for clinicians and patients."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery

from careshare.core import db
from careshare.plugins.medication import MEDICATION_TYPES
from careshare.plugins.medication.reminders import (
    Medication,
    Reminder,
    get_medication,
    list_medications,
    list_reminders,
    prescribe,
    remind_now,
)
from careshare.plugins.medication.schedule import (
    DATE_PATTERN,
    MAX_TIMES_A_DAY,
    TIME_PATTERN,
    Schedule,
    known_timezones,
    next_due,
    schedule_errors,
)
from careshare.web import (
    PageLimit,
    attachment_json,
    clinician,
    documented,
    invalid,
    limits,
    page_json,
    page_route,
    parse_body,
    patient,
    signed_in,
    template_routes,
)

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["ClinicianMedications", "Medications", "PatientMedications", "medication_json", "reminder_json", "routes"]


@attrs.frozen
class NewSchedule:
    times: list[str] = attrs.field(
        metadata=limits(
            minItems=1,
            maxItems=MAX_TIMES_A_DAY,
            uniqueItems=True,
            items={"pattern": f"^{TIME_PATTERN}$", "maxLength": 5},
        )
    )
    start: str = attrs.field(metadata=limits(format="date", pattern=f"^{DATE_PATTERN}$"))
    #: On or after ``start``, too: no JSON schema says that.
    end: str | None = attrs.field(default=None, metadata=limits(format="date", pattern=f"^{DATE_PATTERN}$"))
    timezone: str | None = attrs.field(default=None, metadata=limits(enum=sorted(known_timezones())))


@attrs.frozen
class NewMedication:
    type_id: str
    schedule: NewSchedule


def medication_json(m: Medication, *, for_clinician: bool) -> dict[str, Any]:
    upcoming = next_due(m.schedule, max(db.utcnow(), m.created_at))
    shown: dict[str, Any] = {
        "id": m.id,
        "patient_id": m.patient_id,
        "type": {"id": m.type_id, "name": m.type_name},
        "schedule": m.schedule.to_json(),
        "next_due_at": upcoming.isoformat() if upcoming else None,
        "created_at": m.created_at.isoformat(),
        "reminders_url": f"/v1/medications/{m.id}/reminders",
    }
    if for_clinician:
        shown["prescribed_by"] = m.prescribed_by
    return shown


def reminder_json(r: Reminder) -> dict[str, Any]:
    return {
        "id": r.id,
        "medication_id": r.medication_id,
        "kind": r.kind,
        "due_at": r.due_at.isoformat(),
        "created_at": r.created_at.isoformat(),
        "attachments": [attachment_json(a) for a in r.attachments],
    }


class ClinicianMedications(Controller):
    path = "/v1/patients/{pid:str}/medications"
    dependencies = {"principal": Provide(clinician)}
    tags = ["medication"]

    @post(
        "/",
        status_code=201,
        operation_class=documented(
            NewMedication,
            links={
                "medication": ("GET", "/v1/medications/{mid}", {"mid": "$response.body#/id"}),
                "reminders": ("GET", "/v1/medications/{mid}/reminders", {"mid": "$response.body#/id"}),
            },
        ),
    )
    async def prescribe_medication(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
    ) -> dict[str, Any]:
        """Prescribe ``{"type_id", "schedule": {"times", "start", "end"?, "timezone"?}}``; reminders follow it."""
        body = await parse_body(request, NewMedication)
        given = body.schedule
        errors = schedule_errors(given.times, given.start, given.end, given.timezone)
        if errors:
            raise invalid(*errors)
        schedule = Schedule.parse(given.times, given.start, given.end, given.timezone)
        async with cs.engine.begin() as conn:
            created = await prescribe(conn, principal, pid, type_id=body.type_id, schedule=schedule)
        return medication_json(created, for_clinician=True)

    list_for_patient = page_route("/", list_medications, partial(medication_json, for_clinician=True), of="patient")


class Medications(Controller):
    path = "/v1/medications"
    dependencies = {"principal": Provide(signed_in)}
    tags = ["medication"]

    @get("/{mid:str}")
    async def show(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], mid: FromPath[str]
    ) -> dict[str, Any]:
        """The medication, for clinicians of the organisation and for its patient."""
        async with cs.reader.connect() as conn:
            found = await get_medication(conn, principal, mid)
        return medication_json(found, for_clinician=principal.is_clinician)

    @get("/{mid:str}/reminders")
    async def reminders(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        mid: FromPath[str],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
    ) -> dict[str, Any]:
        """The medication's reminders, newest first, each with the files it carried."""
        async with cs.reader.connect() as conn:
            items, next_cursor = await list_reminders(conn, principal, mid, cursor=cursor, limit=limit)
        return page_json([reminder_json(r) for r in items], next_cursor)

    @post("/{mid:str}/reminders", status_code=201, dependencies={"principal": Provide(clinician)})
    async def remind(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], mid: FromPath[str]
    ) -> dict[str, Any]:
        """Remind the patient now, outside the schedule: with the type's files as they are now."""
        async with cs.engine.begin() as conn:
            return reminder_json(await remind_now(conn, cs.plugins, principal, mid))


class PatientMedications(Controller):
    path = "/v1/me/medications"
    dependencies = {"principal": Provide(patient)}
    tags = ["me"]

    #: The signed-in patient's medications, newest first; each names where its reminders are.
    mine = page_route("/", list_medications, partial(medication_json, for_clinician=False), of="caller")


def routes() -> list[type[Controller]]:
    return [
        template_routes(MEDICATION_TYPES, base="/v1/medication-types", tag="medication"),
        ClinicianMedications,
        Medications,
        PatientMedications,
    ]
