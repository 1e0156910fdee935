"""The letter email and the SMTP server's ``SIZE`` (RFC 1870): attached, links instead, or refused for good.

Everything is real: the app in-process over HTTP, SQLite, the blob store, PDFs made by pikepdf,
and an aiosmtpd server on 127.0.0.1 whose ``data_size_limit`` (what it states as ``SIZE`` in
EHLO and enforces) each test sets. Delivery rounds are driven with ``deliver_due(now=...)``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import functools
import io
import logging
import os
import re
import shutil
import threading
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pikepdf
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from careshare.core import db
from careshare.core.notifications import deliver_due, deliveries_of
from careshare.host import create_app
from careshare.plugins import letters as letters_plugin
from careshare.plugins.letters import mail
from careshare.plugins.letters.tables import letters
from careshare.testing import bearer, free_port, make_settings
from careshare.testing.api import sha256

if TYPE_CHECKING:
    from collections.abc import Iterator
    from email.message import EmailMessage
    from pathlib import Path

    from careshare.core.runtime import Careshare

ADDRESS = "pat.size@example.org"
PATIENT_NAME = "Pat Sizewell"


class Mailbox:
    """An SMTP server's handler: counts sessions, keeps what it accepts; may refuse large mail with 552."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions = 0
        self.mails = 0  # MAIL FROM commands, refused ones too
        self.tries = 0  # DATA commands
        self.refuse_over: int | None = None  # a server that states no SIZE but still refuses big mail
        self.received: list[EmailMessage] = []
        self.raw: list[bytes] = []
        self.mail_options: list[list[str]] = []

    def reset(self) -> None:
        with self.lock:
            self.sessions = self.mails = self.tries = 0
            self.refuse_over = None
            self.received, self.raw, self.mail_options = [], [], []

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.tries += 1
            if self.refuse_over is not None and len(envelope.original_content) > self.refuse_over:
                return "552 5.3.4 Message size exceeds fixed limit"
            self.raw.append(bytes(envelope.original_content))
            self.received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
            self.mail_options.append(list(envelope.mail_options))
        return "250 Message accepted for delivery"


class CountingSMTP(SMTP):
    """aiosmtpd's server, counting every MAIL FROM (one it refuses for its SIZE= too)."""

    async def smtp_MAIL(self, arg: str) -> None:
        box: Mailbox = self.event_handler
        with box.lock:
            box.mails += 1
        await super().smtp_MAIL(arg)


class SizedSmtp(Controller):
    """aiosmtpd's controller with a ``SIZE`` the test changes between sessions (None: no SIZE stated)."""

    size_limit: int | None = None

    def factory(self) -> SMTP:
        return CountingSMTP(self.handler, **{**self.SMTP_kwargs, "data_size_limit": self.size_limit})


