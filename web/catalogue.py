"""Console pages of a catalogue: an organisation's templates (appointment types, medication types, information packs).

One call of :func:`catalogue_pages` serves a :class:`~careshare.core.templates.Templates` under
``path``: the list with a form to create one, each template's page (renaming it, its files, an
upload to the library, the library's files to tick and attach) and removing a file. Attaching goes through
:meth:`Templates.attach <careshare.core.templates.Templates.attach>`, so a file the target refuses
(a video for an information pack) comes back as the target's own problem, shown on the page.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from careshare.core.files import list_files
from careshare.core.models import Principal
from careshare.core.runtime import Careshare
from careshare.core.templates import MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, Templates
from careshare.web.console import CONSOLE, NavEntry, console_page, form_data, form_text, form_values, see_other
from careshare.web.guards import clinician
from careshare.web.views import invalid

__all__ = ["catalogue_pages"]

#: The templates a list page shows, newest first ("Older ..." links the next page).
PAGE = 50
#: The library files a template's page offers to attach: a clinic's working set, newest first.
CHOICES = 100


def _fields(fields: dict[str, Any], noun: str) -> tuple[str, str]:
    name, description = form_text(fields, "name"), form_text(fields, "description")
    errors = [
        *([f"$.name: give the {noun} a name"] if not name else []),
        *([f"$.name: at most {MAX_NAME_CHARS} characters"] if len(name) > MAX_NAME_CHARS else []),
        *(
            [f"$.description: at most {MAX_DESCRIPTION_CHARS} characters"]
            if len(description) > MAX_DESCRIPTION_CHARS
            else []
        ),
    ]
    if errors:
        raise invalid(*errors)
    return name, description


def catalogue_pages(
    templates: Templates, *, path: str, noun: str, plural: str, about: str, order: int
) -> tuple[list[Any], NavEntry]:
    """The console handlers of ``templates`` under ``path`` (relative to /console) and their sidebar entry.

    ``noun`` and ``plural`` name a template in lower case ("appointment type", "appointment types");
    its last word is the short name of buttons and element ids ("Create type", ``#type-attachments``).
    ``about`` is the list page's help sentence. Every handler is for clinicians of the organisation.
    """
    short = noun.rsplit(" ", 1)[-1]
    title, named = plural[:1].upper() + plural[1:], noun[:1].upper() + noun[1:]
    texts = {"base": path, "noun": noun, "plural": plural, "about": about, "short": short}
    guard = {"principal": Provide(clinician)}

    @get(path, dependencies=guard)
    async def catalogue(
        cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
    ) -> Template:
        async with cs.reader.connect() as conn:
            found, next_cursor = await templates.page(conn, principal, cursor=cursor, limit=PAGE)
        return console_page(
            "console/catalogue.html",
            title=title,
            items=found,
            next_cursor=next_cursor,
            max_name=MAX_NAME_CHARS,
            max_description=MAX_DESCRIPTION_CHARS,
            **texts,
        )

    @post(path, status_code=303, dependencies=guard)
    async def create(
        request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
    ) -> Redirect:
        name, description = _fields(await form_data(request), noun)
        async with cs.engine.begin() as conn:
            made = await templates.create(conn, principal, name=name, description=description)
        return see_other(f"{path}/{made.id}", f"{named} created. Attach its files next.")

    @get(f"{path}/{{tid:str}}", dependencies=guard)
    async def show(
        cs: NamedDependency[Careshare], principal: NamedDependency[Principal], tid: FromPath[str]
    ) -> Template:
        """The template's files, an upload to the library, and the library's other files to attach."""
        async with cs.reader.connect() as conn:
            item = await templates.get(conn, principal, tid)
            library, _ = await list_files(conn, principal, owner_type="library", patient_id=None, limit=CHOICES)
        attached = {a.file_id for a in item.attachments}
        return console_page(
            "console/catalogue_item.html",
            title=item.name,
            item=item,
            library=[f for f in library if f.id not in attached],
            upload_url=f"{CONSOLE}/api/v1/library/files",
            upload_label="Upload a file to the library",
            max_name=MAX_NAME_CHARS,
            max_description=MAX_DESCRIPTION_CHARS,
            **texts,
        )

    @post(f"{path}/{{tid:str}}", status_code=303, dependencies=guard)
    async def edit(
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        tid: FromPath[str],
    ) -> Redirect:
        """Rename the template or change its description (its files stay as they are)."""
        name, description = _fields(await form_data(request), noun)
        async with cs.engine.begin() as conn:
            await templates.update(conn, principal, tid, name=name, description=description)
        return see_other(f"{path}/{tid}", f"{named} saved.")

    # ``/attach`` is where the information packs' form first posted; both addresses attach.
    @post([f"{path}/{{tid:str}}/attachments", f"{path}/{{tid:str}}/attach"], status_code=303, dependencies=guard)
    async def attach(
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        tid: FromPath[str],
    ) -> Redirect:
        """Attach the ticked library files, or none of them with the first rule of the target broken."""
        file_ids = [v for v in form_values(await form_data(request), "file_id") if v]
        if not file_ids:
            raise invalid("$.file_id: tick the library files to attach")
        async with cs.engine.begin() as conn:
            await templates.attach(conn, cs.plugins, principal, tid, file_ids)
        count = len(file_ids)
        return see_other(f"{path}/{tid}", f"{count} file{'s' if count != 1 else ''} attached.")

    @post(f"{path}/{{tid:str}}/attachments/{{aid:str}}/detach", status_code=303, dependencies=guard)
    async def detach(
        cs: NamedDependency[Careshare], principal: NamedDependency[Principal], tid: FromPath[str], aid: FromPath[str]
    ) -> Redirect:
        """Remove a file: items made from the template later go without it, earlier ones keep theirs."""
        async with cs.engine.begin() as conn:
            await templates.detach(conn, principal, tid, aid)
        return see_other(f"{path}/{tid}", f"File removed from the {short}.")

    return [catalogue, create, show, edit, attach, detach], NavEntry(title, path, order=order)
