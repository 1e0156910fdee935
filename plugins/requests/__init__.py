"""File requests: a clinician asks the patient for files (being written: see the chat and file-request issue)."""

from __future__ import annotations

from careshare import hookimpl

__all__ = ["careshare_targets"]


@hookimpl
def careshare_targets() -> list[object]:
    return []
