"""File requests: a clinician asks a patient for files, the patient answers by uploading, each file is reviewed.

Tables in :mod:`.tables` (migrations in ``migrations/``), rules in :mod:`.file_requests`, HTTP routes
in :mod:`.routes` (the only module that imports the host, loaded when routes are asked for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from careshare import hookimpl
from careshare.plugins.requests import tables as tables  # loading the plugin puts its tables on the metadata

__all__ = ["careshare_console", "careshare_migrations", "careshare_routes", "careshare_targets"]

MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def careshare_targets() -> list[object]:
    # Nothing attaches to a request: the patient's answers are files of their own, not attachments.
    return []


@hookimpl
def careshare_migrations() -> list[Path]:
    return [MIGRATIONS]


@hookimpl
def careshare_routes() -> list[Any]:
    from careshare.plugins.requests.routes import routes

    return routes()


@hookimpl
def careshare_console() -> list[Any]:
    from careshare.plugins.requests.console import pages

    return [pages()]


@hookimpl
def careshare_contract() -> list[Any]:
    # Only the contract kit calls this (in tests): how it drives this channel's routes.
    from careshare.testing.channels import FILE_REQUESTS

    return [FILE_REQUESTS]
