"""Image handler (being written: see the file-type issue)."""

from __future__ import annotations

from careshare import hookimpl

__all__ = ["careshare_identify"]


@hookimpl
def careshare_identify(head: bytes) -> None:
    return None
