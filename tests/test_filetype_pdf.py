"""The PDF handler: password refusals, repair, active content removed, stream encoding kept, linearized copy, thumbnail, page cap."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pikepdf
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from PIL import Image

from careshare.core.models import Identification, Processed, Source
from careshare.core.plugins import get_plugin_manager
from careshare.core.policy import Policy
from careshare.core.problems import Problem, problem_types
from careshare.host import create_app
from careshare.plugins.filetypes import pdf
from careshare.testing import bearer, make_pdf
from careshare.testing.strategies.pdf import (
    ACTIVE_CONTENT_PLACES,
    WEB_LINK,
    EncryptionSpec,
    PdfSpec,
    build_pdf,
    damaged_pdfs,
    pdfs,
)

if TYPE_CHECKING:
    import pluggy

    from careshare.core.settings import Settings

CORPUS = Path("/work/shared/corpus")
REVISIONS = [2, 3, 4, 5, 6]
PDF_CODES = {"pdf-password-protected", "pdf-unreadable", "pdf-no-pages", "pdf-too-many-pages"}

# Which count in metadata["removed"] each kind of generated active content lands in.
KIND_OF_PLACE = {
    **{place: "javascript" for place in ACTIVE_CONTENT_PLACES if place.startswith("javascript-")},
    "launch": "actions",
    "submit-form": "actions",
    "goto-remote": "actions",
    "uri-javascript": "actions",
    "embedded-file": "embedded_files",
    "file-attachment-annotation": "embedded_files",
    "rich-media": "multimedia",
    "screen-rendition": "multimedia",
    "xfa": "xfa",
}

# What must never be found in a shareable copy, anywhere in the file.
FORBIDDEN_KEYS = {
    "/JS",
    "/JavaScript",
    "/EmbeddedFiles",
    "/EF",
    "/RF",
    "/AF",
    "/XFA",
    "/NeedsRendering",
    "/Collection",
    "/Renditions",
    "/AlternatePresentations",
    "/RichMediaContent",
    "/RichMediaSettings",
    "/3DD",
}
FORBIDDEN_ACTIONS = {
    "/JavaScript",
    "/Launch",
    "/GoToR",
    "/GoToE",
    "/SubmitForm",
    "/ImportData",
    "/Rendition",
    "/Movie",
    "/Sound",
    "/RichMediaExecute",
}
FORBIDDEN_ANNOTATIONS = {"/FileAttachment", "/RichMedia", "/Screen", "/Movie", "/Sound", "/3D"}
WEB_SCHEMES = re.compile(r"(?:https?|mailto|tel):", re.IGNORECASE)


# -- helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pm() -> pluggy.PluginManager:
    return get_plugin_manager(load_entrypoints=False, plugins=[pdf])


def source_at(directory: Path, body: bytes) -> Source:
    """A staged upload as core/files.py builds it: the bytes on disk and an empty private workdir."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "staged"
    path.write_bytes(body)
    workdir = directory / "work"
    workdir.mkdir()
    return Source(
        path=path,
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
        kind="pdf",
        media_type="application/pdf",
        workdir=workdir,
    )


def process(pm: pluggy.PluginManager, directory: Path, body: bytes, policy: Policy | None = None) -> Processed:
    result = pm.hook.careshare_process(source=source_at(directory, body), kind="pdf", policy=policy or Policy())
    assert isinstance(result, Processed)
    return result


def refusal(pm: pluggy.PluginManager, directory: Path, body: bytes, policy: Policy | None = None) -> Problem:
    with pytest.raises(Problem) as refused:
        process(pm, directory, body, policy)
    return refused.value


def rendition(processed: Processed, role: str) -> Path:
    (output,) = [r for r in processed.renditions if r.role == role]
    assert output.path is not None and output.path.exists()
    return output.path


def children(obj: Any) -> list[Any]:
    if isinstance(obj, pikepdf.Array):
        return list(obj)
    if isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)):
        return [obj.get(key) for key in obj]
    return []


