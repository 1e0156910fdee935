"""PDF handler: refuse what a phone cannot open; share a sanitised copy, linearized where it pays, and a thumbnail."""

from __future__ import annotations

import io
import logging
import math
import re
from typing import TYPE_CHECKING, Any

import attrs
import pikepdf
import pypdfium2
import pypdfium2.version
from pikepdf import Array, Dictionary, Name, Stream
from pikepdf.sanitize import Sanitizer

from careshare import hookimpl
from careshare.core.kinds import Kind
from careshare.core.models import Identification, Processed, RenditionOutput
from careshare.core.problems import Problem, ProblemType
from careshare.plugins.filetypes.imaging import thumbnail_rendition

if TYPE_CHECKING:
    from pathlib import Path

    from careshare.core.models import Source
    from careshare.core.policy import Policy

__all__ = [
    "CHANGES",
    "DEFLATE_ON_SAVE_LIMIT",
    "KIND",
    "LINEARIZE_ONE_PAGE_LIMIT",
    "MEDIA_TYPE",
    "PDF_NO_PAGES",
    "PDF_PASSWORD_PROTECTED",
    "PDF_TOO_MANY_PAGES",
    "PDF_UNREADABLE",
    "REMOVED_KINDS",
    "ActiveContentRemover",
    "PdfOptions",
    "careshare_identify",
    "careshare_kinds",
    "careshare_process",
]

logger = logging.getLogger(__name__)

KIND = "pdf"
MEDIA_TYPE = "application/pdf"
HANDLER_VERSION = (
    f"3 (pikepdf {pikepdf.__version__}, qpdf {pikepdf.__libqpdf_version__},"
    f" pdfium {pypdfium2.version.PDFIUM_INFO.build})"
)
# The PDF spec lets the header start anywhere in the first 1024 bytes.
_HEADER_WINDOW = 1024
# qpdf deflates 30-45 MB/s here, once per pass of a save: beyond this many bytes to deflate, streams are kept as they are.
DEFLATE_ON_SAVE_LIMIT = 4 * 2**20
# A one-page PDF larger than this is not linearized: page 1 is the whole file, and linearizing is a second pass.
LINEARIZE_ONE_PAGE_LIMIT = 32 * 2**20

PDF_PASSWORD_PROTECTED = ProblemType(
    "pdf-password-protected",
    422,
    "PDF needs a password",
    "This PDF is protected with a password, so the patient's app could not open it."
    " Remove the password and upload it again.",
)
PDF_UNREADABLE = ProblemType(
    "pdf-unreadable",
    422,
    "PDF could not be read",
    "This file looks like a PDF but is damaged beyond repair. Export or scan it again and upload the new copy.",
)
PDF_TOO_MANY_PAGES = ProblemType(
    "pdf-too-many-pages",
    422,
    "PDF has too many pages",
    "This PDF has more pages than careshare accepts in one file."
    " Split it into smaller documents and upload them one by one.",
)
PDF_NO_PAGES = ProblemType(
    "pdf-no-pages",
    422,
    "PDF has no pages",
    "This PDF has no pages, so there would be nothing for the patient to see."
    " Export the document again and upload the new copy.",
)

# What the shareable copy loses, by kind; each kind is a count in metadata["removed"] and a change.
REMOVED_KINDS = ("javascript", "actions", "embedded_files", "multimedia", "xfa")
CHANGES = {
    "javascript": "javascript-removed",
    "actions": "actions-removed",
    "embedded_files": "embedded-files-removed",
    "multimedia": "multimedia-removed",
    "xfa": "xfa-removed",
}
# Actions that open files or programs, reach other documents or send data: removed.
_EXTERNAL_ACTIONS = frozenset({"/Launch", "/GoToR", "/GoToE", "/ImportData", "/SubmitForm"})
_MULTIMEDIA_ACTIONS = frozenset({"/Rendition", "/Movie", "/Sound", "/RichMediaExecute"})
# URI actions stay when they link to the web, mail or a phone number (leaflets link to clinic pages).
_WEB_LINK = re.compile(r"(?:https?|mailto|tel):", re.IGNORECASE)
# Annotations that carry an embedded file or media: taken off the page, their payload dropped.
_REMOVED_ANNOTATIONS = {
    "/FileAttachment": ("embedded_files", ("/FS",)),
    "/RichMedia": ("multimedia", ("/RichMediaContent", "/RichMediaSettings")),
    "/Screen": ("multimedia", ()),
    "/Movie": ("multimedia", ("/Movie",)),
    "/Sound": ("multimedia", ("/Sound",)),
    "/3D": ("multimedia", ("/3DD",)),
}
_CATALOG_NAME_TREES = (
    ("/JavaScript", "javascript"),
    ("/EmbeddedFiles", "embedded_files"),
    ("/Renditions", "multimedia"),
    ("/AlternatePresentations", "multimedia"),
)
# The trailer's reference to an encryption dictionary, renamed (same length, so offsets hold) to read it as data.
_ENCRYPT_REFERENCE = re.compile(rb"/Encrypt(?=\s+\d+\s+\d+\s+R)")
_HIDDEN_ENCRYPT = "/NoCrypt"

