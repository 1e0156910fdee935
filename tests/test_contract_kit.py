"""The contract kit itself: a pytest plugin any channel's suite runs unchanged, and that fails what breaks the contract.

The kit's tests run here in a pytest of their own (a subprocess in a folder of its own, as a
product team's suite runs them): on the built-in chat channel alone from a three-line file, on it
again from ``--careshare-contract=chat`` without a file, on an outside plugin installed beside
careshare that declares a target and gives no adapter (the kit must fail, naming it), and with
an adapter that predicts wrongly or shares with the wrong patient (the kit must fail).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import pytest

from careshare.testing.targets import predict

if TYPE_CHECKING:
    from pathlib import Path

    import pluggy

    from careshare.testing.pytest_plugin import Tokens

#: An outside plugin, installed the way pip installs one (a module and its dist-info on the path).
PROBE = """
from careshare import hookimpl
from careshare.core.targets import Target


@hookimpl
def careshare_targets():
    return [Target(name="probe-note", channel="probe", description="a probe's note")]
"""
PROBE_DIST = {
    "METADATA": "Metadata-Version: 2.1\nName: careshare-probe\nVersion: 0.1\n",
    "entry_points.txt": "[careshare]\nprobe = careshare_probe\n",
    "top_level.txt": "careshare_probe\n",
}
SMOKE_PROFILE = """
from hypothesis import settings

settings.register_profile("kit-smoke", max_examples=12, deadline=None, derandomize=True)
"""
THREE_LINES = """
from careshare.testing.contract import *  # noqa: F403

careshare_plugins = ["{plugin}"]
"""
#: Chat's matrix with an adapter that expects every request to succeed: another patient's file must not attach.
WRONG_ADAPTER = """
import pytest

from careshare.testing.channels import ChatMessage
from careshare.testing.contract import test_contract_attaching_gives_what_the_declared_rules_predict  # noqa: F401

careshare_plugins = ["chat"]


class Optimist(ChatMessage):
    def predict(self, rules, files, attached, *, is_draft):
        return None


@pytest.fixture(scope="module")
def careshare_adapters():
    return {"chat-message": Optimist()}
"""

#: Chat's share test with an adapter that shares with the other patient: the patient's archive must miss it.
WRONG_SHARE = """
import pytest

from careshare.testing.channels import ChatMessage
from careshare.testing.contract import test_contract_shared_items_reach_the_archive_and_inbox  # noqa: F401

careshare_plugins = ["chat"]


class ToTheOtherPatient(ChatMessage):
    async def share(self, world, item, files):
        response = await world.client.post(
            f"/v1/patients/{world.other_patient_id}/messages", json={"body": "Hello"}, headers=world.clinician
        )
        return response.json()["id"]


@pytest.fixture(scope="module")
def careshare_adapters():
    return {"chat-message": ToTheOtherPatient()}
