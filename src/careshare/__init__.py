"""careshare: share files between clinicians and patients through many channels, safely."""

from __future__ import annotations

import pluggy

__all__ = ["PROJECT_NAME", "__version__", "hookimpl", "hookspec"]

__version__ = "0.1.0"

#: The one name: marker project, entry-point group and hook prefix.
PROJECT_NAME = "careshare"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
