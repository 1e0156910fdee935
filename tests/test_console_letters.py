"""The letters channel's console pages over HTTP and in a real browser.

The guide's steps: open the patient's Letters tab, create a letter (from a template or not), save
the draft, attach files, send (by email too: to a real aiosmtpd server on 127.0.0.1), and the
patient reads it in their Letters. Refusals (25 MB together, no email server) show their sentence.
"""

from __future__ import annotations

import email
import email.policy
import io
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import pikepdf
from aiosmtpd.controller import Controller
from litestar.testing import TestClient
from playwright.sync_api import expect

from careshare.host import create_app
from careshare.plugins.letters import console as letter_pages
from careshare.plugins.letters.letters import DEFAULT_MAX_ATTACHMENT_BYTES
from careshare.testing import free_port, make_pdf
from careshare.testing.browser import register_patient, screenshot, sign_in
from careshare.testing.console import BASE_URL, ConsoleClient, copied_settings, notice_text, register

if TYPE_CHECKING:
    from email.message import EmailMessage
    from pathlib import Path

    import pytest

    from careshare.core.settings import Settings

ADDRESS = "ann.smith@example.org"


def _upload(clinic: ConsoleClient, pid: str, name: str, data: bytes) -> str:
    sent = clinic.upload(f"/console/api/v1/patients/{pid}/files", name, data)
    assert sent.status_code in (201, 202), sent.text
    return str(sent.json()["id"])


def _new_letter(clinic: ConsoleClient, pid: str, **fields: str) -> str:
    """Create a draft through the Letters tab's form; its page's id."""
    answer = clinic.form(
        f"/console/patients/{pid}/letters",
        fields or {"title": "Your results", "body": "All is well."},
        sent_from=f"/console/patients/{pid}/letters",
        follow=True,
    )
    assert notice_text(answer.text) == ("ok", "", "Draft saved."), answer.text
    found = re.fullmatch(r"/console/letters/(\w+)", answer.url.path)
    assert found, answer.url
    return found.group(1)


def _as_patient(clinic: ConsoleClient, pid: str) -> tuple[TestClient[Any], ConsoleClient]:
    client = TestClient(clinic.client.app, base_url=BASE_URL)
    client.__enter__()
    me = ConsoleClient(client, clinic.settings)
    assert me.sign_in("patient", "org-a", patient=pid).url.path == "/console/me"
    return client, me


