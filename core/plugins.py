"""The plugin manager factory: entry points in, misspelt hooks out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from careshare import PROJECT_NAME
from careshare.core import hookspecs
from careshare.core.settings import declared_settings

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import ModuleType

__all__ = ["get_plugin_manager", "plugin_hooks"]


def get_plugin_manager(
    load_entrypoints: bool = True,
    *,
    blocked: Iterable[str] = (),
    plugins: Iterable[ModuleType | object] = (),
) -> pluggy.PluginManager:
    """A fresh plugin manager with the careshare hook specifications.

    :param load_entrypoints: load every plugin of the ``careshare`` entry point group, built-ins
        included (they register exactly like outside packages).
    :param blocked: entry point names not to load (``CARESHARE_DISABLE_PLUGINS``).
    :param plugins: extra plugin objects to register (tests register exactly what they need).
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(PROJECT_NAME)
    for plugin in plugins:
        if not pm.is_registered(plugin):
            pm.register(plugin)
    pm.check_pending()
    return pm


def plugin_hooks(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Each registered plugin with the hooks it implements and the variables it reads, for ``careshare plugins``."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    settings = declared_settings(pm)
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0] or ""):
        if plugin is None:  # blocked
            continue
        dist = dists.get(id(plugin))
        rows.append(
            {
                "name": name,
                "module": getattr(plugin, "__name__", type(plugin).__name__),
                "distribution": f"{dist.project_name} {dist.version}" if dist else None,
                "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()),
                "settings": [setting.variable for setting in settings.get(name, [])],
            }
        )
    return rows