# Filters qpdf decodes at its "generalized" level, the level a compressing save decodes to.
_GENERALIZED_FILTERS = frozenset(
    (
        "/ASCIIHexDecode",
        "/AHx",
        "/ASCII85Decode",
        "/A85",
        "/LZWDecode",
        "/LZW",
        "/FlateDecode",
        "/Fl",
        "/RunLengthDecode",
        "/RL",
    )
)

# What pikepdf, qpdf and PDFium raise on hostile or broken bytes (PasswordError is handled apart).
_LIBRARY_ERRORS = (
    pikepdf.PikepdfError,
    pypdfium2.PdfiumError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    RuntimeError,
    OverflowError,
)


@attrs.frozen
class PdfOptions:
    """The PDF handler's section of the policy (``Policy.section(PdfOptions)``)."""

    #: Most pages accepted in one file.
    max_pages: int = 2000


@hookimpl
def careshare_kinds() -> list[Kind]:
    return [Kind(KIND, "a PDF", options=PdfOptions)]


@hookimpl
def careshare_identify(head: bytes) -> Identification | None:
    if b"%PDF-" in head[:_HEADER_WINDOW]:
        return Identification(kind=KIND, media_type=MEDIA_TYPE)
    return None


@hookimpl
def careshare_process(source: Source, kind: str, policy: Policy) -> Processed | None:
    if kind != KIND:
        return None
    pdf, attachments_only = _open(source.path)
    try:
        with pdf:
            return _process(pdf, source, policy, attachments_only=attachments_only)
    except pikepdf.PasswordError:
        raise Problem(PDF_PASSWORD_PROTECTED) from None
    except _LIBRARY_ERRORS as exc:
        logger.info("pdf unreadable error=%s", type(exc).__name__)
        raise Problem(PDF_UNREADABLE) from None


def _open(path: Path) -> tuple[pikepdf.Pdf, bool]:
    """The opened PDF, and whether only its embedded files were encrypted (so it opened without a password)."""
    try:
        return pikepdf.open(path), False
    except pikepdf.PasswordError:
        # Not a PdfError subclass: it must be caught on its own.
        pdf = _open_with_only_attachments_encrypted(path)
        if pdf is None:
            raise Problem(PDF_PASSWORD_PROTECTED) from None
        return pdf, True
    except _LIBRARY_ERRORS as exc:
        logger.info("pdf unreadable error=%s", type(exc).__name__)
        raise Problem(PDF_UNREADABLE) from None


def _open_with_only_attachments_encrypted(path: Path) -> pikepdf.Pdf | None:
    """Open a PDF whose password guards only its embedded files (``/AuthEvent /EFOpen``), or None.

    qpdf asks for the password of any encrypted file, but when streams and strings use the
    ``/Identity`` crypt filter the pages are plain text and viewers open them without one. Hiding
    the trailer's ``/Encrypt`` key lets qpdf read the file as unencrypted; the embedded files
    (the only encrypted part) are removed from the shareable copy anyway.
    """
    patched, found = _ENCRYPT_REFERENCE.subn(_HIDDEN_ENCRYPT.encode(), path.read_bytes())
    if not found:
        return None
    try:
        pdf = pikepdf.open(io.BytesIO(patched))
    except (pikepdf.PasswordError, *_LIBRARY_ERRORS):
        return None
    try:
        if _encrypts_only_attachments(pdf.trailer.get(_HIDDEN_ENCRYPT)):
            del pdf.trailer[_HIDDEN_ENCRYPT]
            return pdf
    except _LIBRARY_ERRORS:
        pass
    pdf.close()
    return None


