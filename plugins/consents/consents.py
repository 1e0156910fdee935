"""Information packs, consent forms and consent requests: the channel's rules, in the caller's transaction.

Packs hold files (attachments of target ``information-pack``: library files, no video); forms name
packs. Asking a patient copies every pack of the form onto the request as it is then, and shares
the request (notifying the patient) and each copy. The patient decides once: ``given`` or
``declined``; the same answer again changes nothing, another answer is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.ids import new_id
from careshare.core.notifications import notify_clinic
from careshare.core.patients import get_patient
from careshare.core.problems import NOT_FOUND, Problem, ProblemType
from careshare.core.sharing import patient_attachments, share, visible_to_patient
from careshare.core.targets import attachments_of
from careshare.core.templates import Template, Templates
from careshare.plugins.consents import CHANNEL, CONSENT_TARGET, PACK_COPY_TARGET, TARGET
from careshare.plugins.consents.tables import (
    consent_form_packs,
    consent_forms,
    consent_request_packs,
    consent_requests,
    information_packs,
)

if TYPE_CHECKING:
    from datetime import datetime

    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal
    from careshare.core.targets import Attachment

__all__ = [
    "CONSENT_ALREADY_DECIDED",
    "CONSENT_FORM_NOT_FOUND",
    "CONSENT_TITLE",
    "INFORMATION_PACK_NOT_FOUND",
    "PACKS",
    "PACK_TITLE",
    "ConsentForm",
    "ConsentRequest",
    "Decision",
    "InformationPack",
    "RequestedPack",
    "create_form",
    "decide",
    "get_consent",
    "get_form",
    "list_consents",
    "list_forms",
    "request_consent",
]

#: What the patient's inbox, archive and push gateways show: never the form's or a pack's name.
CONSENT_TITLE = "Your care team asks for your consent"
PACK_TITLE = "Information for your consent"
NOTIFICATION_KIND = "consent"
#: The clinic's notification of the patient's answer (careshare.core.notifications.notify_clinic).
CLINIC_KIND = "consent.decided"
CLINIC_TITLE = "A patient answered a consent request"

Decision = Literal["given", "declined"]

INFORMATION_PACK_NOT_FOUND = ProblemType(
    "information-pack-not-found",
    422,
    "Information pack not found",
    "The consent form names an information pack your organisation does not have. Create the pack first, or leave it out.",
)
CONSENT_FORM_NOT_FOUND = ProblemType(
    "consent-form-not-found",
    422,
    "Consent form not found",
    "Your organisation has no consent form with this id. Pick one from GET /v1/consent-forms.",
)
CONSENT_ALREADY_DECIDED = ProblemType(
    "consent-already-decided",
    409,
    "Consent already answered",
    "You have already answered this consent request, and an answer is not changed afterwards."
    " If you have changed your mind, tell your care team: they can ask you again.",
)


#: A pack as it is now (a template of the information-pack target).
InformationPack = Template


@attrs.frozen
class ConsentForm:
    id: str
    org: str
    name: str
    created_by: str
    created_at: datetime
    packs: tuple[InformationPack, ...] = ()


@attrs.frozen
class RequestedPack:
    """A pack as it was when the patient was asked: its own name, description and copies of the files."""

    id: str
    pack_id: str
    name: str
    description: str
    attachments: tuple[Attachment, ...]


@attrs.frozen
class ConsentRequest:
    id: str
    org: str
    patient_id: str
    form_id: str
    form_name: str
    requested_by: str
    requested_at: datetime
    status: Literal["requested", "given", "declined"]
    decided_by: str | None
    decided_at: datetime | None
    packs: tuple[RequestedPack, ...] = ()


async def _page(
    conn: AsyncConnection, table: sa.Table, where: list[sa.ColumnElement[bool]], cursor: str | None, limit: int
) -> tuple[list[sa.Row[object]], str | None]:
    """A page of ``table``'s rows, newest first, and the cursor of the next page (None at the end)."""
    return await db.newest_first(conn, sa.select(table).where(*where), table.c.id, cursor=cursor, limit=limit)


async def _one(
    conn: AsyncConnection, table: sa.Table, row_id: str, org: str, *, for_update: bool = False
) -> sa.Row[object]:
    """The row of the organisation's template ``row_id``, else ``not-found``."""
    query = sa.select(table).where(table.c.id == row_id, table.c.org_id == org)
    # PostgreSQL: edits of one pack queue here (positions, the file count); SQLite writers are serial anyway.
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    if row is None:
        raise Problem(NOT_FOUND)
    return row


