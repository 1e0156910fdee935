"""Appointments: appointment types are templates with files; every appointment booked from one carries them.

Tables in :mod:`.tables` (migrations in ``migrations/``), booking in :mod:`.bookings`, HTTP routes in
:mod:`.routes` (the only module that imports the host, loaded when routes are asked for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from careshare import hookimpl
from careshare.core.targets import Target
from careshare.core.templates import Templates
from careshare.plugins.appointments import tables as tables

__all__ = [
    "APPOINTMENT_TARGET",
    "APPOINTMENT_TYPES",
    "CHANNEL",
    "TYPE_TARGET",
    "careshare_console",
    "careshare_migrations",
    "careshare_routes",
    "careshare_targets",
]

CHANNEL = "appointments"
#: Where a booked appointment's copies of its type's files are pinned (nothing attaches there directly).
APPOINTMENT_TARGET = "appointment"
TYPE_TARGET = Target(
    name="appointment-type",
    channel=CHANNEL,
    accepts=None,  # every kind the file-type plugins declare
    # Twenty files and videos: a leaflet set, directions and a video or two, still readable on a phone.
    max_count=20,
    sources=frozenset({"library"}),
    description="an appointment type: every appointment booked from it carries these files",
)
APPOINTMENT_TYPES = Templates(tables.appointment_types, TYPE_TARGET)


@hookimpl
def careshare_targets() -> list[Target]:
    return [TYPE_TARGET]


@hookimpl
def careshare_migrations() -> list[Path]:
    return [Path(__file__).parent / "migrations"]


@hookimpl
def careshare_routes() -> list[Any]:
    from careshare.plugins.appointments.routes import routes

    return routes()


@hookimpl
def careshare_contract() -> list[Any]:
    # Only the contract kit calls this (in tests): how it drives this channel's routes.
    from careshare.testing.channels import APPOINTMENTS

    return [APPOINTMENTS]


@hookimpl
def careshare_console() -> list[Any]:
    from careshare.plugins.appointments.console import pages

    return pages()
