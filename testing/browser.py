"""A real browser on the console: Debian's Chromium driven by Playwright, against a real server.

``chromium_path()`` finds the browser (``scripts/test`` installs Debian's ``chromium``; Playwright's
own download is not used). :func:`console_browser` starts it headless for a test;
:func:`sign_in` uses the development form (the server needs ``CARESHARE_DEV_LOGIN=1``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, Page

__all__ = ["chromium_path", "console_browser", "register_patient", "screenshot", "sign_in"]

#: Chromium in a container: no sandbox (root), no GPU, nothing fetched from the internet.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_path() -> str | None:
    """Debian's Chromium (or ``$CARESHARE_CHROMIUM``), or None when the machine has none."""
    for candidate in (os.environ.get("CARESHARE_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@contextlib.contextmanager
def console_browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("no chromium: apt-get install chromium, or set CARESHARE_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Page, base_url: str, *, role: str, org: str, subject: str = "dr-demo", patient_id: str = "") -> None:
    """Sign in through the development form and wait for the first page."""
    page.goto(f"{base_url}/console/login")
    form = page.locator("form", has=page.get_by_role("heading", name="Development sign-in"))
    form.get_by_label("Patient" if role == "patient" else "Clinician", exact=True).check()
    form.get_by_label("Organisation").fill(org)
    if role == "patient":
        form.get_by_label("Patient id").fill(patient_id)
    else:
        form.get_by_label("Clinician's name or id").fill(subject)
    with page.expect_navigation():
        form.get_by_role("button", name="Sign in for development").click()


def screenshot(page: Page, name: str) -> None:
    """Keep a screenshot of ``page`` as ``<name>.png`` when ``CARESHARE_SCREENSHOTS`` names a folder."""
    folder = os.environ.get("CARESHARE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def register_patient(page: Page, base_url: str, name: str = "Ann Example", number: str = "MRN-100") -> str:
    """Register a patient through the console's form (signed in as a clinician); their id, their profile open."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/console/patients")
    page.get_by_role("link", name="Register a patient").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Clinic number").fill(number)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("status")).to_have_text("Patient registered.")
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    return page.url.rsplit("/", 1)[1]
