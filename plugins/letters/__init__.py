"""Letters: templates, drafts with files, sending to the app inbox, and the letter as a PDF by email.

Only a plugin: it declares the ``letter`` target (drafts only, 25 MB of files together by
default, each organisation may set its own), owns its tables and migrations, serves its routes,
and delivers the letter email through core's notification outbox (``careshare_deliver``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from careshare import hookimpl
from careshare.plugins.letters import tables as tables  # loading the plugin puts its tables on the metadata
from careshare.plugins.letters.letters import TARGET, deliver_email

if TYPE_CHECKING:
    from careshare.core.notifications import Notification
    from careshare.core.targets import Target

__all__ = ["TARGET", "careshare_deliver", "careshare_migrations", "careshare_routes", "careshare_targets"]


@hookimpl
def careshare_targets() -> list[Target]:
    return [TARGET]


@hookimpl
def careshare_migrations() -> list[Path]:
    return [Path(__file__).parent / "migrations"]


@hookimpl
def careshare_routes() -> list[Any]:
    # Imported here: the rest of the plugin stays free of the host.
    from careshare.plugins.letters.routes import routes

    return routes()


@hookimpl
async def careshare_deliver(notification: Notification, careshare: Any) -> bool | None:
    return await deliver_email(careshare, TARGET, notification)
