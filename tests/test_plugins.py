"""The plugin manager, the ``careshare`` command, and the PDF handler's hooks."""

from __future__ import annotations

import hashlib
import io
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pikepdf
import pluggy
import pytest
from typer.testing import CliRunner

from careshare import hookimpl
from careshare.core.models import Identification, Processed, Source
from careshare.core.plugins import get_plugin_manager, plugin_hooks
from careshare.core.policy import Policy
from careshare.core.problems import Problem
from careshare.core.settings import Settings
from careshare.host.auth import mint_token, verify_token
from careshare.host.cli import app
from careshare.plugins.filetypes import pdf
from careshare.testing import make_pdf

if TYPE_CHECKING:
    from click.testing import Result

BUILT_INS = {
    "pdf",
    "image",
    "dicom",
    "video",
    "chat",
    "letters",
    "appointments",
    "medication",
    "consents",
    "file-requests",
    "webhook",
    "clamd",
}
FILE_TYPES = {"pdf", "image", "dicom", "video"}
DELIVERY = {"webhook"}
SCANNERS = {"clamd"}
MODULES = {"file-requests": "careshare.plugins.requests"}
CHANNELS = BUILT_INS - FILE_TYPES - DELIVERY - SCANNERS
JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


# -- the plugin manager ----------------------------------------------------------------------------


def test_the_six_built_ins_load_through_entry_points() -> None:
    pm = get_plugin_manager()
    loaded = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    assert loaded >= BUILT_INS
    from_dists = {pm.get_name(plugin): dist.project_name for plugin, dist in pm.list_plugin_distinfo()}
    assert {name: from_dists.get(name) for name in BUILT_INS} == dict.fromkeys(BUILT_INS, "careshare")
    assert pm.get_plugin("pdf") is pdf


def test_no_entry_points_means_no_plugins() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    assert pm.get_plugins() == set()
    assert pm.hook.careshare_identify(head=make_pdf(), filename="a.pdf") is None


def test_a_module_is_never_registered_twice() -> None:
    pm = get_plugin_manager(plugins=[pdf])
    assert [plugin for plugin in pm.get_plugins() if plugin is pdf] == [pdf]
    assert [impl.plugin for impl in pm.hook.careshare_identify.get_hookimpls()].count(pdf) == 1


class Misspelt:
    @hookimpl
    def careshare_identfy(self, head: bytes) -> None:
        return None


def test_a_misspelt_hook_fails_loudly() -> None:
    with pytest.raises(pluggy.PluginValidationError, match="careshare_identfy"):
        get_plugin_manager(load_entrypoints=False, plugins=[Misspelt()])
    with pytest.raises(pluggy.PluginValidationError, match="careshare_identfy"):
        get_plugin_manager(plugins=[Misspelt()])


def test_a_hook_with_an_unknown_argument_is_refused() -> None:
    class WrongArgument:
        @hookimpl
        def careshare_identify(self, head: bytes, content_type: str) -> None:
            return None

    with pytest.raises(pluggy.PluginValidationError, match="content_type"):
        get_plugin_manager(load_entrypoints=False, plugins=[WrongArgument()])


def test_blocked_plugins_are_left_out() -> None:
    pm = get_plugin_manager(blocked={"pdf"})
    assert pm.get_plugin("pdf") is None
    assert pm.is_blocked("pdf")
    assert not pm.is_registered(pdf)
    assert pm.hook.careshare_identify(head=make_pdf(), filename="a.pdf") is None
    assert {row["name"] for row in plugin_hooks(pm)} >= CHANNELS
    assert "pdf" not in {row["name"] for row in plugin_hooks(pm)}


def test_blocking_several_channels() -> None:
    pm = get_plugin_manager(blocked={"consents", "chat"})
    names = {row["name"] for row in plugin_hooks(pm)}
    assert names >= BUILT_INS - {"consents", "chat"}
    assert not names & {"consents", "chat"}


def test_plugin_hooks_rows_list_the_hooks_each_implements() -> None:
    class Extra:
        @hookimpl
        def careshare_targets(self) -> list[object]:
            return []

        @hookimpl
        def careshare_routes(self) -> list[object]:
            return []

    extra = Extra()
    pm = get_plugin_manager(plugins=[extra])
    rows = {row["name"]: row for row in plugin_hooks(pm)}
    assert rows["pdf"] == {
        "name": "pdf",
        "module": "careshare.plugins.filetypes.pdf",
        "distribution": "careshare 0.1.0",
        "hooks": ["careshare_identify", "careshare_kinds", "careshare_process"],
        "settings": [],
    }
    for name in CHANNELS:
        assert rows[name]["module"] == MODULES.get(name, f"careshare.plugins.{name}")
        # Every channel declares its targets; a working channel adds its tables, routes ...
        assert "careshare_targets" in rows[name]["hooks"]
        assert rows[name]["distribution"] == "careshare 0.1.0"
    [extra_row] = [row for row in rows.values() if row["distribution"] is None]
    assert extra_row["module"] == "Extra"
    assert extra_row["hooks"] == ["careshare_routes", "careshare_targets"]
    assert list(rows) == sorted(rows)


