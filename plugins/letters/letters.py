"""Letters: templates, drafts, attachments under a per-organisation total, sending, and the letter's email.

A letter is a ``draft`` until it is sent; then it is ``sent`` and never changes. Sending renders
the PDF once (kept by content), shares the letter with the patient (grant, audit, notification in
one transaction) and, when asked, leaves the email to the delivery outbox: this plugin's
``careshare_deliver`` answers the letter's notification by mailing the PDF and every file.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.files import insert_blobs
from careshare.core.idempotency import IDEMPOTENCY_KEY_REUSED  # sends are keyed by the host (host/idempotency.py)
from careshare.core.ids import new_id
from careshare.core.links import MAX_LINK_SECONDS, attachment_link, find_links, link_url
from careshare.core.models import Principal, RenditionRecord
from careshare.core.notifications import Undeliverable
from careshare.core.patients import get_patient
from careshare.core.problems import NOT_FOUND, Problem, ProblemType
from careshare.core.sharing import patient_attachments, share, visible_to_patient
from careshare.core.targets import (
    ATTACHMENTS_TOO_LARGE,
    DRAFT_REQUIRED,
    Attachment,
    Item,
    Target,
    attach,
    attachments_of,
    detach,
)
from careshare.plugins.letters import mail
from careshare.plugins.letters.pdf import LetterLayout, render_pdf
from careshare.plugins.letters.tables import letter_settings, letter_templates, letters
from careshare.plugins.letters.templating import check_template, render_text, template_context

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from email.message import EmailMessage

    import pluggy
    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.links import Link
    from careshare.core.models import Patient
    from careshare.core.notifications import Notification
    from careshare.core.runtime import Careshare

__all__ = [
    "CHANNEL",
    "DEFAULT_MAX_ATTACHMENT_BYTES",
    "EMAIL_ADDRESS_MISSING",
    "EMAIL_NOT_CONFIGURED",
    "IDEMPOTENCY_KEY_REUSED",
    "LETTER_CHANGED",
    "LETTER_PDF",
    "TARGET",
    "LetterSettings",
    "add_attachment",
    "create_letter",
    "create_template",
    "deliver_email",
    "edit_letter",
    "email_files",
    "email_state",
    "get_letter",
    "get_settings",
    "get_template",
    "list_letters",
    "list_templates",
    "put_settings",
    "remove_attachment",
    "send_letter",
]

logger = logging.getLogger(__name__)

CHANNEL = "letters"
#: "25 MB" is 25,000,000 bytes (decimal, as mail providers count it), over all files of one letter.
DEFAULT_MAX_ATTACHMENT_BYTES = 25_000_000
#: What an organisation may set: up to 100 MB (beyond that, hardly any mail server takes the email).
MAX_SETTING_BYTES = 100_000_000
#: The rendition role of a letter's own PDF (in audit events and the blob it is stored as).
LETTER_PDF = "letter-pdf"
#: What the patient's inbox, archive and push gateways show: never the letter's text.
LETTER_TITLE = "New letter from your care team"
NOTIFICATION_KIND = "letter"
#: Attempts at a send that keeps meeting concurrent edits before giving up.
SEND_ATTEMPTS = 3
#: How long one delivery may hold a letter's email before another may try (longer than any SMTP exchange).
EMAIL_HOLD_SECONDS = 900
#: The purpose of the links a letter's email carries; they live as long as any link may: people read mail late.
EMAIL_LINK_PURPOSE = "letter-email"
EMAIL_LINK_SECONDS = MAX_LINK_SECONDS

TARGET = Target(
    name="letter",
    channel=CHANNEL,
    accepts=None,  # every kind the file-type plugins declare
    # The default; an organisation's own limit (letter settings) is enforced through an evolved target.
    max_total_bytes=DEFAULT_MAX_ATTACHMENT_BYTES,
    draft_required=True,
    # DICOM's shareable copy is its rendered PNG: a letter never carries DICOM.
    rendition="shareable",
    sources=frozenset({"patient", "library"}),
    description="a letter: its files reach the app inbox and, when emailed, travel attached to the email",
)

EMAIL_ADDRESS_MISSING = ProblemType(
    "email-address-missing",
    422,
    "Patient has no email address",
    "This patient has no email address, so the letter cannot be emailed. Send it to the app only"
    " ('email': false), or record the patient's address first. Nothing was sent.",
)
EMAIL_NOT_CONFIGURED = ProblemType(
    "email-not-configured",
    422,
    "Email is not set up",
    "This server sends no email (CARESHARE_SMTP_URL is not set). Send the letter to the app only"
    " ('email': false), or ask your administrator to set up email. Nothing was sent.",
)
LETTER_CHANGED = ProblemType(
    "letter-changed",
    409,
    "Letter changed while sending",
    "The letter kept changing while it was being sent, so it was not sent. Check it and send it again.",
)
SENT_LETTER_DETAIL = "This letter was sent and can no longer change. Write a new letter instead."
SENT_AGAIN_DETAIL = "This letter was sent already and is not sent twice. To send it again, write a new letter."


@attrs.frozen
class LetterSettings:
    """An organisation's letter settings; None in a field means the default."""

    max_attachment_bytes: int | None = None
    organisation_name: str | None = None

    def limit(self) -> int:
        return self.max_attachment_bytes or DEFAULT_MAX_ATTACHMENT_BYTES

    def name(self, org: str) -> str:
        return self.organisation_name or org


