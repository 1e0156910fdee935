"""The console's everyday patient work: edit details, delete a file, erase a patient on request, the clinic's inbox."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from careshare.host.console import pages as console_pages
from careshare.testing import bearer, make_pdf
from careshare.testing.console import ConsoleClient, notice_text, register

if TYPE_CHECKING:
    import pytest


def test_the_profile_edits_name_and_email(clinic: ConsoleClient) -> None:
    pid = register(clinic, "Ann Smith", "MRN-1", email="ann@example.org")
    profile = clinic.page(f"/console/patients/{pid}").text
    assert 'value="Ann Smith"' in profile and 'value="ann@example.org"' in profile
    saved = clinic.form(
        f"/console/patients/{pid}/edit",
        {"name": "Ann Jones", "email": ""},
        sent_from=f"/console/patients/{pid}",
        follow=True,
    )
    assert notice_text(saved.text) == ("ok", "", "Patient details saved.")
    assert "Ann Jones" in saved.text and "none given" in saved.text
    shown = clinic.client.get(f"/console/api/v1/patients/{pid}").json()
    assert (shown["name"], shown["email"]) == ("Ann Jones", None)
    refused = clinic.form(
        f"/console/patients/{pid}/edit",
        {"name": " ", "email": "nope"},
        sent_from=f"/console/patients/{pid}",
        follow=True,
    )
    kind, code, text = notice_text(refused.text) or ("", "", "")
    assert (kind, code) == ("error", "invalid-request")
    assert "name: give the patient's name" in text and "email: an email address" in text
    assert clinic.client.get(f"/console/api/v1/patients/{pid}").json()["name"] == "Ann Jones"


def test_a_file_is_deleted_from_its_page(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    sent = clinic.upload(f"/console/api/v1/patients/{pid}/files", "wrong.pdf", make_pdf(text="wrong patient"))
    assert sent.status_code == 201, sent.text
    fid = sent.json()["id"]
    page = clinic.page(f"/console/files/{fid}").text
    assert f'action="/console/files/{fid}/delete"' in page
    done = clinic.form(f"/console/files/{fid}/delete", {}, sent_from=f"/console/files/{fid}", follow=True)
    assert done.url.path == f"/console/patients/{pid}/files"
    assert notice_text(done.text) == ("ok", "", "File deleted. What was already shared with the patient stays.")
    assert "wrong.pdf" not in done.text
    assert clinic.page(f"/console/files/{fid}").status_code == 404


def test_erasure_asks_for_the_clinic_number_then_erases(clinic: ConsoleClient) -> None:
    pid = register(clinic, "Ann Smith", "MRN-9")
    wrong = clinic.form(
        f"/console/patients/{pid}/erase", {"external_id": "MRN-8"}, sent_from=f"/console/patients/{pid}", follow=True
    )
    kind, code, text = notice_text(wrong.text) or ("", "", "")
    assert (kind, code) == ("error", "erasure-not-confirmed")
    assert "clinic number exactly" in text
    assert clinic.client.get(f"/console/api/v1/patients/{pid}").status_code == 200
    done = clinic.form(
        f"/console/patients/{pid}/erase", {"external_id": "MRN-9"}, sent_from=f"/console/patients/{pid}", follow=True
    )
    assert done.url.path == "/console/patients"
    assert notice_text(done.text) == ("ok", "", "Patient erased.")
    assert "Ann Smith" not in done.text
    assert clinic.page(f"/console/patients/{pid}").status_code == 404


def test_the_clinic_inbox_lists_what_patients_sent_and_is_read_once(clinic: ConsoleClient) -> None:
    pid = register(clinic, "Ann Smith", "MRN-5")
    me = bearer(clinic.settings, "patient", "org-a", patient=pid)
    sent = clinic.client.post("/v1/me/messages", json={"body": "My knee hurts again."}, headers=me)
    assert sent.status_code == 201, sent.text
    uploaded = clinic.client.post(
        "/v1/me/files", params={"filename": "knee.pdf"}, content=make_pdf(), headers={**me, "Prefer": "wait=30"}
    )
    assert uploaded.status_code == 201, uploaded.text

    page = clinic.page("/console/inbox").text
    assert 'aria-current="page"' in page and ">Inbox<" in page
    # Each entry names the patient for the clinician and opens where the item is read.
    assert f'href="/console/patients/{pid}/chat">A patient sent a message</a>: Ann Smith' in page
    assert f'href="/console/files/{uploaded.json()["id"]}">A patient sent a file</a>: Ann Smith' in page
    assert "My knee hurts again." not in page  # the text is on the chat page, not in the inbox
    [first, second] = re.findall(r'action="/console/inbox/([0-9a-z]+)/read"', page)

    done = clinic.form(f"/console/inbox/{second}/read", {}, sent_from="/console/inbox", follow=True)
    assert notice_text(done.text) == ("ok", "", "Marked as read.")
    assert re.findall(r'action="/console/inbox/([0-9a-z]+)/read"', done.text) == [first]
    unread = clinic.page("/console/inbox?unread=true").text
    assert unread.count("Ann Smith") == 1 and "A patient sent a file" in unread
    assert clinic.client.get("/console/api/v1/notifications?unread=true").json()["items"][0]["id"] == first
    # Another's (or no) notification: the refusal goes back to the inbox, as every console form's does.
    missing = clinic.form("/console/inbox/01hzzzzzzzzzzzzzzzzzzzzzzz/read", {}, sent_from="/console/inbox", follow=True)
    assert (notice_text(missing.text) or ("",))[:2] == ("error", "not-found")


def test_the_clinic_inbox_pages_keep_the_unread_filter(clinic: ConsoleClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_pages, "PAGE", 1)
    pid = register(clinic, "Ann Smith", "MRN-6")
    me = bearer(clinic.settings, "patient", "org-a", patient=pid)
    for text in ("one", "two", "three"):
        assert clinic.client.post("/v1/me/messages", json={"body": text}, headers=me).status_code == 201
    newest = clinic.page("/console/inbox").text
    [read] = re.findall(r'action="/console/inbox/([0-9a-z]+)/read"', newest)
    clinic.form(f"/console/inbox/{read}/read", {}, sent_from="/console/inbox")
    first = clinic.page("/console/inbox?unread=true").text
    [older] = re.findall(r'<p class="older"><a href="(\?cursor=[^"]+)">', first)
    assert older.endswith("&amp;unread=true")
    second = clinic.page("/console/inbox" + older.replace("&amp;", "&")).text
    shown = re.findall(r'action="/console/inbox/([0-9a-z]+)/read"', first + second)
    assert len(shown) == 2 and read not in shown  # the two unread ones, one per page, never the read one