@pytest.fixture(scope="module")
def smtp() -> Iterator[SizedSmtp]:
    controller = SizedSmtp(Mailbox(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def mailbox(smtp: SizedSmtp) -> Mailbox:
    box: Mailbox = smtp.handler
    box.reset()
    smtp.size_limit = None
    return box


class App:
    def __init__(self, client: TestClient[Any], clinician: dict[str, str]) -> None:
        self.http = client
        self.clinician = clinician

    @property
    def cs(self) -> Careshare:
        return self.http.app.state.careshare  # type: ignore[no-any-return]

    def deliver(self, round_: int) -> int:
        """One delivery round on a clock ``round_`` days ahead (past any backoff), in the app's event loop."""
        now = db.utcnow() + timedelta(days=round_)
        one_round = functools.partial(deliver_due, self.cs.engine, self.cs.plugins, now=now, cs=self.cs)
        return int(self.http.blocking_portal.call(one_round))

    def patient(self) -> str:
        body = {"name": PATIENT_NAME, "external_id": f"MRN-{uuid.uuid4().hex[:10]}", "email": ADDRESS}
        response = self.http.post("/v1/patients", json=body, headers=self.clinician)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def ready_file(self, pid: str, data: bytes, name: str) -> dict[str, Any]:
        response = self.http.post(
            f"/v1/patients/{pid}/files",
            params={"filename": name},
            content=data,
            headers={**self.clinician, "Prefer": "wait=30"},
        )
        assert response.status_code in (201, 202), response.text
        file = response.json()
        deadline = time.monotonic() + 120
        while file["status"] == "processing" and time.monotonic() < deadline:
            time.sleep(0.2)
            file = self.http.get(f"/v1/files/{file['id']}", headers=self.clinician).json()
        assert file["status"] == "ready", file
        return dict(file)

    def send_letter(self, pid: str, files: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"subject": "Your scan results", "body": "Nothing of concern."}
        letter = self.http.post(f"/v1/patients/{pid}/letters", json=body, headers=self.clinician)
        assert letter.status_code == 201, letter.text
        lid = letter.json()["id"]
        for file in files:
            added = self.http.post(
                f"/v1/letters/{lid}/attachments", json={"file_id": file["id"]}, headers=self.clinician
            )
            assert added.status_code == 201, added.text
        sent = self.http.post(f"/v1/letters/{lid}/send", json={"email": True}, headers=self.clinician)
        assert sent.status_code == 200, sent.text
        return dict(sent.json())

    def email_deliveries(self, lid: str) -> list[tuple[str, int, str | None]]:
        """State, attempts and last error of the letter's email delivery (the letters plugin's)."""

        async def read() -> list[tuple[str, int, str | None]]:
            async with self.cs.engine.connect() as conn:
                nid = (await conn.execute(sa.select(letters.c.notification_id).where(letters.c.id == lid))).scalar()
                found = await deliveries_of(conn, nid)
            channel = self.cs.plugins.get_name(letters_plugin)
            return [(d.state, d.attempts, d.last_error) for d in found if d.channel == channel]

        return list(self.http.blocking_portal.call(read))

    def letter(self, lid: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/letters/{lid}", headers=self.clinician).json())

    def links_of(self, aid: str) -> list[dict[str, Any]]:
        return list(self.http.get(f"/v1/attachments/{aid}/links", headers=self.clinician).json()["items"])


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, smtp: SizedSmtp, careshare_migrated_database: Path) -> Iterator[App]:
    """One app for the module; its own delivery loop is stopped, so each test drives every round."""
    data = tmp_path_factory.mktemp("mail-size") / "data"
    settings = make_settings(
        data,
        CARESHARE_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
        CARESHARE_MAIL_FROM="letters@riverside.example",
    )
    database = settings.database_url.split("///", 1)[1]
    os.makedirs(os.path.dirname(database), exist_ok=True)
    shutil.copyfile(careshare_migrated_database, database)  # migrated once per session
    with TestClient(app=create_app(settings)) as client:

        def stop_delivery_loop() -> int:
            found = [task for task in asyncio.all_tasks() if task.get_name() == "careshare-delivery"]
            for task in found:
                task.cancel()
            return len(found)

        assert client.blocking_portal.call(stop_delivery_loop) == 1
        yield App(client, bearer(settings, "clinician", "org-a", sub="dr-a"))


def padded_pdf(padding: int) -> bytes:
    """A real one-page PDF carrying ``padding`` random (incompressible) bytes."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 200))
    pdf.Root.Padding = pdf.make_stream(os.urandom(padding))
    out = io.BytesIO()
    pdf.save(out, compress_streams=False)
    return out.getvalue()


def base64_size(size: int) -> int:
    """What ``size`` bytes become in a base64 MIME part (76 characters and CRLF a line)."""
    encoded = (size + 2) // 3 * 4
    return encoded + (encoded + 75) // 76 * 2


def text_of(message: EmailMessage) -> str:
    return str(message.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]


def size_option(options: list[str]) -> int | None:
    sizes = [int(o.split("=", 1)[1]) for o in options if o.upper().startswith("SIZE=")]
    return sizes[0] if sizes else None


# -- through the app ----------------------------------------------------------------------------


def test_over_the_servers_size_the_files_travel_as_links_that_open_their_bytes(
    app: App, mailbox: Mailbox, smtp: SizedSmtp
) -> None:
    pid = app.patient()
    files = [
        app.ready_file(pid, padded_pdf(60_000), "scan-a.pdf"),
        app.ready_file(pid, padded_pdf(40_000), "scan-b.pdf"),
    ]
    sent = app.send_letter(pid, files)
    assert (sent["email_status"], sent["email_files"]) == ("pending", "attached")  # under our own limit
    # The server takes the letter PDF and a text with links, not the 100 kB of files on top.
    smtp.size_limit = base64_size(sent["pdf"]["size"]) + 12_000

    app.deliver(1)
    assert (mailbox.sessions, mailbox.mails, mailbox.tries) == (1, 1, 1)  # measured first: nothing was refused
    (message,) = mailbox.received
    assert len(mailbox.raw[0]) <= smtp.size_limit
    assert size_option(mailbox.mail_options[0]) == len(mailbox.raw[0])  # SIZE= in MAIL FROM, the real size
    assert [p.get_filename() for p in message.iter_attachments()] == ["letter.pdf"]
    text = text_of(message)
    assert "2 files too large to attach" in text and "scan-a.pdf" in text and "scan-b.pdf" in text
    urls = re.findall(r"https?://\S+/v1/links/\S+", text)
    assert len(urls) == 2

    shown = app.letter(sent["id"])
    assert (shown["email_status"], shown["email_files"], shown["email_error"]) == ("sent", "linked", None)
    for url, attachment in zip(urls, sent["attachments"], strict=True):
        followed = app.http.get(urlsplit(url).path)  # no token: anyone holding the link
        assert followed.status_code == 200, followed.text
        pinned = app.http.get(attachment["url"], headers=app.clinician).content
        assert followed.content == pinned and sha256(followed.content) == attachment["sha256"]
        (link,) = app.links_of(attachment["id"])
        assert (link["purpose"], link["uses"], link["url"]) == ("letter-email", 1, url)
    # Sent once: later rounds send nothing again.
    app.deliver(2)
    assert (mailbox.sessions, len(mailbox.received)) == (1, 1)


def test_a_server_too_small_even_for_links_gets_nothing_and_the_letter_says_why(
    app: App, mailbox: Mailbox, smtp: SizedSmtp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pid = app.patient()
    sent = app.send_letter(pid, [app.ready_file(pid, padded_pdf(30_000), "private-scan.pdf")])
    limit = sent["pdf"]["size"] // 2  # the letter PDF alone does not fit
    smtp.size_limit = limit

    app.deliver(1)
    assert (mailbox.sessions, mailbox.mails, mailbox.received) == (1, 0, [])  # greeted, measured, nothing sent
    shown = app.letter(sent["id"])
    assert shown["email_status"] == "failed"
    reason = shown["email_error"]
    numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?= bytes)", reason)]
    assert numbers[0] > limit and numbers[1] == limit, reason  # the email's size, then the server's limit
    assert "SIZE" in reason and "links" in reason, reason
    ours = [record.getMessage() for record in caplog.records if record.name.startswith("careshare")]
    assert any(reason in line for line in ours)  # the warning says why, as the letter does
    for private in (ADDRESS, PATIENT_NAME, "private-scan", "Your scan"):
        assert private not in reason
        assert all(private not in line for line in ours)
    # Nothing was made for an email that never went: no link to the file exists.
    assert app.links_of(sent["attachments"][0]["id"]) == []
    assert shown["email_files"] == "attached"  # what the email would have carried by our own limit

    # For good: no later round talks to the server again, however far ahead.
    for round_ in (2, 5, 30):
        app.deliver(round_)
    assert (mailbox.sessions, mailbox.mails) == (1, 0)
    assert app.letter(sent["id"])["email_status"] == "failed"
    # The delivery itself ended failed on its first try (Undeliverable), not "delivered".
    [(state, attempts, last_error)] = app.email_deliveries(sent["id"])
    assert (state, attempts) == ("failed", 1), last_error
    assert last_error is not None and last_error.startswith("undeliverable: ") and ADDRESS not in last_error
    # The letter itself reached the app: the patient reads it there.
    patient = bearer(app.cs.settings, "patient", "org-a", patient=pid)
    assert app.http.get(f"/v1/letters/{sent['id']}/pdf", headers=patient).status_code == 200


def test_a_server_without_size_gets_the_files_attached_as_before(app: App, mailbox: Mailbox, smtp: SizedSmtp) -> None:
    assert smtp.size_limit is None
    pid = app.patient()
    sent = app.send_letter(pid, [app.ready_file(pid, padded_pdf(20_000), "leaflet.pdf")])
    app.deliver(1)
    (message,) = mailbox.received
    assert size_option(mailbox.mail_options[0]) is None  # no SIZE extension, no SIZE= in MAIL FROM
    parts = list(message.iter_attachments())
    assert [p.get_filename() for p in parts] == ["letter.pdf", "leaflet.pdf"]
    assert parts[1].get_content() == app.http.get(sent["attachments"][0]["url"], headers=app.clinician).content
    assert "/v1/links/" not in text_of(message)
    shown = app.letter(sent["id"])
    assert (shown["email_status"], shown["email_files"]) == ("sent", "attached")
    assert app.links_of(sent["attachments"][0]["id"]) == []


def test_a_552_from_a_server_that_states_no_size_sends_links_in_the_same_session(
    app: App, mailbox: Mailbox, smtp: SizedSmtp
) -> None:
    pid = app.patient()
    sent = app.send_letter(pid, [app.ready_file(pid, padded_pdf(50_000), "scan.pdf")])
    mailbox.refuse_over = base64_size(sent["pdf"]["size"]) + 12_000
    app.deliver(1)
    assert (mailbox.sessions, mailbox.mails, mailbox.tries) == (1, 2, 2)  # refused attached, then the link
    (message,) = mailbox.received
    assert [p.get_filename() for p in message.iter_attachments()] == ["letter.pdf"]
    (url,) = re.findall(r"https?://\S+/v1/links/\S+", text_of(message))
    assert sha256(app.http.get(urlsplit(url).path).content) == sent["attachments"][0]["sha256"]
    assert (app.letter(sent["id"])["email_status"], app.letter(sent["id"])["email_files"]) == ("sent", "linked")


# -- mail.send on its own, across sizes ---------------------------------------------------------


def message_with(pdf: int, files: list[int], links: int = 0) -> EmailMessage:
    now = db.utcnow()
    return mail.build_message(
        letter_id="01abc",
        mail_from="letters@riverside.example",
        to=ADDRESS,
        organisation="Riverside",
        sent_at=now,
        pdf=os.urandom(pdf),
        files=[mail.MailAttachment(f"f{i}.pdf", "application/pdf", os.urandom(size)) for i, size in enumerate(files)],
        links=[
            mail.MailLink(f"f{i}.pdf", "application/pdf", 1, f"https://clinic.example/v1/links/{'x' * 70}", now)
            for i in range(links)
        ],
    )


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pdf=st.integers(1_000, 8_000),
    files=st.lists(st.integers(1, 12_000), min_size=1, max_size=3),
    limit=st.one_of(st.none(), st.integers(1_000, 40_000)),
)
def test_the_largest_version_that_fits_is_sent_and_links_are_made_only_when_sent(
    smtp: SizedSmtp, mailbox: Mailbox, pdf: int, files: list[int], limit: int | None
) -> None:
    mailbox.reset()
    smtp.size_limit = limit
    attached, linked = message_with(pdf, files), message_with(pdf, [], links=len(files))
    made: list[int] = []

    def make() -> EmailMessage:
        made.append(1)
        return linked

    server = mail.SmtpServer("127.0.0.1", smtp.port, tls=False, starttls=False)
    margin = mail.SIZE_MARGIN_BYTES
    try:
        how = mail.send(server, attached, fallback=mail.Fallback(probe=linked, make=make))
    except mail.MessageTooLarge as exc:
        assert limit is not None and mail.wire_size(linked) + margin > limit
        assert (exc.size, exc.limit, exc.linked) == (mail.wire_size(linked), limit, True)
        assert (made, mailbox.mails) == ([], 0)
        return
    expected = "attached" if limit is None or mail.wire_size(attached) + margin <= limit else "linked"
    assert how == expected
    assert made == ([1] if how == "linked" else [])
    assert mailbox.mails == 1  # the version that fits, named with its SIZE= where the server states one
    (raw,) = mailbox.raw
    assert limit is None or len(raw) <= limit
    assert len(mailbox.received[0].get_payload()) == (2 + len(files) if how == "attached" else 2)
