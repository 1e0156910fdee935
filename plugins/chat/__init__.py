"""Chat: messages between the clinic and a patient, with files, in the patient's conversation.

The first real channel, and only a plugin: it declares the ``chat-message`` target, owns the
``chat_messages`` table (and its migrations) and serves its routes; core knows no word of chat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from careshare import hookimpl
from careshare.core.targets import Target
from careshare.plugins.chat import tables as tables

__all__ = [
    "CHANNEL",
    "MAX_FILES",
    "TARGET",
    "careshare_console",
    "careshare_migrations",
    "careshare_routes",
    "careshare_targets",
]

CHANNEL = "chat"
#: Ten files per message: enough for a set of scans or photos, few enough to read on a phone.
MAX_FILES = 10
TARGET = Target(
    name="chat-message",
    channel=CHANNEL,
    accepts=None,  # every kind the file-type plugins declare
    max_count=MAX_FILES,
    sources=frozenset({"patient", "library"}),
    description="a message in the patient's conversation",
)


@hookimpl
def careshare_targets() -> list[Target]:
    return [TARGET]


@hookimpl
def careshare_migrations() -> list[Path]:
    return [Path(__file__).parent / "migrations"]


@hookimpl
def careshare_routes() -> list[Any]:
    # Imported here: the rest of the plugin stays free of the host.
    from careshare.plugins.chat.routes import ClinicianMessages, PatientMessages

    return [ClinicianMessages, PatientMessages]


@hookimpl
def careshare_console() -> list[Any]:
    # Imported here, as the routes are: the console's pages come with the plugin and go with it.
    from careshare.plugins.chat.console import CHAT_PAGES

    return [CHAT_PAGES]


@hookimpl
def careshare_contract() -> list[Any]:
    # Only the contract kit calls this (in tests): how it drives this channel's routes.
    from careshare.testing.channels import CHAT

    return [CHAT]
