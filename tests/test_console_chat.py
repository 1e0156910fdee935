"""The chat channel's console pages: a clinician writes with a file picked, the patient reads and replies.

Over HTTP as a browser sends the forms (``careshare.testing.console``), then once in a real browser
(the guide's steps: Quick Actions, Attach, upload with its progress bar, Send).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from playwright.sync_api import expect

from careshare.core import db
from careshare.host import create_app
from careshare.plugins.chat import MAX_FILES
from careshare.plugins.chat.tables import chat_messages
from careshare.testing import make_pdf
from careshare.testing.browser import register_patient, screenshot, sign_in
from careshare.testing.console import BASE_URL, ConsoleClient, copied_settings, notice_text, register

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from careshare.core.settings import Settings


def _upload(clinic: ConsoleClient, pid: str, name: str, data: bytes | None = None) -> str:
    sent = clinic.upload(f"/console/api/v1/patients/{pid}/files", name, data or make_pdf(text=name))
    assert sent.status_code == 201, sent.text  # ready at once: one worker checks it in the request
    return str(sent.json()["id"])


@contextlib.contextmanager
def _as_patient(clinic: ConsoleClient, org: str, pid: str) -> Iterator[ConsoleClient]:
    """A second browser (its own cookies) on the same app, signed in as the patient."""
    with TestClient(clinic.client.app, base_url=BASE_URL) as client:
        patient = ConsoleClient(client, clinic.settings)
        patient.sign_in("patient", org, patient=pid)
        yield patient


def _messages(page: str) -> list[str]:
    return re.findall(r'<li class="message( mine)?" data-message-id', page)


def _count(settings: Settings, table: sa.Table) -> int:
    engine = sa.create_engine(settings.database_url.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def test_a_message_with_a_picked_file_reaches_the_patient_and_the_reply_comes_back(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    fid = _upload(clinic, pid, "results.pdf")
    thread = clinic.page(f"/console/patients/{pid}/chat").text
    assert f'<input type="checkbox" name="file_id" value="{fid}" form="message-form">' in thread
    assert 'data-upload-url="/console/api/v1/patients/' + pid + '/files"' in thread
    assert f'data-tus-url="/console/api/v1/patients/{pid}/uploads"' in thread
    assert "No messages yet." in thread

    sent = clinic.form(
        f"/console/patients/{pid}/chat", {"body": "Your results <b>are</b> in.", "file_id": fid}, follow=True
    )
    assert sent.url.path == f"/console/patients/{pid}/chat"
    assert notice_text(sent.text) == ("ok", "", "Message sent.")
    assert _messages(sent.text) == [" mine"]
    assert "Your results &lt;b&gt;are&lt;/b&gt; in." in sent.text  # escaped, never markup
    assert ">results.pdf</a>" in sent.text

    with _as_patient(clinic, "org-a", pid) as patient:
        inbox = patient.page("/console/me").text
        assert '<a href="/console/me/chat">New message from your care team</a>' in inbox
        mine = patient.page("/console/me/chat")
        assert mine.status_code == 200 and _messages(mine.text) == [""]  # theirs, from the care team
        assert "Your results &lt;b&gt;are&lt;/b&gt; in." in mine.text and "Care team" in mine.text
        link = re.search(r'<a href="(/console/api/v1/attachments/[^"]+/content)">results.pdf</a>', mine.text)
        assert link is not None, mine.text
        content = patient.client.get(link.group(1))
        assert content.status_code == 200 and content.content.startswith(b"%PDF")
        assert 'data-upload-url="/console/api/v1/me/files"' in mine.text

        photo = patient.upload("/console/api/v1/me/files", "from-home.pdf", make_pdf(text="from home"))
        assert photo.status_code == 201, photo.text
        reply = patient.form("/console/me/chat", {"body": "Thank you!", "file_id": photo.json()["id"]}, follow=True)
        assert notice_text(reply.text) == ("ok", "", "Message sent.")
        assert _messages(reply.text) == ["", " mine"]  # oldest first

    thread = clinic.page(f"/console/patients/{pid}/chat").text
    assert _messages(thread) == [" mine", ""]
    assert thread.index("Your results") < thread.index("Thank you!")
    assert ">from-home.pdf</a>" in thread and "Patient" in thread


@pytest.mark.parametrize("refusal", ["too-many", "rejected", "empty"])
def test_a_refused_send_shows_the_problems_sentence_and_stores_nothing(
    clinic: ConsoleClient, console_settings: Settings, refusal: str
) -> None:
    pid = register(clinic)
    if refusal == "too-many":
        file_ids = [_upload(clinic, pid, f"scan-{i}.pdf") for i in range(MAX_FILES + 1)]
        code, sentence = "too-many-attachments", f"A message carries at most {MAX_FILES} files."
    elif refusal == "rejected":
        locked = clinic.upload(f"/console/api/v1/patients/{pid}/files", "locked.pdf", make_pdf(user_password="x"))
        assert locked.status_code == 422
        file_ids = [str(f["id"]) for f in clinic.client.get(f"/console/api/v1/patients/{pid}/files").json()["items"]]
        code, sentence = "file-rejected", ""
    else:
        file_ids, code, sentence = [], "invalid-request", "a message needs text, a file, or both"
    before = {t.name: _count(console_settings, t) for t in (chat_messages, db.attachments, db.shares)}
    answer = clinic.form(f"/console/patients/{pid}/chat", {"body": "  ", "file_id": file_ids}, follow=True)
    assert answer.url.path == f"/console/patients/{pid}/chat"
    kind, shown_code, text = notice_text(answer.text) or ("", "", "")
    assert (kind, shown_code) == ("error", code), answer.text
    assert sentence in text and text
    assert "No messages yet." in answer.text
    assert {t.name: _count(console_settings, t) for t in (chat_messages, db.attachments, db.shares)} == before


def test_a_patient_or_clinician_of_another_organisation_cannot_see_the_thread(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    sent = clinic.form(f"/console/patients/{pid}/chat", {"body": "For Ann only."})
    assert sent.status_code == 303
    with _as_patient(clinic, "org-b", pid) as stranger:
        page = stranger.page("/console/me/chat")
        assert page.status_code == 404 and "For Ann only." not in page.text
        reply = stranger.form("/console/me/chat", {"body": "hello?"}, follow=True)
        assert "For Ann only." not in reply.text
    clinic.form("/console/logout", {}, sent_from="/console/patients")
    clinic.sign_in("clinician", "org-b", sub="dr-b")
    page = clinic.page(f"/console/patients/{pid}/chat")
    assert page.status_code == 404 and "For Ann only." not in page.text
    refused = clinic.form(f"/console/patients/{pid}/chat", {"body": "From org-b."}, follow=True)
    assert refused.status_code == 404 and (notice_text(refused.text) or ("", ""))[:2] == ("error", "not-found")
    clinic.form("/console/logout", {}, sent_from="/console/patients")
    clinic.sign_in("clinician", "org-a", sub="dr-a")
    thread = clinic.page(f"/console/patients/{pid}/chat").text
    assert _messages(thread) == [" mine"] and "From org-b." not in thread and "hello?" not in thread


def test_a_message_sent_by_mistake_is_withdrawn_from_the_thread(clinic: ConsoleClient) -> None:
    pid = register(clinic, "Ann Smith", "MRN-W")
    thread = f"/console/patients/{pid}/chat"
    fid = _upload(clinic, pid, "not-for-ann.pdf")
    sent = clinic.form(thread, {"body": "Results for someone else.", "file_id": fid}, follow=True)
    [mid] = re.findall(r'data-message-id="([0-9a-z]+)"', sent.text)
    action = f'action="/console/shares/chat-message/{mid}/revoke"'
    assert action in sent.text
    with _as_patient(clinic, "org-a", pid) as patient:
        assert "Results for someone else." in patient.page("/console/me/chat").text
        # The clinic's file reached the patient as the message's attachment, never as one of "My files".
        assert "not-for-ann.pdf" not in patient.page("/console/me/files").text

    # No reason: refused with the field named, nothing withdrawn.
    refused = clinic.form(
        f"/console/shares/chat-message/{mid}/revoke", {"reason": " ", "back": thread}, sent_from=thread, follow=True
    )
    kind, code, text = notice_text(refused.text) or ("", "", "")
    assert (kind, code) == ("error", "invalid-request") and "reason: say why" in text
    assert action in clinic.page(thread).text

    # A "back" to another site is not followed: the console's own page list instead.
    done = clinic.form(
        f"/console/shares/chat-message/{mid}/revoke",
        {"reason": "Sent to the wrong patient", "back": "https://evil.example/"},
        sent_from=thread,
        follow=True,
    )
    assert done.url.path == "/console/patients"
    assert notice_text(done.text) == ("ok", "", "Withdrawn: the patient no longer sees it.")
    page = clinic.page(thread).text
    assert action not in page and "Sent to the wrong patient" in page and "by dr-a" in page
    with _as_patient(clinic, "org-a", pid) as patient:
        mine = patient.page("/console/me/chat").text
        assert "Results for someone else." not in mine and "not-for-ann.pdf" not in mine
        assert patient.form(f"/console/shares/chat-message/{mid}/revoke", {"reason": "x"}).status_code in (303, 403)
    shown = clinic.client.get(f"/console/api/v1/shares/chat-message/{mid}").json()
    assert [s["reason"] for s in shown["shares"]] == ["Sent to the wrong patient"]


def test_the_chat_page_finds_patients_by_a_posted_search(clinic: ConsoleClient) -> None:
    ann, bob = register(clinic), register(clinic, "Bob Jones", "MRN-2")
    page = clinic.page("/console/chat").text
    assert f'href="/console/patients/{ann}/chat">Ann Smith</a>' in page
    assert f'href="/console/patients/{bob}/chat">Bob Jones</a>' in page
    assert 'method="post" action="/console/chat/search"' in page
    found = clinic.form("/console/chat/search", {"q": "bob"}, sent_from="/console/chat")
    assert found.status_code == 200 and "Bob Jones" in found.text and "Ann Smith" not in found.text


def test_the_chat_links_come_with_the_plugin_and_go_with_it(tmp_path: Path, migrated_database: Path) -> None:
    for disabled in ("", "chat"):
        settings = copied_settings(
            tmp_path / (disabled or "all"), migrated_database, CARESHARE_DISABLE_PLUGINS=disabled
        )
        with TestClient(create_app(settings), base_url=BASE_URL) as client:
            clinic = ConsoleClient(client, settings)
            patients = clinic.sign_in("clinician", "org-a", sub="dr-a").text
            pid = register(clinic)
            profile = clinic.page(f"/console/patients/{pid}").text
            links = (
                '<a href="/console/chat">Chat</a>' in patients,
                f'<a href="/console/patients/{pid}/chat">Chat</a>' in profile,
                f'<a class="button" href="/console/patients/{pid}/chat">Start a conversation</a>' in profile,
            )
            assert links == ((not disabled,) * 3), (disabled, links)
            assert (clinic.page(f"/console/patients/{pid}/chat").status_code == 404) == bool(disabled)
            with _as_patient(clinic, "org-a", pid) as patient:
                me = patient.page("/console/me").text
                assert ('<a href="/console/me/chat">Chat</a>' in me) == (not disabled)


def test_the_clinician_attaches_an_upload_and_the_patient_reads_it_in_a_browser(
    page: Any, chromium: Any, console_server: str, tmp_path: Path
) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    pid = register_patient(page, base)

    page.get_by_role("link", name="Start a conversation").click()
    expect(page).to_have_url(f"{base}/console/patients/{pid}/chat")
    page.get_by_label("Message").fill("Here is your leaflet.")
    page.locator("summary", has_text="Attach").focus()
    page.keyboard.press("Enter")  # the Attach section opens from the keyboard
    expect(page.locator("details.attach")).to_have_attribute("open", "")
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), textarea, select')]
           .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name)"""
    )
    assert unlabelled == []
    leaflet = tmp_path / "leaflet.pdf"
    leaflet.write_bytes(make_pdf(3, text="a leaflet"))
    page.get_by_label("Upload a file to attach").set_input_files(str(leaflet))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"))
    expect(page.locator(".upload-progress")).to_have_attribute("value", "100")
    box = page.locator("#attach-files").get_by_label(re.compile("leaflet.pdf"))
    expect(box).to_be_checked()
    expect(page.get_by_label("Message")).to_have_value("Here is your leaflet.")  # kept through the refresh
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status").first).to_have_text("Message sent.")
    sent = page.locator("#thread li.mine")
    expect(sent).to_contain_text("Here is your leaflet.")
    expect(sent.get_by_role("link", name="leaflet.pdf")).to_be_visible()
    screenshot(page, "chat")
    assert page.console_errors == []

    patient_context = chromium.new_context(viewport={"width": 390, "height": 844})
    phone = patient_context.new_page()
    phone.set_default_timeout(15_000)
    try:
        sign_in(phone, base, role="patient", org="org-a", patient_id=pid)
        phone.get_by_role("navigation", name="Main").get_by_role("link", name="Chat").click()
        expect(phone).to_have_url(f"{base}/console/me/chat")
        theirs = phone.locator("#thread li.message").first
        expect(theirs).to_contain_text("Here is your leaflet.")
        expect(theirs.get_by_role("link", name="leaflet.pdf")).to_be_visible()
        phone.get_by_label("Message").fill("Thanks!")
        phone.get_by_role("button", name="Send").click()
        expect(phone.get_by_role("status").first).to_have_text("Message sent.")
        expect(phone.locator("#thread li.mine")).to_contain_text("Thanks!")
    finally:
        patient_context.close()
