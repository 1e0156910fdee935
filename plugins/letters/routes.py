"""HTTP routes of the letters channel: templates, drafts, files, sending, the PDF, settings, the patient's letters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from multipart import parse_options_header

from careshare.core.audit import record_event
from careshare.core.files import discard_new_files, ingest
from careshare.core.patients import get_patient
from careshare.core.problems import NOT_FOUND, Problem
from careshare.core.sharing import patient_attachments, revocations
from careshare.core.targets import attachments_of
from careshare.plugins.letters import TARGET
from careshare.plugins.letters.letters import (
    LETTER_PDF,
    MAX_SETTING_BYTES,
    LetterSettings,
    add_attachment,
    create_letter,
    create_template,
    edit_letter,
    email_files,
    email_state,
    get_letter,
    get_settings,
    get_template,
    list_letters,
    list_templates,
    put_settings,
    remove_attachment,
    send_letter,
)
from careshare.plugins.letters.templating import MAX_OUTPUT_CHARS, MAX_TEMPLATE_CHARS, VARIABLES
from careshare.web import (
    NON_BLANK,
    UPLOAD_MEDIA,
    UPLOAD_PARAMETERS,
    PageLimit,
    Upload,
    attachment_json,
    blob_response,
    clinician,
    content_route,
    documented,
    invalid,
    limits,
    page_json,
    page_route,
    parse_body,
    patient,
    show_route,
    signed_in,
)

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["routes"]

MAX_NAME_CHARS = 200
MAX_SUBJECT_CHARS = 300
MAX_BODY_CHARS = MAX_OUTPUT_CHARS


@attrs.frozen
class NewTemplate:
    name: str = attrs.field(metadata=limits(maxLength=MAX_NAME_CHARS, pattern=NON_BLANK))
    subject: str = attrs.field(metadata=limits(maxLength=MAX_TEMPLATE_CHARS, pattern=NON_BLANK))
    body: str = attrs.field(metadata=limits(maxLength=MAX_TEMPLATE_CHARS))


@attrs.frozen
class NewLetter:
    template_id: str | None = None
    subject: str | None = attrs.field(default=None, metadata=limits(maxLength=MAX_SUBJECT_CHARS))
    body: str | None = attrs.field(default=None, metadata=limits(maxLength=MAX_BODY_CHARS))
    #: From a template, or with a subject of its own (if/then: generated clients keep one flat body).
    json_schema: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"template_id": {"type": "null"}}},
        "then": {"required": ["subject"], "properties": {"subject": {"type": "string", "pattern": NON_BLANK}}},
    }


@attrs.frozen
class LetterEdit:
    subject: str | None = attrs.field(default=None, metadata=limits(maxLength=MAX_SUBJECT_CHARS, pattern=NON_BLANK))
    body: str | None = attrs.field(default=None, metadata=limits(maxLength=MAX_BODY_CHARS))


@attrs.frozen
class NewAttachment:
    file_id: str


@attrs.frozen
class Send:
    email: bool = False


@attrs.frozen
class SettingsBody:
    max_attachment_bytes: int | None = attrs.field(default=None, metadata=limits(minimum=1, maximum=MAX_SETTING_BYTES))
    organisation_name: str | None = attrs.field(
        default=None, metadata=limits(maxLength=MAX_NAME_CHARS, pattern=NON_BLANK)
    )


def text_errors(value: str | None, field: str, limit: int, *, required: bool) -> list[str]:
    """What is wrong with a text field (databases refuse NUL and unpaired surrogates; blank where needed)."""
    if value is None:
        return [f"$.{field}: required"] if required else []
    if "\x00" in value:
        return [f"$.{field}: must not contain NUL characters"]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return [f"$.{field}: not valid Unicode text"]
    if len(value) > limit:
        return [f"$.{field}: at most {limit:,} characters"]
    if required and not value.strip():
        return [f"$.{field}: must not be blank"]
    return []


def _check_letter_text(subject: str, body: str) -> None:
    errors = text_errors(subject, "subject", MAX_SUBJECT_CHARS, required=True)
    errors += text_errors(body, "body", MAX_BODY_CHARS, required=False)
    if errors:
        raise invalid(*errors)


def template_json(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "subject": row.subject,
        "body": row.body,
        "variables": sorted(VARIABLES),
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
    }


def _pdf_json(row: sa.Row[Any]) -> dict[str, Any] | None:
    if row.pdf_sha256 is None:
        return None
    return {
        "url": f"/v1/letters/{row.id}/pdf",
        "media_type": "application/pdf",
        "size": row.pdf_size,
        "sha256": row.pdf_sha256,
    }


async def letter_json(conn: AsyncConnection, cs: Careshare, row: sa.Row[Any], *, for_clinician: bool) -> dict[str, Any]:
    if not for_clinician:  # withdrawn files (core.sharing.revoke) leave the patient's view
        attached = (await patient_attachments(conn, TARGET.name, [row.id]))[row.id]
    else:
        attached = (await attachments_of(conn, TARGET.name, [row.id]))[row.id]
    shown: dict[str, Any] = {
        "id": row.id,
        "subject": row.subject,
        "body": row.body,
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "attachments": [attachment_json(a) for a in attached],
        "pdf": _pdf_json(row),
    }
    if not for_clinician:
        return shown
    withdrawn, withdrawn_files = await revocations(conn, row.org_id, TARGET.name, [row.id])
    for attachment in shown["attachments"]:
        found = withdrawn_files.get(attachment["id"])
        attachment["revoked"] = found.to_json() if found else None
    revoked = withdrawn.get(row.id)
    shown["revoked"] = revoked.to_json() if revoked else None
    settings = await get_settings(conn, row.org_id)
    status, reason = await email_state(conn, cs.plugins, row)
    shown.update(
        {
            "patient_id": row.patient_id,
            "template_id": row.template_id,
            "status": row.status,
            "created_by": row.created_by,
            "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(),
            "sent_by": row.sent_by,
            "attachments_total_bytes": sum(a.size for a in attached),
            "max_attachment_bytes": settings.limit(),
            "email_status": status,
            "email_error": reason,
            "email_sent_at": row.email_sent_at.isoformat() if row.email_sent_at else None,
            "email_files": await email_files(conn, cs, row),
        }
    )
    return shown


async def _shown(cs: Careshare, principal: Principal, letter_id: str) -> dict[str, Any]:
    async with cs.reader.connect() as conn:
        row = await get_letter(conn, principal, letter_id)
        return await letter_json(conn, cs, row, for_clinician=principal.is_clinician)


async def _page_of_letters(
    cs: Careshare, principal: Principal, patient_id: str, *, status: str | None, cursor: str | None, limit: int
) -> dict[str, Any]:
    async with cs.reader.connect() as conn:
        await get_patient(conn, principal, patient_id)
        rows, next_cursor = await list_letters(conn, principal, patient_id, status=status, cursor=cursor, limit=limit)
        items = [await letter_json(conn, cs, row, for_clinician=principal.is_clinician) for row in rows]
    return page_json(items, next_cursor)


class LetterTemplateController(Controller):
    path = "/v1/letter-templates"
    dependencies = {"principal": Provide(clinician)}
    tags = ["letters"]

    @post(
        "/",
        status_code=201,
        operation_class=documented(
            NewTemplate, links={"template": ("GET", "/v1/letter-templates/{tid}", {"tid": "$response.body#/id"})}
        ),
    )
    async def create(
        self, request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
    ) -> dict[str, Any]:
        """Save a template ``{"name", "subject", "body"}`` (Jinja2); one that does not fill in is refused."""
        body = await parse_body(request, NewTemplate)
        errors = text_errors(body.name, "name", MAX_NAME_CHARS, required=True)
        errors += text_errors(body.subject, "subject", MAX_TEMPLATE_CHARS, required=True)
        errors += text_errors(body.body, "body", MAX_TEMPLATE_CHARS, required=False)
        if errors:
            raise invalid(*errors)
        async with cs.engine.begin() as conn:
            row = await create_template(conn, principal, name=body.name.strip(), subject=body.subject, body=body.body)
        return template_json(row)

    list_all = page_route("/", list_templates, template_json, of="organisation")

    show = show_route("/{tid:str}", get_template, template_json)


class PatientLetterController(Controller):
    path = "/v1/patients/{pid:str}/letters"
    dependencies = {"principal": Provide(clinician)}
    tags = ["letters"]

    @post(
        "/",
        status_code=201,
        operation_class=documented(
            NewLetter,
            links={
                "letter": ("GET", "/v1/letters/{lid}", {"lid": "$response.body#/id"}),
                "edit": ("PATCH", "/v1/letters/{lid}", {"lid": "$response.body#/id"}),
            },
        ),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
    ) -> dict[str, Any]:
        """A new draft ``{"template_id"?, "subject"?, "body"?}``: from a template filled in for the patient, or as given."""
        body = await parse_body(request, NewLetter)
        errors = text_errors(body.subject, "subject", MAX_SUBJECT_CHARS, required=body.template_id is None)
        errors += text_errors(body.body, "body", MAX_BODY_CHARS, required=False)
        if errors:
            raise invalid(*errors)
        async with cs.engine.begin() as conn:
            found = await get_patient(conn, principal, pid)
            row = await create_letter(
                conn,
                principal,
                found,
                template_id=body.template_id,
                subject=body.subject.strip() if body.subject is not None else None,
                body=body.body,
                check=_check_letter_text,
            )
            return await letter_json(conn, cs, row, for_clinician=True)

    @get("/")
    async def list_for_patient(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
        status: FromQuery[Literal["draft", "sent"] | None] = None,
    ) -> dict[str, Any]:
        """The patient's letters, newest first; ``status`` picks drafts or sent letters."""
        return await _page_of_letters(cs, principal, pid, status=status, cursor=cursor, limit=limit)