def _encrypts_only_attachments(encrypt: Any) -> bool:
    """True for a standard security handler that leaves streams and strings clear and encrypts files on EFOpen."""
    if not isinstance(encrypt, Dictionary) or encrypt.get("/Filter") != Name.Standard:
        return False
    identity = Name.Identity
    if encrypt.get("/StmF", identity) != identity or encrypt.get("/StrF", identity) != identity:
        return False
    file_filter, filters = encrypt.get("/EFF"), encrypt.get("/CF")
    if not isinstance(file_filter, Name) or not isinstance(filters, Dictionary):
        return False
    crypt = filters.get(str(file_filter))
    return isinstance(crypt, Dictionary) and crypt.get("/AuthEvent") == Name.EFOpen


def _process(pdf: pikepdf.Pdf, source: Source, policy: Policy, *, attachments_only: bool) -> Processed:
    pages = len(pdf.pages)
    if pages == 0:
        raise Problem(PDF_NO_PAGES)
    max_pages = policy.section(PdfOptions).max_pages
    if pages > max_pages:
        raise Problem(
            PDF_TOO_MANY_PAGES,
            f"This PDF has {pages} pages; careshare accepts at most {max_pages} in one file."
            " Split it into smaller documents and upload them one by one.",
            pages=pages,
            limit=max_pages,
        )
    version, encrypted = pdf.pdf_version, pdf.is_encrypted
    if "/Encrypt" in pdf.trailer:
        # Streams are decrypted as read; without this, a linearized copy keeps the old dictionary as an orphan.
        del pdf.trailer["/Encrypt"]
    remover = ActiveContentRemover(pdf)
    removed = remover.run()
    workdir = source.workdir
    shareable = workdir / "shareable.pdf"
    # Linearized, page 1 shows while the rest loads; a one-page file has no rest, so a large one skips that pass.
    linearize = pages > 1 or source.size <= LINEARIZE_ONE_PAGE_LIMIT
    # Decrypted (phones need no password). qpdf deflates the object streams it writes only with
    # compress_streams, which also re-encodes every stream not stored as plain Flate: so only while
    # those are small; otherwise every stream keeps the file's own encoding, never decoded.
    pdf.save(
        shareable,
        linearize=linearize,
        encryption=False,
        deterministic_id=True,
        compress_streams=remover.bytes_to_deflate <= DEFLATE_ON_SAVE_LIMIT,
        stream_decode_level=pikepdf.StreamDecodeLevel.none,
    )
    # qpdf warns only when it had to recover something: a damaged xref, a bad object or stream.
    repaired = bool(pdf.get_warnings())
    thumbnail = _thumbnail(shareable, workdir, policy)

    metadata: dict[str, Any] = {
        "pages": pages,
        "pdf_version": version,
        "had_active_content": any(removed.values()),
        "removed": removed,
        "repaired": repaired,
        "linearized": linearize,
    }
    if encrypted:
        metadata["encrypted-owner-only"] = True
    if attachments_only:
        metadata["encrypted-attachments-only"] = True
    changes = [CHANGES[kind] for kind in REMOVED_KINDS if removed[kind]]
    if repaired:
        changes.append("repaired")
    if encrypted or attachments_only:
        changes.append("decrypted")
    if linearize:
        changes.append("linearized")
    return Processed(
        handler="pdf",
        handler_version=HANDLER_VERSION,
        metadata=metadata,
        renditions=(RenditionOutput(role="shareable", media_type=MEDIA_TYPE, path=shareable), thumbnail),
        changes=tuple(changes),
    )


def _thumbnail(path: Path, workdir: Path, policy: Policy) -> RenditionOutput:
    """Page 1 of the sanitised copy; no form environment is ever set up, so PDFium runs no JavaScript."""
    document = pypdfium2.PdfDocument(path)
    try:
        page = document[0]
        width, height = page.get_size()
        if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
            raise Problem(PDF_UNREADABLE)
        # Twice the size, then one good downscale: sharper text than rendering at the final size.
        scale = 2 * policy.thumbnail_size / max(width, height)
        image = page.render(scale=scale, may_draw_forms=False).to_pil()
        page.close()
    finally:
        document.close()
    return thumbnail_rendition(image, workdir, policy.thumbnail_size, policy.jpeg_quality)


