"""HTTP routes of the chat channel: clinicians and patients send and read messages with files.

A message goes out whole or not at all: files uploaded with it are ingested one after the other,
and if any of them, or any attachment rule, is refused, the files this request stored are
discarded again and no message, share or notification exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import sqlalchemy as sa
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from multipart import parse_options_header

from careshare.core import db
from careshare.core.files import discard_new_files, ingest
from careshare.core.ids import new_id
from careshare.core.notifications import notify_clinic
from careshare.core.patients import get_patient
from careshare.core.problems import Problem
from careshare.core.sharing import patient_attachments, revocations, share, visible_to_patient
from careshare.core.targets import TOO_MANY_ATTACHMENTS, Attachment, Item, attach, attachments_of
from careshare.plugins.chat import CHANNEL, MAX_FILES, TARGET
from careshare.plugins.chat.tables import chat_messages
from careshare.web import (
    FILE_FIELD,
    NON_BLANK,
    FilePart,
    FormParts,
    PageLimit,
    attachment_json,
    clinician,
    documented,
    invalid,
    limits,
    page_json,
    parse_body,
    patient,
)

if TYPE_CHECKING:
    from typing import Literal

    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare

__all__ = ["ClinicianMessages", "NewMessage", "PatientMessages", "checked_message", "deliver_message"]

#: Long enough for any note between a clinic and a patient; a letter is the channel for more.
MAX_BODY_CHARS = 10_000
#: JSON bodies of this route are read by hand (the route also streams uploads), capped like the host's.
MAX_JSON_BYTES = 1024 * 1024
#: What the patient's inbox, archive and push gateways show: never the message's text.
CLINIC_MESSAGE_TITLE = "New message from your care team"
PATIENT_MESSAGE_TITLE = "Your message to your care team"
NOTIFICATION_KIND = "message"
#: The clinic's notification of a patient's message (careshare.core.notifications.notify_clinic).
CLINIC_KIND = "patient.message"
CLINIC_TITLE = "A patient sent a message"
BODY_FIELD = "body"
FILE_ID_FIELDS = ("file_id", "file_ids")


@attrs.frozen
class NewMessage:
    """``{"body", "file_ids"}``: text, files picked from the patient's files or the library, or both."""

    body: str = attrs.field(default="", metadata=limits(maxLength=MAX_BODY_CHARS))
    file_ids: list[str] = attrs.field(
        factory=list, metadata=limits(maxItems=MAX_FILES, uniqueItems=True, items={"minLength": 1})
    )
    #: Without files, a text (if/then: generated clients keep one flat body).
    json_schema: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"file_ids": {"maxItems": 0}}},
        "then": {"required": ["body"], "properties": {"body": {"type": "string", "pattern": NON_BLANK}}},
    }


def _check_count(count: int) -> None:
    if count > MAX_FILES:
        raise Problem(
            TOO_MANY_ATTACHMENTS,
            f"A message carries at most {MAX_FILES} files.",
            rule=f"max_count of target '{TARGET.name}' ({TARGET.channel})",
            limit=MAX_FILES,
        )


def checked_message(message: NewMessage) -> NewMessage:
    """The message as it will be sent, or a refusal naming what is wrong with it."""
    if not all(isinstance(fid, str) and fid for fid in message.file_ids):
        raise invalid("$.file_ids: each file id must be a non-empty string")
    if len(set(message.file_ids)) != len(message.file_ids):
        raise invalid("$.file_ids: a file is listed twice")
    _check_count(len(message.file_ids))
    if len(message.body) > MAX_BODY_CHARS:
        raise invalid(f"$.body: longer than {MAX_BODY_CHARS} characters")
    body = message.body.strip()
    if not body and not message.file_ids:
        raise invalid("$.body: a message needs text, a file, or both")
    return attrs.evolve(message, body=body)


async def _json_message(request: Request[Any, Any, Any]) -> NewMessage:
    return checked_message(await parse_body(request, NewMessage, max_bytes=MAX_JSON_BYTES))