# -- information packs ------------------------------------------------------------------------------

#: Packs are templates of the information-pack target: created, listed, edited by ``web.template_routes``.
PACKS = Templates(information_packs, TARGET)


# -- consent forms ----------------------------------------------------------------------------------


async def _forms(conn: AsyncConnection, rows: list[sa.Row[object]]) -> list[ConsentForm]:
    links = list(
        await conn.execute(
            sa.select(consent_form_packs)
            .where(consent_form_packs.c.form_id.in_([row.id for row in rows]))
            .order_by(consent_form_packs.c.form_id, consent_form_packs.c.position)
        )
    )
    pack_rows = list(
        await conn.execute(
            sa.select(information_packs).where(information_packs.c.id.in_({link.pack_id for link in links}))
        )
    )
    packs = {pack.id: pack for pack in await PACKS.load(conn, pack_rows)}
    return [
        ConsentForm(
            id=r.id,
            org=r.org_id,
            name=r.name,
            created_by=r.created_by,
            created_at=r.created_at,
            packs=tuple(packs[link.pack_id] for link in links if link.form_id == r.id),
        )
        for r in (row._mapping for row in rows)
    ]


async def create_form(conn: AsyncConnection, principal: Principal, *, name: str, pack_ids: list[str]) -> ConsentForm:
    """Record a form naming packs of the organisation; a pack it does not have is refused by id."""
    known = set(
        (
            await conn.execute(
                sa.select(information_packs.c.id).where(
                    information_packs.c.org_id == principal.org, information_packs.c.id.in_(pack_ids)
                )
            )
        ).scalars()
    )
    if unknown := [pid for pid in pack_ids if pid not in known]:
        raise Problem(
            INFORMATION_PACK_NOT_FOUND,
            f"Your organisation has no information pack {', '.join(unknown)}. Create it first, or leave it out.",
            information_pack_ids=unknown,
        )
    form_id = new_id()
    await conn.execute(
        consent_forms.insert().values(
            id=form_id, org_id=principal.org, name=name, created_by=principal.subject, created_at=db.utcnow()
        )
    )
    await conn.execute(
        consent_form_packs.insert(),
        [{"form_id": form_id, "pack_id": pid, "position": i} for i, pid in enumerate(pack_ids)],
    )
    return await get_form(conn, principal, form_id)


async def get_form(conn: AsyncConnection, principal: Principal, form_id: str) -> ConsentForm:
    return (await _forms(conn, [await _one(conn, consent_forms, form_id, principal.org)]))[0]


async def list_forms(
    conn: AsyncConnection, principal: Principal, *, cursor: str | None, limit: int
) -> tuple[list[ConsentForm], str | None]:
    rows, next_cursor = await _page(conn, consent_forms, [consent_forms.c.org_id == principal.org], cursor, limit)
    return await _forms(conn, rows), next_cursor


# -- consent requests -------------------------------------------------------------------------------


def _visible(principal: Principal) -> list[sa.ColumnElement[bool]]:
    """Clinicians see their organisation's requests; a patient sees only the requests sent to them."""
    where = [consent_requests.c.org_id == principal.org]
    if not principal.is_clinician:
        where.append(consent_requests.c.patient_id == principal.patient)
        where.append(visible_to_patient(CONSENT_TARGET, consent_requests.c.id))  # withdrawn: gone
    return where


async def _consents(
    conn: AsyncConnection, rows: list[sa.Row[object]], *, for_patient: bool = False
) -> list[ConsentRequest]:
    query = (
        sa.select(consent_request_packs)
        .where(consent_request_packs.c.consent_id.in_([row.id for row in rows]))
        .order_by(consent_request_packs.c.consent_id, consent_request_packs.c.position)
    )
    if for_patient:  # a pack copy withdrawn on its own (core.sharing.revoke) leaves the patient's view
        query = query.where(visible_to_patient(PACK_COPY_TARGET, consent_request_packs.c.id))
    pack_rows = list(await conn.execute(query))
    load = patient_attachments if for_patient else attachments_of
    attached = await load(conn, PACK_COPY_TARGET, [p.id for p in pack_rows])
    return [
        ConsentRequest(
            id=r.id,
            org=r.org_id,
            patient_id=r.patient_id,
            form_id=r.form_id,
            form_name=r.form_name,
            requested_by=r.requested_by,
            requested_at=r.requested_at,
            status=r.status,
            decided_by=r.decided_by,
            decided_at=r.decided_at,
            packs=tuple(
                RequestedPack(
                    id=p.id,
                    pack_id=p.pack_id,
                    name=p.name,
                    description=p.description,
                    attachments=tuple(attached[p.id]),
                )
                for p in pack_rows
                if p.consent_id == r.id
            ),
        )
        for r in (row._mapping for row in rows)
    ]


