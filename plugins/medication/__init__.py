"""Medication: medication types are templates with files; every reminder of a medication carries its type's files.

Tables in :mod:`.tables` (migrations in ``migrations/``), schedules in :mod:`.schedule`, reminders
and the scheduler in :mod:`.reminders`, HTTP routes in :mod:`.routes` and ``careshare reminders
run-due`` in :mod:`.cli` (the only modules that import the host and Typer, loaded when asked for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from careshare import hookimpl
from careshare.core.targets import Target
from careshare.core.templates import Templates
from careshare.plugins.medication import tables as tables

__all__ = [
    "CHANNEL",
    "MEDICATION_TYPES",
    "REMINDER_TARGET",
    "TYPE_TARGET",
    "careshare_background",
    "careshare_commands",
    "careshare_console",
    "careshare_migrations",
    "careshare_routes",
    "careshare_targets",
]

CHANNEL = "medication"
#: Where a reminder's copies of its medication type's files are pinned (nothing attaches there directly).
REMINDER_TARGET = "medication-reminder"
TYPE_TARGET = Target(
    name="medication-type",
    channel=CHANNEL,
    accepts=None,  # every kind the file-type plugins declare
    # As many as an appointment type: the leaflet, how-to videos, a dosing chart.
    max_count=20,
    sources=frozenset({"library"}),
    description="a medication type: every reminder for a medication of this type carries these files",
)
MEDICATION_TYPES = Templates(tables.medication_types, TYPE_TARGET)


@hookimpl
def careshare_targets() -> list[Target]:
    return [TYPE_TARGET]


@hookimpl
def careshare_migrations() -> list[Path]:
    return [Path(__file__).parent / "migrations"]


@hookimpl
def careshare_routes() -> list[Any]:
    from careshare.plugins.medication.routes import routes

    return routes()


@hookimpl
def careshare_background(cs: Any) -> list[Any]:
    from careshare.plugins.medication.reminders import run_reminder_loop

    async def medication_reminders() -> None:
        await run_reminder_loop(cs)

    return [medication_reminders]


@hookimpl
def careshare_console() -> list[Any]:
    from careshare.plugins.medication.console import pages

    return pages()


@hookimpl
def careshare_commands() -> list[Any]:
    from careshare.plugins.medication.cli import reminders

    return [reminders]


@hookimpl
def careshare_contract() -> list[Any]:
    # Only the contract kit calls this (in tests): how it drives this channel's routes.
    from careshare.testing.channels import MEDICATION

    return [MEDICATION]
