"""Medication end to end: schedules, reminders that pin their type's files as they are then, the loop and cron.

``produce_due_reminders(cs, now)`` is the scheduler's one round; tests give it ``now`` instead of
waiting. The server's own loop and ``careshare reminders run-due`` are each proven once for real.
"""

from __future__ import annotations

import asyncio
import re
import time as clock
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from careshare.core import db
from careshare.core.models import Principal
from careshare.core.patients import register_organisation, register_patient
from careshare.core.runtime import Careshare
from careshare.host import create_app
from careshare.host.app import CareshareInit
from careshare.host.cli import add_plugin_commands, app
from careshare.plugins.medication import MEDICATION_TYPES
from careshare.plugins.medication.reminders import (
    CATCH_UP,
    NOTIFICATION_KIND,
    REMINDER_TITLE,
    prescribe,
    produce_due_reminders,
    reminder_key,
)
from careshare.plugins.medication.schedule import Schedule
from careshare.plugins.medication.tables import medication_reminders, medications
from careshare.testing import bearer, make_pdf, make_settings, running_server
from careshare.testing.api import assert_problem, download, register, sha256, upload

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings
    from careshare.testing import PostgresCluster

TYPES = "/v1/medication-types"
#: The catch-up window docs/decisions.md promises: a missed dose is reminded of up to a day late, never later.
WINDOW = timedelta(hours=24)
CLINICIAN = Principal(subject="dr-a", role="clinician", org="org-a")


def at(day: date, hh_mm: str, seconds: int = 0) -> datetime:
    return datetime.combine(day, time.fromisoformat(hh_mm), tzinfo=UTC) + timedelta(seconds=seconds)


async def due_times(cs: Careshare, medication_id: str) -> list[datetime]:
    async with cs.reader.connect() as conn:
        rows = await conn.execute(
            sa.select(medication_reminders.c.due_at)
            .where(medication_reminders.c.medication_id == medication_id, medication_reminders.c.kind == "scheduled")
            .order_by(medication_reminders.c.due_at)
        )
        return [row.due_at for row in rows]