def padded_pdf(padding: int) -> bytes:
    """A real one-page PDF carrying ``padding`` random (incompressible) bytes in a stream."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 200))
    pdf.Root.Padding = pdf.make_stream(os.urandom(padding))
    out = io.BytesIO()
    pdf.save(out, compress_streams=False)
    return out.getvalue()


# -- the guide's steps -----------------------------------------------------------------------------


def test_from_a_template_to_a_sent_letter_the_patient_reads(clinic: ConsoleClient) -> None:
    saved = clinic.form(
        "/console/letter-templates",
        {
            "name": "Results",
            "subject": "Results for {{ patient.name }}",
            "body": "Dear {{ patient.name }},\n\nAll clear.",
        },
        sent_from="/console/letter-templates",
        follow=True,
    )
    assert notice_text(saved.text) == ("ok", "", "Template saved.") and "Results for {{ patient.name }}" in saved.text
    pid = register(clinic)
    leaflet = _upload(clinic, pid, "leaflet.pdf", make_pdf(2, text="a leaflet"))
    scan = _upload(clinic, pid, "scan.pdf", make_pdf(1, text="a scan"))

    profile = clinic.page(f"/console/patients/{pid}").text
    assert f'href="/console/patients/{pid}/letters">Create letter</a>' in profile
    tab = clinic.page(f"/console/patients/{pid}/letters").text
    template_id = re.search(r'<option value="(\w+)">Results</option>', tab).group(1)  # type: ignore[union-attr]
    assert "No letters yet." in tab

    lid = _new_letter(clinic, pid, template_id=template_id, title="", body="")
    draft = clinic.page(f"/console/letters/{lid}").text
    assert 'value="Results for Ann Smith"' in draft and "Dear Ann Smith,\n\nAll clear." in draft
    assert f'data-upload-url="/console/api/v1/patients/{pid}/files"' in draft
    assert f'data-tus-url="/console/api/v1/patients/{pid}/uploads"' in draft
    assert 'id="letter-choices" data-refresh' in draft
    assert f'name="file_id" value="{leaflet}"' in draft and f'name="file_id" value="{scan}"' in draft

    edited = clinic.form(
        f"/console/letters/{lid}", {"title": "Your scan results", "body": "The scan is clear."}, follow=True
    )
    assert notice_text(edited.text) == ("ok", "", "Draft saved.")
    assert 'value="Your scan results"' in edited.text and "The scan is clear." in edited.text
    blank = clinic.form(f"/console/letters/{lid}", {"title": " ", "body": "x"}, follow=True)
    assert notice_text(blank.text)[:2] == ("error", "invalid-request")  # type: ignore[index]
    assert "title: must not be blank" in notice_text(blank.text)[2]  # type: ignore[index]

    attached = clinic.form(
        f"/console/letters/{lid}/attach", {"file_id": [leaflet, scan]}, sent_from=f"/console/letters/{lid}", follow=True
    )
    assert notice_text(attached.text) == ("ok", "", "2 files attached.")
    ids = re.findall(r'data-attachment-id="(\w+)"', attached.text)
    assert len(ids) == 2 and f'name="file_id" value="{leaflet}"' not in attached.text  # no longer offered
    removed = clinic.form(
        f"/console/letters/{lid}/attachments/{ids[1]}/detach", {}, sent_from=f"/console/letters/{lid}", follow=True
    )
    assert notice_text(removed.text)[2].startswith("File removed from the letter")  # type: ignore[index]
    assert re.findall(r'data-attachment-id="(\w+)"', removed.text) == [ids[0]]
    shelf = clinic.upload("/console/api/v1/library/files", "clinic-guide.pdf", make_pdf(1, text="a guide"))
    assert shelf.status_code in (201, 202), shelf.text
    offered = clinic.page(f"/console/letters/{lid}").text
    assert f'name="file_id" value="{shelf.json()["id"]}"> clinic-guide.pdf <span class="meta">library' in offered
    from_library = clinic.form(
        f"/console/letters/{lid}/attach", {"file_id": shelf.json()["id"]}, sent_from=f"/console/letters/{lid}"
    )
    assert notice_text(clinic.page(from_library.headers["location"]).text) == ("ok", "", "File attached.")
    nothing = clinic.form(f"/console/letters/{lid}/attach", {}, sent_from=f"/console/letters/{lid}", follow=True)
    assert "file_id: tick the files to attach" in notice_text(nothing.text)[2]  # type: ignore[index]

    sent = clinic.form(f"/console/letters/{lid}/send", {}, sent_from=f"/console/letters/{lid}", follow=True)
    assert notice_text(sent.text) == ("ok", "", "Letter sent.")
    assert 'class="badge ok">Sent' in sent.text and 'data-email-status="not-requested"' in sent.text
    assert 'name="title"' not in sent.text and "Attach selected" not in sent.text  # read-only now
    pdf_url = f"/console/api/v1/letters/{lid}/pdf"
    assert f'href="{pdf_url}"' in sent.text
    pdf = clinic.client.get(pdf_url)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    again = clinic.form(f"/console/letters/{lid}", {"title": "Changed", "body": ""}, follow=True)
    assert notice_text(again.text)[:2] == ("error", "draft-required")  # type: ignore[index]
    listed = clinic.page(f"/console/patients/{pid}/letters").text
    assert "Your scan results" in listed and 'class="badge ok">Sent' in listed

    unsent = _new_letter(clinic, pid, title="Still a draft", body="")
    client, me = _as_patient(clinic, pid)
    try:
        mine = me.page("/console/me/letters")
        assert '<a href="/console/me/letters">Letters</a>' in mine.text or 'aria-current="page">Letters' in mine.text
        assert "Your scan results" in mine.text and "Still a draft" not in mine.text
        inbox = me.page("/console/me").text
        assert f'href="/console/me/letters/{lid}"' in inbox  # the notification opens the letter
        letter = me.page(f"/console/me/letters/{lid}")
        assert letter.status_code == 200 and "The scan is clear." in letter.text
        assert "leaflet.pdf" in letter.text and "clinic-guide.pdf" in letter.text and "scan.pdf" not in letter.text
        assert f'href="{pdf_url}"' in letter.text and me.client.get(pdf_url).status_code == 200
        file_href = re.search(r'href="(/console/api/v1/attachments/\w+/content)"', letter.text).group(1)  # type: ignore[union-attr]
        assert me.client.get(file_href).content.startswith(b"%PDF")
        assert me.page(f"/console/me/letters/{unsent}").status_code == 404
        assert me.page(f"/console/letters/{lid}").status_code == 403
    finally:
        client.__exit__(None, None, None)


def test_a_sent_letter_is_withdrawn_from_its_page(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    lid = _new_letter(clinic, pid, title="Results for another patient", body="Wrong letter.")
    page = f"/console/letters/{lid}"
    assert "/revoke" not in clinic.page(page).text  # a draft has not reached anyone: nothing to withdraw
    sent = clinic.form(f"{page}/send", {}, sent_from=page, follow=True)
    assert f'action="/console/shares/letter/{lid}/revoke"' in sent.text
    client, me = _as_patient(clinic, pid)
    try:
        assert me.page(f"/console/me/letters/{lid}").status_code == 200
        done = clinic.form(
            f"/console/shares/letter/{lid}/revoke",
            {"reason": "Wrong patient", "back": page},
            sent_from=page,
            follow=True,
        )
        assert done.url.path == page
        assert notice_text(done.text) == ("ok", "", "Withdrawn: the patient no longer sees it.")
        assert "/revoke" not in done.text and "Wrong patient" in done.text
        assert me.page(f"/console/me/letters/{lid}").status_code == 404
        assert "Results for another patient" not in me.page("/console/me/letters").text
    finally:
        client.__exit__(None, None, None)


def test_without_an_email_server_the_toggle_is_off_and_an_email_is_refused(clinic: ConsoleClient) -> None:
    pid = register(clinic, email=ADDRESS)
    lid = _new_letter(clinic, pid)
    page = clinic.page(f"/console/letters/{lid}").text
    assert re.search(r'<input type="checkbox" name="email" value="yes" id="send-email" disabled', page)
    assert "Email is not set up on this server" in page
    refused = clinic.form(f"/console/letters/{lid}/send", {"email": "yes"}, sent_from=f"/console/letters/{lid}")
    shown = clinic.page(refused.headers["location"])
    kind, code, text = notice_text(shown.text) or ("", "", "")
    assert (kind, code) == ("error", "email-not-configured") and "Nothing was sent." in text
    assert 'class="badge">Draft' in shown.text  # still a draft


class Mailbox:
    """An SMTP server's handler that keeps every message."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


