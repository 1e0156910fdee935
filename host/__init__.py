"""The Litestar host that serves careshare as an HTTP API."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["create_app"]

if TYPE_CHECKING:
    import pluggy
    from litestar import Litestar

    from careshare.core.settings import Settings


def create_app(settings: Settings | None = None, plugins: pluggy.PluginManager | None = None) -> Litestar:
    """Build the Litestar application; see :mod:`careshare.host.app`."""
    from careshare.host.app import create_app as _create_app

    return _create_app(settings, plugins)