# -- settings -----------------------------------------------------------------------------------


async def get_settings(conn: AsyncConnection, org: str) -> LetterSettings:
    row = (await conn.execute(sa.select(letter_settings).where(letter_settings.c.org_id == org))).first()
    if row is None:
        return LetterSettings()
    return LetterSettings(max_attachment_bytes=row.max_attachment_bytes, organisation_name=row.organisation_name)


async def put_settings(conn: AsyncConnection, principal: Principal, wanted: LetterSettings) -> LetterSettings:
    values = {
        "max_attachment_bytes": wanted.max_attachment_bytes,
        "organisation_name": wanted.organisation_name,
        "updated_by": principal.subject,
        "updated_at": db.utcnow(),
    }
    changed = await conn.execute(
        sa.update(letter_settings).where(letter_settings.c.org_id == principal.org).values(**values)
    )
    if changed.rowcount == 0:
        await conn.execute(letter_settings.insert().values(org_id=principal.org, **values))
    return wanted


def letter_target(target: Target, settings: LetterSettings) -> Target:
    """The declared target with the organisation's own total, which core then enforces."""
    return attrs.evolve(target, max_total_bytes=settings.limit())


# -- templates ----------------------------------------------------------------------------------


async def create_template(
    conn: AsyncConnection, principal: Principal, *, name: str, subject: str, body: str
) -> sa.Row[Any]:
    """Save a template once it parses and fills in (``template-invalid`` with the line otherwise)."""
    check_template(subject, body, db.utcnow().date())
    template_id = new_id()
    await conn.execute(
        letter_templates.insert().values(
            id=template_id,
            org_id=principal.org,
            name=name,
            subject=subject,
            body=body,
            created_by=principal.subject,
            created_at=db.utcnow(),
        )
    )
    return await get_template(conn, principal, template_id)


async def get_template(conn: AsyncConnection, principal: Principal, template_id: str) -> sa.Row[Any]:
    row = (
        await conn.execute(
            sa.select(letter_templates).where(
                letter_templates.c.id == template_id, letter_templates.c.org_id == principal.org
            )
        )
    ).first()
    if row is None:
        raise Problem(NOT_FOUND)
    return row


async def list_templates(
    conn: AsyncConnection, principal: Principal, *, cursor: str | None, limit: int
) -> tuple[list[sa.Row[Any]], str | None]:
    query = sa.select(letter_templates).where(letter_templates.c.org_id == principal.org)
    return await db.newest_first(conn, query, letter_templates.c.id, cursor=cursor, limit=limit)