async def start_medication(
    client: AsyncTestClient[Any], clinician: dict[str, str], pid: str, tid: str, schedule: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/patients/{pid}/medications", json={"type_id": tid, "schedule": schedule}, headers=clinician
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


# -- over HTTP -----------------------------------------------------------------------------------


async def test_each_reminder_carries_the_type_files_as_they_are_when_it_is_made(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
) -> None:
    cs = client.app.plugins.get(CareshareInit).cs
    a, b, c = [await upload(client, clinician, make_pdf(n + 1, text=f"leaflet {n}"), f"l{n}.pdf") for n in range(3)]
    tid = (await client.post(TYPES, json={"name": "Inhaler"}, headers=clinician)).json()["id"]
    for file in (a, b):
        await client.post(f"{TYPES}/{tid}/attachments", json={"file_id": file["id"]}, headers=clinician)
    day = datetime.now(UTC).date() + timedelta(days=1)
    medication = await start_medication(
        client, clinician, patient_id, tid, {"times": ["20:00", "08:00"], "start": day.isoformat()}
    )
    mid = medication["id"]
    assert medication["schedule"] == {
        "times": ["08:00", "20:00"],
        "start": day.isoformat(),
        "end": None,
        "timezone": "UTC",
    }
    assert medication["next_due_at"] == at(day, "08:00").isoformat()

    assert await produce_due_reminders(cs, at(day, "08:00", 30)) == 1
    template = (await client.get(f"{TYPES}/{tid}", headers=clinician)).json()
    await client.delete(f"{TYPES}/{tid}/attachments/{template['attachments'][1]['id']}", headers=clinician)
    await client.post(f"{TYPES}/{tid}/attachments", json={"file_id": c["id"]}, headers=clinician)
    assert await produce_due_reminders(cs, at(day, "20:00", 30)) == 1
    assert await produce_due_reminders(cs, at(day, "20:00", 30)) == 0
    manual = await client.post(f"/v1/medications/{mid}/reminders", headers=clinician)
    assert manual.status_code == 201, manual.text

    reminders = (await client.get(f"/v1/medications/{mid}/reminders", headers=patient)).json()["items"]
    assert [(r["kind"], r["due_at"]) for r in reminders[1:]] == [
        ("scheduled", at(day, "20:00").isoformat()),
        ("scheduled", at(day, "08:00").isoformat()),
    ]
    assert reminders[0]["id"] == manual.json()["id"] and reminders[0]["kind"] == "manual"
    assert [[x["file_id"] for x in r["attachments"]] for r in reminders] == [
        [a["id"], c["id"]],
        [a["id"], c["id"]],
        [a["id"], b["id"]],
    ]
    pinned = {f["id"]: next(r["sha256"] for r in f["renditions"] if r["role"] == "shareable") for f in (a, b, c)}
    for reminder in reminders:
        for attachment in reminder["attachments"]:
            body = await download(client, patient, attachment["url"])
            assert sha256(body) == attachment["sha256"] == pinned[attachment["file_id"]]

    notes = (await client.get("/v1/me/notifications", headers=patient)).json()["items"]
    assert sorted((n["item_id"], n["kind"], n["title"]) for n in notes) == sorted(
        (r["id"], NOTIFICATION_KIND, REMINDER_TITLE) for r in reminders
    )
    assert {n["dedupe_key"] for n in notes} >= {reminder_key(mid, at(day, t)) for t in ("08:00", "20:00")}
    mine = (await client.get("/v1/me/medications", headers=patient)).json()["items"]
    assert [(m["id"], m["type"]["name"], "prescribed_by" in m) for m in mine] == [(mid, "Inhaler", False)]

    other = bearer(settings, "patient", "org-a", patient=await register(client, clinician, "MRN-2"))
    assert_problem(await client.get(f"/v1/medications/{mid}/reminders", headers=other), 404, "not-found")
    assert_problem(await client.get(f"/v1/medications/{mid}", headers=other), 404, "not-found")
    assert_problem(await client.get(reminders[0]["attachments"][0]["url"], headers=other), 404, "not-found")
    assert_problem(await client.post(f"/v1/medications/{mid}/reminders", headers=patient), 403, "forbidden")
    outsider = bearer(settings, "clinician", "org-b", sub="dr-b")
    assert_problem(await client.post(f"/v1/medications/{mid}/reminders", headers=outsider), 404, "not-found")


#: Schedules that cannot be used, and the field each refusal must name.
REFUSED_SCHEDULES = [
    ({"times": ["8:00"], "start": "2030-01-01"}, "$.schedule.times[0]"),
    ({"times": ["08:00", "24:00"], "start": "2030-01-01"}, "$.schedule.times[1]"),
    ({"times": [], "start": "2030-01-01"}, "$.schedule.times"),
    ({"times": ["08:00", "08:00"], "start": "2030-01-01"}, "$.schedule.times"),
    ({"times": ["08:00"], "start": "01/02/2030"}, "$.schedule.start"),
    ({"times": ["08:00"], "start": "2030-02-30"}, "$.schedule.start"),
    ({"times": ["08:00"], "start": "2030-01-02", "end": "2030-01-01"}, "$.schedule.end"),
    ({"times": ["08:00"], "start": "2030-01-01", "timezone": "Mars/Olympus_Mons"}, "$.schedule.timezone"),
    ({"times": ["08:00"], "start": "2030-01-01", "timezone": "../../etc/passwd"}, "$.schedule.timezone"),
    ({"times": [8], "start": "2030-01-01"}, "$.schedule.times"),
]


async def test_a_schedule_that_cannot_be_used_is_refused_naming_the_field(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    tid = (await client.post(TYPES, json={"name": "Tablets"}, headers=clinician)).json()["id"]
    for schedule, field in REFUSED_SCHEDULES:
        response = await client.post(
            f"/v1/patients/{patient_id}/medications", json={"type_id": tid, "schedule": schedule}, headers=clinician
        )
        problem = assert_problem(response, 422, "invalid-request")
        assert any(field in error for error in problem["errors"]), (schedule, problem["errors"])
    assert (await client.get(f"/v1/patients/{patient_id}/medications", headers=clinician)).json()["items"] == []


# -- the scheduler's round -----------------------------------------------------------------------


@pytest.fixture
def database(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The test's settings: SQLite, or (``indirect`` param ``"postgresql"``) a new database of the session's cluster."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return settings
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.create_database(f"medication_{uuid.uuid4().hex}")
    return make_settings(settings.data_dir, CARESHARE_DATABASE_URL=url)


@pytest.fixture
async def cs(database: Settings) -> AsyncIterator[Careshare]:
    system = Careshare.build(database)
    await system.start()
    try:
        yield system
    finally:
        await system.close()


@pytest.fixture
async def prescriber(cs: Careshare) -> Any:
    """``prescribe(schedule)`` for one patient and type of org-a, straight through the plugin's functions."""
    await register_organisation(cs.engine, CLINICIAN.org)
    async with cs.engine.begin() as conn:
        patient = await register_patient(conn, CLINICIAN, name="Pat", external_id="MRN-H", email=None)
        kind = await MEDICATION_TYPES.create(conn, CLINICIAN, name="Tablets", description="")

    async def prescribed(schedule: Schedule) -> Any:
        async with cs.engine.begin() as conn:
            return await prescribe(conn, CLINICIAN, patient.id, type_id=kind.id, schedule=schedule)

    return prescribed


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_a_round_makes_exactly_the_due_reminders_once_even_when_two_race(cs: Careshare, prescriber: Any) -> None:
    assert CATCH_UP == WINDOW
    day = date(2031, 5, 10)
    medication = await prescriber(Schedule(times=(time(6), time(12), time(18)), start=day, end=day + timedelta(days=5)))
    # Never run before, two days in: only the doses of the last 24 hours, not the whole backlog.
    now = at(day + timedelta(days=2), "13:00")
    assert await produce_due_reminders(cs, now) == 3
    assert await due_times(cs, medication.id) == [
        at(day + timedelta(days=1), "18:00"),
        at(day + timedelta(days=2), "06:00"),
        at(day + timedelta(days=2), "12:00"),
    ]
    assert await produce_due_reminders(cs, now) == 0
    later = at(day + timedelta(days=3), "12:00")
    made = await asyncio.gather(produce_due_reminders(cs, later), produce_due_reminders(cs, later))
    assert sum(made) == 3  # 18:00, 06:00, 12:00: each by one of the two rounds
    assert len(await due_times(cs, medication.id)) == 6
    async with cs.reader.connect() as conn:
        keys = (await conn.execute(sa.select(db.notifications.c.dedupe_key))).scalars().all()
    assert sorted(keys) == sorted(reminder_key(medication.id, due) for due in await due_times(cs, medication.id))


async def test_doses_before_the_prescription_are_not_reminded(cs: Careshare, prescriber: Any) -> None:
    now = db.utcnow()
    hourly = tuple(time(h, 0) for h in range(24))
    medication = await prescriber(Schedule(times=hourly, start=now.date() - timedelta(days=1)))
    assert await produce_due_reminders(cs, now) == 0
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert await produce_due_reminders(cs, next_hour + timedelta(seconds=1)) == 1
    assert await due_times(cs, medication.id) == [next_hour]


ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia", "Asia/Kathmandu"]
#: Days just before the 2031 clock changes of those zones, so the draws often cross one.
CLOCK_CHANGES = [date(2031, 3, 29), date(2031, 10, 25), date(2031, 3, 8), date(2031, 11, 1), date(2031, 4, 5)]
schedules = st.builds(
    Schedule,
    times=st.lists(
        st.builds(time, st.integers(0, 23), st.sampled_from([0, 1, 30, 59])), min_size=1, max_size=4, unique=True
    ).map(lambda ts: tuple(sorted(ts))),
    start=st.one_of(st.dates(date(2031, 1, 1), date(2031, 12, 20)), st.sampled_from(CLOCK_CHANGES)),
    timezone=st.sampled_from(ZONES),
).flatmap(
    lambda s: st.builds(
        lambda end: Schedule(times=s.times, start=s.start, end=end, timezone=s.timezone),
        st.none() | st.integers(0, 6).map(lambda n: s.start + timedelta(days=n)),
    )
)


def every_dose(schedule: Schedule, until: datetime) -> set[datetime]:
    """The oracle: every (date, time) of the schedule up to ``until``'s date, one by one."""
    zone, doses, day = ZoneInfo(schedule.timezone), set(), schedule.start
    last = schedule.end or until.date() + timedelta(days=2)
    while day <= last:
        doses |= {datetime.combine(day, t, tzinfo=zone).astimezone(UTC) for t in schedule.times}
        day += timedelta(days=1)
    return doses


@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30)
@given(schedule=schedules, first=st.integers(-2 * 24 * 60, 9 * 24 * 60), gap=st.integers(0, 3 * 24 * 60))
async def test_rounds_make_exactly_the_doses_due_within_the_window(
    cs: Careshare, prescriber: Any, schedule: Schedule, first: int, gap: int
) -> None:
    medication = await prescriber(schedule)
    try:
        now = datetime.combine(schedule.start, time(), tzinfo=UTC) + timedelta(minutes=first)
        later = now + timedelta(minutes=gap)
        doses = every_dose(schedule, later)
        await produce_due_reminders(cs, now)
        expected = {d for d in doses if now - WINDOW < d <= now}
        assert set(await due_times(cs, medication.id)) == expected
        await produce_due_reminders(cs, later)
        since = max([later - WINDOW, *expected])
        expected |= {d for d in doses if since < d <= later}
        made = await due_times(cs, medication.id)
        assert set(made) == expected and len(made) == len(expected)
        await produce_due_reminders(cs, later)
        assert len(await due_times(cs, medication.id)) == len(expected)
    finally:
        # Retire it: later examples' rounds need not remind of it (their clocks are elsewhere in 2031).
        async with cs.engine.begin() as conn:
            await conn.execute(
                sa.update(medications).where(medications.c.id == medication.id).values(end_date=date(2000, 1, 1))
            )


# -- the loop in the server and the cron command --------------------------------------------------


async def _prescribed_two_days_ago(settings: Settings) -> tuple[str, str, datetime]:
    """A medication prescribed two days ago whose dose of an hour ago has not been reminded of (the server was down)."""
    cs = Careshare.build(settings)
    await cs.start()
    dose = (db.utcnow() - timedelta(hours=1)).replace(second=0, microsecond=0)
    try:
        await register_organisation(cs.engine, CLINICIAN.org)
        async with cs.engine.begin() as conn:
            patient = await register_patient(conn, CLINICIAN, name="Pat", external_id="MRN-L", email=None)
            kind = await MEDICATION_TYPES.create(conn, CLINICIAN, name="Tablets", description="")
            schedule = Schedule(times=(dose.time(),), start=dose.date() - timedelta(days=3))
            medication = await prescribe(conn, CLINICIAN, patient.id, type_id=kind.id, schedule=schedule)
            await conn.execute(
                sa.update(medications)
                .where(medications.c.id == medication.id)
                .values(created_at=medication.created_at - timedelta(days=2))
            )
    finally:
        await cs.close()
    return patient.id, medication.id, dose


def test_careshare_reminders_run_due_makes_the_due_reminders_once(settings: Settings) -> None:
    _, medication_id, dose = asyncio.run(_prescribed_two_days_ago(settings))
    cli = add_plugin_commands(app)
    # The test's data directory decides, not the caller's environment (None unsets a variable).
    env: dict[str, str | None] = dict.fromkeys(
        ("CARESHARE_DATABASE_URL", "CARESHARE_STORAGE_URL", "CARESHARE_DISABLE_PLUGINS")
    )
    env.update({"CARESHARE_DATA_DIR": str(settings.data_dir), "CARESHARE_SECRET_KEY": settings.secret_key})
    first = CliRunner().invoke(cli, ["reminders", "run-due"], env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert re.fullmatch(r"1 reminder produced\s*", first.stdout), first.stdout
    second = CliRunner().invoke(cli, ["reminders", "run-due"], env=env, catch_exceptions=False)
    assert (second.exit_code, second.stdout.strip()) == (0, "0 reminders produced")
    assert "run-due" in CliRunner().invoke(cli, ["reminders", "--help"], env=env).stdout

    async def made() -> list[datetime]:
        cs = Careshare.build(settings)
        try:
            return await due_times(cs, medication_id)
        finally:
            await cs.close()

    assert asyncio.run(made()) == [dose]


def test_the_running_server_reminds_of_a_dose_missed_while_it_was_down(settings: Settings) -> None:
    patient_id, medication_id, dose = asyncio.run(_prescribed_two_days_ago(settings))
    headers = bearer(settings, "patient", "org-a", patient=patient_id)
    with running_server(create_app(settings)) as url:
        deadline = clock.monotonic() + 30
        while True:
            found = httpx.get(f"{url}/v1/medications/{medication_id}/reminders", headers=headers).json()["items"]
            if found or clock.monotonic() > deadline:
                break
            clock.sleep(0.05)
        notes = httpx.get(f"{url}/v1/me/notifications", headers=headers).json()["items"]
    assert [(r["kind"], r["due_at"]) for r in found] == [("scheduled", dose.isoformat())]
    assert [(n["item_id"], n["dedupe_key"]) for n in notes] == [(found[0]["id"], reminder_key(medication_id, dose))]
