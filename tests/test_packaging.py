"""One import package, ``careshare``: from the editable install and from a built wheel.

The repository keeps ``core/``, ``host/``, ``web/``, ``plugins/`` and ``testing/`` at the top; nothing may
install (or, from the repository root, accidentally import) a top-level ``core``, ``host`` or ``plugins``.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

import careshare

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {
    "core": "careshare/core",
    "host": "careshare/host",
    "web": "careshare/web",
    "plugins": "careshare/plugins",
    "testing": "careshare/testing",
}
ENTRY_POINTS = {
    "pdf": "careshare.plugins.filetypes.pdf",
    "image": "careshare.plugins.filetypes.image",
    "dicom": "careshare.plugins.filetypes.dicom",
    "video": "careshare.plugins.filetypes.video",
    "chat": "careshare.plugins.chat",
    "letters": "careshare.plugins.letters",
    "appointments": "careshare.plugins.appointments",
    "medication": "careshare.plugins.medication",
    "consents": "careshare.plugins.consents",
    "file-requests": "careshare.plugins.requests",
    "webhook": "careshare.plugins.webhook",
    "clamd": "careshare.plugins.clamd",
}

# Imports the packages and reports where each came from, as JSON on stdout.
PROBE = """
import importlib.metadata, importlib.resources, importlib.util, json, sys
import careshare, careshare.core, careshare.core.migrations, careshare.host, careshare.host.cli
import careshare.plugins.filetypes.pdf, careshare.testing, careshare.web
from careshare.core.plugins import get_plugin_manager
pm = get_plugin_manager()
print(json.dumps({
    "careshare": careshare.__file__,
    "core": careshare.core.__file__,
    "host": careshare.host.__file__,
    "web": careshare.web.__file__,
    "pdf": careshare.plugins.filetypes.pdf.__file__,
    "testing": careshare.testing.__file__,
    "mako": importlib.resources.files("careshare.core.migrations").joinpath("script.py.mako").is_file(),
    "top_level": {name: importlib.util.find_spec(name) is not None for name in ("core", "host", "plugins", "web")},
    "plugins": sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None),
    "plugin_files": {name: getattr(plugin, "__file__", None) for name, plugin in pm.list_name_plugin()},
    "dists": {e.name: e.dist.name for e in importlib.metadata.entry_points(group="careshare")},
}))
"""


def assert_careshare_plugins(found: dict[str, Any]) -> None:
    """Every built-in plugin loads; any other comes from another distribution (the example channel, say)."""
    assert set(ENTRY_POINTS) <= set(found["plugins"]), found["plugins"]
    others = {name: found["dists"][name] for name in found["plugins"] if name not in ENTRY_POINTS}
    assert "careshare" not in others.values(), others


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PYTHONHOME"}}
    env.update(extra)
    return env


def probe(cwd: Path, **env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def inside(path: object, directory: Path) -> bool:
    return Path(str(path)).resolve().is_relative_to(directory.resolve())


# -- the editable install ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["core", "host", "plugins", "web"])
def test_no_top_level_module_of_the_folders_names(name: str) -> None:
    assert importlib.util.find_spec(name) is None


def test_the_editable_install_imports_from_another_directory(tmp_path: Path) -> None:
    found = probe(tmp_path)
    assert found["top_level"] == {"core": False, "host": False, "plugins": False, "web": False}
    assert inside(found["careshare"], REPO / "src" / "careshare")
    assert inside(found["core"], REPO / "core")
    assert inside(found["host"], REPO / "host")
    assert inside(found["web"], REPO / "web")
    assert inside(found["pdf"], REPO / "plugins" / "filetypes")
    assert inside(found["testing"], REPO / "testing")
    assert found["mako"] is True
    assert_careshare_plugins(found)


# -- a built wheel ----------------------------------------------------------------------------------

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "careshare-data"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the source tree (a stale ``build/`` can neither leak in nor be written)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    # Isolated: the build backend comes from [build-system], as it does for pip install.
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(source)],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [built] = (work / "dist").glob("careshare-*.whl")
    return built


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_holds_everything_under_careshare(wheel: Path) -> None:
    names = wheel_names(wheel)
    assert {name.split("/", 1)[0] for name in names} == {"careshare", f"careshare-{careshare.__version__}.dist-info"}
    for required in (
        "careshare/__init__.py",
        "careshare/py.typed",
        "careshare/core/__init__.py",
        "careshare/core/hookspecs.py",
        "careshare/core/migrations/env.py",
        "careshare/core/migrations/script.py.mako",
        "careshare/host/__init__.py",
        "careshare/host/cli.py",
        "careshare/plugins/__init__.py",
        "careshare/plugins/filetypes/pdf.py",
        "careshare/plugins/letters/templates/letter.html.j2",
        "careshare/testing/__init__.py",
    ):
        assert required in names, required
    dist_info = f"careshare-{careshare.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(f"{dist_info}/top_level.txt").decode().split() == ["careshare"]


def test_the_wheel_holds_every_source_file_and_migration(wheel: Path) -> None:
    """A new sub-folder must be added to ``packages`` in pyproject.toml, or it silently goes missing."""
    names = wheel_names(wheel)
    expected = {
        f"{prefix}/{path.relative_to(REPO / folder).as_posix()}"
        for folder, prefix in FOLDERS.items()
        for path in (REPO / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert expected - names == set()
    versions = {path.name for path in (REPO / "core" / "migrations" / "versions").glob("*.py")} - {"__init__.py"}
    assert versions, "the core migrations exist"
    assert {f"careshare/core/migrations/versions/{name}" for name in versions} <= names


def test_the_wheel_declares_the_entry_points(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"careshare-{careshare.__version__}.dist-info/entry_points.txt").decode()
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    assert dict(parser["careshare"]) == ENTRY_POINTS
    assert parser["console_scripts"]["careshare"] == "careshare.host.cli:main"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed with pip into a directory of its own (``--target``), without dependencies."""
    target = tmp_path_factory.mktemp("installed") / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return target


def test_the_installed_wheel_imports_from_another_directory(installed: Path, tmp_path: Path) -> None:
    assert not {"core", "host", "plugins", "testing", "web"} & {path.name for path in installed.iterdir()}
    # Dependencies come from the venv; careshare itself must come from the target, not the checkout.
    found = probe(tmp_path, PYTHONPATH=str(installed))
    for module in ("careshare", "core", "host", "web", "pdf", "testing"):
        assert inside(found[module], installed), (module, found[module])
    assert found["mako"] is True
    assert found["top_level"] == {"core": False, "host": False, "plugins": False, "web": False}
    assert_careshare_plugins(found)
    plugin_files = found["plugin_files"]
    assert isinstance(plugin_files, dict)
    assert all(inside(plugin_files[name], installed) for name in ENTRY_POINTS), plugin_files


MIGRATE = """
import sqlite3, sys
import careshare.core.db as db
assert db.__file__.startswith(sys.argv[2]), db.__file__
db.migrate("sqlite+aiosqlite:///" + sys.argv[1])
print(sorted(row[0] for row in sqlite3.connect(sys.argv[1]).execute("SELECT name FROM sqlite_master WHERE type='table'")))
"""


def test_the_installed_wheel_runs_its_migrations(installed: Path, tmp_path: Path) -> None:
    database = tmp_path / "wheel.db"
    done = subprocess.run(
        [sys.executable, "-c", MIGRATE, str(database), str(installed.resolve())],
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(installed)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for table in ("organisations", "patients", "files", "blobs", "audit_events", "alembic_version"):
        assert f"'{table}'" in done.stdout
