"""When a medication's doses fall due: times of day on the dates from ``start`` to ``end``, in a time zone.

Each (date, time) is one instant: a local time the clocks skip (spring forward) is read with the
offset before the change, so it falls an hour later on the clock; a local time that happens twice
(fall back) is its first occurrence. Two local times that land on one instant make one reminder.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DATE_PATTERN",
    "DEFAULT_TIMEZONE",
    "MAX_TIMES_A_DAY",
    "TIME_PATTERN",
    "Schedule",
    "due_instants",
    "known_timezones",
    "next_due",
    "schedule_errors",
]

DEFAULT_TIMEZONE = "UTC"
#: Hourly at the most: more doses than that a day are not a reminder schedule.
MAX_TIMES_A_DAY = 24
TIME_PATTERN = "([01][0-9]|2[0-3]):([0-5][0-9])"
DATE_PATTERN = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
_HH_MM = re.compile(TIME_PATTERN)
_YYYY_MM_DD = re.compile(DATE_PATTERN)


@functools.cache
def known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@attrs.frozen
class Schedule:
    """Doses at ``times`` (local, in ``timezone``) every day from ``start`` to ``end`` (None: no end)."""

    times: tuple[time, ...]
    start: date
    end: date | None = None
    timezone: str = DEFAULT_TIMEZONE

    @classmethod
    def parse(cls, times: list[str], start: str, end: str | None, timezone: str | None) -> Schedule:
        """The schedule of a request body already checked by :func:`schedule_errors`."""
        return cls(
            times=tuple(sorted({time.fromisoformat(t) for t in times})),
            start=date.fromisoformat(start),
            end=date.fromisoformat(end) if end is not None else None,
            timezone=timezone or DEFAULT_TIMEZONE,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "times": [t.strftime("%H:%M") for t in self.times],
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "timezone": self.timezone,
        }

    def instants(self, first_day: date, last_day: date) -> Iterator[datetime]:
        """The instants (UTC) of every dose on the local dates ``first_day`` to ``last_day`` within the schedule."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        day = max(first_day, self.start)
        last = min(last_day, self.end) if self.end else last_day
        while day <= last:
            for at in self.times:
                yield datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
            day += timedelta(days=1)


def schedule_errors(times: object, start: object, end: object, timezone: object) -> list[str]:
    """What is wrong with a schedule from a request body, one ``"$.schedule.<field>: ..."`` per problem."""
    errors: list[str] = []
    if not isinstance(times, list) or not times:
        errors.append('$.schedule.times: give at least one time of day, such as ["08:00", "20:00"]')
    else:
        for index, value in enumerate(times):
            if not isinstance(value, str) or not _HH_MM.fullmatch(value):
                errors.append(f"$.schedule.times[{index}]: expected a time of day as HH:MM (00:00 to 23:59)")
        if len(set(map(str, times))) != len(times):
            errors.append("$.schedule.times: a time is listed twice")
        if len(times) > MAX_TIMES_A_DAY:
            errors.append(f"$.schedule.times: at most {MAX_TIMES_A_DAY} times a day")
    first = _date(start, "$.schedule.start", errors)
    last = _date(end, "$.schedule.end", errors) if end is not None else None
    if first is not None and last is not None and last < first:
        errors.append("$.schedule.end: must be on or after the start date")
    if timezone is not None and (not isinstance(timezone, str) or timezone not in known_timezones()):
        errors.append("$.schedule.timezone: expected a time zone name such as Europe/London or UTC")
    return errors


def _date(value: object, field: str, errors: list[str]) -> date | None:
    try:
        if isinstance(value, str) and _YYYY_MM_DD.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    errors.append(f"{field}: expected a date as YYYY-MM-DD")
    return None


def due_instants(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """Every dose instant later than ``after`` and no later than ``until``, in order, each once."""
    zone = zoneinfo.ZoneInfo(schedule.timezone)
    # A day either side: local dates around a clock change need not follow the UTC ones.
    first_day = after.astimezone(zone).date() - timedelta(days=1)
    last_day = until.astimezone(zone).date() + timedelta(days=1)
    return sorted({i for i in schedule.instants(first_day, last_day) if after < i <= until})


def next_due(schedule: Schedule, after: datetime) -> datetime | None:
    """The first dose instant later than ``after``, or None when the schedule has ended."""
    zone = zoneinfo.ZoneInfo(schedule.timezone)
    first_day = max(after.astimezone(zone).date() - timedelta(days=1), schedule.start)
    if schedule.end is not None and first_day > schedule.end:
        return None
    # A week ahead always holds the next dose of a schedule that goes on (a day has at least one time).
    found = due_instants(schedule, after, datetime.combine(first_day + timedelta(days=8), time(), tzinfo=UTC))
    return found[0] if found else None
