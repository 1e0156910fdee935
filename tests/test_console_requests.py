"""The console's file-request pages: the clinician asks and reviews each answer, the patient answers.

Driven as a browser sends them (``careshare.testing.console``), and once in a real browser.
"""

from __future__ import annotations

import html
import re
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import TestClient
from playwright.sync_api import expect

from careshare.host import create_app
from careshare.plugins.requests import console as request_pages
from careshare.testing import make_pdf
from careshare.testing.browser import screenshot, sign_in
from careshare.testing.console import BASE_URL, ConsoleClient, copied_settings, notice_text, register

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from careshare.core.settings import Settings

INSTRUCTIONS = "Please send the discharge letter from St Elsewhere"
REASON = "This letter is from 2019; send the one from last month"


def _due(days: int = 7) -> str:
    return (date.today() + timedelta(days=days)).isoformat()


def _ask(clinic: ConsoleClient, pid: str, **fields: Any) -> str:
    data = {"message": INSTRUCTIONS, "accepted_kinds": ["pdf"], "max_files": "2", "due_at": _due(), **fields}
    asked = clinic.form(f"/console/patients/{pid}/file-requests", data)
    assert asked.status_code == 303, asked.text
    assert INSTRUCTIONS.split()[1] not in asked.headers["location"]
    return asked.headers["location"].rsplit("/", 1)[1]


def _text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _answer_row(page: str, fid: str) -> str:
    found = re.search(rf'<li class="file answer [^"]*" data-file-id="{fid}".*?</li>', page, re.S)
    assert found, page
    return found.group(0)


@pytest.fixture
def home(browser: ConsoleClient, console_settings: Settings) -> Iterator[tuple[ConsoleClient, str]]:
    """The clinic signed in with one patient registered, and that patient signed in on their own client."""
    browser.sign_in("clinician", "org-a", sub="dr-a")
    pid = register(browser)
    with TestClient(browser.client.app, base_url=BASE_URL) as patient_client:
        patient = ConsoleClient(patient_client, console_settings)
        assert patient.sign_in("patient", "org-a", patient=pid).url.path == "/console/me"
        yield patient, pid