# -- drafts -------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def create_letter(
    conn: AsyncConnection,
    principal: Principal,
    patient: Patient,
    *,
    template_id: str | None,
    subject: str | None,
    body: str | None,
    check: Callable[[str, str], None],
) -> sa.Row[Any]:
    """A new draft for ``patient``; with a template, what is not given is the template filled in for them.

    ``check`` refuses a subject and body a letter may not have (the caller's field rules).
    """
    if template_id is not None:
        template = await get_template(conn, principal, template_id)
        settings = await get_settings(conn, principal.org)
        context = template_context(
            patient_name=patient.name,
            external_id=patient.external_id,
            clinician=principal.subject,
            organisation=settings.name(principal.org),
            today=db.utcnow().date(),
        )
        if subject is None:
            subject = _one_line(render_text(template.subject, context, field="subject"))
        if body is None:
            body = render_text(template.body, context, field="body")
    subject, body = subject or "", body or ""
    check(subject, body)
    now = db.utcnow()
    letter_id = new_id()
    await conn.execute(
        letters.insert().values(
            id=letter_id,
            org_id=principal.org,
            patient_id=patient.id,
            template_id=template_id,
            subject=subject,
            body=body,
            status="draft",
            version=1,
            created_by=principal.subject,
            created_at=now,
            updated_at=now,
            email_requested=False,
        )
    )
    await record_event(conn, principal, "letter.created", patient_id=patient.id, target=TARGET.name, item_id=letter_id)
    return await _letter_row(conn, letter_id)


async def _letter_row(conn: AsyncConnection, letter_id: str) -> sa.Row[Any]:
    return (await conn.execute(sa.select(letters).where(letters.c.id == letter_id))).one()


async def get_letter(conn: AsyncConnection, principal: Principal, letter_id: str) -> sa.Row[Any]:
    """The letter if ``principal`` may read it: clinicians of its organisation, its patient once sent."""
    query = sa.select(letters).where(letters.c.id == letter_id, letters.c.org_id == principal.org)
    if not principal.is_clinician:
        query = query.where(
            letters.c.patient_id == principal.patient,
            letters.c.status == "sent",
            visible_to_patient(TARGET.name, letters.c.id),
        )
    row = (await conn.execute(query)).first()
    if row is None:
        raise Problem(NOT_FOUND)
    return row


async def list_letters(
    conn: AsyncConnection,
    principal: Principal,
    patient_id: str,
    *,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[sa.Row[Any]], str | None]:
    query = sa.select(letters).where(letters.c.org_id == principal.org, letters.c.patient_id == patient_id)
    if not principal.is_clinician:
        status = "sent"  # drafts are the clinic's working copies
        query = query.where(visible_to_patient(TARGET.name, letters.c.id))  # withdrawn ones are gone
    if status is not None:
        query = query.where(letters.c.status == status)
    return await db.newest_first(conn, query, letters.c.id, cursor=cursor, limit=limit)


async def _take_draft(conn: AsyncConnection, principal: Principal, letter_id: str, **values: Any) -> sa.Row[Any]:
    """Change a draft and bump its version, or raise ``draft-required``; the update also locks the row."""
    row = await get_letter(conn, principal, letter_id)
    changed = await conn.execute(
        sa.update(letters)
        .where(letters.c.id == letter_id, letters.c.status == "draft")
        .values(version=letters.c.version + 1, updated_at=db.utcnow(), **values)
    )
    if changed.rowcount == 0:
        raise Problem(DRAFT_REQUIRED, SENT_LETTER_DETAIL)
    return row


async def edit_letter(
    conn: AsyncConnection, principal: Principal, letter_id: str, *, subject: str | None, body: str | None
) -> sa.Row[Any]:
    values = {k: v for k, v in {"subject": subject, "body": body}.items() if v is not None}
    row = await _take_draft(conn, principal, letter_id, **values)
    await record_event(conn, principal, "letter.edited", patient_id=row.patient_id, target=TARGET.name, item_id=row.id)
    return await _letter_row(conn, letter_id)


def _item(row: sa.Row[Any], target: Target) -> Item:
    return Item(
        target=target.name, id=row.id, org=row.org_id, patient_id=row.patient_id, is_draft=row.status == "draft"
    )


async def add_attachment(
    conn: AsyncConnection, pm: pluggy.PluginManager, principal: Principal, target: Target, letter_id: str, file_id: str
) -> list[Attachment]:
    """Attach one file to a draft under the organisation's total (core checks every declared rule)."""
    row = await _take_draft(conn, principal, letter_id)
    evolved = letter_target(target, await get_settings(conn, principal.org))
    return await attach(conn, pm, principal, evolved, _item(row, evolved), [file_id])


