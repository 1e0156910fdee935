"""Webhook delivery of notifications, HMAC-signed, for push gateways (being written: see the chat issue)."""

from __future__ import annotations

from careshare import hookimpl

__all__ = ["careshare_deliver"]


@hookimpl
def careshare_deliver() -> None:
    return None
