"""Consents: information packs (files about a consent or treatment), consent forms, and consents asked of patients.

Packs and forms are the organisation's templates. Asking a patient copies each pack of the form as
it is then (names and pinned files), so what the patient was asked to read never changes after.
Tables in :mod:`.tables` (migrations in ``migrations/``), rules in :mod:`.consents`, HTTP routes in
:mod:`.routes` (the only module that imports the host).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from careshare import hookimpl
from careshare.core.targets import Target
from careshare.plugins.consents import tables as tables  # loading the plugin puts its tables on the metadata

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "CHANNEL",
    "CONSENT_TARGET",
    "MAX_PACK_FILES",
    "PACK_COPY_TARGET",
    "TARGET",
    "careshare_console",
    "careshare_migrations",
    "careshare_routes",
    "careshare_targets",
]

CHANNEL = "consents"
#: Ten files a pack: what a patient can be expected to read on a phone before deciding.
MAX_PACK_FILES = 10
TARGET = Target(
    name="information-pack",
    channel=CHANNEL,
    # Files only, no video: a consent rests on documents the patient can keep, not on a stream.
    accepts=frozenset({"pdf", "image", "dicom"}),
    max_count=MAX_PACK_FILES,
    # A template for many patients: one patient's record has no place in it.
    sources=frozenset({"library"}),
    # Read in the refusal of a video: "... information packs can't contain streaming video."
    description="information packs",
)
#: Items shared with a patient that no file is attached to directly (their files are copies):
#: the consent request itself, and each pack as it was when the patient was asked.
CONSENT_TARGET = "consent-request"
PACK_COPY_TARGET = "consent-pack"


@hookimpl
def careshare_targets() -> list[Target]:
    return [TARGET]


@hookimpl
async def careshare_withdrawn_with(conn: AsyncConnection, target: str, item_id: str) -> list[tuple[str, str]]:
    """A withdrawn consent request takes the copies of its packs with it."""
    if target != CONSENT_TARGET:
        return []
    import sqlalchemy as sa

    from careshare.plugins.consents.tables import consent_request_packs

    rows = await conn.execute(
        sa.select(consent_request_packs.c.id).where(consent_request_packs.c.consent_id == item_id)
    )
    return [(PACK_COPY_TARGET, pack_id) for pack_id in rows.scalars()]


@hookimpl
def careshare_migrations() -> list[Path]:
    return [Path(__file__).parent / "migrations"]


@hookimpl
def careshare_routes() -> list[Any]:
    from careshare.plugins.consents.routes import routes

    return routes()


@hookimpl
def careshare_console() -> list[Any]:
    from careshare.plugins.consents.console import console_pages

    return console_pages()


@hookimpl
def careshare_contract() -> list[Any]:
    # Only the contract kit calls this (in tests): how it drives this channel's routes.
    from careshare.testing.channels import CONSENTS

    return [CONSENTS]