async def remove_attachment(
    conn: AsyncConnection, principal: Principal, target: Target, letter_id: str, attachment_id: str
) -> None:
    row = await _take_draft(conn, principal, letter_id)
    await detach(conn, principal, target, _item(row, target), attachment_id)


# -- sending ------------------------------------------------------------------------------------


class _Raced(Exception):
    """Another request changed the draft between reading and sending it."""


async def _render_and_store(cs: Careshare, layout: LetterLayout) -> tuple[str, int]:
    with cs.store.workdir() as workdir:
        path = Path(workdir) / "letter.pdf"
        await asyncio.to_thread(render_pdf, layout, path)
        return await cs.store.put_file(path)


async def send_letter(
    cs: Careshare, principal: Principal, target: Target, letter_id: str, *, email: bool
) -> sa.Row[Any]:
    """Send a draft: PDF, share (inbox, archive, notification), email left to the outbox.

    A retried send with an ``Idempotency-Key`` never gets here twice: the host answers it with the
    first answer (``careshare.core.idempotency``), the one mechanism for every POST. The letters'
    ``send_key`` and ``send_fingerprint`` columns are no longer written (docs/decisions.md).
    """
    for _ in range(SEND_ATTEMPTS):
        async with cs.reader.connect() as conn:
            row = await get_letter(conn, principal, letter_id)
            if row.status != "draft":
                raise Problem(DRAFT_REQUIRED, SENT_AGAIN_DETAIL)
            patient = await get_patient(conn, principal, row.patient_id)
            settings = await get_settings(conn, principal.org)
            attached = (await attachments_of(conn, target.name, [letter_id]))[letter_id]
        if email and not patient.email:
            raise Problem(EMAIL_ADDRESS_MISSING)
        if email and not cs.settings.get(mail.SMTP_URL):
            raise Problem(EMAIL_NOT_CONFIGURED)
        total = sum(a.size for a in attached)
        if total > settings.limit():  # the organisation lowered its limit since the files were attached
            raise Problem(
                ATTACHMENTS_TOO_LARGE,
                f"The files attached total {total:,} bytes; letters of your organisation carry at most"
                f" {settings.limit():,} bytes. Remove a file, then send the letter.",
                limit=settings.limit(),
                total=total,
                current=total,
            )
        now = db.utcnow()
        layout = LetterLayout(
            organisation=settings.name(principal.org),
            date=now.date(),
            patient_name=patient.name,
            external_id=patient.external_id,
            clinician=principal.subject,
            subject=row.subject,
            body=row.body,
            enclosures=tuple(mail.attachment_name(a.filename, a.media_type) for a in attached),
        )
        sha256, size = await _render_and_store(cs, layout)
        try:
            async with cs.engine.begin() as conn:
                await insert_blobs(conn, [RenditionRecord(LETTER_PDF, "application/pdf", size, sha256)], now)
                sent = await conn.execute(
                    sa.update(letters)
                    .where(letters.c.id == letter_id, letters.c.status == "draft", letters.c.version == row.version)
                    .values(
                        status="sent",
                        sent_by=principal.subject,
                        sent_at=now,
                        updated_at=now,
                        pdf_sha256=sha256,
                        pdf_size=size,
                        email_requested=email,
                        email_to=patient.email if email else None,
                    )
                )
                if sent.rowcount != 1:
                    raise _Raced  # sent or edited meanwhile: roll back and look again
                shared = await share(
                    conn,
                    cs.plugins,
                    principal,
                    channel=CHANNEL,
                    target=target.name,
                    item_id=letter_id,
                    patient_id=patient.id,
                    title=LETTER_TITLE,
                    notification_kind=NOTIFICATION_KIND,
                )
                notification_id = shared.notification.id if shared.notification else None
                await conn.execute(
                    sa.update(letters).where(letters.c.id == letter_id).values(notification_id=notification_id)
                )
                return await _letter_row(conn, letter_id)
        except (_Raced, IntegrityError):
            pass  # the next round sees why: sent or edited meanwhile
    raise Problem(LETTER_CHANGED)


# -- email --------------------------------------------------------------------------------------


