"""Every console page, as a clinician and as the patient, checked by axe-core against WCAG 2.1 AA.

axe (Deque's engine, bundled by axe-playwright-python) runs in Debian's Chromium on each page after
its script ran: labels, names, landmarks, ARIA, and the contrast of every text against what is
behind it. A page with a file, a letter, a request and the rest in it, so the lists are not empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from axe_playwright_python.sync_playwright import Axe

from careshare.testing import bearer, make_pdf, make_settings
from careshare.testing.browser import register_patient, sign_in

if TYPE_CHECKING:
    from pathlib import Path

WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
#: Pages of one patient or item: ``{pid}`` and the ids made below fill them.
CLINICIAN_PAGES = (
    "/console/inbox",
    "/console/patients",
    "/console/patients/new",
    "/console/patients/{pid}",
    "/console/patients/{pid}/files",
    "/console/files/{fid}",
    "/console/library",
    "/console/chat",
    "/console/patients/{pid}/chat",
    "/console/patients/{pid}/letters",
    "/console/letters/{lid}",
    "/console/letter-templates",
    "/console/patients/{pid}/file-requests",
    "/console/appointment-types",
    "/console/appointment-types/{tid}",
    "/console/patients/{pid}/appointments",
    "/console/medication-types",
    "/console/patients/{pid}/medications",
    "/console/information-packs",
    "/console/consent-forms",
    "/console/patients/{pid}/consents",
)
PATIENT_PAGES = (
    "/console/me",
    "/console/me/files",
    "/console/me/chat",
    "/console/me/letters",
    "/console/me/appointments",
    "/console/me/medications",
    "/console/me/consents",
    "/console/me/file-requests",
)


def _violations(page: Any, axe: Axe, path: str) -> list[str]:
    page.goto(path)  # waits for the load event: the page's deferred script has run
    found = axe.run(page, options=WCAG_AA).response["violations"]
    return [
        f"{path}: {v['id']} ({v['impact']}) at {', '.join(str(n['target']) for n in v['nodes'][:3])}: {v['help']}"
        for v in found
    ]


def test_every_page_meets_wcag_aa(page: Any, chromium: Any, console_server: str, tmp_path: Path) -> None:
    base = console_server
    sign_in(page, base, role="clinician", org="org-a", subject="dr-a")
    pid = register_patient(page, base)
    same_site = {"Origin": base}
    api = f"{base}/console/api/v1"
    leaflet = page.request.post(
        f"{api}/patients/{pid}/files",
        multipart={"file": {"name": "leaflet.pdf", "mimeType": "application/pdf", "buffer": make_pdf(2)}},
        headers=same_site,
    )
    assert leaflet.status == 201, leaflet.text()
    letter = page.request.post(
        f"{api}/patients/{pid}/letters", data={"subject": "Your results", "body": "Dear Ann"}, headers=same_site
    )
    kind = page.request.post(f"{api}/appointment-types", data={"name": "Knee clinic"}, headers=same_site)
    assert letter.status == 201 and kind.status == 201, (letter.text(), kind.text())
    ids = {"pid": pid, "fid": leaflet.json()["id"], "lid": letter.json()["id"], "tid": kind.json()["id"]}
    # Something in the clinic's inbox: a message from the patient (the server's secret, through the API).
    me = bearer(make_settings(tmp_path / "console-data"), "patient", "org-a", patient=pid)
    message = page.request.post(f"{base}/v1/me/messages", data={"body": "Hello"}, headers=me)
    assert message.status == 201, message.text()

    axe = Axe()
    problems = [v for path in CLINICIAN_PAGES for v in _violations(page, axe, base + path.format(**ids))]

    phone_context = chromium.new_context(viewport={"width": 390, "height": 844})
    phone = phone_context.new_page()
    phone.set_default_timeout(15_000)
    try:
        sign_in(phone, base, role="patient", org="org-a", patient_id=pid)
        problems += [v for path in PATIENT_PAGES for v in _violations(phone, axe, base + path)]
    finally:
        phone_context.close()
    assert problems == [], "\n".join(problems)
    assert page.console_errors == []
