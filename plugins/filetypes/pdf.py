"""PDF handler (first cut): identify PDFs, refuse ones that need a password to open."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pikepdf

from careshare import hookimpl
from careshare.core.models import Identification, Processed, RenditionOutput
from careshare.core.problems import Problem, ProblemType

if TYPE_CHECKING:
    from careshare.core.models import Source

__all__ = ["KIND", "MEDIA_TYPE", "careshare_identify", "careshare_process"]

KIND = "pdf"
MEDIA_TYPE = "application/pdf"
HANDLER_VERSION = f"1 (pikepdf {pikepdf.__version__})"
# The PDF spec lets the header start anywhere in the first 1024 bytes.
_HEADER_WINDOW = 1024

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


@hookimpl
def careshare_identify(head: bytes) -> Identification | None:
    if b"%PDF-" in head[:_HEADER_WINDOW]:
        return Identification(kind=KIND, media_type=MEDIA_TYPE)
    return None


@hookimpl
def careshare_process(source: Source, kind: str) -> Processed | None:
    if kind != KIND:
        return None
    try:
        pdf = pikepdf.open(source.path)
    except pikepdf.PasswordError:
        # Not a PdfError subclass: it must be caught on its own.
        raise Problem(PDF_PASSWORD_PROTECTED) from None
    except pikepdf.PdfError:
        raise Problem(PDF_UNREADABLE) from None
    with pdf:
        metadata: dict[str, Any] = {"pages": len(pdf.pages), "pdf_version": pdf.pdf_version}
        if pdf.is_encrypted:
            metadata["encrypted-owner-only"] = True
    return Processed(
        handler="pdf",
        handler_version=HANDLER_VERSION,
        metadata=metadata,
        renditions=(RenditionOutput(role="shareable", media_type=MEDIA_TYPE),),
    )