def _delivery_channel(pm: pluggy.PluginManager) -> str | None:
    """The name this plugin's deliveries go by (the entry point's, or what a test registered it as)."""
    from careshare.plugins import letters as plugin

    for impl in pm.hook.careshare_deliver.get_hookimpls():
        if impl.plugin is plugin:
            return pm.get_name(impl.plugin)
    return None


async def email_state(conn: AsyncConnection, pm: pluggy.PluginManager, row: sa.Row[Any]) -> tuple[str, str | None]:
    """``not-requested``, ``pending``, ``sent`` or ``failed`` (every retry used, or refused for good), and the last refusal."""
    if not row.email_requested:
        return "not-requested", None
    if row.email_sent_at is not None:
        return "sent", None
    channel = _delivery_channel(pm)
    state = None
    if row.notification_id is not None and channel is not None:
        state = (
            await conn.execute(
                sa.select(db.deliveries.c.state).where(
                    db.deliveries.c.notification_id == row.notification_id, db.deliveries.c.channel == channel
                )
            )
        ).scalar()
    # "failed": every retry used, or Undeliverable (too large for the server); "delivered" without
    # email_sent_at: settled with no email (rows written before Undeliverable existed).
    return ("failed" if state in ("failed", "delivered") else "pending"), row.email_error


def _too_large_to_attach(cs: Careshare, row: sa.Row[Any], attached: list[Attachment]) -> bool:
    """Whether the letter's PDF and files together pass what one email may carry (``CARESHARE_MAIL_MAX_ATTACHMENT_BYTES``)."""
    limit = cs.settings.get(mail.MAIL_MAX_ATTACHMENT_BYTES)
    return bool(attached) and (row.pdf_size or 0) + sum(a.size for a in attached) > limit


async def email_files(conn: AsyncConnection, cs: Careshare, row: sa.Row[Any]) -> str | None:
    """How the email carries the letter's files: ``attached``, ``linked`` (expiring links), or None (no email)."""
    if not row.email_requested:
        return None
    if await find_links(conn, row.org_id, target=TARGET.name, item_id=row.id, purpose=EMAIL_LINK_PURPOSE):
        return "linked"
    if row.email_sent_at is not None:
        return "attached"
    attached = (await attachments_of(conn, TARGET.name, [row.id]))[row.id]
    return "linked" if _too_large_to_attach(cs, row, attached) else "attached"


async def _email_links(cs: Careshare, row: sa.Row[Any], attached: list[Attachment]) -> list[Link]:
    """One active link per file for this letter's email: made on the first try, the same on every retry."""
    sender = Principal(subject=row.sent_by, role="clinician", org=row.org_id)
    async with cs.engine.begin() as conn:
        made = await find_links(conn, row.org_id, target=TARGET.name, item_id=row.id, purpose=EMAIL_LINK_PURPOSE)
        now = db.utcnow()
        usable = {link.attachment_id: link for link in made if link.status(now) == "active"}
        links = []
        for attachment in attached:
            link = usable.get(attachment.id)
            if link is None:  # first try, or a retry after the earlier link lapsed or was revoked
                link = await attachment_link(
                    conn, sender, attachment.id, purpose=EMAIL_LINK_PURPOSE, expires_in=EMAIL_LINK_SECONDS
                )
            links.append(link)
    return links


async def _note_email(cs: Careshare, letter_id: str, **values: Any) -> None:
    async with cs.engine.begin() as conn:
        await conn.execute(sa.update(letters).where(letters.c.id == letter_id).values(**values))


async def deliver_email(cs: Careshare | None, target: Target, notification: Notification) -> bool | None:
    """Email a sent letter once: None for anything else, True once the SMTP server accepted it."""
    if notification.target != target.name or notification.item_id is None:
        return None
    if cs is None:
        return False  # called without the running system: wait for a round that has it
    async with cs.reader.connect() as conn:
        row = (
            await conn.execute(
                sa.select(letters).where(letters.c.id == notification.item_id, letters.c.org_id == notification.org)
            )
        ).first()
        if row is None or not row.email_requested:
            return None
        if row.email_sent_at is not None:
            return True  # accepted before: at least once must not mean twice
        settings = await get_settings(conn, row.org_id)
        # What was withdrawn from the patient (core.sharing.revoke) is not emailed either.
        attached = (await patient_attachments(conn, notification.target, [row.id]))[row.id]
    if not cs.settings.get(mail.SMTP_URL) or not row.email_to:
        await _note_email(cs, row.id, email_error="email is not set up on this server")
        return False
    if not await _hold_email(cs, row.id):
        return False  # another delivery is sending it right now; the next round finds it sent
    try:
        return await _send_email(cs, row, settings, attached)
    finally:
        await _note_email(cs, row.id, email_sending_since=None)


