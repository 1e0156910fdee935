"""Driving the console as a browser does, for tests of a plugin's console pages (``careshare_console``).

:class:`ConsoleClient` wraps Litestar's ``TestClient``: it signs in with a token through the login
form (the session cookie is then kept), sends forms with the ``Origin`` and ``Referer`` a browser
sends from a console page, and reads back the notice the next page shows.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from careshare.host.auth import mint_token

if TYPE_CHECKING:
    import httpx
    from litestar.testing import TestClient

    from careshare.core.settings import Settings

__all__ = ["ConsoleClient", "notice_text"]

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
