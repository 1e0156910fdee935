"""Core names no format and no channel: kinds, policy sections and settings come from the plugins.

A plugin declaring its own kind is seen everywhere core lists kinds (targets that accept every
kind, ``GET /v1/targets``, the refusal of an unknown file); a kind's own refusal replaces
``kind-not-allowed``; each plugin's policy options are its section, refused when unknown; a
plugin's settings are read from the same environment as core's and checked at start-up.
"""

from __future__ import annotations

import ast
import io
import pickle
import re
import tokenize
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from careshare import hookimpl
from careshare.core import db
from careshare.core.kinds import Kind, KindRefusal, kinds, options_sections, unsupported_detail
from careshare.core.models import RenditionRecord, StoredFile
from careshare.core.plugins import get_plugin_manager, plugin_hooks
from careshare.core.policy import Policy
from careshare.core.problems import Problem, ProblemType
from careshare.core.runtime import Careshare
from careshare.core.settings import Setting, declared_settings
from careshare.core.targets import Item, Target, check_declared, resolve, targets
from careshare.host import create_app
from careshare.plugins.filetypes import dicom, image, pdf, video
from careshare.plugins.letters import mail
from careshare.testing import bearer, make_settings

if TYPE_CHECKING:
    from careshare.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
#: The words core's code must not hold (docstrings and comments may, as examples of the mechanism).
FORMATS_AND_CHANNELS = re.compile(r"chat|letter|dicom|pdf|video|consent|appointment|medication|smtp", re.IGNORECASE)

SCAN_NOT_ALLOWED = ProblemType(
    "scan-not-allowed", 422, "Scans not allowed here", "Scans cannot be attached to this item."
)


@attrs.frozen
class ScanOptions:
    max_slices: int = 10


class Scans:
    """An outside file type: its kind, a policy section and a refusal of its own."""

    @hookimpl
    def careshare_kinds(self) -> list[Kind]:
        refusal = KindRefusal(SCAN_NOT_ALLOWED, "scan_allowed", "Scans cannot be attached to {target}.")
        return [Kind("scan", "a scan", options=ScanOptions, refusal=refusal)]


def stored(kind: str) -> StoredFile:
    return StoredFile(
        id="f1",
        org="org-a",
        owner_type="library",
        patient_id=None,
        filename="x",
        kind=kind,
        media_type="application/octet-stream",
        size=1,
        sha256="0" * 64,
        status="ready",
        source="clinic",
        metadata={},
        check={},
        renditions=(RenditionRecord("shareable", "application/octet-stream", 1, "0" * 64),),
        uploaded_by="dr-a",
        created_at=db.utcnow(),
    )


# -- kinds ------------------------------------------------------------------------------------------


def test_hook_careshare_kinds() -> None:
    pm = get_plugin_manager()
    found = kinds(pm)
    # The built-in file types declare theirs, each with what its handler reads.
    assert list(found) == ["dicom", "image", "pdf", "video"]
    assert found["pdf"].options is pdf.PdfOptions
    assert found["image"].options is image.ImageOptions
    assert found["video"].options is video.VideoOptions
    assert found["dicom"].render_options is dicom.RenderOptions
    assert found["video"].refusal is not None and found["video"].refusal.problem.code == "video-not-allowed"
    assert unsupported_detail(pm) == (
        "careshare could not recognise this file as a type it can share. Send a DICOM file, an image, a PDF or a video."
    )

    pm.register(Scans())
    assert "scan" in kinds(pm)
    assert unsupported_detail(pm) is not None and unsupported_detail(pm).endswith("a PDF, a scan or a video.")  # type: ignore[union-attr]
    listed = {name: target.rules() for name, target in targets(pm).items()}
    # Targets accepting every kind accept the new one; the information pack names its own.
    assert "scan" in listed["chat-message"]["accepts"]
    assert "scan" in listed["letter"]["accepts"]
    assert listed["information-pack"]["accepts"] == ["dicom", "image", "pdf"]
    # Each kind's own refusal shows as its boolean rule, next to video's.
    assert (listed["chat-message"]["scan_allowed"], listed["information-pack"]["scan_allowed"]) == (True, False)
    assert (listed["chat-message"]["video_allowed"], listed["information-pack"]["video_allowed"]) == (True, False)