def active_content_in(path: Path) -> list[str]:
    """Everything active found in the PDF at ``path``: every object in the file and the trailer, walked whole."""
    found: list[str] = []
    with pikepdf.open(path) as opened:
        stack: list[Any] = [opened.trailer, *opened.objects]
        while stack:
            obj = stack.pop()
            stack.extend(child for child in children(obj) if not getattr(child, "is_indirect", False))
            if not isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)):
                continue
            found += sorted(FORBIDDEN_KEYS & set(obj.keys()))
            if str(obj.get("/S")) in FORBIDDEN_ACTIONS:
                found.append(f"action {obj.get('/S')}")
            if str(obj.get("/Subtype")) in FORBIDDEN_ANNOTATIONS:
                found.append(f"annotation {obj.get('/Subtype')}")
            if str(obj.get("/Type")) == "/EmbeddedFile":
                found.append("embedded file stream")
            if obj.get("/Filter") == pikepdf.Name.Standard and "/U" in obj:
                found.append("encryption dictionary")
            uri = obj.get("/URI") if str(obj.get("/S")) == "/URI" else None
            if uri is not None and not WEB_SCHEMES.match(str(uri)):
                found.append(f"uri {uri}")
    return found


def web_links_in(path: Path) -> list[str]:
    with pikepdf.open(path) as opened:
        return [
            str(annot.A.URI)
            for page in opened.pages
            for annot in page.obj.get("/Annots", [])
            if "/A" in annot and annot.A.get("/S") == pikepdf.Name.URI
        ]