# -- the careshare command -------------------------------------------------------------------------


def invoke(data_dir: Path, *args: str) -> Result:
    # The test's own data dir decides, not the caller's environment (None unsets a variable).
    env: dict[str, str | None] = dict.fromkeys(
        ("CARESHARE_SECRET_KEY", "CARESHARE_DATABASE_URL", "CARESHARE_STORAGE_URL", "CARESHARE_DISABLE_PLUGINS")
    )
    env.update({"CARESHARE_DATA_DIR": str(data_dir), "COLUMNS": "200"})
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def test_cli_plugins_lists_all_six(tmp_path: Path) -> None:
    result = invoke(tmp_path, "plugins")
    assert result.exit_code == 0, result.output
    for name in BUILT_INS:
        assert re.search(rf"\b{name}\b", result.stdout), name
    assert "careshare_identify, careshare_kinds, careshare_process" in result.stdout
    assert "careshare.plugins.filetypes.pdf" in result.stdout


def test_cli_plugins_leaves_out_disabled_ones(tmp_path: Path) -> None:
    env = {"CARESHARE_DATA_DIR": str(tmp_path), "CARESHARE_DISABLE_PLUGINS": "consents,pdf", "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["plugins"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "consents" not in result.stdout
    assert "careshare.plugins.filetypes.pdf" not in result.stdout
    assert "medication" in result.stdout


def careshare_script() -> Path:
    """The console script installed next to the interpreter running the tests."""
    return Path(sys.executable).with_name("careshare")


def run_careshare(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CARESHARE_")}
    env["CARESHARE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [str(careshare_script()), *args], env=env, cwd=data_dir, capture_output=True, text=True, timeout=120
    )


def test_cli_token_prints_only_a_token_that_verifies(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    done = run_careshare(data_dir, "token", "--role", "clinician", "--org", "o", "--sub", "u")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == f"{token}\n"
    assert JWT.fullmatch(token)
    secret = (data_dir / "secret.key").read_text().strip()
    assert secret == Settings.from_env({"CARESHARE_DATA_DIR": str(data_dir)}).secret_key
    caller = verify_token(secret, token)
    assert (caller.subject, caller.role, caller.org, caller.patient) == ("u", "clinician", "o", None)


def test_cli_token_for_a_patient(tmp_path: Path) -> None:
    result = invoke(tmp_path, "token", "--role", "patient", "--org", "o", "--patient", "p1")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert JWT.fullmatch(token)
    caller = verify_token(Settings.from_env({"CARESHARE_DATA_DIR": str(tmp_path)}).secret_key, token)
    assert (caller.role, caller.org, caller.patient) == ("patient", "o", "p1")


def test_cli_patient_token_needs_the_patient(tmp_path: Path) -> None:
    result = invoke(tmp_path, "token", "--role", "patient", "--org", "o")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "patient" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["token", "--role", "admin", "--org", "o", "--sub", "u"],
        ["token", "--role", "clinician", "--org", "o"],
        ["token", "--org", "o", "--sub", "u"],
    ],
)
def test_cli_token_refuses_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    result = invoke(tmp_path, *args)
    assert result.exit_code == 2
    assert result.stdout == ""


def test_a_token_does_not_verify_with_another_data_dirs_secret(tmp_path: Path) -> None:
    made = invoke(tmp_path / "one", "token", "--role", "clinician", "--org", "o", "--sub", "u")
    token = made.stdout.strip()
    # Minting on a data directory without a key says so: a server elsewhere will not take the token.
    assert "made a new one" in made.stderr and "CARESHARE_DATA_DIR" in made.stderr
    again = invoke(tmp_path / "one", "token", "--role", "clinician", "--org", "o", "--sub", "u")
    assert again.exit_code == 0 and "made a new one" not in again.stderr
    other = Settings.from_env({"CARESHARE_DATA_DIR": str(tmp_path / "two")}).secret_key
    with pytest.raises(Problem) as refused:
        verify_token(other, token)
    assert refused.value.code == "invalid-token"
    assert "not signed with this server's key" in refused.value.detail and "careshare token" in refused.value.detail


def test_an_expired_token_is_refused_saying_so() -> None:
    token = mint_token("k" * 32, role="clinician", org="o", sub="u", ttl_seconds=-60)
    with pytest.raises(Problem) as refused:
        verify_token("k" * 32, token)
    assert refused.value.code == "invalid-token" and "has expired" in refused.value.detail


CORE_TABLES = {
    "organisations",
    "patients",
    "files",
    "blobs",
    "renditions",
    "attachments",
    "audit_events",
    "notifications",
    "alembic_version",
}


def sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_cli_migrate_creates_the_sqlite_tables(tmp_path: Path) -> None:
    database = tmp_path / "careshare.db"
    assert not database.exists()
    result = invoke(tmp_path, "migrate")
    assert result.exit_code == 0, result.output
    assert "schema up to date" in result.stderr
    assert sqlite_tables(database) >= CORE_TABLES
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # One head per branch: core's, implied by the channel plugins' own branches that depend on it.
        revisions = sorted(db.execute("SELECT version_num FROM alembic_version").fetchall())
    assert revisions
    assert invoke(tmp_path, "migrate").exit_code == 0, "migrating again is a no-op"
    with sqlite3.connect(database) as db:
        assert sorted(db.execute("SELECT version_num FROM alembic_version").fetchall()) == revisions


# -- file-type hooks -------------------------------------------------------------------------------


@pytest.fixture
def pdf_only() -> pluggy.PluginManager:
    return get_plugin_manager(load_entrypoints=False, plugins=[pdf])


def test_hook_careshare_identify(pdf_only: pluggy.PluginManager) -> None:
    hook = pdf_only.hook.careshare_identify
    expected = Identification(kind="pdf", media_type="application/pdf")
    assert hook(head=make_pdf(), filename="x.jpg") == expected, "the bytes decide, not the name"
    assert hook(head=b"Just some notes, not a PDF.\n", filename="x.pdf") is None
    assert hook(head=b"", filename="x.pdf") is None
    assert hook(head=b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, filename="scan.pdf") is None
    # The PDF header may start anywhere in the first 1024 bytes, and nowhere later.
    assert hook(head=b" " * 1000 + make_pdf(), filename="") == expected
    assert hook(head=b" " * 1020 + b"%PDF-1.7", filename="") is None
    # Through every installed plugin, too.
    everything = get_plugin_manager()
    assert everything.hook.careshare_identify(head=make_pdf(), filename="x.jpg") == expected
    assert everything.hook.careshare_identify(head=b"plain text", filename="x.pdf") is None


def source_for(tmp_path: Path, body: bytes, kind: str = "pdf") -> Source:
    path = tmp_path / "staged"
    path.write_bytes(body)
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return Source(
        path=path,
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
        kind=kind,
        media_type="application/pdf",
        workdir=workdir,
    )


def process(pm: pluggy.PluginManager, source: Source, kind: str = "pdf") -> Any:
    return pm.hook.careshare_process(source=source, kind=kind, policy=Policy())


def test_hook_careshare_process(pdf_only: pluggy.PluginManager, tmp_path: Path) -> None:
    processed = process(pdf_only, source_for(tmp_path, make_pdf(pages=3)))
    assert isinstance(processed, Processed)
    assert processed.handler == "pdf"
    assert processed.metadata["pages"] == 3
    assert "encrypted-owner-only" not in processed.metadata
    assert [(r.role, r.media_type) for r in processed.renditions] == [
        ("shareable", "application/pdf"),
        ("thumbnail", "image/jpeg"),
    ]
    assert all(r.path is not None and r.path.parent == tmp_path / "work" for r in processed.renditions)

    # Another kind is someone else's job.
    assert process(pdf_only, source_for(tmp_path, make_pdf()), kind="image") is None

    # A PDF that needs a password to open is refused with its own code.
    with pytest.raises(Problem) as refused:
        process(pdf_only, source_for(tmp_path, make_pdf(user_password="secret", owner_password="owner")))
    assert refused.value.code == "pdf-password-protected"
    assert refused.value.status == 422


def test_hook_careshare_process_accepts_owner_password_only(pdf_only: pluggy.PluginManager, tmp_path: Path) -> None:
    body = make_pdf(pages=2, owner_password="owner")
    with pikepdf.open(io.BytesIO(body)) as opened:
        assert opened.is_encrypted
    processed = process(pdf_only, source_for(tmp_path, body))
    assert processed.metadata["pages"] == 2
    assert processed.metadata["encrypted-owner-only"] is True


def test_hook_careshare_process_refuses_a_damaged_pdf(pdf_only: pluggy.PluginManager, tmp_path: Path) -> None:
    with pytest.raises(Problem) as refused:
        process(pdf_only, source_for(tmp_path, b"%PDF-1.7\n" + os.urandom(64)))
    assert refused.value.code == "pdf-unreadable"


def test_hook_careshare_process_leaves_the_staged_file_alone(pdf_only: pluggy.PluginManager, tmp_path: Path) -> None:
    body = make_pdf(pages=1)
    source = source_for(tmp_path, body)
    process(pdf_only, source)
    assert source.path.read_bytes() == body
    assert sorted(p.name for p in source.workdir.iterdir()) == ["shareable.pdf", "thumbnail.jpg"]


def test_plugin_objects_need_only_the_arguments_they_use() -> None:
    seen: list[bytes] = []

    class HeadOnly:
        @hookimpl(trylast=True)
        def careshare_identify(self, head: bytes) -> Identification | None:
            seen.append(head)
            return None

    pm = get_plugin_manager(load_entrypoints=False, plugins=[HeadOnly()])
    assert pm.hook.careshare_identify(head=b"abc", filename="a.txt") is None
    assert seen == [b"abc"]