class ActiveContentRemover:
    """Strips active content from an open PDF in place and counts what it removed, by kind.

    Every object reachable from the trailer is visited (only reachable objects are written), so
    an action is found wherever it hangs, not only in the slots a viewer is known to use.
    pikepdf's own sanitize helpers then run as a second, independent pass. On the way, the walk
    adds up how many stream bytes qpdf would deflate on a compressing save (``bytes_to_deflate``),
    which decides how the copy is saved.
    """

    def __init__(self, pdf: pikepdf.Pdf) -> None:
        self.pdf = pdf
        self.removed = dict.fromkeys(REMOVED_KINDS, 0)
        self.bytes_to_deflate = 0
        self._counted: set[tuple[str, tuple[int, int]]] = set()

    def run(self) -> dict[str, int]:
        self._clean_catalog(self.pdf.Root)
        self._walk(self.pdf.trailer)
        Sanitizer().remove_javascript().remove_attachments().remove_multimedia().remove_collection().apply(self.pdf)
        return dict(self.removed)

    def _count(self, kind: str, obj: Any) -> None:
        # One indirect object linked from several places is one thing removed.
        if isinstance(obj, pikepdf.Object) and obj.is_indirect:
            key = (kind, obj.objgen)
            if key in self._counted:
                return
            self._counted.add(key)
        self.removed[kind] += 1

    def _clean_catalog(self, root: Any) -> None:
        names = root.get("/Names")
        if isinstance(names, Dictionary):
            for key, kind in _CATALOG_NAME_TREES:
                if key in names:
                    self.removed[kind] += _name_tree_size(names.get(key))
                    del names[key]
        acroform = root.get("/AcroForm")
        if isinstance(acroform, Dictionary) and "/XFA" in acroform:
            del acroform["/XFA"]
            self.removed["xfa"] += 1
        for key in ("/NeedsRendering", "/Collection"):  # XFA-only rendering; portfolio view of embedded files
            if key in root:
                del root[key]

    def _walk(self, start: Any) -> None:
        seen: set[tuple[int, int]] = set()
        stack = [start]
        while stack:
            obj = stack.pop()
            if obj.is_indirect:
                if obj.objgen in seen:
                    continue
                seen.add(obj.objgen)
            if isinstance(obj, Array):
                stack.extend(item for item in obj if isinstance(item, (Array, Dictionary, Stream)))
                continue
            if isinstance(obj, Stream):
                self.bytes_to_deflate += _bytes_to_deflate(obj)
            self._clean(obj)
            for key in obj:
                value = obj.get(key)
                if isinstance(value, (Array, Dictionary, Stream)):
                    stack.append(value)

    def _clean(self, d: Any) -> None:
        annots = d.get("/Annots")
        if isinstance(annots, Array):
            kept = []
            for annot in annots:
                entry = _REMOVED_ANNOTATIONS.get(_name(annot.get("/Subtype"))) if _is_dict(annot) else None
                if entry is None:
                    kept.append(annot)
                else:
                    self._count(entry[0], annot)
            if len(kept) != len(annots):
                d["/Annots"] = Array(kept)
        # The same annotations reached another way (a form field, the structure tree): no payload.
        entry = _REMOVED_ANNOTATIONS.get(_name(d.get("/Subtype")))
        if entry is not None and _name(d.get("/Type")) in ("/Annot", None):
            for key in entry[1]:
                if key in d:
                    del d[key]

        for slot in ("/A", "/OpenAction", "/PA"):
            self._clean_slot(d, slot)
        additional = d.get("/AA")
        if _is_dict(additional):
            for event in list(additional.keys()):
                self._clean_slot(additional, event)
            if not list(additional.keys()):
                del d["/AA"]
        if isinstance(d.get("/S"), Name) and "/Next" in d:
            self._clean_next(d)

        kind = _banned_action(d)
        if kind is not None:
            # An action outside the slots above, or a script key anywhere: made inert where it stands.
            self._count(kind, d)
            for key in ("/S", "/JS"):
                if key in d:
                    del d[key]
        # Name trees of scripts or files found anywhere but the catalog's /Names (a damaged or crafted
        # file): no viewer should reach them, but fail closed and drop them where they stand.
        for key, kind in (("/JavaScript", "javascript"), ("/EmbeddedFiles", "embedded_files")):
            if key in d:
                self._count(kind, d.get(key))
                del d[key]
        if "/AF" in d:  # associated files (PDF 2.0): every entry is a file specification, none is needed to read
            del d["/AF"]
        if "/EF" in d:
            del d["/EF"]
            self._count("embedded_files", d)
            if "/RF" in d:
                del d["/RF"]

    def _clean_slot(self, holder: Any, key: str) -> None:
        action = holder.get(key)
        kind = _banned_action(action)
        if kind is not None:
            self._count(kind, action)
            del holder[key]

    def _clean_next(self, action: Any) -> None:
        following = action.get("/Next")
        items = list(following) if isinstance(following, Array) else [following]
        kept = []
        for item in items:
            kind = _banned_action(item)
            if kind is not None:
                self._count(kind, item)
            elif _is_dict(item) and isinstance(item.get("/S"), Name):
                kept.append(item)  # anything that is not an action cannot be checked: dropped
        if len(kept) == len(items):
            return
        if not kept:
            del action["/Next"]
        else:
            action["/Next"] = kept[0] if len(kept) == 1 else Array(kept)