class LetterController(Controller):
    path = "/v1/letters"
    dependencies = {"principal": Provide(clinician)}
    tags = ["letters"]

    @get("/{lid:str}")
    async def show(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], lid: FromPath[str]
    ) -> dict[str, Any]:
        return await _shown(cs, principal, lid)

    @patch("/{lid:str}", operation_class=documented(LetterEdit, status=200))
    async def edit(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        lid: FromPath[str],
    ) -> dict[str, Any]:
        """Change a draft's ``subject`` and/or ``body``; a sent letter is ``draft-required``."""
        body = await parse_body(request, LetterEdit)
        errors = text_errors(body.subject, "subject", MAX_SUBJECT_CHARS, required=False)
        errors += text_errors(body.body, "body", MAX_BODY_CHARS, required=False)
        if body.subject is not None and not body.subject.strip():
            errors.append("$.subject: must not be blank")
        if errors:
            raise invalid(*errors)
        subject = body.subject.strip() if body.subject is not None else None
        async with cs.engine.begin() as conn:
            row = await edit_letter(conn, principal, lid, subject=subject, body=body.body)
            return await letter_json(conn, cs, row, for_clinician=True)

    @post(
        "/{lid:str}/attachments",
        status_code=201,
        request_max_body_size=None,
        operation_class=documented(NewAttachment, media=UPLOAD_MEDIA, parameters=UPLOAD_PARAMETERS),
    )
    async def attach_file(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        lid: FromPath[str],
    ) -> dict[str, Any]:
        """Attach ``{"file_id"}`` (the patient's files or the library), or upload one (raw or multipart ``file``)."""
        media_type, _ = parse_options_header(request.headers.get("content-type", ""))
        stored: list[str] = []
        try:
            if media_type == "application/json" or not media_type:
                file_id = (await parse_body(request, NewAttachment)).file_id
            else:
                async with cs.reader.connect() as conn:
                    row = await get_letter(conn, principal, lid)
                upload = Upload(request, cs.settings.max_upload_bytes)
                file = await ingest(
                    cs, upload, principal=principal, owner_type="patient", patient_id=row.patient_id, source="clinic"
                )
                stored.append(file.id)
                file_id = file.id
            async with cs.engine.begin() as conn:
                await add_attachment(conn, cs.plugins, principal, TARGET, lid, file_id)
                row = await get_letter(conn, principal, lid)
                return await letter_json(conn, cs, row, for_clinician=True)
        except BaseException:
            await discard_new_files(cs, stored)  # an upload the letter refused leaves nothing behind
            raise

    @delete("/{lid:str}/attachments/{aid:str}", status_code=200)
    async def detach_file(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        lid: FromPath[str],
        aid: FromPath[str],
    ) -> dict[str, Any]:
        """Take a file off a draft (the file stays in the patient's files)."""
        async with cs.engine.begin() as conn:
            await remove_attachment(conn, principal, TARGET, lid, aid)
            row = await get_letter(conn, principal, lid)
            return await letter_json(conn, cs, row, for_clinician=True)

    @post("/{lid:str}/send", status_code=200, operation_class=documented(Send, status=200))
    async def send(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        lid: FromPath[str],
    ) -> dict[str, Any]:
        """Send ``{"email": bool}``: the letter reaches the app inbox; with email, also the patient's address.

        An ``Idempotency-Key`` is the host's, as on every POST (``careshare.host.idempotency``).
        """
        body = await parse_body(request, Send) if (await request.body()).strip() else Send()
        row = await send_letter(cs, principal, TARGET, lid, email=body.email)
        async with cs.reader.connect() as conn:
            return await letter_json(conn, cs, row, for_clinician=True)


