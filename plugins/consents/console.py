"""The consents channel in the console: information packs and consent forms for clinicians, consents for patients.

Each page calls the channel's own rules (:mod:`.consents`, the packs' :class:`~careshare.core.templates.Templates`),
as the API's routes do; a refused action (a video for a pack) comes back as the rule's own problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from careshare.core.patients import get_patient
from careshare.plugins.consents import CONSENT_TARGET, PACK_COPY_TARGET
from careshare.plugins.consents.consents import (
    PACKS,
    create_form,
    decide,
    get_consent,
    list_consents,
    list_forms,
    request_consent,
)
from careshare.plugins.consents.routes import MAX_FORM_PACKS, MAX_NAME_CHARS
from careshare.web import (
    CONSOLE,
    ConsolePages,
    NavEntry,
    catalogue_pages,
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
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare
    from careshare.core.targets import Attachment
    from careshare.plugins.consents.consents import ConsentRequest, Decision

__all__ = ["console_pages"]

PAGE = 25
#: The choices a form offers (library files, packs): a clinic's working set, newest first.
CHOICES = 100
STATUS = {"requested": "Pending", "given": "Given", "declined": "Declined"}
#: The buttons of the patient's answer, by the value each posts.
DECISIONS: dict[str, Decision] = {"given": "given", "declined": "declined"}
CLINICIAN = {"principal": Provide(clinician)}
PATIENT = {"principal": Provide(patient)}


def _name(fields: dict[str, Any], errors: list[str]) -> str:
    name = form_text(fields, "name")
    if not name:
        errors.append("$.name: give it a name")
    elif len(name) > MAX_NAME_CHARS:
        errors.append(f"$.name: at most {MAX_NAME_CHARS} characters")
    return name


def attachment_view(a: Attachment) -> dict[str, Any]:
    """An attached file as a page links it: under the console's mirror of the API."""
    return {"attachment": a, "url": f"{CONSOLE}/api/v1/attachments/{a.id}/content"}


# -- consent forms (clinicians) --------------------------------------------------------------------


@get("/consent-forms", dependencies=CLINICIAN)
async def forms(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        found, next_cursor = await list_forms(conn, principal, cursor=cursor, limit=PAGE)
        choices, _ = await PACKS.page(conn, principal, cursor=None, limit=CHOICES)
    return console_page(
        "consents/forms.html", title="Consent forms", forms=found, next_cursor=next_cursor, packs=choices
    )


@post("/consent-forms", status_code=303, dependencies=CLINICIAN)
async def create_consent_form(
    request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
) -> Redirect:
    fields = await form_data(request)
    errors: list[str] = []
    name = _name(fields, errors)
    pack_ids = list(dict.fromkeys(v for v in form_values(fields, "information_pack_id") if v))
    if not 1 <= len(pack_ids) <= MAX_FORM_PACKS:
        errors.append(f"$.information_pack_id: tick between 1 and {MAX_FORM_PACKS} information packs")
    if errors:
        raise invalid(*errors)
    async with cs.engine.begin() as conn:
        await create_form(conn, principal, name=name, pack_ids=pack_ids)
    return see_other("/consent-forms", "Consent form created.")


# -- a patient's consents (clinicians) -------------------------------------------------------------


@get("/patients/{pid:str}/consents", dependencies=CLINICIAN)
async def patient_consents(
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
    cursor: FromQuery[str | None] = None,
) -> Template:
    async with cs.reader.connect() as conn:
        who = await get_patient(conn, principal, pid)
        consents, next_cursor = await list_consents(conn, principal, pid, cursor=cursor, limit=PAGE)
        choices, _ = await list_forms(conn, principal, cursor=None, limit=CHOICES)
    return console_page(
        "consents/patient.html",
        title=f"Consents of {who.name}",
        patient=who,
        consents=consents,
        next_cursor=next_cursor,
        forms=choices,
        status=STATUS,
    )


@post("/patients/{pid:str}/consents", status_code=303, dependencies=CLINICIAN)
async def ask(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    pid: FromPath[str],
) -> Redirect:
    form_id = form_text(await form_data(request), "form_id")
    if not form_id:
        raise invalid("$.form_id: choose the consent form to ask with")
    async with cs.engine.begin() as conn:
        await request_consent(conn, cs.plugins, principal, pid, form_id)
    return see_other(f"/patients/{pid}/consents", "Consent requested.")


# -- the patient's view ----------------------------------------------------------------------------


def _consent_view(c: ConsentRequest) -> dict[str, Any]:
    return {
        "consent": c,
        "packs": [{"pack": p, "files": [attachment_view(a) for a in p.attachments]} for p in c.packs],
    }


@get("/me/consents", dependencies=PATIENT)
async def my_consents(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cursor: FromQuery[str | None] = None
) -> Template:
    async with cs.reader.connect() as conn:
        consents, next_cursor = await list_consents(conn, principal, principal.patient or "", cursor=cursor, limit=PAGE)
    return console_page(
        "consents/mine.html",
        title="Consents",
        consents=[_consent_view(c) for c in consents],
        next_cursor=next_cursor,
        status=STATUS,
    )


@get("/me/consents/{cid:str}", dependencies=PATIENT)
async def my_consent(
    cs: NamedDependency[Careshare], principal: NamedDependency[Principal], cid: FromPath[str]
) -> Template:
    async with cs.reader.connect() as conn:
        consent = await get_consent(conn, principal, cid)
    return console_page(
        "consents/mine.html",
        title=consent.form_name,
        consents=[_consent_view(consent)],
        next_cursor=None,
        status=STATUS,
        single=True,
    )


@post("/me/consents/{cid:str}/decision", status_code=303, dependencies=PATIENT)
async def my_decision(
    request: Request[Any, Any, Any],
    cs: NamedDependency[Careshare],
    principal: NamedDependency[Principal],
    cid: FromPath[str],
) -> Redirect:
    """The patient's answer, once: ``given`` or ``declined`` (the plugin refuses a change of mind)."""
    decision = DECISIONS.get(form_text(await form_data(request), "decision"))
    if decision is None:
        raise invalid("$.decision: choose Give consent or Decline")
    async with cs.engine.begin() as conn:
        await decide(conn, cs.plugins, principal, cid, decision)
    return see_other(
        f"/me/consents/{cid}",
        "Thank you: your consent is recorded." if decision == "given" else "Your answer is recorded.",
    )


def console_pages() -> list[ConsolePages]:
    catalogue, packs_entry = catalogue_pages(
        PACKS,
        path="/information-packs",
        noun="information pack",
        plural="information packs",
        about="An information pack is what a patient reads before a consent: leaflets as PDFs, images, DICOM. Videos cannot go in a pack.",
        order=45,
    )
    return [
        ConsolePages(
            name="consents",
            routes=[
                *catalogue,
                forms,
                create_consent_form,
                patient_consents,
                ask,
                my_consents,
                my_consent,
                my_decision,
            ],
            templates=Path(__file__).parent / "console_templates",
            nav=[
                packs_entry,
                NavEntry("Consent forms", "/consent-forms", order=46),
                NavEntry(
                    "Consents", "/patients/{pid}/consents", place="patient", quick_action="Request consent", order=60
                ),
                NavEntry("Consents", "/me/consents", audience="patient", order=60),
            ],
            item_pages={CONSENT_TARGET: "/me/consents/{item_id}", PACK_COPY_TARGET: "/me/consents"},
            clinic_pages={CONSENT_TARGET: "/patients/{patient_id}/consents"},
        )
    ]
