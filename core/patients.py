"""Organisations (registered, or allowed by configuration) and the patients a clinic registers."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.ids import new_id
from careshare.core.models import Patient, Principal
from careshare.core.problems import NOT_FOUND, PATIENT_EXISTS, Problem

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


__all__ = [
    "find_patients",
    "fold",
    "get_patient",
    "like_pattern",
    "list_organisations",
    "organisation_known",
    "register_organisation",
    "register_patient",
    "search_key",
    "update_patient",
]


async def organisation_known(engine: AsyncEngine, org: str, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether tokens of ``org`` are accepted: registered, or on the configured allow-list.

    An allowed organisation's row is created the first time one of its tokens is seen.
    """
    async with engine.begin() as conn:
        exists = (await conn.execute(sa.select(db.organisations.c.id).where(db.organisations.c.id == org))).first()
        if exists is not None:
            return True
        if org not in allowed:
            return False
        await _insert_organisation(conn, org)
    return True


async def register_organisation(engine: AsyncEngine, org: str) -> bool:
    """Register ``org`` (``careshare org create``); False when it was registered already."""
    async with engine.begin() as conn:
        exists = (await conn.execute(sa.select(db.organisations.c.id).where(db.organisations.c.id == org))).first()
        if exists is not None:
            return False
        await _insert_organisation(conn, org)
        operator = Principal(subject="careshare-cli", role="clinician", org=org)
        await record_event(conn, operator, "organisation.created")
    return True


async def list_organisations(engine: AsyncEngine) -> list[tuple[str, datetime]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(db.organisations.c.id, db.organisations.c.created_at).order_by(db.organisations.c.id)
        )
        return [(row.id, row.created_at) for row in rows]


async def _insert_organisation(conn: AsyncConnection, org: str) -> None:
    try:
        async with conn.begin_nested():
            await conn.execute(db.organisations.insert().values(id=org, created_at=db.utcnow()))
    except IntegrityError:
        pass  # another request created it first


async def register_patient(
    conn: AsyncConnection, principal: Principal, *, name: str, external_id: str, email: str | None
) -> Patient:
    patient = Patient(
        id=new_id(), org=principal.org, name=name, external_id=external_id, email=email, created_at=db.utcnow()
    )
    try:
        async with conn.begin_nested():
            await conn.execute(
                db.patients.insert().values(
                    id=patient.id,
                    org_id=patient.org,
                    name=patient.name,
                    external_id=patient.external_id,
                    email=patient.email,
                    created_at=patient.created_at,
                    search_key=search_key(patient.name, patient.external_id),
                )
            )
    except IntegrityError:
        raise Problem(PATIENT_EXISTS) from None
    await record_event(conn, principal, "patient.registered", patient_id=patient.id)
    return patient


#: Between the name and the external id in a search key: no typed query holds it.
_KEY_SEPARATOR = "\x1f"


def fold(text: str) -> str:
    """``text`` as searches compare it: NFKC, then case-folded (``Straße`` and ``STRASSE`` match)."""
    return unicodedata.normalize("NFKC", text).casefold()


def like_pattern(text: str) -> str:
    """A LIKE pattern (escape ``\\``) matching any value that holds ``text``; ``%`` and ``_`` match themselves."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search_key(name: str, external_id: str) -> str:
    """What a patient search matches: the folded name and external id."""
    return fold(name) + _KEY_SEPARATOR + fold(external_id)


def _patient(row: Any) -> Patient:
    return Patient(
        id=row.id,
        org=row.org_id,
        name=row.name,
        external_id=row.external_id,
        email=row.email,
        created_at=row.created_at,
    )


async def find_patients(
    conn: AsyncConnection, principal: Principal, *, query: str = "", cursor: str | None, limit: int
) -> tuple[list[Patient], str | None]:
    """A page of the organisation's patients, newest first: all, or those whose name or external id holds ``query``.

    The match ignores case in every script (:func:`fold`) and surrounding spaces; ``%`` and ``_``
    in ``query`` match themselves.
    """
    select = sa.select(db.patients).where(db.patients.c.org_id == principal.org)
    wanted = fold(query.strip())
    if wanted:
        select = select.where(db.patients.c.search_key.like(like_pattern(wanted), escape="\\"))
    rows, next_cursor = await db.newest_first(conn, select, db.patients.c.id, cursor=cursor, limit=limit)
    return [_patient(row) for row in rows], next_cursor


async def get_patient(conn: AsyncConnection, principal: Principal, patient_id: str) -> Patient:
    """The patient if ``principal`` may see them: clinicians of their organisation, or themselves."""
    if not principal.is_clinician and principal.patient != patient_id:
        raise Problem(NOT_FOUND)
    row = (
        await conn.execute(
            sa.select(db.patients).where(db.patients.c.id == patient_id, db.patients.c.org_id == principal.org)
        )
    ).first()
    if row is None:
        raise Problem(NOT_FOUND)
    return _patient(row)


#: Tells :func:`update_patient` a field was left out of the change (``None`` clears the email).
UNCHANGED: Any = object()


async def update_patient(
    conn: AsyncConnection, principal: Principal, patient_id: str, *, name: str = UNCHANGED, email: Any = UNCHANGED
) -> Patient:
    """Change a patient's name or email (``None`` removes it), audited as ``patient.updated``.

    The audit says that the record changed, never what it said before or after (it is kept for
    good, and erasure must leave no patient data in it). A change to what it already holds is no
    change: nothing is written.
    """
    if not principal.is_clinician:
        raise Problem(NOT_FOUND)
    before = await get_patient(conn, principal, patient_id)
    values: dict[str, Any] = {}
    if name is not UNCHANGED and name != before.name:
        values.update(name=name, search_key=search_key(name, before.external_id))
    if email is not UNCHANGED and email != before.email:
        values.update(email=email)
    if not values:
        return before
    await conn.execute(sa.update(db.patients).where(db.patients.c.id == patient_id).values(**values))
    await record_event(conn, principal, "patient.updated", patient_id=patient_id)
    return Patient(
        id=before.id,
        org=before.org,
        name=values.get("name", before.name),
        external_id=before.external_id,
        email=values.get("email", before.email),
        created_at=before.created_at,
    )
