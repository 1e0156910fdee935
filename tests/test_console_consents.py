"""The consents channel's console pages: information packs, consent forms, a patient's consents, the patient deciding.

Driven over HTTP as a browser sends them (``careshare.testing.console``), then once in a real
browser: the guide's "add information packs to consents", a video refused with its sentence.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from litestar.testing import TestClient
from playwright.sync_api import expect

from careshare.host import create_app
from careshare.testing import make_pdf
from careshare.testing.browser import screenshot, sign_in
from careshare.testing.console import BASE_URL, ConsoleClient, copied_settings, notice_text, register
from careshare.testing.strategies.video import VideoSpec, make_video

if TYPE_CHECKING:
    from pathlib import Path


VIDEO_REFUSAL = "information packs can't contain streaming video"


def _video() -> bytes:
    return make_video(VideoSpec("mp4", "h264", width=16, height=16, frames=2))


def _new_pack(clinic: ConsoleClient, name: str = "Knee surgery", description: str = "Read before the day.") -> str:
    made = clinic.form("/console/information-packs", {"name": name, "description": description})
    assert made.status_code == 303, made.text
    location = made.headers["location"]
    assert re.fullmatch(r"/console/information-packs/[^/]+", location), location
    return location.rsplit("/", 1)[1]


def _notice(answer: Any) -> tuple[str, str, str]:
    shown = notice_text(answer.text)
    assert shown is not None, answer.text
    return shown


def test_a_pack_takes_a_library_pdf_and_refuses_a_video_with_its_sentence(clinic: ConsoleClient) -> None:
    pack = _new_pack(clinic)
    page = clinic.page(f"/console/information-packs/{pack}")
    assert _notice(page) == ("ok", "", "Information pack created. Attach its files next.")
    assert 'data-upload-url="/console/api/v1/library/files"' in page.text
    assert re.search(r'<fieldset id="library-choices" data-refresh>', page.text)

    leaflet = clinic.library_file("leaflet.pdf", make_pdf(2, text="knee leaflet"))
    video = clinic.library_file("walkthrough.mp4", _video())
    assert (video["kind"], video["status"]) == ("video", "ready")
    page = clinic.page(f"/console/information-packs/{pack}").text
    assert f'name="file_id" value="{leaflet["id"]}"' in page and f'name="file_id" value="{video["id"]}"' in page

    sent_from = f"/console/information-packs/{pack}"
    refused = clinic.form(f"{sent_from}/attach", {"file_id": video["id"]}, sent_from=sent_from, follow=True)
    assert refused.url.path == sent_from
    kind, code, text = _notice(refused)
    assert (kind, code) == ("error", "video-not-allowed") and VIDEO_REFUSAL in text, text
    assert 'role="alert"' in refused.text

    # A video among the ticked files: none of them attached (the first rule broken, all rolled back).
    both = clinic.form(
        f"{sent_from}/attach", {"file_id": [leaflet["id"], video["id"]]}, sent_from=sent_from, follow=True
    )
    assert _notice(both)[1] == "video-not-allowed"
    assert 'id="pack-attachments"' in both.text and "No files yet" in both.text

    attached = clinic.form(f"{sent_from}/attach", {"file_id": leaflet["id"]}, sent_from=sent_from, follow=True)
    assert _notice(attached) == ("ok", "", "1 file attached.")
    files = attached.text.split('id="pack-attachments"', 1)[1].split("</ul>", 1)[0]
    assert "leaflet.pdf" in files and "walkthrough.mp4" not in files
    aid = re.search(r"/console/api/v1/attachments/([^/]+)/content", files)
    assert aid, files
    assert clinic.client.get(f"/console/api/v1/attachments/{aid.group(1)}/content").content.startswith(b"%PDF")
    # An attached file is no longer offered.
    assert f'name="file_id" value="{leaflet["id"]}"' not in attached.text

    listed = clinic.page("/console/information-packs").text
    assert "Knee surgery" in listed and "1 file<" in listed

    removed = clinic.form(f"{sent_from}/attachments/{aid.group(1)}/detach", {}, sent_from=sent_from, follow=True)
    assert _notice(removed) == ("ok", "", "File removed from the pack.")
    assert "No files yet" in removed.text


def test_nothing_ticked_or_no_name_is_refused_naming_the_field(clinic: ConsoleClient) -> None:
    pack = _new_pack(clinic)
    sent_from = f"/console/information-packs/{pack}"
    none = clinic.form(f"{sent_from}/attach", {}, sent_from=sent_from, follow=True)
    assert _notice(none)[:2] == ("error", "invalid-request") and "file_id" in _notice(none)[2]
    blank = clinic.form("/console/information-packs", {"name": "  "}, follow=True)
    assert blank.url.path == "/console/information-packs" and "name" in _notice(blank)[2]
    form = clinic.form("/console/consent-forms", {"name": "Knee"}, follow=True)
    assert _notice(form)[1] == "invalid-request" and "information_pack_id" in _notice(form)[2]
    unknown = clinic.form("/console/consent-forms", {"name": "Knee", "information_pack_id": "nope"}, follow=True)
    assert _notice(unknown)[1] == "information-pack-not-found"


def test_a_consent_is_asked_read_given_and_its_status_seen(clinic: ConsoleClient) -> None:
    pack = _new_pack(clinic)
    leaflet = clinic.library_file("leaflet.pdf", make_pdf(2, text="knee leaflet"))
    clinic.form(f"/console/information-packs/{pack}/attach", {"file_id": leaflet["id"]})
    pid = register(clinic)

    forms = clinic.page("/console/consent-forms").text
    assert f'name="information_pack_id" value="{pack}"' in forms
    made = clinic.form("/console/consent-forms", {"name": "Knee replacement", "information_pack_id": pack}, follow=True)
    assert _notice(made) == ("ok", "", "Consent form created.")
    assert "Knee replacement" in made.text and "Reads: Knee surgery" in made.text

    profile = clinic.page(f"/console/patients/{pid}").text
    assert f'href="/console/patients/{pid}/consents">Request consent<' in profile
    tab = clinic.page(f"/console/patients/{pid}/consents").text
    form_id = re.search(r'<option value="([^"]+)">Knee replacement</option>', tab)
    assert form_id, tab
    asked = clinic.form(f"/console/patients/{pid}/consents", {"form_id": form_id.group(1)})
    assert asked.status_code == 303 and asked.headers["location"] == f"/console/patients/{pid}/consents"
    shown = clinic.page(f"/console/patients/{pid}/consents")
    assert _notice(shown) == ("ok", "", "Consent requested.")
    assert 'data-status="requested"' in shown.text and ">Pending<" in shown.text

    # The patient: notified, reads the pack's file, gives consent.
    assert clinic.sign_in("patient", "org-a", patient=pid).status_code == 200
    inbox = clinic.page("/console/me").text
    link = re.search(r'href="(/console/me/consents/([^"]+))"', inbox)
    assert link, inbox
    cid = link.group(2)
    mine = clinic.page("/console/me/consents").text
    assert 'href="/console/me/consents"' in mine and "Knee replacement" in mine
    consent = clinic.page(link.group(1)).text
    assert "Knee surgery" in consent and "Read before the day." in consent and "leaflet.pdf" in consent
    content = re.search(r'href="(/console/api/v1/attachments/[^"]+/content)"', consent)
    assert content, consent
    assert clinic.client.get(content.group(1)).content.startswith(b"%PDF")
    assert "Give consent" in consent and "Decline" in consent

    odd = clinic.form(
        f"/console/me/consents/{cid}/decision", {"decision": "maybe"}, sent_from=link.group(1), follow=True
    )
    assert _notice(odd)[1] == "invalid-request"
    given = clinic.form(
        f"/console/me/consents/{cid}/decision", {"decision": "given"}, sent_from=link.group(1), follow=True
    )
    assert given.url.path == f"/console/me/consents/{cid}"
    assert _notice(given) == ("ok", "", "Thank you: your consent is recorded.")
    assert 'data-status="given"' in given.text and "Give consent" not in given.text
    again = clinic.form(
        f"/console/me/consents/{cid}/decision", {"decision": "declined"}, sent_from=link.group(1), follow=True
    )
    assert _notice(again)[1] == "consent-already-decided"

    # The clinician sees it given.
    clinic.sign_in("clinician", "org-a", sub="dr-a")
    status = clinic.page(f"/console/patients/{pid}/consents").text
    assert 'data-status="given"' in status and ">Given<" in status and ">Pending<" not in status


def test_another_organisation_sees_nothing(clinic: ConsoleClient) -> None:
    pack = _new_pack(clinic, name="Org A hip pack")
    clinic.form("/console/consent-forms", {"name": "Org A hip form", "information_pack_id": pack})
    pid = register(clinic)

    clinic.sign_in("clinician", "org-b", sub="dr-b")
    assert "Org A hip pack" not in clinic.page("/console/information-packs").text
    assert "Org A hip" not in clinic.page("/console/consent-forms").text
    assert clinic.page(f"/console/information-packs/{pack}").status_code == 404
    assert clinic.page(f"/console/patients/{pid}/consents").status_code == 404
    attach = clinic.form(f"/console/information-packs/{pack}/attach", {"file_id": "x"}, sent_from="/console/")
    assert attach.status_code == 303
    assert _notice(clinic.page(attach.headers["location"]))[1] == "not-found"
    # A form of org-b cannot name org-a's pack.
    refused = clinic.form("/console/consent-forms", {"name": "Stolen", "information_pack_id": pack}, follow=True)
    assert _notice(refused)[1] == "information-pack-not-found"


def test_patients_cannot_open_the_clinicians_pages(clinic: ConsoleClient) -> None:
    pid = register(clinic)
    clinic.sign_in("patient", "org-a", patient=pid)
    assert clinic.page("/console/information-packs").status_code == 403
    assert "Nobody has asked for your consent." in clinic.page("/console/me/consents").text


def test_the_pages_go_with_the_plugin(tmp_path: Path, migrated_database: Path) -> None:
    settings = copied_settings(
        tmp_path, migrated_database, CARESHARE_DEV_LOGIN="1", CARESHARE_DISABLE_PLUGINS="consents"
    )
    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        console = ConsoleClient(client, settings)
        home = console.sign_in("clinician", "org-a", sub="dr-a")
        assert home.status_code == 200 and "Information packs" not in home.text and "Consent forms" not in home.text
        assert console.page("/console/information-packs").status_code == 404
        assert console.page("/console/consent-forms").status_code == 404


# -- in a real browser -----------------------------------------------------------------------------


def test_in_the_browser_a_pack_refuses_a_video_and_the_patient_decides(
    page: Any, chromium: Any, console_server: str, tmp_path: Path
) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    page.get_by_role("link", name="Information packs").click()
    page.get_by_label("Name").fill("Knee surgery")
    page.get_by_label("Description").fill("Read before the day.")
    page.get_by_role("button", name="Create pack").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Knee surgery")

    video = tmp_path / "walkthrough.mp4"
    video.write_bytes(_video())
    page.get_by_label("Upload a file to the library").set_input_files(str(video))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"))
    box = page.get_by_role("checkbox", name=re.compile(r"^walkthrough\.mp4"))
    expect(box).to_be_checked()  # the upload ticks the new file
    expect(box).to_be_enabled()
    page.get_by_role("button", name="Attach selected").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(VIDEO_REFUSAL)
    expect(page.locator("#pack-attachments")).to_contain_text("No files yet")
    screenshot(page, "information-pack")

    leaflet = tmp_path / "leaflet.pdf"
    leaflet.write_bytes(make_pdf(2, text="knee leaflet"))
    page.get_by_label("Upload a file to the library").set_input_files(str(leaflet))
    page.get_by_role("button", name="Upload", exact=True).click()
    pdf_box = page.get_by_role("checkbox", name=re.compile(r"^leaflet\.pdf"))
    expect(pdf_box).to_be_checked()
    expect(pdf_box).to_be_enabled()
    page.get_by_role("button", name="Attach selected").click()
    expect(page.get_by_role("status").first).to_have_text("1 file attached.")
    expect(page.locator("#pack-attachments").get_by_role("link", name="leaflet.pdf")).to_be_visible()

    page.get_by_role("link", name="Consent forms").click()
    page.get_by_label("Name").fill("Knee replacement")
    page.get_by_role("checkbox", name=re.compile(r"^Knee surgery")).check()
    page.get_by_role("button", name="Create form").click()
    expect(page.get_by_role("status").first).to_have_text("Consent form created.")

    page.goto(f"{base}/console/patients/new")
    page.get_by_label("Name").fill("Ann Example")
    page.get_by_label("Clinic number").fill("MRN-100")
    page.get_by_role("button", name="Register").click()
    pid = page.url.rsplit("/", 1)[1]
    page.get_by_role("link", name="Request consent").click()
    page.get_by_label("Consent form").select_option(label="Knee replacement")
    page.get_by_role("button", name="Request consent").click()
    expect(page.get_by_role("status").first).to_have_text("Consent requested.")
    expect(page.locator("#consent-list")).to_contain_text("Pending")

    phone_context = chromium.new_context(viewport={"width": 390, "height": 844})
    phone = phone_context.new_page()
    phone.set_default_timeout(15_000)
    try:
        sign_in(phone, base, role="patient", org="org-a", patient_id=pid)
        phone.get_by_role("link", name="Your care team asks for your consent").click()
        expect(phone.get_by_role("heading", level=1)).to_have_text("Knee replacement")
        expect(phone.get_by_role("link", name="leaflet.pdf")).to_be_visible()
        phone.get_by_role("button", name="Give consent").click()
        expect(phone.get_by_role("status").first).to_have_text("Thank you: your consent is recorded.")
        expect(phone.get_by_role("button", name="Give consent")).to_have_count(0)
        screenshot(phone, "patient-consent")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        phone_context.close()

    page.reload()
    expect(page.locator("#consent-list")).to_contain_text("Given")
    assert page.console_errors == []