async def get_consent(
    conn: AsyncConnection, principal: Principal, consent_id: str, *, for_update: bool = False
) -> ConsentRequest:
    """The request if ``principal`` may see it, else ``not-found`` (existence is never leaked)."""
    query = sa.select(consent_requests).where(consent_requests.c.id == consent_id, *_visible(principal))
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise Problem(NOT_FOUND)
    return (await _consents(conn, [row], for_patient=not principal.is_clinician))[0]


async def list_consents(
    conn: AsyncConnection, principal: Principal, patient_id: str, *, cursor: str | None, limit: int
) -> tuple[list[ConsentRequest], str | None]:
    """A page of one patient's consent requests, newest first, and the cursor of the next page."""
    await get_patient(conn, principal, patient_id)
    where = [*_visible(principal), consent_requests.c.patient_id == patient_id]
    rows, next_cursor = await _page(conn, consent_requests, where, cursor, limit)
    return await _consents(conn, rows, for_patient=not principal.is_clinician), next_cursor


async def request_consent(
    conn: AsyncConnection, pm: pluggy.PluginManager, principal: Principal, patient_id: str, form_id: str
) -> ConsentRequest:
    """Ask the patient for consent with the form's packs as they are now; the patient is notified."""
    await get_patient(conn, principal, patient_id)
    try:
        form = await get_form(conn, principal, form_id)
    except Problem as exc:
        if exc.type is not NOT_FOUND:
            raise
        raise Problem(CONSENT_FORM_NOT_FOUND, form_id=form_id) from None
    consent_id = new_id()
    await conn.execute(
        consent_requests.insert().values(
            id=consent_id,
            org_id=principal.org,
            patient_id=patient_id,
            form_id=form.id,
            form_name=form.name,
            requested_by=principal.subject,
            requested_at=db.utcnow(),
            status="requested",
        )
    )
    for position, pack in enumerate(form.packs):
        copy_id = new_id()
        await conn.execute(
            consent_request_packs.insert().values(
                id=copy_id,
                consent_id=consent_id,
                pack_id=pack.id,
                name=pack.name,
                description=pack.description,
                position=position,
            )
        )
        # Each copy is a grant of its own: the patient may download its files for good.
        await PACKS.hand_out(
            conn,
            pm,
            principal,
            pack.id,
            channel=CHANNEL,
            target=PACK_COPY_TARGET,
            item_id=copy_id,
            patient_id=patient_id,
            title=PACK_TITLE,
        )
    await share(
        conn,
        pm,
        principal,
        channel=CHANNEL,
        target=CONSENT_TARGET,
        item_id=consent_id,
        patient_id=patient_id,
        title=CONSENT_TITLE,
        notification_kind=NOTIFICATION_KIND,
    )
    return await get_consent(conn, principal, consent_id)


async def decide(
    conn: AsyncConnection, pm: pluggy.PluginManager, principal: Principal, consent_id: str, decision: Decision
) -> ConsentRequest:
    """Record the patient's answer once (audited, the clinic told); the same answer again is a no-op, another is refused."""
    consent = await get_consent(conn, principal, consent_id, for_update=True)
    if consent.status == decision:
        return consent
    if consent.status != "requested":
        raise Problem(CONSENT_ALREADY_DECIDED, decision=consent.status)
    await conn.execute(
        sa.update(consent_requests)
        .where(consent_requests.c.id == consent_id)
        .values(status=decision, decided_by=principal.subject, decided_at=db.utcnow())
    )
    await record_event(
        conn, principal, f"consent.{decision}", patient_id=consent.patient_id, target=CONSENT_TARGET, item_id=consent_id
    )
    # The clinic hears that an answer came, not which: the consent's page says (decided once, so one notice).
    await notify_clinic(
        conn,
        pm,
        org=consent.org,
        patient_id=consent.patient_id,
        kind=CLINIC_KIND,
        title=CLINIC_TITLE,
        target=CONSENT_TARGET,
        item_id=consent_id,
        dedupe_key=f"{CLINIC_KIND}:{consent_id}",
    )
    return await get_consent(conn, principal, consent_id)