def test_send_by_email_through_a_real_smtp_server(tmp_path: Path, migrated_database: Path) -> None:
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port(), data_size_limit=None)
    smtp.start()
    try:
        settings = copied_settings(
            tmp_path,
            migrated_database,
            CARESHARE_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
            CARESHARE_MAIL_FROM="letters@riverside.example",
        )
        with TestClient(create_app(settings), base_url=BASE_URL) as client:
            clinic = ConsoleClient(client, settings)
            clinic.sign_in("clinician", "org-a", sub="dr-a")
            no_address = register(clinic, "Bob Jones", "MRN-2")
            other = _new_letter(clinic, no_address)
            assert "This patient has no email address" in clinic.page(f"/console/letters/{other}").text
            pid = register(clinic, email=ADDRESS)
            lid = _new_letter(clinic, pid)
            page = clinic.page(f"/console/letters/{lid}").text
            assert re.search(r'id="send-email">', page) and ADDRESS in page
            sent = clinic.form(
                f"/console/letters/{lid}/send", {"email": "yes"}, sent_from=f"/console/letters/{lid}", follow=True
            )
            assert notice_text(sent.text) == ("ok", "", "Letter sent. The email is on its way.")
            assert re.search(r'data-email-status="(pending|sent)"', sent.text)
            deadline = time.monotonic() + 20
            while 'data-email-status="sent"' not in (shown := clinic.page(f"/console/letters/{lid}").text):
                assert time.monotonic() < deadline, "the delivery loop did not send the email"
                time.sleep(0.3)
            assert 'class="badge ok">Email sent' in shown
            assert 'class="badge ok">Email sent' in clinic.page(f"/console/patients/{pid}/letters").text
        assert [m["To"] for m in mailbox.received] == [ADDRESS]
    finally:
        smtp.stop()


