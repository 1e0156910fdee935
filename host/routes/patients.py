"""Clinician routes: register patients and manage each patient's files."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated, Any

import attrs
from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter

from careshare.core.erasure import ERASURE_NOT_CONFIRMED, erase_patient
from careshare.core.files import FileSearch, accept, list_files
from careshare.core.patients import UNCHANGED, find_patients, get_patient, register_patient, update_patient
from careshare.core.problems import Problem
from careshare.web.guards import clinician
from careshare.web.openapi import NON_BLANK, SPACE, documented, limits
from careshare.web.search import file_search
from careshare.web.uploads import Upload, answer_upload, upload_route
from careshare.web.views import PageLimit, file_json, page_json, parse_body, patient_json

if TYPE_CHECKING:
    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["PatientController"]

_EMAIL = re.compile(f"^[^@\\x00{SPACE}]+@[^@\\x00{SPACE}]+\\.[^@\\x00{SPACE}]+$")
MAX_NAME_CHARS = 500
MAX_EXTERNAL_ID_CHARS = 200


def _non_blank(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError(f"$.{attribute.name}: must not be blank")


def _at_most(chars: int) -> Any:
    def check(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if len(value) > chars:
            raise ValueError(f"$.{attribute.name}: at most {chars} characters")

    return check


def _email(_instance: Any, _attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not _EMAIL.match(value):
        raise ValueError("$.email: not an email address (name@example.org)")


@attrs.frozen
class NewPatient:
    name: str = attrs.field(
        validator=[_at_most(MAX_NAME_CHARS), _non_blank],
        metadata=limits(maxLength=MAX_NAME_CHARS, pattern=NON_BLANK),
    )
    external_id: str = attrs.field(
        validator=[_at_most(MAX_EXTERNAL_ID_CHARS), _non_blank],
        metadata=limits(maxLength=MAX_EXTERNAL_ID_CHARS, pattern=NON_BLANK),
    )
    email: str | None = attrs.field(default=None, validator=_email, metadata=limits(pattern=_EMAIL.pattern))


@attrs.frozen
class PatientChange:
    """A change of name or email (JSON merge patch: a field left out stays, ``"email": null`` removes it)."""

    name: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([_at_most(MAX_NAME_CHARS), _non_blank]),
        metadata=limits(maxLength=MAX_NAME_CHARS, pattern=NON_BLANK),
    )
    email: str | None = attrs.field(default=None, validator=_email, metadata=limits(pattern=_EMAIL.pattern))


@attrs.frozen
class Erase:
    """What an erasure asks: the patient's external id again, as a check the right patient was picked."""

    external_id: str = attrs.field(metadata=limits(maxLength=MAX_EXTERNAL_ID_CHARS, pattern=NON_BLANK))
    dry_run: bool = False


class PatientController(Controller):
    path = "/v1/patients"
    dependencies = {"principal": Provide(clinician)}
    tags = ["patients"]

    @post(
        "/",
        status_code=201,
        operation_class=documented(
            NewPatient,
            links={
                "patient": ("GET", "/v1/patients/{pid}", {"pid": "$response.body#/id"}),
                "files": ("GET", "/v1/patients/{pid}/files", {"pid": "$response.body#/id"}),
                "audit": ("GET", "/v1/patients/{pid}/audit", {"pid": "$response.body#/id"}),
            },
        ),
    )
    async def register(
        self, request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
    ) -> dict[str, Any]:
        body = await parse_body(request, NewPatient)
        async with cs.engine.begin() as conn:
            patient = await register_patient(
                conn, principal, name=body.name.strip(), external_id=body.external_id.strip(), email=body.email
            )
        return patient_json(patient)

    @get("/")
    async def search(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        q: Annotated[
            str, QueryParameter(max_length=MAX_NAME_CHARS, description="part of the name or external id, any case")
        ] = "",
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
    ) -> dict[str, Any]:
        """The organisation's patients, newest first: all, or those whose name or external id holds ``q``."""
        async with cs.reader.connect() as conn:
            found, next_cursor = await find_patients(conn, principal, query=q, cursor=cursor, limit=limit)
        return page_json([patient_json(p) for p in found], next_cursor)

    @patch("/{pid:str}", operation_class=documented(PatientChange, status=200))
    async def change(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
    ) -> dict[str, Any]:
        """Change ``{"name"?, "email"?}``; ``"email": null`` removes the address (a null name changes nothing).

        Audited as ``patient.updated``.
        """
        body = await parse_body(request, PatientChange)
        given = json.loads(await request.body())
        async with cs.engine.begin() as conn:
            patient = await update_patient(
                conn,
                principal,
                pid,
                name=body.name.strip() if body.name is not None else UNCHANGED,
                email=body.email if "email" in given else UNCHANGED,
            )
        return patient_json(patient)

    @post("/{pid:str}/erase", status_code=200, operation_class=documented(Erase, status=200))
    async def erase(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
    ) -> dict[str, Any]:
        """Erase the patient ``{"external_id", "dry_run"?}``: every row and blob of theirs; the audit keeps a tombstone."""
        body = await parse_body(request, Erase)
        async with cs.reader.connect() as conn:
            patient = await get_patient(conn, principal, pid)
        if body.external_id.strip() != patient.external_id:
            raise Problem(ERASURE_NOT_CONFIRMED)
        return (await erase_patient(cs, principal, pid, dry_run=body.dry_run)).to_json()

    @get("/{pid:str}")
    async def show(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], pid: FromPath[str]
    ) -> dict[str, Any]:
        async with cs.reader.connect() as conn:
            return patient_json(await get_patient(conn, principal, pid))

    @upload_route("/{pid:str}/files")
    async def upload(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
        upload: NamedDependency[Upload],
    ) -> Response[Any]:
        async with cs.reader.connect() as conn:
            await get_patient(conn, principal, pid)
        stored = await accept(cs, upload, principal=principal, owner_type="patient", patient_id=pid, source="clinic")
        return await answer_upload(request, cs, stored)

    @get("/{pid:str}/files", dependencies={"search": Provide(file_search)})
    async def files(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
        search: NamedDependency[FileSearch],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
    ) -> dict[str, Any]:
        """The patient's files, newest first; ``name``, ``kind``, ``status``, ``source``, ``unseen``, ``since`` and ``before`` narrow it."""
        async with cs.reader.connect() as conn:
            await get_patient(conn, principal, pid)
            items, next_cursor = await list_files(
                conn,
                principal,
                owner_type="patient",
                patient_id=pid,
                search=search,
                cursor=cursor,
                limit=limit,
            )
        return page_json([file_json(f) for f in items], next_cursor)
