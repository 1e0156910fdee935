"""HTTP routes of the consents channel: clinicians build packs and forms and ask; patients read and decide."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from careshare.core.problems import Problem
from careshare.plugins.consents.consents import (
    PACKS,
    ConsentForm,
    ConsentRequest,
    Decision,
    create_form,
    decide,
    get_consent,
    get_form,
    list_consents,
    list_forms,
    request_consent,
)
from careshare.web import (
    INVALID_REQUEST,
    NON_BLANK,
    attachment_json,
    clinician,
    documented,
    limits,
    page_route,
    parse_body,
    patient,
    show_route,
    template_json,
    template_routes,
)

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["routes"]

MAX_NAME_CHARS = 200
#: Packs a form may name: each is something the patient is asked to read first.
MAX_FORM_PACKS = 20


@attrs.frozen
class NewForm:
    name: str = attrs.field(metadata=limits(maxLength=MAX_NAME_CHARS, pattern=NON_BLANK))
    information_pack_ids: list[str] = attrs.field(
        metadata=limits(minItems=1, maxItems=MAX_FORM_PACKS, uniqueItems=True)
    )


@attrs.frozen
class NewConsent:
    form_id: str


@attrs.frozen
class Answer:
    decision: Decision


def _name(value: str, errors: list[str]) -> str:
    name = value.strip()
    if not name:
        errors.append("$.name: must not be blank")
    elif len(value) > MAX_NAME_CHARS:
        errors.append(f"$.name: at most {MAX_NAME_CHARS} characters")
    return name


def _refuse(errors: list[str]) -> None:
    if errors:
        raise Problem(INVALID_REQUEST, errors=errors)


def form_json(f: ConsentForm) -> dict[str, Any]:
    return {
        "id": f.id,
        "name": f.name,
        "information_pack_ids": [p.id for p in f.packs],
        "information_packs": [template_json(p) for p in f.packs],
        "created_by": f.created_by,
        "created_at": f.created_at.isoformat(),
    }


def consent_json(c: ConsentRequest, *, for_clinician: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": c.id,
        "patient_id": c.patient_id,
        "form": {"id": c.form_id, "name": c.form_name},
        "status": c.status,
        "requested_at": c.requested_at.isoformat(),
        "decided_at": c.decided_at.isoformat() if c.decided_at else None,
        "information_packs": [
            {
                "id": p.id,
                "information_pack_id": p.pack_id,
                "name": p.name,
                "description": p.description,
                "attachments": [attachment_json(a) for a in p.attachments],
            }
            for p in c.packs
        ],
    }
    if for_clinician:
        shown.update(requested_by=c.requested_by, decided_by=c.decided_by)
    return shown


class ConsentFormController(Controller):
    path = "/v1/consent-forms"
    dependencies = {"principal": Provide(clinician)}
    tags = ["consents"]

    @post(
        "/",
        status_code=201,
        operation_class=documented(
            NewForm, links={"form": ("GET", "/v1/consent-forms/{form_id}", {"form_id": "$response.body#/id"})}
        ),
    )
    async def create(
        self, request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
    ) -> dict[str, Any]:
        """A consent form ``{"name", "information_pack_ids"}`` naming packs of the organisation, in reading order."""
        body = await parse_body(request, NewForm)
        errors: list[str] = []
        name = _name(body.name, errors)
        pack_ids = body.information_pack_ids
        if not 1 <= len(pack_ids) <= MAX_FORM_PACKS:
            errors.append(f"$.information_pack_ids: name between 1 and {MAX_FORM_PACKS} information packs")
        elif len(set(pack_ids)) != len(pack_ids):
            errors.append("$.information_pack_ids: a pack is listed twice")
        _refuse(errors)
        async with cs.engine.begin() as conn:
            return form_json(await create_form(conn, principal, name=name, pack_ids=pack_ids))

    list_all = page_route("/", list_forms, form_json, of="organisation")

    show = show_route("/{form_id:str}", get_form, form_json)


class PatientConsentController(Controller):
    path = "/v1/patients/{pid:str}/consents"
    dependencies = {"principal": Provide(clinician)}
    tags = ["consents"]

    @post(
        "/",
        status_code=201,
        operation_class=documented(
            NewConsent, links={"consent": ("GET", "/v1/consents/{cid}", {"cid": "$response.body#/id"})}
        ),
    )
    async def ask(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
    ) -> dict[str, Any]:
        """Ask the patient for consent ``{"form_id"}``; they are notified and read the packs as they are now."""
        body = await parse_body(request, NewConsent)
        async with cs.engine.begin() as conn:
            asked = await request_consent(conn, cs.plugins, principal, pid, body.form_id)
        return consent_json(asked, for_clinician=True)

    list_for_patient = page_route("/", list_consents, partial(consent_json, for_clinician=True), of="patient")


class ConsentController(Controller):
    path = "/v1/consents"
    dependencies = {"principal": Provide(clinician)}
    tags = ["consents"]

    show = show_route("/{cid:str}", get_consent, partial(consent_json, for_clinician=True))


class MyConsentController(Controller):
    path = "/v1/me/consents"
    dependencies = {"principal": Provide(patient)}
    tags = ["me"]

    #: The consents the signed-in patient was asked for, newest first, each with its packs and files.
    mine = page_route("/", list_consents, partial(consent_json, for_clinician=False), of="caller")

    show_mine = show_route("/{cid:str}", get_consent, partial(consent_json, for_clinician=False))

    @post("/{cid:str}/decision", status_code=200, operation_class=documented(Answer, status=200))
    async def decide(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        cid: FromPath[str],
    ) -> dict[str, Any]:
        """Answer ``{"decision": "given" | "declined"}``, once (the same answer again changes nothing)."""
        body = await parse_body(request, Answer)
        async with cs.engine.begin() as conn:
            return consent_json(await decide(conn, cs.plugins, principal, cid, body.decision), for_clinician=False)


def routes() -> list[type[Controller]]:
    return [
        template_routes(PACKS, base="/v1/information-packs", tag="consents"),
        ConsentFormController,
        PatientConsentController,
        ConsentController,
        MyConsentController,
    ]