async def _hold_email(cs: Careshare, letter_id: str) -> bool:
    """Take the letter's email for this delivery (compare-and-set), so two never talk to SMTP at once."""
    now = db.utcnow()
    async with cs.engine.begin() as conn:
        taken = await conn.execute(
            sa.update(letters)
            .where(
                letters.c.id == letter_id,
                letters.c.email_sent_at.is_(None),
                sa.or_(
                    letters.c.email_sending_since.is_(None),
                    letters.c.email_sending_since < now - timedelta(seconds=EMAIL_HOLD_SECONDS),
                ),
            )
            .values(email_sending_since=now)
        )
    return bool(taken.rowcount == 1)


async def _send_email(
    cs: Careshare, row: sa.Row[Any], settings: LetterSettings, attached: list[Attachment]
) -> bool | None:
    """Send the email in the largest version the server takes; None when none fits (settled: no retry helps)."""
    pdf = await cs.store.read_all(row.pdf_sha256)
    files: list[mail.MailAttachment] | None = None  # None: the files go as links (or there are none)
    if attached and not _too_large_to_attach(cs, row, attached):
        files = [mail.MailAttachment(a.filename, a.media_type, await cs.store.read_all(a.sha256)) for a in attached]
    loop = asyncio.get_running_loop()

    def compose(files: list[mail.MailAttachment], links: list[mail.MailLink]) -> EmailMessage:
        return mail.build_message(
            letter_id=row.id,
            mail_from=cs.settings.get(mail.MAIL_FROM),
            to=row.email_to,
            organisation=settings.name(row.org_id),
            sent_at=row.sent_at,
            pdf=pdf,
            files=files,
            links=links,
        )

    def mail_links(made: list[tuple[str, datetime]]) -> list[mail.MailLink]:
        return [
            mail.MailLink(a.filename, a.media_type, a.size, link_url(cs.settings, link_id), expires_at)
            for a, (link_id, expires_at) in zip(attached, made, strict=True)
        ]

    def with_links() -> EmailMessage:
        # Called from the SMTP thread, only once the links version fits: the links are made on the loop.
        made = asyncio.run_coroutine_threadsafe(_email_links(cs, row, attached), loop).result(
            timeout=mail.TIMEOUT_SECONDS
        )
        return compose([], mail_links([(link.id, link.expires_at) for link in made]))

    def compose_and_send() -> str:
        server = mail.SmtpServer.from_url(cs.settings.get(mail.SMTP_URL) or "")
        if not attached:
            return mail.send(server, compose([], []))
        # Stand-ins as long as the real links (a fresh id, the same expiry): measured before any link is made.
        until = db.utcnow() + timedelta(seconds=EMAIL_LINK_SECONDS)
        probe = compose([], mail_links([(new_id(), until) for _ in attached]))
        fallback = mail.Fallback(probe=probe, make=with_links)
        return mail.send(server, compose(files, []) if files is not None else None, fallback=fallback)

    try:
        how = await asyncio.to_thread(compose_and_send)
    except mail.MessageTooLarge as exc:
        reason = mail.refusal_reason(exc)
        logger.warning("letter email not sent for good letter=%s reason=%s", row.id, reason)
        await _note_email(cs, row.id, email_error=reason)
        raise Undeliverable(reason) from None  # a retry cannot make it fit: failed now; the letter shows "failed"
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        reason = mail.refusal_reason(exc)
        logger.warning("letter email not sent letter=%s reason=%s", row.id, reason)
        await _note_email(cs, row.id, email_error=reason)
        return False
    logger.info("letter email sent letter=%s files=%s", row.id, how)
    # Recorded at once: a later round finds it sent and sends nothing again.
    await _note_email(cs, row.id, email_sent_at=db.utcnow(), email_error=None)
    return True
