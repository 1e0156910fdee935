"""The console in a real browser: Debian's Chromium driven by Playwright against a real server.

The guide's steps as a clinician and as the patient: sign in, register, find, share a file with a
progress bar, see a refusal's sentence, and the patient's own view. Each channel's pages have
their own browser tests beside their HTTP ones.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from playwright.sync_api import expect

from careshare.testing import make_pdf
from careshare.testing.browser import register_patient, screenshot, sign_in

if TYPE_CHECKING:
    from pathlib import Path

NAME = "Ann Example"


def test_a_clinician_registers_finds_and_shares_files_and_sees_a_refusal(
    page: Any, console_server: str, tmp_path: Path
) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    expect(page).to_have_url(f"{base}/console/patients")
    pid = register_patient(page, base)
    register_patient(page, base, "Bob Other", "MRN-200")
    screenshot(page, "profile")

    # Find: typed into the search box, answered by htmx, nothing of it in the address.
    page.goto(f"{base}/console/patients")
    page.get_by_label("Find a patient by name or clinic number").fill("ann ex")
    rows = page.locator("#patient-rows")
    expect(rows.get_by_role("link", name=NAME)).to_be_visible()
    expect(rows.get_by_role("link", name="Bob Other")).to_have_count(0)
    assert "ann" not in page.url.lower()
    screenshot(page, "patients")

    # Quick Actions on the profile: share a file.
    page.goto(f"{base}/console/patients/{pid}")
    page.get_by_role("link", name="Share a file").click()
    expect(page).to_have_url(f"{base}/console/patients/{pid}/files")
    leaflet = tmp_path / "leaflet.pdf"
    leaflet.write_bytes(make_pdf(40, text="a leaflet"))
    page.get_by_label("Upload a file").set_input_files(str(leaflet))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"))
    expect(page.locator(".upload-progress")).to_have_attribute("value", "100")
    expect(page.locator("#file-list").get_by_role("link", name="leaflet.pdf")).to_be_visible()

    # A password-protected PDF: refused, its sentence shown where the upload was.
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(make_pdf(user_password="secret"))
    page.get_by_label("Upload a file").set_input_files(str(locked))
    page.get_by_role("button", name="Upload", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("password")
    expect(page.locator("#file-list .refusal")).to_contain_text("password")
    screenshot(page, "files")
    assert page.console_errors == []


def test_the_patient_signs_in_uploads_and_the_clinic_sees_it_new(
    page: Any, chromium: Any, console_server: str, tmp_path: Path
) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    pid = register_patient(page, base)

    # A phone, in Tokyo: the times the server writes in UTC are read in the phone's own zone.
    # (en-GB: a 24-hour clock, so the hour reads as the test computes it; en-US would say "01:00 PM".)
    patient_context = chromium.new_context(
        viewport={"width": 390, "height": 844}, timezone_id="Asia/Tokyo", locale="en-GB"
    )
    phone = patient_context.new_page()
    phone.set_default_timeout(15_000)
    try:
        sign_in(phone, base, role="patient", org="org-a", patient_id=pid)
        expect(phone).to_have_url(f"{base}/console/me")
        expect(phone.get_by_text(f"Hello {NAME}.")).to_be_visible()
        phone.get_by_role("link", name="My files").click()
        photo = tmp_path / "from-home.pdf"
        photo.write_bytes(make_pdf(text="from home"))
        phone.get_by_label("Upload a file").set_input_files(str(photo))
        phone.get_by_role("button", name="Upload", exact=True).click()
        expect(phone.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"))
        expect(phone.locator("#file-list").get_by_role("link", name="from-home.pdf")).to_be_visible()
        screenshot(phone, "patient-files")
        phone.locator("#file-list").get_by_role("link", name="from-home.pdf").click()
        uploaded = phone.locator("dd time").first
        expect(uploaded).not_to_have_attribute("data-local", "")  # the script has rewritten it
        instant = datetime.fromisoformat(str(uploaded.get_attribute("datetime")))
        in_tokyo = instant.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
        assert in_tokyo.strftime("%H:%M") in uploaded.inner_text(), uploaded.inner_text()
        assert str(uploaded.get_attribute("title")).endswith(instant.astimezone(UTC).strftime("%H:%M UTC"))
        phone.go_back()
        # The nav stays reachable at a phone's width: nothing wider than the screen.
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        patient_context.close()

    page.goto(f"{base}/console/patients/{pid}")
    page.get_by_role("link", name="1 new file from the patient").click()
    row = page.locator("#file-list li", has_text="from-home.pdf")
    expect(row.get_by_text("New", exact=True)).to_be_visible()
    row.get_by_role("button", name="Mark seen").click()
    expect(page.get_by_role("status").first).to_have_text("Marked as seen.")
    expect(page.locator("#file-list li", has_text="from-home.pdf").get_by_text("New", exact=True)).to_have_count(0)


def test_the_console_is_usable_by_keyboard_alone(page: Any, console_server: str) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"
    # Every form control has a label a screen reader announces.
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), textarea, select')]
           .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name)"""
    )
    assert unlabelled == []


def _large_pdf(size: int) -> bytes:
    """A real PDF carrying ``size`` random bytes in a stream its handler must keep."""
    import io
    import os

    import pikepdf

    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    pdf.Root.CareshareBlob = pikepdf.Stream(pdf, os.urandom(size))
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def test_a_large_file_goes_up_resumably_through_tus(page: Any, console_server: str, tmp_path: Path) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    pid = register_patient(page, base)
    sent: list[tuple[str, str]] = []
    page.on("request", lambda request: sent.append((request.method, request.url)))
    big = tmp_path / "scan-report.pdf"
    big.write_bytes(_large_pdf(9_500_000))
    page.goto(f"{base}/console/patients/{pid}/files")
    page.get_by_label("Upload a file").set_input_files(str(big))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator(".upload-status")).to_have_text(re.compile(r"^Uploaded"), timeout=60_000)
    expect(page.locator("#file-list").get_by_role("link", name="scan-report.pdf")).to_be_visible()
    tus = f"{base}/console/api/v1/patients/{pid}/uploads"
    assert ("POST", tus) in sent
    assert [m for m, url in sent if url.startswith(tus + "/") and m == "PATCH"]  # the bytes went in tus PATCHes
    assert ("POST", f"{base}/console/api/v1/patients/{pid}/files") not in sent
