"""The letters channel in the console: a patient's letters, a draft to edit, attach and send, the patient's letters.

The handlers call the plugin's own functions (those its API routes call); refusals are the
plugin's and core's problems, which the console shows on the form's page with their sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from careshare.core.files import list_files
from careshare.core.patients import get_patient
from careshare.core.sharing import revocations
from careshare.plugins.letters import TARGET, mail
from careshare.plugins.letters.letters import (
    add_attachment,
    create_letter,
    create_template,
    edit_letter,
    get_letter,
    get_settings,
    list_letters,
    list_templates,
    remove_attachment,
    send_letter,
)
from careshare.plugins.letters.routes import MAX_BODY_CHARS, MAX_NAME_CHARS, MAX_SUBJECT_CHARS, letter_json, text_errors
from careshare.plugins.letters.templating import MAX_TEMPLATE_CHARS, VARIABLES
from careshare.web import (
    CONSOLE,
    ConsolePages,
    NavEntry,
    clinician,
    console_page,
    form_data,
    form_text,
    form_values,
    invalid,
    patient,
    see_other,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Patient, Principal
    from careshare.core.runtime import Careshare

__all__ = ["console_pages"]

NAME = "letters"
TEMPLATES = Path(__file__).parent / "console_templates"
#: How many letters, templates and files one page lists.
PAGE = 50
CLINICIAN = {"principal": Provide(clinician)}
PATIENT = {"principal": Provide(patient)}


def _check_title_and_body(subject: str, body: str) -> None:
    """The API's field rules, the fields named as the console's form names them."""
    errors = text_errors(subject, "title", MAX_SUBJECT_CHARS, required=True)
    errors += text_errors(body, "body", MAX_BODY_CHARS, required=False)
    if errors:
        raise invalid(*errors)


def _api(url: str | None) -> str | None:
    """An API URL of the letter (its PDF, an attachment) as the console's session reaches it."""
    return f"{CONSOLE}/api{url}" if url else None


async def _view(conn: AsyncConnection, cs: Careshare, row: Any, *, for_clinician: bool) -> dict[str, Any]:
    shown = await letter_json(conn, cs, row, for_clinician=for_clinician)
    shown["pdf_url"] = _api(shown["pdf"]["url"]) if shown["pdf"] else None
    for attachment in shown["attachments"]:
        attachment["href"] = _api(attachment["url"])
    return shown


def _email_refusal(cs: Careshare, who: Patient) -> str | None:
    """Why the letter cannot go by email (the sentence the send form shows), or None when it can."""
    if not cs.settings.get(mail.SMTP_URL):
        return "Email is not set up on this server, so the letter goes to the patient's app only."
    if not who.email:
        return "This patient has no email address, so the letter goes to the patient's app only."
    return None


# -- the clinician's pages -------------------------------------------------------------------------


@get("/patients/{pid:str}/letters", dependencies=CLINICIAN)
async def patient_letters(
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
    cursor: FromQuery[str | None] = None,
) -> Template:
    async with cs.reader.connect() as conn:
        who = await get_patient(conn, principal, pid)
        rows, next_cursor = await list_letters(conn, principal, pid, status=None, cursor=cursor, limit=PAGE)
        shown = [await _view(conn, cs, row, for_clinician=True) for row in rows]
        templates, _ = await list_templates(conn, principal, cursor=None, limit=PAGE)
    return console_page(
        "letters/patient_letters.html",
        title=f"Letters of {who.name}",
        patient=who,
        letters=shown,
        next_cursor=next_cursor,
        templates=templates,
    )


@post("/patients/{pid:str}/letters", status_code=303, dependencies=CLINICIAN)
async def create(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
) -> Redirect:
    """A new draft: from the template picked (what is left blank is the template filled in), or as typed."""
    fields = await form_data(request)
    template_id = form_text(fields, "template_id") or None
    subject = form_text(fields, "title")
    held = fields.get("body")
    body = held if isinstance(held, str) else ""
    if template_id is None:
        _check_title_and_body(subject, body)
    async with cs.engine.begin() as conn:
        who = await get_patient(conn, principal, pid)
        row = await create_letter(
            conn,
            principal,
            who,
            template_id=template_id,
            subject=subject or None,
            body=body if body.strip() else None,
            check=_check_title_and_body,
        )
    return see_other(f"/letters/{row.id}", "Draft saved.")


@get("/letters/{lid:str}", dependencies=CLINICIAN)
async def letter_page(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], lid: FromPath[str]
) -> Template:
    """A draft to edit, attach files to and send; a sent letter as it went, with its email's status."""
    async with cs.reader.connect() as conn:
        row = await get_letter(conn, principal, lid)
        who = await get_patient(conn, principal, row.patient_id)
        shown = await _view(conn, cs, row, for_clinician=True)
        choices: list[Any] = []
        library: list[Any] = []
        if row.status == "draft":
            attached = {a["file_id"] for a in shown["attachments"]}
            own, _ = await list_files(conn, principal, owner_type="patient", patient_id=who.id, limit=PAGE)
            shared, _ = await list_files(conn, principal, owner_type="library", patient_id=None, limit=PAGE)
            choices = [f for f in own if f.status != "rejected" and f.id not in attached]
            library = [f for f in shared if f.status != "rejected" and f.id not in attached]
        limit = (await get_settings(conn, principal.org)).limit()
        withdrawn, _ = await revocations(conn, principal.org, TARGET.name, [row.id])
    return console_page(
        "letters/letter.html",
        title=row.subject,
        patient=who,
        letter=shown,
        choices=choices,
        library=library,
        limit=limit,
        email_refusal=_email_refusal(cs, who),
        letter_target=TARGET.name,
        revoked=withdrawn[row.id].to_json() if row.id in withdrawn else None,
        upload_url=f"{CONSOLE}/api/v1/patients/{who.id}/files",
        tus_url=f"{CONSOLE}/api/v1/patients/{who.id}/uploads",
    )


