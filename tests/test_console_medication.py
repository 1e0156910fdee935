"""Medication in the console: types with files and videos, prescribing with a schedule, the patient's reminders.

Driven as a browser sends the forms (``careshare.testing.console``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import TestClient
from playwright.sync_api import expect

from careshare.host import create_app
from careshare.plugins.medication import console as medication_pages
from careshare.testing import make_pdf
from careshare.testing.browser import register_patient, screenshot, sign_in
from careshare.testing.console import BASE_URL, ConsoleClient, attachment_ids, copied_settings, notice_text, register
from careshare.testing.strategies.video import VideoSpec, make_video

if TYPE_CHECKING:
    from pathlib import Path

    from careshare.core.settings import Settings


TYPES = "/console/medication-types"


SCHEDULE = {"times": "08:00, 20:00", "start": "2030-03-04", "end": "", "timezone": "Europe/London"}


def test_a_type_carries_a_pdf_and_a_video_to_the_patient_with_each_reminder(
    clinic: ConsoleClient, console_settings: Settings
) -> None:
    pid = register(clinic)
    leaflet = clinic.library_file("pen-leaflet.pdf", make_pdf(2, text="how to inject"))["id"]
    video = clinic.library_file("how-to-inject.mp4", make_video(VideoSpec(frames=10, fps=10)))["id"]
    tid = clinic.new_template(TYPES, "Insulin pen", "Keep it cold.")
    page = clinic.page(f"/console/medication-types/{tid}").text
    assert notice_text(page) == ("ok", "", "Medication type created. Attach its files next.")
    assert 'data-upload-url="/console/api/v1/library/files"' in page
    choices = re.search(r'<fieldset id="library-choices" data-refresh>(.*?)</fieldset>', page, re.S)
    assert choices is not None and f'value="{video}"' in choices.group(1) and f'value="{leaflet}"' in choices.group(1)
    attached = clinic.form(
        f"/console/medication-types/{tid}/attachments",
        {"file_id": [leaflet, video]},
        sent_from=f"/console/medication-types/{tid}",
        follow=True,
    )
    assert notice_text(attached.text) == ("ok", "", "2 files attached.")
    assert len(attachment_ids(attached.text)) == 2

    profile = clinic.page(f"/console/patients/{pid}").text
    assert f'<a class="button" href="/console/patients/{pid}/medications">Prescribe</a>' in profile
    tab = clinic.page(f"/console/patients/{pid}/medications").text
    assert f'<option value="{tid}">Insulin pen</option>' in tab and 'name="times"' in tab
    given = clinic.form(f"/console/patients/{pid}/medications", {"type_id": tid, **SCHEDULE}, follow=True)
    assert notice_text(given.text) == ("ok", "", "Medication prescribed. Reminders follow its schedule."), given.text
    assert "08:00, 20:00 Europe/London" in given.text and "from 2030-03-04" in given.text
    mid = re.findall(r'action="/console/medications/([^/]+)/remind"', given.text)
    assert len(mid) == 1

    with TestClient(clinic.client.app, base_url=BASE_URL) as other:
        me = ConsoleClient(other, console_settings)
        me.sign_in("patient", "org-a", patient=pid)
        before = me.page("/console/me/medications").text
        assert "Insulin pen" in before and attachment_ids(before) == []  # files come with reminders

        reminded = clinic.form(
            f"/console/medications/{mid[0]}/remind", {}, sent_from=f"/console/patients/{pid}/medications", follow=True
        )
        assert notice_text(reminded.text) == ("ok", "", "Reminder sent with the type's files.")

        inbox = me.page("/console/me").text
        link = re.search(r'<a href="/console/me/medications#(reminder-[^"]+)">Time for your medication</a>', inbox)
        assert link is not None, inbox
        mine = me.page("/console/me/medications").text
        assert f'id="{link.group(1)}"' in mine
        aids = attachment_ids(mine)
        assert len(aids) == 2
        videos = re.findall(
            r'<video controls preload="metadata" src="(/console/api/v1/attachments/[^/]+/content)"', mine
        )
        assert len(videos) == 1
        assert me.client.get(videos[0]).headers["content-type"].startswith("video/mp4")
        pdf = next(f"/console/api/v1/attachments/{a}/content" for a in aids if a not in videos[0])
        assert me.client.get(pdf).content.startswith(b"%PDF")


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"times": ""}, "times: give at least one time of day"),
        ({"times": "8 in the morning"}, "times[0]: expected a time of day as HH:MM"),
        ({"start": "2030-03-04", "end": "2030-03-01"}, "end: must be on or after the start date"),
        ({"timezone": "Mars/Olympus"}, "timezone: expected a time zone name"),
        ({"type_id": ""}, "type_id: choose the type of medication"),
    ],
)
def test_a_prescription_refused_shows_its_sentence_on_the_form(
    clinic: ConsoleClient, fields: dict[str, str], shown: str
) -> None:
    pid = register(clinic)
    tid = clinic.new_template(TYPES, "Insulin pen", "Keep it cold.")
    answer = clinic.form(f"/console/patients/{pid}/medications", {"type_id": tid, **SCHEDULE, **fields}, follow=True)
    assert answer.url.path == f"/console/patients/{pid}/medications"
    kind, code, text = notice_text(answer.text) or ("", "", "")
    assert (kind, code) == ("error", "invalid-request") and shown in text, answer.text
    assert "No medications yet." in answer.text


def test_a_type_refuses_a_blank_name_and_an_empty_attach(clinic: ConsoleClient) -> None:
    blank = clinic.form("/console/medication-types", {"name": "  "}, follow=True)
    assert "name: give the medication type a name" in (notice_text(blank.text) or ("", "", ""))[2]
    tid = clinic.new_template(TYPES, "Insulin pen", "Keep it cold.")
    empty = clinic.form(
        f"/console/medication-types/{tid}/attachments", {}, sent_from=f"/console/medication-types/{tid}", follow=True
    )
    assert "file_id: tick the library files" in (notice_text(empty.text) or ("", "", ""))[2]


def test_another_organisation_sees_nothing(clinic: ConsoleClient, console_settings: Settings) -> None:
    pid = register(clinic)
    tid = clinic.new_template(TYPES, "Private medicine")
    given = clinic.form(f"/console/patients/{pid}/medications", {"type_id": tid, **SCHEDULE}, follow=True)
    mid = re.findall(r'action="/console/medications/([^/]+)/remind"', given.text)[0]
    with TestClient(clinic.client.app, base_url=BASE_URL) as other:
        b = ConsoleClient(other, console_settings)
        b.sign_in("clinician", "org-b", sub="dr-b")
        assert "Private medicine" not in b.page("/console/medication-types").text
        assert b.page(f"/console/medication-types/{tid}").status_code == 404
        assert b.page(f"/console/patients/{pid}/medications").status_code == 404
        refused = b.form(f"/console/medications/{mid}/remind", {}, sent_from="/console/medication-types", follow=True)
        assert (notice_text(refused.text) or ("",))[0] == "error"
    with TestClient(clinic.client.app, base_url=BASE_URL) as other:
        me = ConsoleClient(other, console_settings)
        me.sign_in("patient", "org-a", patient=pid)
        assert "Time for your medication" not in me.page("/console/me").text  # org-b's remind did nothing


def test_both_lists_show_a_page_and_an_older_link_to_the_rest(
    clinic: ConsoleClient, console_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(medication_pages, "PAGE", 2)
    pid = register(clinic)
    for n in range(3):
        tid = clinic.new_template(TYPES, f"Medicine {n}")
        given = clinic.form(f"/console/patients/{pid}/medications", {"type_id": tid, **SCHEDULE})
        assert given.status_code == 303, given.text

    def listed(page: str) -> list[str]:
        return re.findall(r"<(?:strong|h2)>(Medicine \d)</", page)

    assert tuple(map(listed, clinic.two_pages(f"/console/patients/{pid}/medications", "Older medications"))) == (
        ["Medicine 2", "Medicine 1"],
        ["Medicine 0"],
    )
    with TestClient(clinic.client.app, base_url=BASE_URL) as other:
        me = ConsoleClient(other, console_settings)
        me.sign_in("patient", "org-a", patient=pid)
        assert tuple(map(listed, me.two_pages("/console/me/medications", "Older medications"))) == (
            ["Medicine 2", "Medicine 1"],
            ["Medicine 0"],
        )


def test_the_pages_go_with_the_plugin(tmp_path: Path, migrated_database: Path) -> None:
    settings = copied_settings(tmp_path, migrated_database, CARESHARE_DISABLE_PLUGINS="medication")
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        clinic = ConsoleClient(client, settings)
        patients = clinic.sign_in("clinician", "org-a", sub="dr-a")
        assert "Medication types" not in patients.text and "Appointment types" in patients.text
        assert clinic.page("/console/medication-types").status_code == 404
        pid = register(clinic)
        assert ">Prescribe<" not in clinic.page(f"/console/patients/{pid}").text


def test_in_the_browser_a_video_on_a_medication_type_plays_for_the_patient(
    page: Any, chromium: Any, console_server: str, tmp_path: Path
) -> None:
    """The guide's steps: a type with a video, prescribed, reminded; the patient's phone plays the video."""
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    pid = register_patient(page, base)
    page.get_by_role("link", name="Medication types").click()
    page.get_by_label("Name").fill("Insulin pen")
    page.get_by_label("Description").fill("How to use your pen.")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Insulin pen")
    film = tmp_path / "pen-howto.mp4"
    film.write_bytes(make_video(VideoSpec(frames=24, width=64, height=48, moov_at_end=False)))
    page.get_by_label("Upload a file to the library").set_input_files(str(film))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"))
    expect(page.locator("#library-choices").get_by_label(re.compile("pen-howto.mp4"))).to_be_checked()
    page.get_by_role("button", name="Attach selected").click()
    expect(page.get_by_role("status").first).to_have_text("1 file attached.")

    page.goto(f"{base}/console/patients/{pid}")
    page.get_by_role("link", name="Prescribe").click()
    page.get_by_label("Medication type").select_option(label="Insulin pen")
    page.get_by_label("Times of day").fill("08:00, 20:00")
    page.get_by_role("button", name="Prescribe").click()
    expect(page.get_by_role("status").first).to_have_text("Medication prescribed. Reminders follow its schedule.")
    page.get_by_role("button", name="Remind now").click()
    expect(page.get_by_role("status").first).to_have_text("Reminder sent with the type's files.")
    assert page.console_errors == []

    context = chromium.new_context(viewport={"width": 390, "height": 844})
    phone = context.new_page()
    phone.set_default_timeout(15_000)
    try:
        sign_in(phone, base, role="patient", org="org-a", patient_id=pid)
        phone.get_by_role("link", name="Time for your medication").first.click()
        video = phone.locator("video[controls]").first
        expect(video).to_be_visible()
        # The browser reads the video's metadata through Range requests: it knows how long it lasts.
        phone.wait_for_function("document.querySelector('video').readyState >= 1")
        assert phone.evaluate("document.querySelector('video').duration") > 0
        screenshot(phone, "patient-medication")
    finally:
        context.close()