def _bytes_to_deflate(stream: Any) -> int:
    """The declared length of a stream that qpdf decodes and deflates when it compresses streams, else 0.

    That is every stream without a filter or with only generalized filters (ASCII, LZW, run-length,
    Flate), except one whose filter is the name /FlateDecode, which qpdf copies as it is.
    """
    filters = stream.get("/Filter")
    if filters is None:
        chain = []
    elif isinstance(filters, Name):
        if str(filters) in ("/FlateDecode", "/Fl"):
            return 0
        chain = [str(filters)]
    elif isinstance(filters, Array):
        chain = [str(f) if isinstance(f, Name) else "" for f in filters]
    else:
        return 0  # not a filter at all: qpdf cannot decode it either
    if not all(name in _GENERALIZED_FILTERS for name in chain):
        return 0  # an image codec (DCT, JPX, JBIG2, CCITT) or an unknown filter: copied as it is
    length = stream.get("/Length")
    return length if isinstance(length, int) and length > 0 else 0


def _is_dict(obj: Any) -> bool:
    return isinstance(obj, (Dictionary, Stream))


def _name(obj: Any) -> str | None:
    return str(obj) if isinstance(obj, Name) else None


def _banned_action(action: Any) -> str | None:
    """The kind of active content an action is (``javascript``, ``actions``, ``multimedia``), or None if harmless."""
    if not _is_dict(action):
        return None  # e.g. an /OpenAction that is a destination array
    if "/JS" in action:
        return "javascript"
    subtype = _name(action.get("/S"))
    if subtype == "/JavaScript":
        return "javascript"
    if subtype in _EXTERNAL_ACTIONS:
        return "actions"
    if subtype in _MULTIMEDIA_ACTIONS:
        return "multimedia"
    if subtype == "/URI" and not _is_web_link(action.get("/URI")):
        return "actions"
    return None


def _is_web_link(uri: Any) -> bool:
    if not isinstance(uri, (pikepdf.String, str, bytes)):
        return False
    text = bytes(uri).decode("latin-1") if not isinstance(uri, str) else uri
    # Browsers skip leading spaces and control characters before the scheme; so do we.
    return _WEB_LINK.match(text.lstrip("".join(map(chr, range(33))))) is not None


def _name_tree_size(tree: Any) -> int:
    """How many entries a name tree holds; at least 1, so a tree we cannot read still counts as one thing.

    Counted by hand: qpdf's name-tree helper warns about odd trees, which would read as a repair.
    """
    count, seen, stack = 0, set(), [tree]
    while stack:
        node = stack.pop()
        if not _is_dict(node):
            continue
        if node.is_indirect:
            if node.objgen in seen:
                continue
            seen.add(node.objgen)
        names, kids = node.get("/Names"), node.get("/Kids")
        if isinstance(names, Array):
            count += len(names) // 2
        if isinstance(kids, Array):
            stack.extend(kids)
    return max(1, count)
