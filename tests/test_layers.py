"""The layers hold: core imports nothing above it, the web kit builds on core alone, plugins on core and the kit.

Read from the source with :mod:`ast`, every ``import`` at any depth (inside functions and
``TYPE_CHECKING`` blocks too), so a lazy import of a host internal fails here as surely as one at
the top. A channel written by another team can only use what it could use from outside this
repository: ``careshare`` (the hook markers), ``careshare.core.*`` and ``careshare.web``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``path``; relative imports resolved against ``package``.

    An import inside ``careshare_contract`` (the hook only the contract kit calls, in tests) is the
    test support it names, and is reported as ``contract:<module>``.
    """
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_contract: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_contract or (
                isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.name == "careshare_contract"
            )
            mark = "contract:" if inside else ""
            if isinstance(child, ast.Import):
                found.extend((child.lineno, mark + alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    module = ".".join([*base, child.module] if child.module else base)
                else:
                    module = child.module or ""
                if (
                    module == "careshare.plugins"
                ):  # a namespace of plugins: `from careshare.plugins import chat` is chat
                    found.extend((child.lineno, f"{mark}{module}.{alias.name}") for alias in child.names)
                else:
                    found.append((child.lineno, mark + module))
            visit(child, inside)

    visit(ast.parse(path.read_text(), str(path)), False)
    return sorted(found)


def _package(root: Path, path: Path, root_dir: str, root_package: str) -> str:
    """The package a file's relative imports resolve against: its directory (``plugins/chat/x.py`` -> ``careshare.plugins.chat``)."""
    return ".".join([root_package, *path.parent.relative_to(root / root_dir).parts])


def _ours(module: str) -> bool:
    module = module.removeprefix("contract:")
    return module == "careshare" or module.startswith("careshare.")


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _violations(root: Path, root_dir: str, root_package: str, allowed: Callable[[Path, str], bool]) -> list[str]:
    bad = []
    for path in sorted((root / root_dir).rglob("*.py")):
        for line, module in _imports(path, _package(root, path, root_dir, root_package)):
            if _ours(module) and not allowed(path.relative_to(root / root_dir), module):
                bad.append(f"{path.relative_to(root).as_posix()}:{line} imports {module}")
    return bad


def _core_rule(_path: Path, module: str) -> bool:
    return module == "careshare" or _within(module, "careshare.core")


def _web_rule(_path: Path, module: str) -> bool:
    return module == "careshare" or _within(module, "careshare.core") or _within(module, "careshare.web")


def _plugin_rule(path: Path, module: str) -> bool:
    """core, the kit, and the plugin's own package: its first directory under plugins/ (or the module, for clamd.py).

    Its ``careshare_contract`` hook (tests only) may import the contract kit, ``careshare.testing``.
    """
    if module.startswith("contract:"):
        module = module.removeprefix("contract:")
        if _within(module, "careshare.testing"):
            return True
    home = "careshare.plugins." + path.parts[0].removesuffix(".py")
    return module in ("careshare", "careshare.web") or _within(module, "careshare.core") or _within(module, home)


def _outside_rule(path: Path, module: str) -> bool:
    """A channel from another distribution: core and the kit; its contract module, test support, the contract kit."""
    if path.name == "contract.py" and _within(module, "careshare.testing"):
        return True
    module = module.removeprefix("contract:")  # its own contract module, imported by its hook
    return module in ("careshare", "careshare.web") or _within(module, "careshare.core")


def test_core_imports_only_core() -> None:
    assert _violations(ROOT, "core", "careshare.core", _core_rule) == []


def test_the_web_kit_builds_on_core_alone() -> None:
    assert _violations(ROOT, "web", "careshare.web", _web_rule) == []


def test_plugins_import_core_the_web_kit_and_themselves_only() -> None:
    assert _violations(ROOT, "plugins", "careshare.plugins", _plugin_rule) == []


def test_the_outside_channel_uses_only_what_any_distribution_can() -> None:
    example = "examples/careshare-discharge/careshare_discharge"
    assert (ROOT / example / "__init__.py").is_file()
    assert _violations(ROOT, example, "careshare_discharge", _outside_rule) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from careshare.host.views import parse_body\n", ["careshare.host.views"]),
        ("def f():\n    import careshare.host.auth\n", ["careshare.host.auth"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from careshare.plugins.chat import x\n",
            ["typing", "careshare.plugins.chat"],
        ),
        (
            "from . import tables\nfrom .. import chat, letters\n",
            ["careshare.plugins.chat", "careshare.plugins.chat", "careshare.plugins.letters"],
        ),
        ("from .tables import messages\n", ["careshare.plugins.chat.tables"]),
        (
            "def careshare_contract():\n    from careshare.testing.channels import CHAT\n",
            ["contract:careshare.testing.channels"],
        ),
    ],
)
def test_every_import_is_seen_whatever_its_form(tmp_path: Path, source: str, expected: list[str]) -> None:
    """The checker itself: imports in functions, in TYPE_CHECKING blocks and relative ones are all found."""
    path = tmp_path / "routes.py"
    path.write_text(source)
    assert [module for _line, module in _imports(path, "careshare.plugins.chat")] == expected


def test_a_channel_reaching_into_the_host_or_another_plugin_is_refused(tmp_path: Path) -> None:
    """The plugin rule refuses what the issue found, and allows a plugin its own modules."""
    home = tmp_path / "plugins" / "discharge"
    home.mkdir(parents=True)
    (home / "routes.py").write_text(
        "from careshare.web import parse_body\nfrom careshare.host.views import page_json\n"
        "from careshare.plugins.chat import MAX_FILES\nfrom careshare.plugins.discharge.tables import t\n"
        "from . import tables\nfrom careshare.web.views import file_json\n"
        "from careshare.testing import bearer\n"
        "def careshare_contract():\n    from careshare.testing.contract import Contract\n"
    )
    assert _violations(tmp_path, "plugins", "careshare.plugins", _plugin_rule) == [
        "plugins/discharge/routes.py:2 imports careshare.host.views",
        "plugins/discharge/routes.py:3 imports careshare.plugins.chat",
        "plugins/discharge/routes.py:6 imports careshare.web.views",
        "plugins/discharge/routes.py:7 imports careshare.testing",
    ]