async def _form_message(
    request: Request[Any, Any, Any],
    cs: Careshare,
    principal: Principal,
    patient_id: str,
    source: Literal["clinic", "patient"],
    stored: list[str],
) -> NewMessage:
    """Read a multipart message, ingesting each ``file`` part into the patient's files as it streams.

    Ids of the files stored land in ``stored`` as they are made, so the caller can discard them
    whatever fails later; the message's files keep the order of the form.
    """
    body: str | None = None
    file_ids: list[str] = []
    async for part in FormParts(request, cs.settings.max_upload_bytes, max_files=MAX_FILES):
        if isinstance(part, FilePart):
            if part.name != FILE_FIELD:
                raise invalid(f"$.{part.name}: files go in fields named '{FILE_FIELD}'")
            _check_count(len(file_ids) + 1)
            file = await ingest(
                cs, part, principal=principal, owner_type="patient", patient_id=patient_id, source=source
            )
            stored.append(file.id)
            file_ids.append(file.id)
        elif part.name == BODY_FIELD:
            if body is not None:
                raise invalid("$.body: give the message's text once")
            body = part.value
        elif part.name in FILE_ID_FIELDS:
            file_ids.append(part.value.strip())
            _check_count(len(file_ids))
        else:
            raise invalid(f"$.{part.name}: unknown field; a message takes 'body', 'file_id' and 'file' parts")
    return checked_message(NewMessage(body=body or "", file_ids=file_ids))


def message_json(row: Any, attached: list[Attachment], *, for_clinician: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": row.id,
        "author_role": row.author_role,
        "body": row.body,
        "created_at": row.created_at.isoformat(),
        "attachments": [attachment_json(a) for a in attached],
    }
    if for_clinician:
        shown["author"] = row.author
    return shown


async def send_message(
    request: Request[Any, Any, Any], cs: Careshare, principal: Principal, patient_id: str
) -> dict[str, Any]:
    """Receive, check and send one message from ``principal`` in ``patient_id``'s conversation, or nothing."""
    async with cs.reader.connect() as conn:
        await get_patient(conn, principal, patient_id)
    from_clinic = principal.is_clinician
    stored: list[str] = []
    try:
        media_type, _ = parse_options_header(request.headers.get("content-type", ""))
        if media_type == "multipart/form-data":
            source: Literal["clinic", "patient"] = "clinic" if from_clinic else "patient"
            message = await _form_message(request, cs, principal, patient_id, source, stored)
        else:
            message = await _json_message(request)
        return await deliver_message(cs, principal, patient_id, message)
    except BaseException:
        await discard_new_files(cs, stored)
        raise


async def deliver_message(cs: Careshare, principal: Principal, patient_id: str, message: NewMessage) -> dict[str, Any]:
    """Store, attach and share one checked message in ``patient_id``'s conversation, all in one transaction."""
    from_clinic = principal.is_clinician
    async with cs.engine.begin() as conn:
        message_id = new_id()
        await conn.execute(
            chat_messages.insert().values(
                id=message_id,
                org_id=principal.org,
                patient_id=patient_id,
                author=principal.subject,
                author_role=principal.role,
                body=message.body,
                created_at=db.utcnow(),
            )
        )
        item = Item(target=TARGET.name, id=message_id, org=principal.org, patient_id=patient_id)
        await attach(conn, cs.plugins, principal, TARGET, item, message.file_ids)
        # The patient's own message joins their archive without notifying them of it.
        await share(
            conn,
            cs.plugins,
            principal,
            channel=CHANNEL,
            target=TARGET.name,
            item_id=message_id,
            patient_id=patient_id,
            title=CLINIC_MESSAGE_TITLE if from_clinic else PATIENT_MESSAGE_TITLE,
            notification_kind=NOTIFICATION_KIND if from_clinic else None,
        )
        if not from_clinic:  # the clinic hears of the message once, however many files it carries
            await notify_clinic(
                conn,
                cs.plugins,
                org=principal.org,
                patient_id=patient_id,
                kind=CLINIC_KIND,
                title=CLINIC_TITLE,
                target=TARGET.name,
                item_id=message_id,
                dedupe_key=f"{CLINIC_KIND}:{message_id}",
            )
        row = (await conn.execute(sa.select(chat_messages).where(chat_messages.c.id == message_id))).one()
        attached = (await attachments_of(conn, TARGET.name, [message_id]))[message_id]
    return message_json(row, attached, for_clinician=from_clinic)