def test_ask_answer_review_and_complete(browser: ConsoleClient, home: tuple[ConsoleClient, str]) -> None:
    clinic, (patient, pid) = browser, home
    profile = clinic.page(f"/console/patients/{pid}").text
    assert f'href="/console/patients/{pid}/file-requests">Ask for files</a>' in profile
    form = clinic.page(f"/console/patients/{pid}/file-requests").text
    for label in ('for="fr-message"', 'for="fr-count"', 'for="fr-due"', 'name="accepted_kinds" value="pdf"'):
        assert label in form
    rid = _ask(clinic, pid)
    review = clinic.page(f"/console/file-requests/{rid}")
    assert notice_text(review.text) == ("ok", "", "Request sent to the patient.")
    assert INSTRUCTIONS in review.text and "Waiting for the patient" in review.text
    listed = clinic.page(f"/console/patients/{pid}/file-requests").text
    assert f'href="/console/file-requests/{rid}"' in listed and "2 of 2 still to come" in _text(listed)

    # The patient: the inbox links to the request, the request page uploads to the API's answer route.
    inbox = patient.page("/console/me").text
    assert f'href="/console/me/file-requests/{rid}"' in inbox
    mine = patient.page("/console/me/file-requests").text
    assert INSTRUCTIONS in mine and f'href="/console/me/file-requests/{rid}"' in mine
    upload_url = f"/console/api/v1/me/file-requests/{rid}/files"
    # The list itself takes a file for each open request, each form's input with an id of its own.
    assert f'data-upload-url="{upload_url}"' in mine
    assert f'<label for="upload-{rid}">Send a file for this request</label>' in mine
    assert f'<input id="upload-{rid}" name="file"' in mine
    answer_page = patient.page(f"/console/me/file-requests/{rid}").text
    assert f'data-upload-url="{upload_url}"' in answer_page
    first = patient.upload(upload_url, "old-letter.pdf", make_pdf(text="2019"))
    second = patient.upload(upload_url, "new-letter.pdf", make_pdf(text="this month"))
    assert first.status_code in (200, 201, 202) and second.status_code in (200, 201, 202), second.text
    old, new = first.json()["file"]["id"], second.json()["file"]["id"]
    answer_page = patient.page(f"/console/me/file-requests/{rid}").text
    assert "Waiting for review" in _answer_row(answer_page, old)
    assert "You have sent as many files as asked for" in answer_page and "data-upload-url" not in answer_page
    assert "data-upload-url" not in patient.page("/console/me/file-requests").text

    # The clinician sees both to review, each linked to its file.
    review = clinic.page(f"/console/file-requests/{rid}").text
    assert "To review" in _answer_row(review, old) and f'href="/console/files/{old}"' in review
    assert 'for="reason-' + old + '"' in review
    thumbnail = f"/console/api/v1/files/{old}/content?rendition=thumbnail"
    assert f'<img src="{thumbnail}"' in _answer_row(review, old)
    assert clinic.client.get(thumbnail).status_code == 200
    empty = clinic.form(
        f"/console/file-requests/{rid}/files/{old}/reject",
        {"reason": " "},
        sent_from=f"/console/file-requests/{rid}",
        follow=True,
    )
    assert notice_text(empty.text)[:2] == ("error", "invalid-request")  # type: ignore[index]
    assert "give the patient a reason" in notice_text(empty.text)[2]  # type: ignore[index]
    assert empty.url.path == f"/console/file-requests/{rid}"
    rejected = clinic.form(
        f"/console/file-requests/{rid}/files/{old}/reject",
        {"reason": REASON},
        sent_from=f"/console/file-requests/{rid}",
        follow=True,
    )
    assert notice_text(rejected.text)[0] == "ok"  # type: ignore[index]
    row = _answer_row(rejected.text, old)
    assert 'data-decision="rejected"' in row and REASON in html.unescape(row)
    again = clinic.form(
        f"/console/file-requests/{rid}/files/{old}/accept", {}, sent_from=f"/console/file-requests/{rid}", follow=True
    )
    assert notice_text(again.text)[1] == "answer-already-reviewed"  # type: ignore[index]

    # The patient reads why, and may send one more.
    answer_page = patient.page(f"/console/me/file-requests/{rid}").text
    row = _answer_row(answer_page, old)
    assert "Not usable" in row and REASON in html.unescape(row)
    assert "1 more file can be sent." in answer_page and f'data-upload-url="{upload_url}"' in answer_page
    assert "reviewed_by" not in answer_page and "dr-a" not in answer_page

    accepted = clinic.form(
        f"/console/file-requests/{rid}/files/{new}/accept", {}, sent_from=f"/console/file-requests/{rid}", follow=True
    )
    assert notice_text(accepted.text) == ("ok", "", "File accepted.")
    assert 'data-decision="accepted"' in _answer_row(accepted.text, new)
    completed = clinic.form(
        f"/console/file-requests/{rid}/complete", {}, sent_from=f"/console/file-requests/{rid}", follow=True
    )
    assert notice_text(completed.text) == ("ok", "", "Request completed; it takes no more files.")
    assert 'data-status="completed"' in completed.text and "Complete the request" not in completed.text
    closed = patient.upload(upload_url, "late.pdf", make_pdf(text="late"))
    assert closed.status_code == 409 and closed.json()["code"] == "request-closed"
    listed = patient.page("/console/me/file-requests").text
    assert "Closed requests" in listed and 'data-status="completed"' in listed


def test_a_refused_answer_shows_its_sentence_and_keeps_nothing(
    browser: ConsoleClient, home: tuple[ConsoleClient, str]
) -> None:
    clinic, (patient, pid) = browser, home
    rid = _ask(clinic, pid, max_files="1")
    upload_url = f"/console/api/v1/me/file-requests/{rid}/files"
    locked = patient.upload(upload_url, "locked.pdf", make_pdf(user_password="x"))
    assert locked.status_code == 422 and locked.json()["code"] == "pdf-password-protected", locked.text
    assert locked.json()["detail"]
    wrong = patient.upload(upload_url, "notes.txt", b"just some text, not a PDF\n")
    assert wrong.status_code in (415, 422) and wrong.json()["detail"], wrong.text
    answer_page = patient.page(f"/console/me/file-requests/{rid}").text
    assert "You have not sent a file for this request yet." in answer_page
    review = clinic.page(f"/console/file-requests/{rid}").text
    assert "Nothing sent yet." in review

    cancelled = clinic.form(
        f"/console/file-requests/{rid}/cancel", {}, sent_from=f"/console/file-requests/{rid}", follow=True
    )
    assert notice_text(cancelled.text) == ("ok", "", "Request cancelled.")
    twice = clinic.form(
        f"/console/file-requests/{rid}/cancel", {}, sent_from=f"/console/file-requests/{rid}", follow=True
    )
    kind, code, text = notice_text(twice.text) or ("", "", "")
    assert (kind, code) == ("error", "request-closed") and "takes no more files" in text