# -- refusals --------------------------------------------------------------------------------------


def test_the_25_mb_total_shows_its_sentence_and_attaches_nothing(clinic: ConsoleClient) -> None:
    assert DEFAULT_MAX_ATTACHMENT_BYTES == 25_000_000
    pid = register(clinic)
    first = _upload(clinic, pid, "a.pdf", padded_pdf(12_600_000))
    second = _upload(clinic, pid, "b.pdf", padded_pdf(12_600_000))
    small = _upload(clinic, pid, "c.pdf", make_pdf())
    lid = _new_letter(clinic, pid)
    assert "of 25.0 MB together" in clinic.page(f"/console/letters/{lid}").text
    ok = clinic.form(f"/console/letters/{lid}/attach", {"file_id": first}, sent_from=f"/console/letters/{lid}")
    assert notice_text(clinic.page(ok.headers["location"]).text) == ("ok", "", "File attached.")
    over = clinic.form(
        f"/console/letters/{lid}/attach", {"file_id": [small, second]}, sent_from=f"/console/letters/{lid}", follow=True
    )
    assert over.url.path == f"/console/letters/{lid}"
    kind, code, text = notice_text(over.text) or ("", "", "")
    assert (kind, code) == ("error", "attachments-too-large"), over.text
    assert text.startswith("Attachments too large together.") and "25,000,000" in text
    assert len(re.findall(r'data-attachment-id="', over.text)) == 1  # all or none: c.pdf is not attached either


def test_another_organisation_sees_none_of_the_letters(clinic: ConsoleClient, console_settings: Settings) -> None:
    pid = register(clinic)
    lid = _new_letter(clinic, pid, title="Private matter", body="Only for org-a.")
    with TestClient(clinic.client.app, base_url=BASE_URL) as other_client:
        other = ConsoleClient(other_client, console_settings)
        other.sign_in("clinician", "org-b", sub="dr-b")
        for path in (f"/console/letters/{lid}", f"/console/patients/{pid}/letters"):
            page = other.page(path)
            assert page.status_code == 404 and "Private matter" not in page.text, path
        send = other.form(f"/console/letters/{lid}/send", {}, sent_from="/console/patients", follow=True)
        assert notice_text(send.text)[:2] == ("error", "not-found")  # type: ignore[index]
    assert 'class="badge">Draft' in clinic.page(f"/console/letters/{lid}").text


