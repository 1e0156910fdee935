"""Clinician routes: register patients and manage each patient's files."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import attrs
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter

from careshare.core.files import accept, list_files
from careshare.core.patients import get_patient, register_patient
from careshare.web.guards import clinician
from careshare.web.openapi import NON_BLANK, SPACE, documented, limits
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
        raise ValueError(f"{attribute.name} must not be blank")


def _email(_instance: Any, _attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not _EMAIL.match(value):
        raise ValueError("email is not an email address")


@attrs.frozen
class NewPatient:
    name: str = attrs.field(
        validator=[attrs.validators.max_len(MAX_NAME_CHARS), _non_blank],
        metadata=limits(maxLength=MAX_NAME_CHARS, pattern=NON_BLANK),
    )
    external_id: str = attrs.field(
        validator=[attrs.validators.max_len(MAX_EXTERNAL_ID_CHARS), _non_blank],
        metadata=limits(maxLength=MAX_EXTERNAL_ID_CHARS, pattern=NON_BLANK),
    )
    email: str | None = attrs.field(default=None, validator=_email, metadata=limits(pattern=_EMAIL.pattern))


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

    @get("/{pid:str}/files")
    async def files(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
        source: Annotated[str | None, QueryParameter(pattern="^(clinic|patient)$")] = None,
        unseen: FromQuery[bool] = False,
    ) -> dict[str, Any]:
        async with cs.reader.connect() as conn:
            await get_patient(conn, principal, pid)
            items, next_cursor = await list_files(
                conn,
                principal,
                owner_type="patient",
                patient_id=pid,
                source=source,
                unseen=unseen,
                cursor=cursor,
                limit=limit,
            )
        return page_json([file_json(f) for f in items], next_cursor)