@post("/letters/{lid:str}", status_code=303, dependencies=CLINICIAN)
async def save(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    lid: FromPath[str],
) -> Redirect:
    fields = await form_data(request)
    subject = form_text(fields, "title")
    held = fields.get("body")
    body = held if isinstance(held, str) else ""
    _check_title_and_body(subject, body)
    async with cs.engine.begin() as conn:
        await edit_letter(conn, principal, lid, subject=subject, body=body)
    return see_other(f"/letters/{lid}", "Draft saved.")


@post("/letters/{lid:str}/attach", status_code=303, dependencies=CLINICIAN)
async def attach(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    lid: FromPath[str],
) -> Redirect:
    """Attach the files ticked (the patient's or the library's), all or none."""
    picked = list(dict.fromkeys(form_values(await form_data(request), "file_id")))
    if not picked:
        raise invalid("$.file_id: tick the files to attach, or upload one first")
    async with cs.engine.begin() as conn:
        for file_id in picked:
            await add_attachment(conn, cs.plugins, principal, TARGET, lid, file_id)
    return see_other(f"/letters/{lid}", "File attached." if len(picked) == 1 else f"{len(picked)} files attached.")


@post("/letters/{lid:str}/attachments/{aid:str}/detach", status_code=303, dependencies=CLINICIAN)
async def detach(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], lid: FromPath[str], aid: FromPath[str]
) -> Redirect:
    async with cs.engine.begin() as conn:
        await remove_attachment(conn, principal, TARGET, lid, aid)
    return see_other(f"/letters/{lid}", "File removed from the letter (it stays in the patient's files).")


@post("/letters/{lid:str}/send", status_code=303, dependencies=CLINICIAN)
async def send(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    lid: FromPath[str],
) -> Redirect:
    email = form_text(await form_data(request), "email") == "yes"
    await send_letter(cs, principal, TARGET, lid, email=email)
    return see_other(f"/letters/{lid}", "Letter sent." + (" The email is on its way." if email else ""))


@get("/letter-templates", dependencies=CLINICIAN)
async def templates_page(cs: NamedDependency[Careshare], principal: NamedDependency[Principal]) -> Template:
    async with cs.reader.connect() as conn:
        rows, _ = await list_templates(conn, principal, cursor=None, limit=PAGE)
    return console_page("letters/templates.html", title="Letter templates", templates=rows, variables=sorted(VARIABLES))


@post("/letter-templates", status_code=303, dependencies=CLINICIAN)
async def new_template(
    request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
) -> Redirect:
    """Save a template once it fills in (``template-invalid`` names the line otherwise)."""
    fields = await form_data(request)
    name, subject = form_text(fields, "name"), str(fields.get("subject") or "")
    held = fields.get("body")
    body = held if isinstance(held, str) else ""
    errors = text_errors(name, "name", MAX_NAME_CHARS, required=True)
    errors += text_errors(subject, "subject", MAX_TEMPLATE_CHARS, required=True)
    errors += text_errors(body, "body", MAX_TEMPLATE_CHARS, required=False)
    if errors:
        raise invalid(*errors)
    async with cs.engine.begin() as conn:
        await create_template(conn, principal, name=name, subject=subject, body=body)
    return see_other("/letter-templates", "Template saved.")


# -- the patient's view ----------------------------------------------------------------------------


@get("/me/letters", dependencies=PATIENT)
async def my_letters(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        me = await get_patient(conn, principal, principal.patient or "")
        rows, next_cursor = await list_letters(conn, principal, me.id, status="sent", cursor=cursor, limit=PAGE)
        shown = [await _view(conn, cs, row, for_clinician=False) for row in rows]
    return console_page("letters/my_letters.html", title="Letters", letters=shown, next_cursor=next_cursor)


@get("/me/letters/{lid:str}", dependencies=PATIENT)
async def my_letter(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], lid: FromPath[str]
) -> Template:
    async with cs.reader.connect() as conn:
        row = await get_letter(conn, principal, lid)
        shown = await _view(conn, cs, row, for_clinician=False)
    return console_page("letters/my_letter.html", title=row.subject, letter=shown)


def console_pages() -> list[ConsolePages]:
    return [
        ConsolePages(
            NAME,
            routes=[
                patient_letters,
                create,
                letter_page,
                save,
                attach,
                detach,
                send,
                templates_page,
                new_template,
                my_letters,
                my_letter,
            ],
            templates=TEMPLATES,
            nav=[
                NavEntry("Letters", "/patients/{pid}/letters", place="patient", quick_action="Create letter", order=40),
                NavEntry("Letter templates", "/letter-templates", order=40),
                NavEntry("Letters", "/me/letters", audience="patient", order=40),
            ],
            item_pages={TARGET.name: "/me/letters/{item_id}"},
        )
    ]