def test_a_kind_left_out_is_refused_as_the_kind_declares() -> None:
    pm = get_plugin_manager(plugins=[Scans()])
    target = resolve(Target("probe", "probe", accepts=frozenset({"pdf"}), description="a probe"), pm)
    item = Item(target="probe", id="i1", org="org-a", patient_id=None)
    with pytest.raises(Problem) as scan:
        check_declared(target, item, stored("scan"), [])
    assert (scan.value.code, scan.value.detail) == ("scan-not-allowed", "Scans cannot be attached to a probe.")
    assert scan.value.extra["rule"] == "scan_allowed of target 'probe' (probe)"
    with pytest.raises(Problem) as clip:
        check_declared(target, item, stored("video"), [])
    assert clip.value.code == "video-not-allowed"
    assert clip.value.detail == "Videos cannot be attached here: a probe can't contain streaming video."
    # A kind without a refusal of its own is kind-not-allowed, naming what is accepted.
    with pytest.raises(Problem) as picture:
        check_declared(target, item, stored("image"), [])
    assert (picture.value.code, picture.value.extra["rule"]) == (
        "kind-not-allowed",
        "accepts of target 'probe' (probe)",
    )
    # accepts=None takes every kind, even one no plugin declares (the identify hook decides what exists).
    check_declared(resolve(Target("all", "probe"), pm), item, stored("anything"), [])


def test_a_kind_declared_twice_must_agree() -> None:
    class Again:
        @hookimpl
        def careshare_kinds(self) -> list[Kind]:
            return [Kind("pdf", "a PDF", options=pdf.PdfOptions)]

    class Differently:
        @hookimpl
        def careshare_kinds(self) -> list[Kind]:
            return [Kind("pdf", "a document")]

    assert kinds(get_plugin_manager(plugins=[Again()]))["pdf"].noun == "a PDF"
    with pytest.raises(ValueError, match="'pdf' is declared twice"):
        kinds(get_plugin_manager(plugins=[Differently()]))


async def test_the_targets_route_lists_a_plugins_kind(settings: Settings) -> None:
    app = create_app(settings, plugins=get_plugin_manager(plugins=[Scans()]))
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/v1/targets", headers=bearer(settings, "clinician", "org-a", sub="dr-a"))
    assert response.status_code == 200, response.text
    rules = {t["name"]: t for t in response.json()["items"]}
    assert rules["chat-message"]["accepts"] == ["dicom", "image", "pdf", "scan", "video"]
    assert rules["information-pack"]["video_allowed"] is False


# -- policy sections --------------------------------------------------------------------------------


def test_each_plugin_reads_its_own_policy_section() -> None:
    policy = Policy()
    assert policy.section(pdf.PdfOptions) == pdf.PdfOptions()  # not set: the section's defaults
    capped = policy.with_section(pdf.PdfOptions(max_pages=3)).with_section(video.VideoOptions(max_seconds=5))
    assert capped.section(pdf.PdfOptions).max_pages == 3
    assert capped.section(video.VideoOptions) == video.VideoOptions(max_seconds=5)
    assert capped.with_section(pdf.PdfOptions(max_pages=4)).section(pdf.PdfOptions).max_pages == 4
    assert policy.section(pdf.PdfOptions).max_pages == 2000  # the original is unchanged
    # Handlers may run in a process of their own: the policy travels pickled, sections included.
    assert pickle.loads(pickle.dumps(capped)) == capped


def test_policy_from_mapping_takes_declared_sections() -> None:
    sections = options_sections(kinds(get_plugin_manager()))
    assert sections == {"image": image.ImageOptions, "pdf": pdf.PdfOptions, "video": video.VideoOptions}
    policy = Policy.from_mapping(
        {"time_limit_seconds": 60, "pdf": {"max_pages": 500}, "image": {"keep_small_animations": True}}, sections
    )
    assert policy.time_limit_seconds == 60
    assert policy.section(pdf.PdfOptions).max_pages == 500
    assert policy.section(image.ImageOptions).keep_small_animations is True
    assert policy.section(video.VideoOptions) == video.VideoOptions()
    assert Policy.from_mapping(None) == Policy.from_mapping({}, sections) == Policy()


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"max_pdf_pages": 3}, "max_pdf_pages"),  # the old flat name: now the pdf section's
        ({"pdf": {"max_pgaes": 3}}, "pdf.max_pgaes"),
        ({"sections": {}}, "sections"),  # the storage of sections is not an option
        ({"scan": {"max_slices": 3}}, "scan"),  # a section no loaded plugin declares
    ],
)
def test_policy_from_mapping_refuses_unknown_keys(values: dict[str, Any], named: str) -> None:
    sections = options_sections(kinds(get_plugin_manager()))
    with pytest.raises(ValueError, match=re.escape(named)):
        Policy.from_mapping(values, sections)
    with pytest.raises(ValueError, match="must be a mapping"):
        Policy.from_mapping({"pdf": 3}, sections)