def test_both_lists_show_a_page_and_an_older_link_to_the_rest(
    clinic: ConsoleClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(letter_pages, "PAGE", 2)
    pid = register(clinic)
    for n in range(3):
        lid = _new_letter(clinic, pid, title=f"Letter {n}", body="")
        sent = clinic.form(f"/console/letters/{lid}/send", {}, sent_from=f"/console/letters/{lid}", follow=True)
        assert notice_text(sent.text) == ("ok", "", "Letter sent."), sent.text

    def listed(page: str) -> list[str]:
        return re.findall(r'href="/console/(?:me/)?letters/\w+">(Letter \d)</a>', page)

    assert tuple(map(listed, clinic.two_pages(f"/console/patients/{pid}/letters", "Older letters"))) == (
        ["Letter 2", "Letter 1"],
        ["Letter 0"],
    )
    client, me = _as_patient(clinic, pid)
    try:
        assert tuple(map(listed, me.two_pages("/console/me/letters", "Older letters"))) == (
            ["Letter 2", "Letter 1"],
            ["Letter 0"],
        )
    finally:
        client.__exit__(None, None, None)


def test_the_letters_pages_go_with_the_plugin(tmp_path: Path, migrated_database: Path) -> None:
    settings = copied_settings(tmp_path, migrated_database, CARESHARE_DISABLE_PLUGINS="letters")
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        clinic = ConsoleClient(client, settings)
        patients = clinic.sign_in("clinician", "org-a", sub="dr-a")
        assert "Letter templates" not in patients.text
        pid = register(clinic)
        profile = clinic.page(f"/console/patients/{pid}").text
        assert "/letters" not in profile and "Create letter" not in profile
        assert clinic.page(f"/console/patients/{pid}/letters").status_code == 404


# -- in a real browser -----------------------------------------------------------------------------


def test_a_clinician_writes_attaches_and_sends_and_the_patient_reads_it(
    page: Any, chromium: Any, console_server: str, tmp_path: Path
) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    pid = register_patient(page, base)

    page.get_by_role("link", name="Create letter").click()
    expect(page).to_have_url(f"{base}/console/patients/{pid}/letters")
    page.get_by_label("Template").select_option(label="No template")
    page.get_by_label("Title").fill("Your results")
    page.get_by_label("Body").fill("Dear Ann,\n\nYour results are enclosed.")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("status").first).to_have_text("Draft saved.")

    results = tmp_path / "results.pdf"
    results.write_bytes(make_pdf(3, text="the results"))
    page.get_by_label("Upload a file to the patient's files").set_input_files(str(results))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"))
    box = page.locator("#letter-choices").get_by_label(re.compile(r"results\.pdf"))
    expect(box).to_be_checked()  # the new file, ticked once it is ready
    page.get_by_role("button", name="Attach selected").click()
    expect(page.get_by_role("status").first).to_have_text("File attached.")
    expect(page.locator("#letter-attachments").get_by_role("link", name="results.pdf")).to_be_visible()
    expect(page.get_by_label("Also send by email")).to_be_disabled()  # no email server here
    screenshot(page, "letter")
    page.get_by_role("button", name="Send letter").click()
    expect(page.get_by_role("status").first).to_have_text("Letter sent.")
    expect(page.get_by_role("link", name="Open the letter (PDF)")).to_be_visible()
    assert page.console_errors == []

    patient_context = chromium.new_context(viewport={"width": 390, "height": 844})
    phone = patient_context.new_page()
    phone.set_default_timeout(15_000)
    try:
        sign_in(phone, base, role="patient", org="org-a", patient_id=pid)
        phone.get_by_role("navigation", name="Main").get_by_role("link", name="Letters").click()
        phone.get_by_role("link", name="Your results").click()
        expect(phone.get_by_text("Your results are enclosed.")).to_be_visible()
        expect(phone.get_by_role("link", name="results.pdf")).to_be_visible()
        expect(phone.get_by_role("link", name="Open the letter (PDF)")).to_be_visible()
    finally:
        patient_context.close()


def test_in_the_browser_the_25_mb_letter_limit_is_reached_with_its_sentence(
    page: Any, console_server: str, tmp_path: Path
) -> None:
    """Two large scans uploaded from the draft (resumably: tus) together pass 25 MB: refused, nothing attached."""
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    register_patient(page, base)
    page.get_by_role("link", name="Create letter").click()
    page.get_by_label("Title").fill("Your scans")
    page.get_by_label("Body").fill("Enclosed.")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("status").first).to_have_text("Draft saved.")
    for name in ("scan-a.pdf", "scan-b.pdf"):
        scan = tmp_path / name
        scan.write_bytes(padded_pdf(12_600_000))
        page.get_by_label("Upload a file to the patient's files").set_input_files(str(scan))
        page.get_by_role("button", name="Upload", exact=True).click()
        expect(page.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"), timeout=60_000)
        expect(page.locator("#letter-choices").get_by_label(re.compile(re.escape(name)))).to_be_checked()
    page.get_by_role("button", name="Attach selected").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Attachments too large together.")
    expect(alert).to_contain_text("25,000,000")
    expect(page.locator("#letter-attachments").get_by_role("link")).to_have_count(0)
