"""Letters: templates, drafts with files, sending to the app inbox, and the letter as a PDF by email.

Only a plugin: it declares the ``letter`` target (drafts only, 25 MB of files together by
default, each organisation may set its own), owns its tables and migrations, serves its routes,
and delivers the letter email through core's notification outbox (``careshare_deliver``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from careshare import hookimpl
from careshare.plugins.letters import mail
from careshare.plugins.letters import tables as tables  # loading the plugin puts its tables on the metadata
from careshare.plugins.letters.letters import TARGET, deliver_email

if TYPE_CHECKING:
    from careshare.core.notifications import Notification
    from careshare.core.runtime import Careshare
    from careshare.core.settings import Setting
    from careshare.core.targets import Target

__all__ = [
    "TARGET",
    "careshare_console",
    "careshare_deliver",
    "careshare_migrations",
    "careshare_routes",
    "careshare_settings",
    "careshare_targets",
]


@hookimpl
def careshare_targets() -> list[Target]:
    return [TARGET]


@hookimpl
def careshare_migrations() -> list[Path]:
    return [Path(__file__).parent / "migrations"]


@hookimpl
def careshare_settings() -> list[Setting[Any]]:
    # The letter email's server, sender and size limit: read with core's settings (mail.SETTINGS).
    return list(mail.SETTINGS)


@hookimpl
def careshare_routes() -> list[Any]:
    # Imported here: the rest of the plugin stays free of the host.
    from careshare.plugins.letters.routes import routes

    return routes()


@hookimpl
def careshare_console() -> list[Any]:
    # Imported here, like the routes: the console pages (the patient's letters, drafts, templates).
    from careshare.plugins.letters.console import console_pages

    return console_pages()


@hookimpl
async def careshare_deliver(notification: Notification, cs: Careshare | None) -> bool | None:
    if notification.audience != "patient":
        return None  # the clinic's notifications are never emailed to the patient
    return await deliver_email(cs, TARGET, notification)


@hookimpl
def careshare_contract() -> list[Any]:
    # Only the contract kit calls this (in tests): how it drives this channel's routes.
    from careshare.testing.channels import LETTERS

    return [LETTERS]
