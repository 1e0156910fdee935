"""Appointments in the console: types with files and videos, booking for a patient, the patient's own view.

Driven as a browser sends the forms (``careshare.testing.console``); the browser itself drives the
guide's steps in ``test_a_clinician_attaches_a_leaflet_to_a_type_and_books_it``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import TestClient
from playwright.sync_api import expect

from careshare.host import create_app
from careshare.plugins.appointments import console as appointment_pages
from careshare.testing import make_pdf
from careshare.testing.browser import register_patient, screenshot, sign_in
from careshare.testing.console import BASE_URL, ConsoleClient, attachment_ids, copied_settings, notice_text, register
from careshare.testing.strategies.video import VideoSpec, make_video

if TYPE_CHECKING:
    from pathlib import Path

    from careshare.core.settings import Settings


TYPES = "/console/appointment-types"


def test_a_type_carries_a_pdf_and_a_video_to_the_booked_patient(
    clinic: ConsoleClient, console_settings: Settings
) -> None:
    pid = register(clinic)
    leaflet = clinic.library_file("leaflet.pdf", make_pdf(2, text="directions"))["id"]
    video = clinic.library_file("exercises.mp4", make_video(VideoSpec(frames=10, fps=10)))["id"]
    tid = clinic.new_template(TYPES, "Knee clinic", "Bring your scans.")

    page = clinic.page(f"/console/appointment-types/{tid}").text
    assert notice_text(page) == ("ok", "", "Appointment type created. Attach its files next.")
    assert 'data-upload-url="/console/api/v1/library/files"' in page
    choices = re.search(r'<fieldset id="library-choices" data-refresh>(.*?)</fieldset>', page, re.S)
    assert choices is not None
    assert f'name="file_id" value="{leaflet}"' in choices.group(1)
    assert f'name="file_id" value="{video}"' in choices.group(1)

    attached = clinic.form(
        f"/console/appointment-types/{tid}/attachments",
        {"file_id": [leaflet, video]},
        sent_from=f"/console/appointment-types/{tid}",
        follow=True,
    )
    assert notice_text(attached.text) == ("ok", "", "2 files attached.")
    assert len(attachment_ids(attached.text)) == 2
    assert f'href="/console/files/{leaflet}"' in attached.text and f'href="/console/files/{video}"' in attached.text
    assert f'value="{leaflet}"' not in attached.text  # attached files leave the choices

    profile = clinic.page(f"/console/patients/{pid}").text
    assert f'<a class="button" href="/console/patients/{pid}/appointments">Book an appointment</a>' in profile
    booking = clinic.page(f"/console/patients/{pid}/appointments").text
    assert 'type="datetime-local"' in booking and f'<option value="{tid}">' in booking
    booked = clinic.form(
        f"/console/patients/{pid}/appointments",
        {"type_id": tid, "starts_at": "2030-03-04T09:30", "timezone": "Europe/London"},
        follow=True,
    )
    assert notice_text(booked.text) == ("ok", "", "Appointment booked."), booked.text
    assert "Knee clinic" in booked.text and "04 Mar 2030 09:30 UTC" in booked.text  # London is on GMT in March

    with TestClient(clinic.client.app, base_url=BASE_URL) as other:
        me = ConsoleClient(other, console_settings)
        inbox = me.sign_in("patient", "org-a", patient=pid)
        link = re.search(
            r'<a href="(/console/me/appointments#appointment-[^"]+)">New appointment booked</a>', inbox.text
        )
        assert link is not None, inbox.text
        mine = me.page("/console/me/appointments").text
        assert f'id="{link.group(1).split("#")[1]}"' in mine
        assert "Knee clinic" in mine and "Bring your scans." in mine
        aids = attachment_ids(mine)
        assert len(aids) == 2
        videos = re.findall(
            r'<video controls preload="metadata" src="(/console/api/v1/attachments/[^/]+/content)"', mine
        )
        assert len(videos) == 1
        assert me.client.get(videos[0]).headers["content-type"].startswith("video/mp4")
        pdf = next(f"/console/api/v1/attachments/{a}/content" for a in aids if a not in videos[0])
        assert me.client.get(pdf).content.startswith(b"%PDF")

    # Detaching changes later bookings only.
    detached = clinic.form(
        f"/console/appointment-types/{tid}/attachments/{attachment_ids(attached.text)[0]}/detach",
        {},
        sent_from=f"/console/appointment-types/{tid}",
        follow=True,
    )
    assert notice_text(detached.text)[0] == "ok"  # type: ignore[index]
    assert len(attachment_ids(detached.text)) == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"starts_at": "2030-03-04T09:30"}, "type_id"),
        ({"starts_at": "soon"}, "starts_at"),
        ({"starts_at": "2030-03-04T09:30", "timezone": "Mars/Olympus"}, "timezone"),
    ],
)
def test_a_booking_refused_shows_its_sentence_on_the_form(
    clinic: ConsoleClient, fields: dict[str, str], field: str
) -> None:
    pid = register(clinic)
    tid = clinic.new_template(TYPES, "Knee clinic", "Bring your scans.")
    sent = {"type_id": tid, **fields} if field != "type_id" else fields
    answer = clinic.form(f"/console/patients/{pid}/appointments", sent, follow=True)
    assert answer.url.path == f"/console/patients/{pid}/appointments"
    kind, code, text = notice_text(answer.text) or ("", "", "")
    assert (kind, code) == ("error", "invalid-request") and f"{field}: " in text, answer.text
    assert "No appointments yet." in answer.text


def test_a_type_refuses_a_blank_name_and_an_empty_attach(clinic: ConsoleClient) -> None:
    blank = clinic.form("/console/appointment-types", {"name": "  "}, follow=True)
    assert "name: give the appointment type a name" in (notice_text(blank.text) or ("", "", ""))[2]
    tid = clinic.new_template(TYPES, "Knee clinic", "Bring your scans.")
    empty = clinic.form(
        f"/console/appointment-types/{tid}/attachments", {}, sent_from=f"/console/appointment-types/{tid}", follow=True
    )
    assert "file_id: tick the library files" in (notice_text(empty.text) or ("", "", ""))[2]


def test_a_type_is_renamed_and_booked_appointments_keep_their_name(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    tid = clinic.new_template(TYPES, "Knee clinic", "Bring your scans.")
    booked = clinic.form(
        f"/console/patients/{pid}/appointments",
        {"type_id": tid, "starts_at": "2031-05-06T09:30", "timezone": "Europe/London"},
        sent_from=f"/console/patients/{pid}/appointments",
        follow=True,
    )
    assert notice_text(booked.text)[0] == "ok", booked.text  # type: ignore[index]
    page = clinic.page(f"{TYPES}/{tid}").text
    assert 'value="Knee clinic"' in page and ">Bring your scans.</textarea>" in page
    blank = clinic.form(f"{TYPES}/{tid}", {"name": " ", "description": "x"}, follow=True)
    assert notice_text(blank.text)[:2] == ("error", "invalid-request")  # type: ignore[index]
    assert "give the appointment type a name" in notice_text(blank.text)[2]  # type: ignore[index]
    renamed = clinic.form(f"{TYPES}/{tid}", {"name": "Knee & hip clinic", "description": ""}, follow=True)
    assert notice_text(renamed.text) == ("ok", "", "Appointment type saved.")
    assert renamed.url.path == f"{TYPES}/{tid}"
    assert "<h1>Knee &amp; hip clinic</h1>" in renamed.text and 'class="description"' not in renamed.text
    assert "Knee &amp; hip clinic" in clinic.page(TYPES).text
    # The booking was made with the old name and keeps it.
    assert "Knee clinic" in clinic.page(f"/console/patients/{pid}/appointments").text
    unknown = clinic.form(f"{TYPES}/no-such-type", {"name": "Anything"}, follow=True)
    assert notice_text(unknown.text)[:2] == ("error", "not-found")  # type: ignore[index]


def test_another_organisation_sees_nothing(clinic: ConsoleClient, console_settings: Settings) -> None:
    pid = register(clinic)
    tid = clinic.new_template(TYPES, "Private clinic type")
    with TestClient(clinic.client.app, base_url=BASE_URL) as other:
        b = ConsoleClient(other, console_settings)
        b.sign_in("clinician", "org-b", sub="dr-b")
        assert "Private clinic type" not in b.page("/console/appointment-types").text
        assert b.page(f"/console/appointment-types/{tid}").status_code == 404
        assert b.page(f"/console/patients/{pid}/appointments").status_code == 404
        b.page("/console/appointment-types")
        refused = b.form(
            f"/console/patients/{pid}/appointments",
            {"type_id": tid, "starts_at": "2030-03-04T09:30"},
            sent_from="/console/appointment-types",
            follow=True,
        )
        assert (notice_text(refused.text) or ("",))[0] == "error"
        theirs = b.library_file("their-leaflet.pdf", make_pdf(text="org-b"))["id"]
    assert "their-leaflet.pdf" not in clinic.page(f"/console/appointment-types/{tid}").text
    stolen = clinic.form(
        f"/console/appointment-types/{tid}/attachments",
        {"file_id": theirs},
        sent_from=f"/console/appointment-types/{tid}",
        follow=True,
    )
    kind, _, text = notice_text(stolen.text) or ("", "", "")
    assert kind == "error" and text and attachment_ids(stolen.text) == [], stolen.text
    assert "No appointments yet." in clinic.page(f"/console/patients/{pid}/appointments").text


def test_both_lists_show_a_page_and_an_older_link_to_the_rest(
    clinic: ConsoleClient, console_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(appointment_pages, "PAGE", 2)
    pid = register(clinic)
    for n in range(3):
        tid = clinic.new_template(TYPES, f"Clinic {n}")
        booked = clinic.form(
            f"/console/patients/{pid}/appointments",
            {"type_id": tid, "starts_at": "2030-03-04T09:30", "timezone": "Europe/London"},
        )
        assert booked.status_code == 303, booked.text

    def listed(page: str) -> list[str]:
        return re.findall(r"<(?:strong|h2)>(Clinic \d)</", page)

    assert tuple(map(listed, clinic.two_pages(f"/console/patients/{pid}/appointments", "Older appointments"))) == (
        ["Clinic 2", "Clinic 1"],
        ["Clinic 0"],
    )
    with TestClient(clinic.client.app, base_url=BASE_URL) as other:
        me = ConsoleClient(other, console_settings)
        me.sign_in("patient", "org-a", patient=pid)
        assert tuple(map(listed, me.two_pages("/console/me/appointments", "Older appointments"))) == (
            ["Clinic 2", "Clinic 1"],
            ["Clinic 0"],
        )


def test_the_pages_go_with_the_plugin(tmp_path: Path, migrated_database: Path) -> None:
    settings = copied_settings(tmp_path, migrated_database, CARESHARE_DISABLE_PLUGINS="appointments")
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        clinic = ConsoleClient(client, settings)
        patients = clinic.sign_in("clinician", "org-a", sub="dr-a")
        assert "Appointment types" not in patients.text and "Medication types" in patients.text
        assert clinic.page("/console/appointment-types").status_code == 404
        pid = register(clinic)
        assert "Book an appointment" not in clinic.page(f"/console/patients/{pid}").text


def test_a_clinician_attaches_a_leaflet_to_a_type_and_books_it(
    page: Any, chromium: Any, console_server: str, tmp_path: Path
) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    pid = register_patient(page, base)

    page.get_by_role("link", name="Appointment types").click()
    page.get_by_label("Name").fill("Knee clinic")
    page.get_by_label("Description").fill("Bring your scans.")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Knee clinic")
    leaflet = tmp_path / "knee-leaflet.pdf"
    leaflet.write_bytes(make_pdf(3, text="knee leaflet"))
    page.get_by_label("Upload a file to the library").set_input_files(str(leaflet))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"))
    choice = page.locator("#library-choices").get_by_label(re.compile("knee-leaflet.pdf"))
    expect(choice).to_be_checked()
    screenshot(page, "appointment-type")
    page.get_by_role("button", name="Attach selected").click()
    expect(page.get_by_role("status").first).to_have_text("1 file attached.")
    expect(page.locator("#attached-files").get_by_role("link", name="knee-leaflet.pdf")).to_be_visible()

    page.goto(f"{base}/console/patients/{pid}")
    page.get_by_role("link", name="Book an appointment").click()
    page.get_by_label("Appointment type").select_option(label="Knee clinic")
    page.get_by_label("Date and time").fill("2030-03-04T09:30")
    page.get_by_role("button", name="Book").click()
    expect(page.get_by_role("status").first).to_have_text("Appointment booked.")
    assert page.console_errors == []

    patient_context = chromium.new_context(viewport={"width": 390, "height": 844})
    phone = patient_context.new_page()
    phone.set_default_timeout(15_000)
    try:
        sign_in(phone, base, role="patient", org="org-a", patient_id=pid)
        phone.get_by_role("link", name="New appointment booked").click()
        expect(phone.get_by_role("heading", name="Knee clinic")).to_be_visible()
        expect(phone.get_by_role("link", name="knee-leaflet.pdf")).to_be_visible()
    finally:
        patient_context.close()
