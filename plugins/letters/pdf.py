"""The letter as a PDF: an HTML layout (Jinja2, autoescaped) printed by WeasyPrint.

Every text in the layout is escaped where it becomes HTML, so a patient called ``<img src=...>``
is printed as those characters, never as markup; and WeasyPrint fetches nothing (no file, no
network), so no text in a letter can make the server read a resource.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import jinja2

if TYPE_CHECKING:
    from datetime import date

__all__ = ["LetterLayout", "render_pdf"]

TEMPLATES = Path(__file__).parent / "templates"
LAYOUT = "letter.html.j2"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
_environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True)
#: One letter at a time per process: Pango and fontconfig are not reliably thread-safe.
_printing = threading.Lock()


@attrs.frozen
class LetterLayout:
    """What goes on the page."""

    organisation: str
    date: date
    patient_name: str
    external_id: str
    clinician: str
    subject: str
    body: str
    enclosures: tuple[str, ...] = ()


class _NoFetching:
    """A WeasyPrint URL fetcher that fetches nothing: the layout needs no outside resource."""

    _fail_on_errors = False  # read by WeasyPrint when a fetch fails: a warning, not a stop

    def __call__(self, url: str, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("letters fetch no resources")

    fetch = __call__


def html_of(layout: LetterLayout) -> str:
    paragraphs = [p.strip("\n") for p in _PARAGRAPH_BREAK.split(layout.body.replace("\r\n", "\n")) if p.strip()]
    return _environment.get_template(LAYOUT).render(
        organisation=layout.organisation,
        date=f"{layout.date.day} {layout.date:%B %Y}",
        patient_name=layout.patient_name,
        external_id=layout.external_id,
        clinician=layout.clinician,
        subject=layout.subject,
        paragraphs=paragraphs,
        enclosures=layout.enclosures,
    )


def render_pdf(layout: LetterLayout, path: Path) -> None:
    """Write the letter's PDF to ``path`` (blocking: run it in a worker thread)."""
    import weasyprint  # slow to import: only when a letter is sent

    html = weasyprint.HTML(string=html_of(layout), base_url=None, url_fetcher=_NoFetching())
    with _printing:
        html.write_pdf(path)