@given(st.dictionaries(st.text(min_size=1, max_size=12), st.integers(), min_size=1, max_size=4))
def test_any_unknown_top_level_key_is_refused(values: dict[str, int]) -> None:
    known = {field.name for field in attrs.fields(Policy)} - {"sections"}
    sections = {"pdf": pdf.PdfOptions}
    unknown = set(values) - known - set(sections)
    if not unknown:
        return
    with pytest.raises(ValueError, match="unknown policy options") as refused:
        Policy.from_mapping(values, sections)
    assert all(key in str(refused.value) for key in unknown)


# -- plugin settings --------------------------------------------------------------------------------


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(text)  # core never repeats this message: the value may be a secret
    return int(text)


PAGER_URL = Setting("CARESHARE_PAGER_URL", None, "Where pages go.", parse=str, expected="a URL", secret=True)
PAGER_RETRIES = Setting(
    "CARESHARE_PAGER_RETRIES", 3, "How often a page is tried.", parse=_positive, expected="a positive whole number"
)


class Pager:
    @hookimpl
    def careshare_settings(self) -> list[Setting[Any]]:
        return [PAGER_URL, PAGER_RETRIES]


def test_hook_careshare_settings(tmp_path: Path) -> None:
    pm = get_plugin_manager(plugins=[Pager()])
    declared = declared_settings(pm)
    assert declared["letters"] == list(mail.SETTINGS)
    assert [s.variable for s in declared["webhook"]] == ["CARESHARE_WEBHOOK_URL", "CARESHARE_WEBHOOK_SECRET"]
    [pager] = [name for name, settings in declared.items() if settings == [PAGER_URL, PAGER_RETRIES]]
    # Read from the environment core's settings came from; unset or blank is the default.
    settings = make_settings(tmp_path, CARESHARE_PAGER_URL=" https://pager.example/hook ", CARESHARE_PAGER_RETRIES="")
    assert settings.get(PAGER_URL) == "https://pager.example/hook"
    assert settings.get(PAGER_RETRIES) == 3
    assert make_settings(tmp_path, CARESHARE_PAGER_RETRIES="7").get(PAGER_RETRIES) == 7
    assert make_settings(tmp_path).get(mail.SMTP_URL) is None
    assert "pager.example" not in repr(settings)  # the environment is never shown
    # careshare plugins lists each plugin's variables.
    rows = {row["name"]: row for row in plugin_hooks(pm)}
    assert rows[pager]["settings"] == ["CARESHARE_PAGER_URL", "CARESHARE_PAGER_RETRIES"]
    assert rows["letters"]["settings"] == [s.variable for s in mail.SETTINGS]


def test_a_wrong_plugin_setting_stops_the_start_naming_only_the_variable(tmp_path: Path) -> None:
    pm = get_plugin_manager(plugins=[Pager()])
    with pytest.raises(ValueError, match=r"^CARESHARE_PAGER_RETRIES must be a positive whole number$") as refused:
        Careshare.build(make_settings(tmp_path, CARESHARE_PAGER_RETRIES="-7hunter2"), pm)
    assert "hunter2" not in str(refused.value)
    # A password in a letters URL of the wrong scheme stops the start too, unrepeated.
    with pytest.raises(ValueError, match="CARESHARE_SMTP_URL must be smtp://host:port") as smtp:
        Careshare.build(make_settings(tmp_path, CARESHARE_SMTP_URL="http://u:pa55w0rd@mail.example"))
    assert "pa55w0rd" not in str(smtp.value)
    # Without the plugin loaded, its variables are nobody's business.
    Careshare.build(make_settings(tmp_path, CARESHARE_PAGER_RETRIES="no"), get_plugin_manager(load_entrypoints=False))


def test_a_variable_declared_twice_is_an_error() -> None:
    class Again:
        @hookimpl
        def careshare_settings(self) -> list[Setting[Any]]:
            return [attrs.evolve(PAGER_URL, description="Another meaning.")]

    with pytest.raises(ValueError, match="CARESHARE_PAGER_URL is declared twice"):
        declared_settings(get_plugin_manager(load_entrypoints=False, plugins=[Pager(), Again()]))


def test_readme_lists_every_plugin_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for settings in declared_settings(get_plugin_manager()).values():
        for setting in settings:
            assert f"`{setting.variable}`" in readme, f"README.md lacks {setting.variable}"


# -- the guard --------------------------------------------------------------------------------------


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def test_core_code_names_no_format_and_no_channel() -> None:
    """Names and strings of core's code (docstrings and comments aside: examples of the mechanism)."""
    found = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        source = path.read_text()
        docs = _docstring_lines(ast.parse(source))
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            code = token.type in (tokenize.NAME, tokenize.STRING) and token.start[0] not in docs
            if code and FORMATS_AND_CHANNELS.search(token.string):
                found.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {token.string[:60]}")
    assert not found, found