"""


def run_pytest(folder: Path, *args: str) -> dict[str, str]:
    """Run pytest in ``folder`` (the probe plugin on the path); each test's outcome (passed, failed, skipped) and message."""
    dist = folder / "careshare_probe-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    for name, text in PROBE_DIST.items():
        (dist / name).write_text(text)
    (folder / "careshare_probe.py").write_text(PROBE)
    # Few examples, the same ones every run: this proves the kit runs and fails; the matrices of
    # tests/test_attachment_matrix.py are where the examples are many.
    (folder / "conftest.py").write_text(SMOKE_PROFILE)
    report = folder / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not this run's xdist or options
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    done = subprocess.run(
        [*command, "--hypothesis-profile=kit-smoke", f"--junitxml={report}", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.exists(), done.stdout + done.stderr
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "failed", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "") + (child.text or "")
        outcomes[name] = f"{outcome}: {message}"
    assert outcomes, done.stdout + done.stderr
    return outcomes


def by_test(outcomes: dict[str, str], module: str) -> dict[str, str]:
    return {name.split("::", 1)[1]: result for name, result in outcomes.items() if name.startswith(f"{module}::")}


def test_the_kit_is_a_pytest_plugin_of_the_distribution(request: pytest.FixtureRequest) -> None:
    found = {e.name: e.value for e in importlib.metadata.entry_points(group="pytest11")}
    assert found.get("careshare") == "careshare.testing.pytest_plugin"
    assert request.config.pluginmanager.has_plugin("careshare")


@pytest.fixture(scope="module")
def kit_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One pytest of the kit's tests: on chat alone (passes), on the probe (fails), with wrong adapters (fail)."""
    folder = tmp_path_factory.mktemp("channel-suite")
    (folder / "test_chat_contract.py").write_text(THREE_LINES.format(plugin="chat"))
    (folder / "test_probe_contract.py").write_text(THREE_LINES.format(plugin="probe"))
    (folder / "test_wrong_adapter.py").write_text(textwrap.dedent(WRONG_ADAPTER))
    (folder / "test_wrong_share.py").write_text(textwrap.dedent(WRONG_SHARE))
    return run_pytest(folder)


def test_a_channel_passes_the_kit_from_three_lines(kit_run: dict[str, str]) -> None:
    """Chat alone (the app without the other channels): every contract test passes, its four routes each checked."""
    chat = by_test(kit_run, "test_chat_contract")
    assert all(result.startswith("passed") for result in chat.values()), chat
    routes = sorted(name for name in chat if name.startswith("test_contract_route_answers"))
    assert routes == [
        f"test_contract_route_answers_each_caller_as_its_guard_says[{label}]"
        for label in sorted(
            (
                "GET /v1/me/messages",
                "GET /v1/patients/{pid}/messages",
                "POST /v1/me/messages",
                "POST /v1/patients/{pid}/messages",
            )
        )
    ], routes
    for name in (
        "test_contract_every_target_has_an_adapter",
        "test_contract_attaching_gives_what_the_declared_rules_predict",
        "test_contract_shared_items_reach_the_archive_and_inbox",
        "test_contract_litestar_options_answers_show_nothing",
    ):
        assert name in chat, sorted(chat)


def test_a_target_without_an_adapter_fails_naming_it(kit_run: dict[str, str]) -> None:
    probe = by_test(kit_run, "test_probe_contract")
    for name in (
        "test_contract_every_target_has_an_adapter",
        "test_contract_attaching_gives_what_the_declared_rules_predict",
    ):
        result = probe[name]
        assert result.startswith("failed"), result
        assert "'probe-note' (plugin 'probe')" in result and "careshare_contract" in result, result


def test_a_wrong_prediction_fails_the_matrix(kit_run: dict[str, str]) -> None:
    result = by_test(kit_run, "test_wrong_adapter")["test_contract_attaching_gives_what_the_declared_rules_predict"]
    assert result.startswith("failed"), result
    assert "chat-message" in result, result


def test_the_option_runs_the_kit_without_a_file(tmp_path: Path) -> None:
    outcomes = run_pytest(tmp_path, "--careshare-contract=chat", "-k", "adapter or options")
    assert outcomes, outcomes
    assert {name.split("::", 1)[1] for name in outcomes} == {
        "test_contract_every_target_has_an_adapter",
        "test_contract_litestar_options_answers_show_nothing",
    }, outcomes
    assert all(result.startswith("passed") for result in outcomes.values()), outcomes


def test_the_kits_reading_of_kind_refusals_is_the_installed_kinds(careshare_pm: pluggy.PluginManager) -> None:
    """The kit predicts a kind's own refusal from ``<kind>_allowed`` (``GET /v1/targets``) as ``<kind>-not-allowed``.

    Every installed file type with a refusal of its own must follow that habit, or the matrix
    would predict wrongly; the prediction with the declared refusal must equal the habit's.
    """
    kinds = pytest.importorskip("careshare.core.kinds")
    refusals = {
        k.name: (k.refusal.rule, k.refusal.problem.code) for k in kinds.kinds(careshare_pm).values() if k.refusal
    }
    for kind, (rule, code) in refusals.items():
        rules = {
            "draft_required": False,
            "sources": ["library", "patient"],
            "accepts": [],
            rule: False,
            "max_count": None,
            "max_file_bytes": None,
            "max_total_bytes": None,
        }
        kwargs = {"kind": kind, "size": 1, "source": "library", "attached_count": 0, "attached_bytes": 0}
        assert predict(rules, **kwargs) == predict(rules, **kwargs, refusals=refusals) == code, (kind, rule, code)


def test_the_server_fixture_serves_the_app_over_real_http(careshare_server: str, careshare_tokens: Tokens) -> None:
    """``careshare_server``: the kit's app behind a real uvicorn; a token of ``careshare_tokens`` signs in."""
    import httpx

    with httpx.Client(base_url=careshare_server, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        refused = http.get("/v1/targets")
        assert refused.status_code == 401, refused.text
        listed = http.get("/v1/targets", headers=careshare_tokens.clinician())
        assert listed.status_code == 200, listed.text
        assert "chat-message" in {t["name"] for t in listed.json()["items"]}


def test_hook_careshare_contract(careshare_pm: pluggy.PluginManager) -> None:
    """Every built-in channel gives the kit a contract, and its adapters drive exactly the targets it declares."""
    from careshare.testing.contract import Contract, adapters_of, contracts_of, declared_targets

    contracts = contracts_of(careshare_pm, None)
    assert all(isinstance(c, Contract) for found in contracts.values() for c in found)
    declared = declared_targets(careshare_pm, None)
    for name in ("chat", "letters", "appointments", "medication", "consents", "file-requests"):
        assert contracts[name], f"{name} gives no contract"
        own = {a.target for c in contracts[name] for a in c.adapters}
        assert {t for t, plugin in declared.items() if plugin == name} <= own, (name, own)
    assert set(declared) <= set(adapters_of(contracts))


def test_a_share_that_misses_the_patient_fails(kit_run: dict[str, str]) -> None:
    result = by_test(kit_run, "test_wrong_share")["test_contract_shared_items_reach_the_archive_and_inbox"]
    assert result.startswith("failed"), result
    assert "is not in the patient's archive" in result, result