def corpus_pdfs() -> list[tuple[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="") as handle:
        rows = {row["path"]: row["expected"] for row in csv.DictReader(handle, delimiter="\t")}
    return sorted((path.removeprefix("pdf/"), expected) for path, expected in rows.items() if path.startswith("pdf/"))


# -- identify -----------------------------------------------------------------------------------------


@given(st.binary(max_size=2048))
def test_identify_never_crashes_on_random_bytes(head: bytes) -> None:
    found = pdf.careshare_identify(head=head)
    assert found == (Identification("pdf", "application/pdf") if b"%PDF-" in head[:1024] else None)


# -- passwords ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("revision", REVISIONS)
def test_user_password_is_refused(pm: pluggy.PluginManager, tmp_path: Path, revision: int) -> None:
    body = build_pdf(PdfSpec(encryption=EncryptionSpec(revision, user="open-sesame", owner="owner-secret")))
    problem = refusal(pm, tmp_path, body)
    assert (problem.code, problem.status) == ("pdf-password-protected", 422)
    assert "password" in problem.detail
    assert list((tmp_path / "work").iterdir()) == [], "nothing is written for a refused file"


@pytest.mark.parametrize("revision", REVISIONS)
def test_owner_password_only_is_accepted_and_shared_decrypted(
    pm: pluggy.PluginManager, tmp_path: Path, revision: int
) -> None:
    body = build_pdf(
        PdfSpec(page_sizes=((595, 842),) * 2, rotations=(0, 0), encryption=EncryptionSpec(revision, "", "o"))
    )
    with pikepdf.open(io.BytesIO(body)) as original:
        assert original.is_encrypted
    processed = process(pm, tmp_path, body)
    assert processed.metadata["encrypted-owner-only"] is True
    assert processed.metadata["pages"] == 2
    assert "decrypted" in processed.changes
    shareable = rendition(processed, "shareable")
    with pikepdf.open(shareable) as shared:  # no password given
        assert not shared.is_encrypted
        assert len(shared.pages) == 2
    # The old encryption dictionary (with its password hashes) is not carried over as an orphan either.
    assert active_content_in(shareable) == []


def test_only_embedded_files_encrypted_is_accepted_without_them(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    """pdf.js opens this file without a password (/AuthEvent /EFOpen, streams and strings /Identity).

    qpdf asks for a password for any encrypted file, so the handler reads the encryption dictionary
    itself: only because nothing but the embedded file is encrypted is the file accepted.
    """
    body = (CORPUS / "pdf" / "pdfjs_auth-event-ef-open.pdf").read_bytes()
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(io.BytesIO(body))
    processed = process(pm, tmp_path, body)
    assert processed.metadata["encrypted-attachments-only"] is True
    assert processed.metadata["removed"]["embedded_files"] == 1
    assert {"embedded-files-removed", "decrypted"} <= set(processed.changes)
    shareable = rendition(processed, "shareable")
    assert active_content_in(shareable) == []
    with pikepdf.open(shareable) as shared:
        assert not shared.is_encrypted
        assert "/NoCrypt" not in shared.trailer
        assert len(shared.attachments) == 0


def test_encrypted_streams_with_efopen_are_still_refused(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    # The same trick must not unlock a file whose pages are encrypted: here streams use the crypt filter too.
    body = (CORPUS / "pdf" / "pdfjs_auth-event-ef-open.pdf").read_bytes()
    forged = body.replace(b"/StmF /Identity", b"/StmF /StdCF   ")
    assert forged != body and len(forged) == len(body)
    assert refusal(pm, tmp_path, forged).code == "pdf-password-protected"


# -- active content ----------------------------------------------------------------------------------


@pytest.mark.parametrize("place", ACTIVE_CONTENT_PLACES)
def test_each_kind_of_active_content_is_removed(pm: pluggy.PluginManager, tmp_path: Path, place: str) -> None:
    body = build_pdf(PdfSpec(active=frozenset({place}), web_links=1))
    (tmp_path / "input.pdf").write_bytes(body)
    assert active_content_in(tmp_path / "input.pdf") != [], "the check below can see what it looks for"
    processed = process(pm, tmp_path, body)
    kind = KIND_OF_PLACE[place]
    assert processed.metadata["had_active_content"] is True
    assert processed.metadata["removed"][kind] >= 1
    assert {k for k, n in processed.metadata["removed"].items() if n} == {kind}
    assert pdf.CHANGES[kind] in processed.changes
    shareable = rendition(processed, "shareable")
    assert active_content_in(shareable) == []
    assert web_links_in(shareable) == [f"{WEB_LINK}?0"], "links to web pages are kept"
    assert rendition(processed, "thumbnail").exists()


def test_everything_at_once_is_removed_and_the_original_is_untouched(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    body = build_pdf(PdfSpec(active=frozenset(ACTIVE_CONTENT_PLACES), web_links=2))
    processed = process(pm, tmp_path, body)
    removed = processed.metadata["removed"]
    assert all(removed[kind] >= 1 for kind in pdf.REMOVED_KINDS), removed
    assert removed["javascript"] >= 8 and removed["actions"] == 4 and removed["embedded_files"] == 2
    shareable = rendition(processed, "shareable")
    assert active_content_in(shareable) == []
    assert sorted(web_links_in(shareable)) == [f"{WEB_LINK}?0", f"{WEB_LINK}?1"]
    assert (tmp_path / "staged").read_bytes() == body, "the clinic keeps the original as uploaded"


def test_a_clean_pdf_is_re_saved_unchanged_but_linearized(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    body = build_pdf(PdfSpec(page_sizes=((595, 842), (842, 595), (300, 300)), rotations=(0, 0, 0), web_links=1))
    processed = process(pm, tmp_path, body)
    assert processed.handler == "pdf"
    for library in ("pikepdf", "qpdf", "pdfium"):
        assert library in processed.handler_version
    assert processed.changes == ("linearized",)
    assert processed.metadata == {
        "pages": 3,
        "pdf_version": "1.3",
        "had_active_content": False,
        "removed": dict.fromkeys(pdf.REMOVED_KINDS, 0),
        "repaired": False,
        "linearized": True,
    }
    assert [(r.role, r.media_type) for r in processed.renditions] == [
        ("shareable", "application/pdf"),
        ("thumbnail", "image/jpeg"),
    ]
    assert web_links_in(rendition(processed, "shareable")) == [f"{WEB_LINK}?0"]


def test_shareable_is_linearized(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    body = make_pdf(pages=12, text="leaflet")
    with pikepdf.open(io.BytesIO(body)) as original:
        assert not original.is_linearized
    processed = process(pm, tmp_path, body)
    assert processed.metadata["linearized"] is True
    report = io.StringIO()
    with pikepdf.open(rendition(processed, "shareable")) as shared:
        assert shared.is_linearized
        assert shared.check_linearization(report), report.getvalue()
        assert len(shared.pages) == 12


def make_scan_pdf(
    image_bytes: int, *, pages: int = 1, script: bool = False, image_filter: str | None = None
) -> tuple[bytes, bytes]:
    """A PDF whose page 1 draws a greyscale image stored as some scanners write it; and the image's stored bytes.

    The image is stored without a filter, or hex-encoded (``/ASCIIHexDecode``); the page's content
    stream is hex-encoded too.
    """
    width = 2048
    pixels = (bytes(range(256)) * (image_bytes // 256 + width))[: -(-image_bytes // width) * width]
    document = pikepdf.new()
    for _ in range(pages):
        document.add_blank_page(page_size=(595, 842))
    stored = pixels if image_filter is None else pixels.hex().encode() + b">"
    image = pikepdf.Stream(document, stored)
    image.Type, image.Subtype, image.ColorSpace = pikepdf.Name.XObject, pikepdf.Name.Image, pikepdf.Name.DeviceGray
    image.Width, image.Height, image.BitsPerComponent = width, len(pixels) // width, 8
    if image_filter is not None:
        image.Filter = pikepdf.Name(image_filter)
    first = document.pages[0]
    first.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=document.make_indirect(image)))
    drawing = b"q 595 0 0 842 0 0 cm /Im0 Do Q".hex().encode() + b">"
    first.Contents = pikepdf.Stream(document, drawing, Filter=pikepdf.Name.ASCIIHexDecode)
    if script:
        document.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS="app.alert('hello');")
    out = io.BytesIO()
    document.save(out, compress_streams=False, stream_decode_level=pikepdf.StreamDecodeLevel.none)
    return out.getvalue(), stored


@pytest.mark.parametrize("image_filter", [None, "/ASCIIHexDecode"])
def test_large_streams_keep_their_own_encoding_and_the_copy_is_still_sanitised(
    pm: pluggy.PluginManager, tmp_path: Path, image_filter: str | None
) -> None:
    # Deflating them would cost seconds per 100 MB on every pass of the save, so qpdf is not asked to.
    body, stored = make_scan_pdf(pdf.DEFLATE_ON_SAVE_LIMIT + 1, script=True, image_filter=image_filter)
    processed = process(pm, tmp_path, body)
    assert processed.metadata["removed"]["javascript"] == 1
    assert "javascript-removed" in processed.changes
    shareable = rendition(processed, "shareable")
    assert active_content_in(shareable) == []
    with pikepdf.open(shareable) as shared:
        image = shared.pages[0].Resources.XObject.Im0
        assert image.get("/Filter") == (None if image_filter is None else pikepdf.Name(image_filter))
        assert image.read_raw_bytes() == stored, "not decoded and encoded again"
        assert shared.pages[0].Contents.Filter == pikepdf.Name.ASCIIHexDecode
    assert b"/FlateDecode" not in shareable.read_bytes()
    with Image.open(rendition(processed, "thumbnail")) as thumb:
        assert max(thumb.size) == 320


def test_object_streams_of_a_small_file_stay_compressed(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    # qpdf writes the object streams itself, deflated only when compress_streams is on.
    with pikepdf.open(io.BytesIO(make_pdf(pages=40, text="leaflet"))) as document:
        out = io.BytesIO()
        document.save(out, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    shareable = rendition(process(pm, tmp_path, out.getvalue()), "shareable")
    with pikepdf.open(shareable) as shared:
        object_streams = [o for o in shared.objects if isinstance(o, pikepdf.Stream) and o.get("/Type") == "/ObjStm"]
        assert object_streams
        assert all(o.Filter == pikepdf.Name.FlateDecode for o in object_streams)


@pytest.mark.parametrize(("pages", "linearized"), [(1, False), (2, True)])
def test_one_large_page_is_not_linearized(
    pm: pluggy.PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pages: int, linearized: bool
) -> None:
    # Page 1 is then the whole file, so linearizing (a second pass over every byte) buys nothing.
    body, _ = make_scan_pdf(64 * 1024, pages=pages)
    monkeypatch.setattr(pdf, "LINEARIZE_ONE_PAGE_LIMIT", len(body) - 1)
    processed = process(pm, tmp_path, body)
    assert processed.metadata["linearized"] is linearized
    assert ("linearized" in processed.changes) is linearized
    with pikepdf.open(rendition(processed, "shareable")) as shared:
        assert shared.is_linearized is linearized
        assert len(shared.pages) == pages


# -- damage and limits -------------------------------------------------------------------------------


def test_repairable_damage_is_accepted_and_flagged(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    body = make_pdf(pages=2)
    # Point startxref at the wrong offset: qpdf rebuilds the cross-reference table from the objects.
    startxref = body.rindex(b"startxref")
    damaged = body[:startxref] + b"startxref\n12\n%%EOF\n"
    processed = process(pm, tmp_path, damaged)
    assert processed.metadata["repaired"] is True
    assert "repaired" in processed.changes
    with pikepdf.open(rendition(processed, "shareable")) as shared:
        assert len(shared.pages) == 2
    # The undamaged file is not flagged.
    assert process(pm, tmp_path / "clean", body).metadata["repaired"] is False


@pytest.mark.parametrize(
    "body",
    [b"%PDF-1.7\n" + bytes(range(256)) * 2, b"%PDF-1.4\n%%EOF\n", b"%PDF-", b"oops\n"],
    ids=["binary", "header-only", "bare-magic", "text"],
)
def test_unreadable_pdfs_are_refused(pm: pluggy.PluginManager, tmp_path: Path, body: bytes) -> None:
    problem = refusal(pm, tmp_path, body)
    assert (problem.code, problem.status) == ("pdf-unreadable", 422)


def test_a_pdf_without_pages_is_refused(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    empty = io.BytesIO()
    pikepdf.new().save(empty)
    assert refusal(pm, tmp_path, empty.getvalue()).code == "pdf-no-pages"


def test_page_cap(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    policy = Policy().with_section(pdf.PdfOptions(max_pages=3))
    assert process(pm, tmp_path / "three", make_pdf(pages=3), policy).metadata["pages"] == 3
    problem = refusal(pm, tmp_path, make_pdf(pages=4), policy)
    assert (problem.code, problem.status) == ("pdf-too-many-pages", 422)
    assert problem.extra == {"pages": 4, "limit": 3}
    assert "4 pages" in problem.detail and "at most 3" in problem.detail


def test_problem_sentences_are_registered() -> None:
    registered = problem_types()
    for code in PDF_CODES:
        sentence = registered[code].detail
        assert sentence.endswith(".") and len(sentence.split(". ")) == 2, sentence


# -- thumbnail ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "rotation", "expected"),
    [
        ((595, 842), 0, (226, 320)),  # A4 portrait
        ((842, 595), 0, (320, 226)),  # A4 landscape
        ((595, 842), 90, (320, 226)),  # portrait turned by /Rotate: shown landscape
        ((612, 612), 0, (320, 320)),
        ((200, 2000), 0, (32, 320)),
    ],
)
def test_thumbnail_of_page_one(
    pm: pluggy.PluginManager, tmp_path: Path, size: tuple[int, int], rotation: int, expected: tuple[int, int]
) -> None:
    body = build_pdf(PdfSpec(page_sizes=(size, (100, 100)), rotations=(rotation, 0)))
    processed = process(pm, tmp_path, body)
    with Image.open(rendition(processed, "thumbnail"), formats=["JPEG"]) as thumb:
        width, height = thumb.size
        assert max(thumb.size) == 320
        assert abs(width - expected[0]) <= 1 and abs(height - expected[1]) <= 1
        # The page draws a blue square on white: the render is not blank.
        colours = {colour for _, colour in thumb.convert("RGB").getcolors(maxcolors=1 << 20)}
        assert any(b > 150 and r < 120 for r, _, b in colours) and (255, 255, 255) in colours


def test_thumbnail_size_follows_policy(pm: pluggy.PluginManager, tmp_path: Path) -> None:
    processed = process(pm, tmp_path, make_pdf(), Policy(thumbnail_size=100))
    with Image.open(rendition(processed, "thumbnail")) as thumb:
        assert max(thumb.size) == 100


# -- the shared corpus --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), corpus_pdfs())
def test_corpus_pdf(pm: pluggy.PluginManager, tmp_path: Path, name: str, expected: str) -> None:
    body = (CORPUS / "pdf" / name).read_bytes()
    if expected == "refuse:password":
        assert refusal(pm, tmp_path, body).code == "pdf-password-protected"
        return
    if expected == "refuse:corrupt":
        # qpdf_bad1.pdf is "oops\n": through the API no handler claims it (415 unsupported-file-type,
        # tests/test_api_files.py); handed to the PDF handler directly it is unreadable.
        assert pdf.careshare_identify(head=body) is None
        assert refusal(pm, tmp_path, body).code == "pdf-unreadable"
        return
    assert expected == "accept", f"no expectation written for {name}: {expected}"
    processed = process(pm, tmp_path, body)
    shareable = rendition(processed, "shareable")
    assert active_content_in(shareable) == []
    with pikepdf.open(shareable) as shared:
        assert len(shared.pages) == processed.metadata["pages"] >= 1
        assert shared.is_linearized and not shared.is_encrypted
    assert max(Image.open(rendition(processed, "thumbnail")).size) == 320
    removed = processed.metadata["removed"]
    special = {
        "pdfjs_js-buttons.pdf": lambda: removed["javascript"] >= 14,
        "pdfjs_doc_actions.pdf": lambda: removed["javascript"] >= 11,
        "pdfjs_attachment.pdf": lambda: removed["embedded_files"] == 1,
        "pdfjs_xfa_issue14315.pdf": lambda: removed["xfa"] == 1 and removed["javascript"] >= 3,
        "pdfjs_auth-event-ef-open.pdf": lambda: processed.metadata["encrypted-attachments-only"],
        "qpdf_bad-xref-entry.pdf": lambda: processed.metadata["repaired"] and "repaired" in processed.changes,
        "qpdf_enc-R2-V1_O-master.pdf": lambda: processed.metadata["encrypted-owner-only"],
        "qpdf_enc-XI-R6-V5_O-master.pdf": lambda: processed.metadata["encrypted-owner-only"],
        "qpdf_V4-aes.pdf": lambda: processed.metadata["encrypted-owner-only"] and processed.metadata["pages"] == 30,
        "pikepdf_congress.pdf": lambda: not processed.metadata["had_active_content"],
    }
    assert special[name](), processed.metadata


# -- properties ----------------------------------------------------------------------------------------


@given(pdfs())
def test_generated_pdfs_are_refused_for_a_password_or_shared_clean(generated: Any) -> None:
    spec: PdfSpec = generated.spec
    with tempfile.TemporaryDirectory() as directory:
        pm = get_plugin_manager(load_entrypoints=False, plugins=[pdf])
        source = source_at(Path(directory), generated.data)
        try:
            processed = pm.hook.careshare_process(source=source, kind="pdf", policy=Policy())
        except Problem as problem:
            assert spec.needs_password, problem.code
            assert problem.code == "pdf-password-protected"
            return
        assert not spec.needs_password
        assert processed.metadata["pages"] == spec.pages
        assert processed.metadata["had_active_content"] is spec.has_active_content
        assert processed.metadata["repaired"] is False
        assert ("encrypted-owner-only" in processed.metadata) is (spec.encryption is not None)
        shareable = rendition(processed, "shareable")
        with pikepdf.open(shareable) as shared:
            assert not shared.is_encrypted
            assert len(shared.pages) == spec.pages
        assert active_content_in(shareable) == []
        assert len(web_links_in(shareable)) == spec.web_links
        with Image.open(rendition(processed, "thumbnail")) as thumb:
            assert max(thumb.size) == 320


def make_damaged_names_key() -> bytes:
    """A PDF whose catalog holds its JavaScript name tree under the key '/\\x00Names' (qpdf reads it anyway)."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(72, 72))
    script = pdf.make_indirect(
        pikepdf.Dictionary(Type=pikepdf.Name.Action, S=pikepdf.Name.JavaScript, JS="app.alert(1);")
    )
    pdf.Root.Names = pikepdf.Dictionary(JavaScript=pikepdf.Dictionary(Names=pikepdf.Array(["init", script])))
    out = io.BytesIO()
    pdf.save(out, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    return out.getvalue().replace(b"/Names <<", b"\x00Names <<", 1)


# Found by Hypothesis: a NUL inside the catalog's /Names key leaves the JavaScript name tree under another key.
DAMAGED_NAMES_KEY = make_damaged_names_key()


@given(st.one_of(st.binary(max_size=600), st.binary(max_size=600).map(lambda b: b"%PDF-1.7\n" + b), damaged_pdfs()))
@example(DAMAGED_NAMES_KEY)
def test_any_bytes_end_in_a_refusal_or_a_clean_copy(body: bytes) -> None:
    pdf.careshare_identify(head=body)
    with tempfile.TemporaryDirectory() as directory:
        pm = get_plugin_manager(load_entrypoints=False, plugins=[pdf])
        try:
            processed = pm.hook.careshare_process(source=source_at(Path(directory), body), kind="pdf", policy=Policy())
        except Problem as problem:
            assert problem.code in PDF_CODES
            return
        shareable = rendition(processed, "shareable")
        with pikepdf.open(shareable) as shared:
            assert len(shared.pages) == processed.metadata["pages"]
        assert active_content_in(shareable) == []


# -- end to end ----------------------------------------------------------------------------------------


async def test_upload_shares_the_sanitised_copy_and_a_thumbnail(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, tmp_path: Path
) -> None:
    body = build_pdf(PdfSpec(active=frozenset({"javascript-open-action", "embedded-file", "launch"}), web_links=1))
    response = await client.post(
        f"/v1/patients/{patient_id}/files?filename=leaflet.pdf", content=body, headers=clinician
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["metadata"]["had_active_content"] is True
    assert {"javascript-removed", "embedded-files-removed", "actions-removed", "linearized"} <= set(
        created["check"]["changes"]
    )
    roles = {r["role"]: r for r in created["renditions"]}
    assert set(roles) == {"original", "shareable", "thumbnail"}
    assert roles["thumbnail"]["media_type"] == "image/jpeg"

    original = await client.get(roles["original"]["url"], headers=clinician)
    assert original.content == body, "the clinic keeps the original"
    shared = await client.get(roles["shareable"]["url"], headers=clinician)
    assert shared.headers["content-type"].startswith("application/pdf")
    assert hashlib.sha256(shared.content).hexdigest() == roles["shareable"]["sha256"] != created["sha256"]
    (tmp_path / "shared.pdf").write_bytes(shared.content)
    assert active_content_in(tmp_path / "shared.pdf") == []
    assert web_links_in(tmp_path / "shared.pdf") == [f"{WEB_LINK}?0"]
    thumb = await client.get(roles["thumbnail"]["url"], headers=clinician)
    assert Image.open(io.BytesIO(thumb.content), formats=["JPEG"]).size == (226, 320)


async def test_upload_over_the_page_cap_is_refused(settings: Settings) -> None:
    capped = attrs.evolve(settings, policy=Policy().with_section(pdf.PdfOptions(max_pages=2)))
    headers = bearer(capped, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=create_app(capped)) as client:
        registered = await client.post("/v1/patients", json={"name": "P", "external_id": "MRN-9"}, headers=headers)
        pid = registered.json()["id"]
        response = await client.post(f"/v1/patients/{pid}/files", content=make_pdf(pages=3), headers=headers)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert (problem["code"], problem["pages"], problem["limit"]) == ("pdf-too-many-pages", 3, 2)
        listing = await client.get(f"/v1/patients/{pid}/files", headers=headers)
        # The refused file keeps its row, rejected with the reason, and nothing of its bytes.
        [kept] = listing.json()["items"]
        assert (kept["id"], kept["status"], kept["check"]["reason"]) == (
            problem["file_id"],
            "rejected",
            "pdf-too-many-pages",
        )
        assert kept["renditions"] == []
