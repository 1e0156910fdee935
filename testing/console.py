"""Driving the console as a browser does, for tests of a plugin's console pages (``careshare_console``).

:class:`ConsoleClient` wraps Litestar's ``TestClient``: it signs in with a token through the login
form (the session cookie is then kept), sends forms with the ``Origin`` and ``Referer`` a browser
sends from a console page, and reads back the notice the next page shows.
"""

from __future__ import annotations

import html
import re
import shutil
from typing import TYPE_CHECKING, Any

from careshare.host.auth import mint_token

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    from litestar.testing import TestClient

    from careshare.core.settings import Settings

__all__ = ["ConsoleClient", "attachment_ids", "copied_settings", "notice_text", "register"]

BASE_URL = "http://console.test"
_NOTICE = re.compile(r'<div class="notice (\w+)"[^>]*data-code="([^"]*)"[^>]*>(.*?)</div>', re.S)
_TAGS = re.compile(r"<[^>]+>")


def notice_text(page: str) -> tuple[str, str, str] | None:
    """The notice a console page shows: ``(kind, code, text)`` with the markup taken out, or None."""
    found = _NOTICE.search(page)
    if found is None:
        return None
    text = " ".join(html.unescape(_TAGS.sub(" ", found.group(3))).split())
    return found.group(1), found.group(2), text


class ConsoleClient:
    """One browser's session of the console (make the ``TestClient`` with ``base_url=BASE_URL``)."""

    def __init__(self, client: TestClient[Any], settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def sign_in(self, role: str, org: str, *, sub: str | None = None, patient: str | None = None) -> httpx.Response:
        token = mint_token(self.settings.secret_key, role=role, org=org, sub=sub, patient=patient)
        return self.form("/console/login", {"token": token}, follow=True)

    def page(self, path: str) -> httpx.Response:
        return self.client.get(path, follow_redirects=True)

    def form(
        self, path: str, data: dict[str, Any], *, sent_from: str | None = None, follow: bool = False
    ) -> httpx.Response:
        """Post ``data`` as the form of the page ``sent_from`` (default: ``path``) does."""
        headers = {"Origin": BASE_URL, "Referer": BASE_URL + (sent_from or path)}
        return self.client.post(path, data=data, headers=headers, follow_redirects=follow)

    def upload(self, path: str, name: str, data: bytes, **fields: str) -> httpx.Response:
        """The console's upload script: a multipart ``file`` to ``path`` (under ``/console/api``)."""
        headers = {"Origin": BASE_URL, "Accept": "application/json"}
        return self.client.post(path, files={"file": (name, data)}, data=fields or None, headers=headers)

    def two_pages(self, path: str, older_label: str) -> tuple[str, str]:
        """A list's first page and, through its one "Older ..." link, the last: both pages' text."""
        first = self.page(path)
        older = re.findall(
            r'<p class="older"><a href="(\?cursor=[^"]+)">' + re.escape(older_label) + "</a></p>", first.text
        )
        assert first.status_code == 200 and len(older) == 1, first.text
        second = self.page(path + html.unescape(older[0]))
        assert second.status_code == 200 and 'class="older"' not in second.text, second.text
        return first.text, second.text

    def library_file(self, name: str, data: bytes) -> dict[str, Any]:
        """Upload ``data`` to the organisation's library as the console does; the stored file (checked)."""
        stored = self.upload("/console/api/v1/library/files", name, data)
        assert stored.status_code == 201, stored.text  # ready within the upload's wait
        return dict(stored.json())

    def new_template(self, path: str, name: str, description: str = "") -> str:
        """Create a catalogue template (``path``: "/console/appointment-types" ...) through its form; its id."""
        made = self.form(path, {"name": name, "description": description})
        assert made.status_code == 303, made.text
        location = str(made.headers["location"])
        assert location.startswith(path + "/"), location
        return location.rsplit("/", 1)[1]


def attachment_ids(page: str) -> list[str]:
    """The ids of the attachments a catalogue template's page lists, in order."""
    return re.findall(r'data-attachment-id="([^"]+)"', page)


def register(clinic: ConsoleClient, name: str = "Ann Smith", external_id: str = "MRN-1", **more: str) -> str:
    """Register a patient through the console's form (as a signed-in clinician); their id."""
    answer = clinic.form(
        "/console/patients", {"name": name, "external_id": external_id, **more}, sent_from="/console/patients/new"
    )
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"].rsplit("/", 1)[1])


def copied_settings(folder: Path, migrated_database: Path, **env: str) -> Settings:
    """Settings on ``folder / "data"`` whose database starts as a copy of ``migrated_database``."""
    from careshare.testing import make_settings

    settings = make_settings(folder / "data", CARESHARE_WORKERS="1", **{"CARESHARE_CONSOLE": "1", **env})
    database = folder / "data" / "careshare.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_database, database)
    return settings