async def conversation(
    cs: Careshare, org: str, patient_id: str, *, cursor: str | None, limit: int, for_clinician: bool
) -> dict[str, Any]:
    """A page of the patient's conversation, newest first, each message with its attachments."""
    query = sa.select(chat_messages).where(chat_messages.c.org_id == org, chat_messages.c.patient_id == patient_id)
    if not for_clinician:  # a withdrawn message (core.sharing.revoke) leaves the patient's view
        query = query.where(visible_to_patient(TARGET.name, chat_messages.c.id))
    async with cs.reader.connect() as conn:
        page, next_cursor = await db.newest_first(conn, query, chat_messages.c.id, cursor=cursor, limit=limit)
        ids = [row.id for row in page]
        if not for_clinician:
            attached = await patient_attachments(conn, TARGET.name, ids)
            return page_json([message_json(row, attached[row.id], for_clinician=False) for row in page], next_cursor)
        attached = await attachments_of(conn, TARGET.name, ids)
        withdrawn, withdrawn_files = await revocations(conn, org, TARGET.name, ids)
    items = []
    for row in page:
        shown = message_json(row, attached[row.id], for_clinician=True)
        revoked = withdrawn.get(row.id)
        shown["revoked"] = revoked.to_json() if revoked else None
        for attachment in shown["attachments"]:
            found = withdrawn_files.get(attachment["id"])
            attachment["revoked"] = found.to_json() if found else None
        items.append(shown)
    return page_json(items, next_cursor)


class ClinicianMessages(Controller):
    path = "/v1/patients"
    dependencies = {"principal": Provide(clinician)}
    tags = ["chat"]

    @post("/{pid:str}/messages", status_code=201, request_max_body_size=None, operation_class=documented(NewMessage))
    async def send(
        self,
        request: Request[Any, Any, Any],
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
    ) -> dict[str, Any]:
        """Send a message to the patient: JSON ``{"body", "file_ids"}``, or multipart with ``file`` parts."""
        return await send_message(request, cs, principal, pid)

    @get("/{pid:str}/messages")
    async def list_messages(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        pid: FromPath[str],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
    ) -> dict[str, Any]:
        """The patient's conversation, newest first."""
        async with cs.reader.connect() as conn:
            await get_patient(conn, principal, pid)
        return await conversation(cs, principal.org, pid, cursor=cursor, limit=limit, for_clinician=True)


class PatientMessages(Controller):
    path = "/v1/me"
    dependencies = {"principal": Provide(patient)}
    tags = ["chat"]

    @post("/messages", status_code=201, request_max_body_size=None, operation_class=documented(NewMessage))
    async def reply(
        self, request: Request[Any, Any, Any], cs: NamedDependency[Careshare], principal: NamedDependency[Principal]
    ) -> dict[str, Any]:
        """Write to the care team: JSON with ``file_ids`` of files the patient sent, or multipart uploads."""
        return await send_message(request, cs, principal, str(principal.patient))

    @get("/messages")
    async def list_messages(
        self,
        cs: NamedDependency[Careshare],
        principal: NamedDependency[Principal],
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = 50,
    ) -> dict[str, Any]:
        """The signed-in patient's conversation with the clinic, newest first."""
        me = str(principal.patient)
        async with cs.reader.connect() as conn:
            await get_patient(conn, principal, me)
        return await conversation(cs, principal.org, me, cursor=cursor, limit=limit, for_clinician=False)
