"""Expiring links through a real server: made by clinicians, followed by anyone holding one, expired, revoked, audited.

Everything is real: uvicorn on 127.0.0.1 with SQLite (and once PostgreSQL), httpx as the person
outside the app, the blob store, PDFs made by pikepdf, and an aiosmtpd SMTP server receiving the
letter email whose links are then followed.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import logging
import os
import re
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pikepdf
import pytest
from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from careshare.core.links import DEFAULT_LINK_SECONDS, MAX_LINK_SECONDS, link_token
from careshare.host import create_app
from careshare.plugins.letters.mail import MAIL_MAX_ATTACHMENT_BYTES
from careshare.testing import bearer, free_port, make_pdf, make_settings, running_server
from careshare.testing.api import assert_problem, sha256

if TYPE_CHECKING:
    from collections.abc import Iterator
    from email.message import EmailMessage
    from pathlib import Path

    from careshare.core.settings import Settings
    from careshare.testing import PostgresCluster

#: How long a check may take on a busy two-core machine before a test gives up on a file.
READY_DEADLINE = 120.0


class Served:
    """A real server and what a test needs to talk to it."""

    def __init__(self, base: str, settings: Settings) -> None:
        self.base = base
        self.settings = settings
        self.http = httpx.Client(base_url=base, timeout=60)
        self.clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
        self.other_org = bearer(settings, "clinician", "org-b", sub="dr-b")

    def patient(self, **extra: Any) -> str:
        body = {"name": "Pat Link", "external_id": f"MRN-{uuid.uuid4().hex[:12]}", **extra}
        response = self.http.post("/v1/patients", json=body, headers=self.clinician)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def ready_file(self, pid: str, data: bytes, name: str = "report.pdf") -> dict[str, Any]:
        """Upload into the patient's files and wait (bounded) until the check made it ready."""
        response = self.http.post(
            f"/v1/patients/{pid}/files",
            params={"filename": name},
            content=data,
            headers={**self.clinician, "Prefer": "wait=30"},
        )
        assert response.status_code in (201, 202), response.text
        file = response.json()
        deadline = time.monotonic() + READY_DEADLINE
        while file["status"] == "processing" and time.monotonic() < deadline:
            time.sleep(0.25)
            file = self.http.get(f"/v1/files/{file['id']}", headers=self.clinician).json()
        assert file["status"] == "ready", file
        return dict(file)

    def link(self, fid: str, **body: Any) -> dict[str, Any]:
        response = self.http.post(f"/v1/files/{fid}/links", json=body, headers=self.clinician)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def audit(self, pid: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/patients/{pid}/audit", params={"limit": 500}, headers=self.clinician)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


@contextlib.contextmanager
def serve(data_dir: Path, **env: str) -> Iterator[Served]:
    port = free_port()
    settings = make_settings(data_dir, CARESHARE_PUBLIC_URL=f"http://127.0.0.1:{port}/", **env)
    with running_server(create_app(settings), port=port) as base:
        served = Served(base, settings)
        try:
            yield served
        finally:
            served.http.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module's tests; each test makes its own patient and files."""
    with serve(tmp_path_factory.mktemp("links") / "data") as served:
        yield served


@pytest.fixture(scope="module")
def shared_pdf(server: Served) -> dict[str, Any]:
    """A ready file (and its patient) the tests that only follow links share."""
    pid = server.patient()
    return {**server.ready_file(pid, make_pdf(2, text="shared")), "patient_id": pid}


def outsider() -> httpx.Client:
    """Someone outside the app: no token, no cookies, just the URL."""
    return httpx.Client(timeout=60)


def token_of(link: dict[str, Any]) -> str:
    return str(link["url"].rsplit("/", 1)[1])


# -- following a link ---------------------------------------------------------------------------


def test_a_link_serves_its_one_file_to_anyone_holding_it_with_range_etag_and_head(
    server: Served, shared_pdf: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fid, pid = shared_pdf["id"], shared_pdf["patient_id"]
    link = server.link(fid, purpose="for the patient's GP")
    assert link["url"].startswith(f"{server.base}/v1/links/")  # the public URL, no trailing slash doubled
    assert link["opens"] == {"type": "file", "file_id": fid, "rendition": "shareable"}
    assert (link["status"], link["uses"], link["purpose"], link["created_by"]) == (
        "active",
        0,
        "for the patient's GP",
        "dr-a",
    )
    made, expires = datetime.fromisoformat(link["created_at"]), datetime.fromisoformat(link["expires_at"])
    assert expires - made == timedelta(seconds=DEFAULT_LINK_SECONDS) == timedelta(hours=24)

    expected = server.http.get(f"/v1/files/{fid}/content?rendition=shareable", headers=server.clinician).content
    with outsider() as person:
        whole = person.get(link["url"])
        assert whole.status_code == 200, whole.text
        assert whole.content == expected
        assert whole.headers["etag"] == f'"{sha256(expected)}"'
        assert whole.headers["content-type"] == "application/pdf"
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["x-content-type-options"] == "nosniff"
        assert whole.headers["referrer-policy"] == "no-referrer"
        assert 'filename="report.pdf"' in whole.headers["content-disposition"]

        part = person.get(link["url"], headers={"Range": "bytes=5-14"})
        assert part.status_code == 206
        assert part.content == expected[5:15]
        assert part.headers["content-range"] == f"bytes 5-14/{len(expected)}"
        beyond = person.get(link["url"], headers={"Range": f"bytes={len(expected)}-"})
        assert_problem(beyond, 416, "range-not-satisfiable")
        assert beyond.headers["content-range"] == f"bytes */{len(expected)}"
        unchanged = person.get(link["url"], headers={"If-None-Match": whole.headers["etag"]})
        assert (unchanged.status_code, unchanged.content) == (304, b"")

        headed = person.head(link["url"])
        assert (headed.status_code, headed.content) == (200, b"")
        assert headed.headers["content-length"] == str(len(expected))
        assert headed.headers["etag"] == whole.headers["etag"]
        assert headed.headers["content-type"] == "application/pdf"

    listed = server.http.get(f"/v1/files/{fid}/links", headers=server.clinician).json()["items"]
    mine = next(item for item in listed if item["id"] == link["id"])
    assert mine["uses"] == 5  # every answer with the file counts, the 416 too (the link was valid)
    assert mine["last_used_at"] is not None and mine["url"] == link["url"]

    events = [e for e in server.audit(pid) if e["item_id"] == link["id"]]
    actions = sorted(e["action"] for e in events)
    assert actions == ["link.created", *["link.read"] * 5]
    reads = [e for e in events if e["action"] == "link.read"]
    assert {(e["actor"], e["actor_role"], e["file_id"], e["rendition"], e["target"]) for e in reads} == {
        (f"link:{link['id']}", "link", fid, "shareable", "link")
    }
    # The link's secret never reaches the log (the access log keeps the link id only).
    mac = token_of(link).split(".", 1)[1]
    # (careshare's own loggers: ``careshare serve`` turns uvicorn's access log off, see host/logging.py)
    server_side = [record for record in caplog.records if record.name.startswith("careshare")]
    assert all(mac not in record.getMessage() and mac not in str(vars(record)) for record in server_side)
    assert any(f"/v1/links/{link['id']}.<mac>" in record.getMessage() for record in server_side)


def test_a_link_opens_the_rendition_it_names_and_nothing_else(server: Served, shared_pdf: dict[str, Any]) -> None:
    fid = shared_pdf["id"]
    original = server.link(fid, rendition="original")
    with outsider() as person:
        got = person.get(original["url"])
    assert got.status_code == 200
    assert sha256(got.content) == shared_pdf["sha256"]
    missing = server.http.post(f"/v1/files/{fid}/links", json={"rendition": "poster"}, headers=server.clinician)
    assert_problem(missing, 404, "not-found")
    # A link is no listing and no bearer token: nothing else opens with it.
    token = token_of(original)
    as_bearer = server.http.get(f"/v1/files/{fid}", headers={"Authorization": f"Bearer {token}"})
    assert_problem(as_bearer, 401, "invalid-token")
    listing = server.http.get("/v1/links", headers={"Authorization": f"Bearer {token}"})
    assert listing.status_code in (404, 405), listing.text
    beyond = server.http.get(f"{original['url']}/files")
    assert_problem(beyond, 404, "not-found")


def test_a_bearer_token_is_no_link_and_unknown_links_are_404(server: Served, shared_pdf: dict[str, Any]) -> None:
    jwt = server.clinician["Authorization"].split(" ", 1)[1]
    with outsider() as person:
        assert_problem(person.get(f"{server.base}/v1/links/{jwt}"), 404, "not-found")
        assert_problem(person.head(f"{server.base}/v1/links/{jwt}"), 404, "not-found")
        # Well formed and correctly signed, but no such link: the signature alone opens nothing.
        made_up = link_token(server.settings.secret_key, "01m8zzzzzzzzzzzzzzzzzzzzzz")
        assert_problem(person.get(f"{server.base}/v1/links/{made_up}"), 404, "not-found")
        # Signed with another secret (another server's link): not this server's.
        foreign = link_token("another-secret", server.link(shared_pdf["id"])["id"])
        assert_problem(person.get(f"{server.base}/v1/links/{foreign}"), 404, "not-found")


@pytest.fixture(scope="module")
def tamper_target(server: Served, shared_pdf: dict[str, Any]) -> str:
    return token_of(server.link(shared_pdf["id"], purpose="tamper"))


URL_CHARS = "0123456789abcdefghjkmnpqrstvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZilou-_.~%é\x00 /?#"


@hypothesis_settings(suppress_health_check=[HealthCheck.too_slow], max_examples=30, deadline=None)
@given(data=st.data())
def test_any_changed_token_is_404_never_a_500(server: Served, tamper_target: str, data: st.DataObject) -> None:
    token = tamper_target
    how = data.draw(st.sampled_from(["replace", "cut", "append", "any"]))
    if how == "replace":
        at = data.draw(st.integers(0, len(token) - 1))
        char = data.draw(st.sampled_from(URL_CHARS).filter(lambda c: c != token[at]))
        changed = token[:at] + char + token[at + 1 :]
    elif how == "cut":
        at = data.draw(st.integers(0, len(token) - 1))
        changed = token[:at]
    elif how == "append":
        changed = token + data.draw(st.text(URL_CHARS, min_size=1, max_size=5))
    else:
        changed = data.draw(st.text(min_size=1, max_size=120))
    if changed == token or not changed:
        changed = token + "x"
    with outsider() as person:
        response = person.get(f"{server.base}/v1/links/{quote(changed, safe='')}")
    # A NUL can be stored nowhere: the one middleware for addresses refuses it first (docs/api.md).
    expected = (400, "bad-request") if "\x00" in changed else (404, "not-found")
    assert (response.status_code, response.json()["code"]) == expected, (changed, response.text)


# -- making, listing, revoking ------------------------------------------------------------------


def test_expires_in_is_one_second_to_seven_days_and_bad_fields_are_named(
    server: Served, shared_pdf: dict[str, Any]
) -> None:
    fid = shared_pdf["id"]
    longest = server.link(fid, expires_in=MAX_LINK_SECONDS)
    span = datetime.fromisoformat(longest["expires_at"]) - datetime.fromisoformat(longest["created_at"])
    assert span == timedelta(days=7)
    for bad, field in (
        ({"expires_in": MAX_LINK_SECONDS + 1}, "$.expires_in"),
        ({"expires_in": 0}, "$.expires_in"),
        ({"expires_in": -5}, "$.expires_in"),
        ({"expires_in": "a day"}, "$.expires_in"),
        ({"expires_in": 10**30}, "$.expires_in"),
        ({"purpose": "x" * 201}, "$.purpose"),
        ({"purpose": 7}, "$.purpose"),
        ({"audience": "GP"}, "audience"),
    ):
        response = server.http.post(f"/v1/files/{fid}/links", json=bad, headers=server.clinician)
        problem = assert_problem(response, 422, "invalid-request")
        assert any(field in error for error in problem["errors"]), (bad, problem)
    assert_problem(
        server.http.post(f"/v1/files/{fid}/links", content=b"{", headers=server.clinician), 400, "bad-request"
    )


def test_only_clinicians_of_the_organisation_make_list_and_revoke(server: Served, shared_pdf: dict[str, Any]) -> None:
    fid, pid = shared_pdf["id"], shared_pdf["patient_id"]
    link = server.link(fid)
    patient = bearer(server.settings, "patient", "org-a", patient=pid)
    assert_problem(server.http.post(f"/v1/files/{fid}/links", json={}, headers=patient), 403, "forbidden")
    assert_problem(server.http.get(f"/v1/files/{fid}/links", headers=patient), 403, "forbidden")
    assert_problem(server.http.post(f"/v1/files/{fid}/links", json={}), 401, "authentication-required")
    for other in (
        server.http.post(f"/v1/files/{fid}/links", json={}, headers=server.other_org),
        server.http.get(f"/v1/files/{fid}/links", headers=server.other_org),
        server.http.post(f"/v1/files/{fid}/links/{link['id']}/revoke", headers=server.other_org),
    ):
        assert_problem(other, 404, "not-found")
    # A link is revoked under the file it opens, not under another.
    elsewhere = server.ready_file(pid, make_pdf(1, text="elsewhere"))
    wrong = server.http.post(f"/v1/files/{elsewhere['id']}/links/{link['id']}/revoke", headers=server.clinician)
    assert_problem(wrong, 404, "not-found")
    with outsider() as person:
        assert person.get(link["url"]).status_code == 200


def test_revoked_and_expired_links_are_410_and_every_refusal_is_audited(
    server: Served, shared_pdf: dict[str, Any]
) -> None:
    fid, pid = shared_pdf["id"], shared_pdf["patient_id"]
    revoked = server.link(fid, purpose="to revoke")
    short = server.link(fid, expires_in=1, purpose="short")
    with outsider() as person:
        assert person.get(revoked["url"]).status_code == 200
        first = server.http.post(f"/v1/files/{fid}/links/{revoked['id']}/revoke", headers=server.clinician)
        assert first.status_code == 200, first.text
        assert (first.json()["status"], first.json()["revoked_by"]) == ("revoked", "dr-a")
        again = server.http.post(f"/v1/files/{fid}/links/{revoked['id']}/revoke", headers=server.clinician)
        assert again.json()["revoked_at"] == first.json()["revoked_at"]  # idempotent
        refused = assert_problem(person.get(revoked["url"]), 410, "link-revoked")
        assert "withdrew" in refused["detail"]
        assert_problem(person.head(revoked["url"]), 410, "link-revoked")

        # The clock moves past the short link's end (a second); it is refused from then on.
        expires_at = datetime.fromisoformat(short["expires_at"])
        while datetime.now(expires_at.tzinfo) <= expires_at:
            time.sleep(0.1)
        expired = assert_problem(person.get(short["url"]), 410, "link-expired")
        assert "expired" in expired["detail"] and "Ask" in expired["detail"]
        assert_problem(person.get(short["url"], headers={"Range": "bytes=0-1"}), 410, "link-expired")

    listed = {
        item["id"]: item for item in server.http.get(f"/v1/files/{fid}/links", headers=server.clinician).json()["items"]
    }
    assert (listed[revoked["id"]]["status"], listed[revoked["id"]]["uses"]) == ("revoked", 1)
    assert (listed[short["id"]]["status"], listed[short["id"]]["uses"]) == ("expired", 0)

    events = server.audit(pid)
    by_link = {
        link_id: sorted(e["action"] for e in events if e["item_id"] == link_id)
        for link_id in (revoked["id"], short["id"])
    }
    assert by_link[revoked["id"]] == sorted(
        ["link.created", "link.read", "link.revoked", "link.refused.revoked", "link.refused.revoked"]
    )
    assert by_link[short["id"]] == sorted(["link.created", "link.refused.expired", "link.refused.expired"])
    # Ids only: no name, file name or purpose label in any event.
    for event in events:
        assert "Pat Link" not in str(event) and "report.pdf" not in str(event) and "revoke" not in str(event["actor"])


def test_an_attachment_link_opens_the_pinned_bytes_until_the_attachment_is_gone(
    server: Served, shared_pdf: dict[str, Any]
) -> None:
    pid = shared_pdf["patient_id"]
    letter = server.http.post(f"/v1/patients/{pid}/letters", json={"subject": "Draft"}, headers=server.clinician)
    lid = letter.json()["id"]
    added = server.http.post(
        f"/v1/letters/{lid}/attachments", json={"file_id": shared_pdf["id"]}, headers=server.clinician
    )
    assert added.status_code == 201, added.text
    (attachment,) = added.json()["attachments"]
    path = f"/v1/attachments/{attachment['id']}/links"
    refused = server.http.post(path, json={"rendition": "original"}, headers=server.clinician)
    assert "$.rendition" in assert_problem(refused, 422, "invalid-request")["errors"][0]
    assert_problem(server.http.post(path, json={}, headers=server.other_org), 404, "not-found")
    made = server.http.post(path, json={"purpose": "partner"}, headers=server.clinician)
    assert made.status_code == 201, made.text
    link = made.json()
    assert link["opens"] == {
        "type": "attachment",
        "file_id": shared_pdf["id"],
        "rendition": "shareable",  # a letter carries the shareable copy
        "attachment_id": attachment["id"],
        "target": "letter",
        "item_id": lid,
    }
    pinned = server.http.get(attachment["url"], headers=server.clinician).content
    with outsider() as person:
        # A bearer header changes nothing: the link is the whole permission, and the audit names it.
        patient = bearer(server.settings, "patient", "org-a", patient=pid)
        assert person.get(link["url"], headers=patient).content == pinned
        removed = server.http.delete(f"/v1/letters/{lid}/attachments/{attachment['id']}", headers=server.clinician)
        assert removed.status_code in (200, 204), removed.text
        gone = assert_problem(person.get(link["url"]), 404, "not-found")
        assert "no longer available" in gone["detail"]
    actions = sorted(e["action"] for e in server.audit(pid) if e["item_id"] == link["id"])
    assert actions == ["link.created", "link.read", "link.refused.gone"]
    reader = next(e for e in server.audit(pid) if e["item_id"] == link["id"] and e["action"] == "link.read")
    assert reader["actor"] == f"link:{link['id']}"


def test_settings_for_links_are_checked(tmp_path: Path) -> None:
    assert make_settings(tmp_path).public_url == "http://127.0.0.1:8000"
    assert make_settings(tmp_path, CARESHARE_PUBLIC_URL=" https://care.example.org/ ").public_url == (
        "https://care.example.org"
    )
    assert make_settings(tmp_path).get(MAIL_MAX_ATTACHMENT_BYTES) == 15_000_000
    for bad in ("ftp://care.example.org", "care.example.org", "https://", "http://x:port", "https://x/?a=1"):
        with pytest.raises(ValueError, match="CARESHARE_PUBLIC_URL"):
            make_settings(tmp_path, CARESHARE_PUBLIC_URL=bad)
    for bad in ("0", "-1", "lots", "1e6"):
        with pytest.raises(ValueError, match="CARESHARE_MAIL_MAX_ATTACHMENT_BYTES"):
            make_settings(tmp_path, CARESHARE_MAIL_MAX_ATTACHMENT_BYTES=bad).get(MAIL_MAX_ATTACHMENT_BYTES)


# -- the letter email ---------------------------------------------------------------------------

ADDRESS = "pat.link@example.org"
#: The most one test email carries attached: a letter PDF and a small file fit, a 300 kB file does not.
MAIL_LIMIT = 200_000


class Inbox:
    """An SMTP server's handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.lock = threading.Lock()
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def wait_for(self, letter_id: str) -> EmailMessage:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.lock:
                found = [m for m in self.received if f"letter-{letter_id}@" in str(m["Message-ID"])]
            if found:
                assert len(found) == 1
                return found[0]
            time.sleep(0.1)
        raise AssertionError("the letter email did not arrive")


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    """A real SMTP server on 127.0.0.1 (no login: it is the loopback); its handler keeps the mail."""
    handler = Inbox()
    handler.port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port, data_size_limit=None)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def mail_server(tmp_path_factory: pytest.TempPathFactory, inbox: Inbox) -> Iterator[Served]:
    with serve(
        tmp_path_factory.mktemp("links-mail") / "data",
        CARESHARE_SMTP_URL=f"smtp://127.0.0.1:{inbox.port}",
        CARESHARE_MAIL_FROM="letters@riverside.example",
        CARESHARE_MAIL_MAX_ATTACHMENT_BYTES=str(MAIL_LIMIT),
    ) as served:
        yield served


def padded_pdf(padding: int) -> bytes:
    """A real one-page PDF carrying ``padding`` random (incompressible) bytes."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 200))
    pdf.Root.Padding = pdf.make_stream(os.urandom(padding))
    out = io.BytesIO()
    pdf.save(out, compress_streams=False)
    return out.getvalue()


def send_letter(server: Served, pid: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    letter = server.http.post(
        f"/v1/patients/{pid}/letters", json={"subject": "Your scan", "body": "Here it is."}, headers=server.clinician
    )
    assert letter.status_code == 201, letter.text
    lid = letter.json()["id"]
    for file in files:
        added = server.http.post(
            f"/v1/letters/{lid}/attachments", json={"file_id": file["id"]}, headers=server.clinician
        )
        assert added.status_code == 201, added.text
    sent = server.http.post(f"/v1/letters/{lid}/send", json={"email": True}, headers=server.clinician)
    assert sent.status_code == 200, sent.text
    return dict(sent.json())


def wait_sent(server: Served, lid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = server.http.get(f"/v1/letters/{lid}", headers=server.clinician).json()
        if shown["email_status"] != "pending":
            return dict(shown)
        time.sleep(0.1)
    raise AssertionError("the letter email stayed pending")


def test_a_letter_over_the_mail_limit_carries_links_that_open_the_pinned_bytes(
    mail_server: Served, inbox: Inbox
) -> None:
    server = mail_server
    pid = server.patient(email=ADDRESS)
    big = [
        server.ready_file(pid, padded_pdf(150_000), "scan-a.pdf"),
        server.ready_file(pid, padded_pdf(120_000), "scan-b.pdf"),
    ]
    sent = send_letter(server, pid, big)
    assert (sent["email_status"], sent["email_files"]) == ("pending", "linked")
    message = inbox.wait_for(sent["id"])
    shown = wait_sent(server, sent["id"])
    assert (shown["email_status"], shown["email_files"]) == ("sent", "linked")

    parts = list(message.iter_attachments())
    assert [p.get_filename() for p in parts] == ["letter.pdf"]  # the files travel as links
    text = message.get_body(preferencelist=("plain",)).get_content()
    urls = re.findall(rf"{re.escape(server.base)}/v1/links/\S+", text)
    assert len(urls) == 2
    assert "scan-a.pdf" in text and "scan-b.pdf" in text and "2 files too large to attach" in text
    assert "Your scan" not in text and "Here it is" not in text  # no clinical text in the email

    with outsider() as person:
        for url, attachment in zip(urls, sent["attachments"], strict=True):
            followed = person.get(url)
            assert followed.status_code == 200, followed.text
            pinned = server.http.get(attachment["url"], headers=server.clinician).content
            assert followed.content == pinned
            assert sha256(followed.content) == attachment["sha256"]
            links = server.http.get(f"/v1/attachments/{attachment['id']}/links", headers=server.clinician).json()
            (link,) = links["items"]
            assert link["url"] == url and link["purpose"] == "letter-email" and link["uses"] == 1
            assert link["opens"]["attachment_id"] == attachment["id"] and link["opens"]["item_id"] == sent["id"]
            lasts = datetime.fromisoformat(link["expires_at"]) - datetime.fromisoformat(link["created_at"])
            assert lasts == timedelta(days=7)
            assert link["created_by"] == "dr-a"
        # The clinic withdraws one: the person gets 410, the other link still works.
        first = server.http.get(f"/v1/attachments/{sent['attachments'][0]['id']}/links", headers=server.clinician)
        revoke = server.http.post(
            f"/v1/attachments/{sent['attachments'][0]['id']}/links/{first.json()['items'][0]['id']}/revoke",
            headers=server.clinician,
        )
        assert revoke.status_code == 200, revoke.text
        assert_problem(person.get(urls[0]), 410, "link-revoked")
        assert person.get(urls[1]).status_code == 200


def test_a_letter_under_the_mail_limit_carries_its_files_attached(mail_server: Served, inbox: Inbox) -> None:
    server = mail_server
    pid = server.patient(email=ADDRESS)
    small = [server.ready_file(pid, make_pdf(1, text="leaflet"), "leaflet.pdf")]
    sent = send_letter(server, pid, small)
    assert sent["email_files"] == "attached"
    message = inbox.wait_for(sent["id"])
    shown = wait_sent(server, sent["id"])
    assert (shown["email_status"], shown["email_files"]) == ("sent", "attached")
    parts = list(message.iter_attachments())
    assert [p.get_filename() for p in parts] == ["letter.pdf", "leaflet.pdf"]
    pinned = server.http.get(sent["attachments"][0]["url"], headers=server.clinician).content
    assert parts[1].get_content() == pinned
    assert "/v1/links/" not in message.get_body(preferencelist=("plain",)).get_content()
    links = server.http.get(f"/v1/attachments/{sent['attachments'][0]['id']}/links", headers=server.clinician)
    assert links.json()["items"] == []


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_links_on_postgresql(tmp_path: Path, postgres: PostgresCluster) -> None:
    url = postgres.create_database(f"links_{uuid.uuid4().hex}")
    with serve(tmp_path / "data", CARESHARE_DATABASE_URL=url) as server:
        pid = server.patient()
        file = server.ready_file(pid, make_pdf(1, text="pg"))
        link = server.link(file["id"], expires_in=60)
        with outsider() as person:
            shareable = server.http.get(f"/v1/files/{file['id']}/content?rendition=shareable", headers=server.clinician)
            assert person.get(link["url"], headers={"Range": "bytes=0-7"}).content == shareable.content[:8]
            server.http.post(f"/v1/files/{file['id']}/links/{link['id']}/revoke", headers=server.clinician)
            assert_problem(person.get(link["url"]), 410, "link-revoked")
        actions = sorted(e["action"] for e in server.audit(pid) if e["item_id"] == link["id"])
        assert actions == ["link.created", "link.read", "link.refused.revoked", "link.revoked"]
