"""Chat: messages in the patient conversation (channel plugin; targets and routes land with its issue)."""

from __future__ import annotations

from careshare import hookimpl

__all__ = ["careshare_targets"]


@hookimpl
def careshare_targets() -> list[object]:
    return []