class LetterPdfController(Controller):
    path = "/v1/letters"
    dependencies = {"principal": Provide(signed_in)}
    tags = ["letters"]

    @content_route("/{lid:str}/pdf")
    async def pdf(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        lid: FromPath[str],
    ) -> Response[Any]:
        """The letter as sent, as a PDF: clinicians of the organisation, and its patient."""
        async with cs.engine.begin() as conn:
            row = await get_letter(conn, principal, lid)
            if row.pdf_sha256 is None:
                raise Problem(NOT_FOUND, "A draft has no PDF yet: the PDF is made when the letter is sent.")
            await record_event(
                conn,
                principal,
                "letter.read",
                patient_id=row.patient_id,
                rendition=LETTER_PDF,
                target=TARGET.name,
                item_id=row.id,
            )
        return blob_response(request, cs, row.pdf_sha256, row.pdf_size, "application/pdf", "letter.pdf")


class LetterSettingsController(Controller):
    path = "/v1/letter-settings"
    dependencies = {"principal": Provide(clinician)}
    tags = ["letters"]

    @get("/")
    async def show(self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal]) -> dict[str, Any]:
        async with cs.reader.connect() as conn:
            return _settings_json(await get_settings(conn, principal.org), principal.org)

    @put("/", operation_class=documented(SettingsBody, status=200))
    async def replace(
        self, request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
    ) -> dict[str, Any]:
        """Set ``{"max_attachment_bytes", "organisation_name"}``; null (or leaving one out) means the default."""
        body = await parse_body(request, SettingsBody)
        errors = text_errors(body.organisation_name, "organisation_name", MAX_NAME_CHARS, required=False)
        if body.organisation_name is not None and not body.organisation_name.strip():
            errors.append("$.organisation_name: must not be blank (null for the default)")
        limit = body.max_attachment_bytes
        if limit is not None and not 1 <= limit <= MAX_SETTING_BYTES:
            errors.append(f"$.max_attachment_bytes: between 1 and {MAX_SETTING_BYTES:,} bytes (null for the default)")
        if errors:
            raise invalid(*errors)
        name = body.organisation_name.strip() if body.organisation_name is not None else None
        async with cs.engine.begin() as conn:
            saved = await put_settings(
                conn, principal, LetterSettings(max_attachment_bytes=limit, organisation_name=name)
            )
        return _settings_json(saved, principal.org)


def _settings_json(settings: LetterSettings, org: str) -> dict[str, Any]:
    return {
        "max_attachment_bytes": settings.max_attachment_bytes,
        "organisation_name": settings.organisation_name,
        "effective": {"max_attachment_bytes": settings.limit(), "organisation_name": settings.name(org)},
    }


class MyLetterController(Controller):
    path = "/v1/me/letters"
    dependencies = {"principal": Provide(patient)}
    tags = ["me"]

    @get("/")
    async def mine(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
    ) -> dict[str, Any]:
        """The letters sent to the signed-in patient, newest first (drafts never show)."""
        return await _page_of_letters(cs, principal, str(principal.patient), status="sent", cursor=cursor, limit=limit)

    @get("/{lid:str}")
    async def show(
        self, cs: NamedDependency[Careshare], principal: NamedDependency[Principal], lid: FromPath[str]
    ) -> dict[str, Any]:
        return await _shown(cs, principal, lid)


def routes() -> list[type[Controller]]:
    return [
        LetterTemplateController,
        PatientLetterController,
        LetterController,
        LetterPdfController,
        LetterSettingsController,
        MyLetterController,
    ]
