"""The docs follow the code: every hook, its signature and every problem code are documented."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import types
import wave
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from litestar.testing import AsyncTestClient

from careshare.core.plugins import get_plugin_manager
from careshare.core.problems import problem_types
from careshare.host import create_app
from careshare.testing import bearer

if TYPE_CHECKING:
    from careshare.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PLUGINS_DOC = (ROOT / "docs" / "plugins.md").read_text()
API_DOC = (ROOT / "docs" / "api.md").read_text()
HOOKS = sorted(name for name in dir(get_plugin_manager(load_entrypoints=False).hook) if name.startswith("careshare_"))


def _example_plugin() -> types.ModuleType:
    """The outside-package example of docs/plugins.md, loaded as the module it claims to be."""
    blocks = re.findall(r"```python\n(.*?)```", PLUGINS_DOC, re.DOTALL)
    source = next(block for block in blocks if block.startswith('"""careshare_voice'))
    module = types.ModuleType("careshare_voice")
    exec(compile(source, "docs/plugins.md", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    spec = getattr(pm.hook, hook).spec
    assert spec is not None
    signature = f"{hook}({', '.join(spec.argnames)})"
    assert f"`{signature}`" in PLUGINS_DOC, f"docs/plugins.md lacks {signature}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_its_own_test(hook: str) -> None:
    sources = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"def test_hook_{hook}\b", sources), f"no test_hook_{hook} in tests/"


def test_every_problem_code_is_in_the_api_doc() -> None:
    for package in ("careshare.core", "careshare.host", "careshare.plugins"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if ".migrations" not in info.name:
                importlib.import_module(info.name)
    sources = "\n".join(p.read_text() for folder in ("core", "host", "plugins") for p in (ROOT / folder).rglob("*.py"))
    ours = set(re.findall(r'ProblemType\(\s*"([a-z0-9-]+)"', sources))
    assert ours <= set(problem_types()), "a ProblemType in the source was not registered on import"
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \| \d{3} \|", API_DOC, re.MULTILINE))
    missing = ours - documented
    assert not missing, f"docs/api.md lacks problem codes {sorted(missing)}"


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    settings_source = (ROOT / "core" / "settings.py").read_text()
    for variable in set(re.findall(r'"(CARESHARE_[A-Z_]+)"', settings_source)):
        assert f"`{variable}`" in readme, f"README.md lacks {variable}"


async def test_the_outside_plugin_example_works(settings: Settings, tmp_path: Path) -> None:
    voice = _example_plugin()
    sys.modules.setdefault("careshare_voice", voice)
    pm = get_plugin_manager(plugins=[voice])
    recording = tmp_path / "note.wav"
    with wave.open(str(recording), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x01" * 8000 * 2)
    headers = bearer(settings, "clinician", "org-a", sub="dr-v")
    async with AsyncTestClient(app=create_app(settings, plugins=pm)) as client:
        patient = await client.post("/v1/patients", json={"name": "V", "external_id": "V1"}, headers=headers)
        response = await client.post(
            f"/v1/patients/{patient.json()['id']}/files?filename=note.wav",
            content=recording.read_bytes(),
            headers=headers,
        )
        listed = (await client.get("/v1/targets", headers=headers)).json()["items"]
    assert "audio" in next(t for t in listed if t["name"] == "chat-message")["accepts"]  # its declared kind
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "audio"
    assert response.json()["metadata"] == {"duration_seconds": 2.0, "channels": 1}