def test_a_kind_not_asked_for_is_refused_with_the_kinds_named(
    browser: ConsoleClient, home: tuple[ConsoleClient, str]
) -> None:
    clinic, (patient, pid) = browser, home
    rid = _ask(clinic, pid, accepted_kinds=["image"])
    refused = patient.upload(f"/console/api/v1/me/file-requests/{rid}/files", "letter.pdf", make_pdf())
    assert refused.status_code == 422 and refused.json()["code"] == "kind-not-requested", refused.text
    assert "asked for image" in refused.json()["detail"]


def test_the_ask_form_names_every_wrong_field(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    sent_from = f"/console/patients/{pid}/file-requests"
    answer = clinic.form(sent_from, {"message": " ", "max_files": "many", "due_at": ""}, follow=True)
    assert answer.url.path == sent_from
    kind, code, text = notice_text(answer.text) or ("", "", "")
    assert (kind, code) == ("error", "invalid-request")
    for field in ("message: must not be blank", "accepted_kinds:", "max_files: give a number", "due_at: pick"):
        assert field in text, text
    assert text.count("due_at") == 1, text
    past = clinic.form(
        sent_from, {"message": "x", "accepted_kinds": "pdf", "max_files": "1", "due_at": _due(-2)}, follow=True
    )
    assert "due_at: must be in the future" in (notice_text(past.text) or ("", "", ""))[2]
    unknown = clinic.form(
        sent_from, {"message": "x", "accepted_kinds": "fax", "max_files": "1", "due_at": _due()}, follow=True
    )
    assert "unknown kind(s) fax" in (notice_text(unknown.text) or ("", "", ""))[2]
    assert "No file requests yet." in clinic.page(sent_from).text


def test_another_organisation_sees_nothing(
    browser: ConsoleClient, home: tuple[ConsoleClient, str], console_settings: Settings
) -> None:
    clinic, (patient, pid) = browser, home
    rid = _ask(clinic, pid)
    sent = patient.upload(f"/console/api/v1/me/file-requests/{rid}/files", "letter.pdf", make_pdf())
    fid = sent.json()["file"]["id"]
    with TestClient(browser.client.app, base_url=BASE_URL) as other_client:
        other = ConsoleClient(other_client, console_settings)
        other.sign_in("clinician", "org-b", sub="dr-b")
        assert other.page(f"/console/file-requests/{rid}").status_code == 404
        assert other.page(f"/console/patients/{pid}/file-requests").status_code == 404
        for action in (f"files/{fid}/accept", "complete", "cancel"):
            tried = other.form(f"/console/file-requests/{rid}/{action}", {}, sent_from="/console/patients", follow=True)
            assert notice_text(tried.text)[1] == "not-found", action  # type: ignore[index]
        rejected = other.form(
            f"/console/file-requests/{rid}/files/{fid}/reject", {"reason": "no"}, sent_from="/console/patients"
        )
        assert rejected.status_code == 303
    review = clinic.page(f"/console/file-requests/{rid}").text
    assert "To review" in _answer_row(review, fid) and 'data-status="answered"' in review
    # A clinician's pages are not the patient's, and another patient's request is not found.
    assert patient.page(f"/console/file-requests/{rid}").status_code == 403
    other_pid = register(clinic, "Bob Other", "MRN-2")
    other_rid = _ask(clinic, other_pid)
    assert patient.page(f"/console/me/file-requests/{other_rid}").status_code == 404
    assert f"/console/me/file-requests/{other_rid}" not in patient.page("/console/me/file-requests").text


def test_both_lists_show_a_page_and_an_older_link_to_the_rest(
    browser: ConsoleClient, home: tuple[ConsoleClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_pages, "PAGE", 2)
    clinic, (patient, pid) = browser, home
    oldest, middle, newest = (_ask(clinic, pid) for _ in range(3))
    cancelled = clinic.form(f"/console/file-requests/{oldest}/cancel", {}, sent_from=f"/console/file-requests/{oldest}")
    assert cancelled.status_code == 303, cancelled.text

    def listed(page: str) -> list[str]:
        return re.findall(r'data-request-id="(\w+)"', page)

    first, second = clinic.two_pages(f"/console/patients/{pid}/file-requests", "Older requests")
    assert (listed(first), listed(second)) == ([newest, middle], [oldest])
    # The patient's page splits one page into open and closed: the older link pages through both.
    first, second = patient.two_pages("/console/me/file-requests", "Older requests")
    assert (listed(first), listed(second)) == ([newest, middle], [oldest])
    assert 'id="fr-closed"' not in first and 'id="fr-closed"' in second


def test_the_pages_go_when_the_plugin_is_disabled(tmp_path: Path, migrated_database: Path) -> None:
    settings = copied_settings(tmp_path, migrated_database, CARESHARE_DISABLE_PLUGINS="file-requests")
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        clinic = ConsoleClient(client, settings)
        clinic.sign_in("clinician", "org-a", sub="dr-a")
        pid = register(clinic)
        assert "file-requests" not in clinic.page(f"/console/patients/{pid}").text
        assert clinic.page(f"/console/patients/{pid}/file-requests").status_code == 404
        assert clinic.page("/console/file-requests/anything").status_code == 404
        with TestClient(client.app, base_url=BASE_URL) as patient_client:
            patient = ConsoleClient(patient_client, settings)
            me = patient.sign_in("patient", "org-a", patient=pid)
            assert "file-requests" not in me.text
            assert patient.page("/console/me/file-requests").status_code == 404


# -- in a real browser -----------------------------------------------------------------------------


def test_in_the_browser_the_patient_answers_and_reads_why_a_file_was_turned_down(
    page: Any, chromium: Any, console_server: str, tmp_path: Path
) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    page.goto(f"{base}/console/patients/new")
    page.get_by_label("Name").fill("Ann Example")
    page.get_by_label("Clinic number").fill("MRN-100")
    page.get_by_role("button", name="Register").click()
    pid = page.url.rsplit("/", 1)[1]

    page.get_by_role("link", name="Ask for files").click()
    expect(page).to_have_url(f"{base}/console/patients/{pid}/file-requests")
    page.get_by_label("What to send").fill(INSTRUCTIONS)
    page.get_by_label("How many files").fill("1")
    page.get_by_label("Due date").fill(_due())
    page.get_by_role("button", name="Ask for files").click()
    expect(page.get_by_role("status").first).to_have_text("Request sent to the patient.")
    review_url = page.url
    rid = review_url.rsplit("/", 1)[1]

    phone_context = chromium.new_context(viewport={"width": 390, "height": 844})
    phone = phone_context.new_page()
    phone.set_default_timeout(15_000)
    try:
        sign_in(phone, base, role="patient", org="org-a", patient_id=pid)
        phone.get_by_role("link", name="File requests").click()
        expect(phone.get_by_text(INSTRUCTIONS)).to_be_visible()
        # The file goes from the list itself; the request's line then says nothing more is due.
        letter = tmp_path / "old-letter.pdf"
        letter.write_bytes(make_pdf(text="2019"))
        phone.get_by_label("Send a file for this request").set_input_files(str(letter))
        phone.get_by_role("button", name="Upload", exact=True).click()
        expect(phone.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"))
        expect(phone.locator(".upload-progress")).to_have_attribute("value", "100")
        expect(phone.locator(f"#fr-meta-{rid}")).to_contain_text("0 more to send")
        phone.get_by_role("link", name="Details").click()
        expect(phone).to_have_url(f"{base}/console/me/file-requests/{rid}")
        expect(phone.locator("#fr-my-answers").get_by_role("link", name="old-letter.pdf")).to_be_visible()
        expect(phone.locator("#fr-my-answers")).to_contain_text("Waiting for review")

        page.goto(review_url)
        row = page.locator("#fr-answer-list li", has_text="old-letter.pdf")
        expect(row.get_by_text("To review")).to_be_visible()
        screenshot(page, "file-request")
        row.get_by_label("Reason for rejecting old-letter.pdf").fill(REASON)
        row.get_by_role("button", name="Reject old-letter.pdf").click()
        expect(page.get_by_role("status").first).to_contain_text("File rejected")
        expect(page.locator("#fr-answer-list li", has_text="old-letter.pdf")).to_contain_text(REASON)

        phone.reload()
        expect(phone.locator("#fr-my-answers li", has_text="old-letter.pdf")).to_contain_text(REASON)
        expect(phone.get_by_label("Send a file")).to_be_visible()  # the place is free again
        screenshot(phone, "file-request-patient")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        phone_context.close()
    assert page.console_errors == []
