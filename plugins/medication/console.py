"""Console pages of medication: medication types (a catalogue), prescribing with a schedule, the patient's own."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from careshare.core import db
from careshare.core.patients import get_patient
from careshare.plugins.medication import MEDICATION_TYPES, REMINDER_TARGET
from careshare.plugins.medication.reminders import (
    get_medication,
    list_medications,
    list_reminders,
    prescribe,
    remind_now,
)
from careshare.plugins.medication.schedule import Schedule, next_due, schedule_errors
from careshare.web import (
    ConsolePages,
    NavEntry,
    catalogue_pages,
    clinician,
    console_page,
    form_data,
    form_text,
    form_values,
    invalid,
    patient,
    see_other,
)

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare
    from careshare.plugins.medication.reminders import Medication

__all__ = ["pages"]

PAGE = 50
#: The reminders shown with each medication in the patient's view (the newest first).
REMINDERS_SHOWN = 5
#: A clinic's clock: what the form's times of day mean unless it names another zone.
DEFAULT_TIMEZONE = "Europe/London"
CLINICIAN = {"principal": Provide(clinician)}


def _schedule(fields: dict[str, Any]) -> Schedule:
    """The form's schedule: times of day (one field each, or comma-separated), start, end, zone."""
    times = [t.strip() for value in form_values(fields, "times") for t in value.split(",") if t.strip()]
    start, end = form_text(fields, "start"), form_text(fields, "end") or None
    zone = form_text(fields, "timezone") or DEFAULT_TIMEZONE
    errors = schedule_errors(times, start, end, zone)
    if errors:  # named as the form names its fields
        raise invalid(*(e.replace("$.schedule.", "$.") for e in errors))
    return Schedule.parse(times, start, end, zone)


def _shown(m: Medication) -> dict[str, Any]:
    return {"m": m, "next_due": next_due(m.schedule, max(db.utcnow(), m.created_at))}


@get("/patients/{pid:str}/medications", dependencies=CLINICIAN)
async def patient_medications(
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
    cursor: FromQuery[str | None] = None,
) -> Template:
    async with cs.reader.connect() as conn:
        who = await get_patient(conn, principal, pid)
        prescribed, next_cursor = await list_medications(conn, principal, pid, cursor=cursor, limit=PAGE)
        kinds, _ = await MEDICATION_TYPES.page(conn, principal, cursor=None, limit=PAGE)
    return console_page(
        "medication/patient.html",
        title=f"Medications of {who.name}",
        patient=who,
        medications=[_shown(m) for m in prescribed],
        next_cursor=next_cursor,
        types=kinds,
        today=db.utcnow().date().isoformat(),
        timezone=DEFAULT_TIMEZONE,
    )


@post("/patients/{pid:str}/medications", status_code=303, dependencies=CLINICIAN)
async def prescribe_medication(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
) -> Redirect:
    fields = await form_data(request)
    type_id = form_text(fields, "type_id")
    if not type_id:
        raise invalid("$.type_id: choose the type of medication")
    schedule = _schedule(fields)
    async with cs.engine.begin() as conn:
        await prescribe(conn, principal, pid, type_id=type_id, schedule=schedule)
    return see_other(f"/patients/{pid}/medications", "Medication prescribed. Reminders follow its schedule.")


@post("/medications/{mid:str}/remind", status_code=303, dependencies=CLINICIAN)
async def remind(cs: NamedDependency[Careshare], principal: NamedDependency[Principal], mid: FromPath[str]) -> Redirect:
    async with cs.engine.begin() as conn:
        medication = await get_medication(conn, principal, mid)
        await remind_now(conn, cs.plugins, principal, mid)
    return see_other(f"/patients/{medication.patient_id}/medications", "Reminder sent with the type's files.")


@get("/me/medications", dependencies={"principal": Provide(patient)})
async def my_medications(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        prescribed, next_cursor = await list_medications(
            conn, principal, principal.patient or "", cursor=cursor, limit=PAGE
        )
        shown = [
            {
                **_shown(m),
                "reminders": (await list_reminders(conn, principal, m.id, cursor=None, limit=REMINDERS_SHOWN))[0],
            }
            for m in prescribed
        ]
    return console_page("medication/mine.html", title="My medications", medications=shown, next_cursor=next_cursor)


def pages() -> list[ConsolePages]:
    catalogue, types_entry = catalogue_pages(
        MEDICATION_TYPES,
        path="/medication-types",
        noun="medication type",
        plural="medication types",
        about="A medication type carries files and videos: every reminder of a medicine of this type gives the patient those files.",
        order=41,
    )
    nav = [
        types_entry,
        NavEntry("Medications", "/patients/{pid}/medications", place="patient", quick_action="Prescribe", order=51),
        NavEntry("Medications", "/me/medications", audience="patient", order=51),
    ]
    routes = [
        *catalogue,
        patient_medications,
        prescribe_medication,
        remind,
        my_medications,
    ]
    return [
        ConsolePages(
            "medication",
            routes=routes,
            templates=Path(__file__).parent / "console_templates",
            nav=nav,
            item_pages={REMINDER_TARGET: "/me/medications#reminder-{item_id}"},
        )
    ]
