"""The clinic's inbox and webhook events: a patient's message, upload and file-request answer.

Through the HTTP API on SQLite and PostgreSQL: each event is one clinic notification (a message
with two files is one, a retried request is still one), the clinic reads them in one inbox shared
by its clinicians, the patient never sees them, and none carries the patient's name, the message's
text or a file's name. The webhook posts them signed, marked ``Careshare-Audience: clinic``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import AsyncTestClient

from careshare.core.notifications import PATIENT_UPLOAD, PATIENT_UPLOAD_TITLE, deliver_due
from careshare.host import create_app
from careshare.plugins import webhook
from careshare.plugins.chat import routes as chat
from careshare.plugins.consents import consents
from careshare.plugins.requests import file_requests
from careshare.testing import bearer, make_pdf, make_settings
from careshare.testing.api import assert_problem

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from careshare.core.settings import Settings

#: Every clinic notification's kind and its one title (the plugins bring theirs; the upload is core's).
CLINIC_TITLES = {
    chat.CLINIC_KIND: chat.CLINIC_TITLE,
    PATIENT_UPLOAD: PATIENT_UPLOAD_TITLE,
    file_requests.CLINIC_KIND: file_requests.CLINIC_TITLE,
    consents.CLINIC_KIND: consents.CLINIC_TITLE,
}
NAME = "Ottoline Brackenridge"
MESSAGE = "Brackenridge private words 5e1d"
FILE_NAME = "brackenridge-rash.pdf"
SECRET = "clinic-webhook-secret-0123456789"


@pytest.fixture
def dr(any_settings: Settings) -> dict[str, str]:
    return bearer(any_settings, "clinician", "org-a", sub="dr-a")


async def _register(api: AsyncTestClient[Any], dr: dict[str, str], external_id: str = "MRN-CLINIC-1") -> str:
    body = {"name": NAME, "external_id": external_id, "email": "ottoline@example.org"}
    response = await api.post("/v1/patients", json=body, headers=dr)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _clinic_inbox(api: AsyncTestClient[Any], headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/v1/notifications", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _kinds(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["kind"] for item in items)


async def test_each_patient_event_reaches_the_clinic_once_and_never_the_patient(
    api: AsyncTestClient[Any], any_settings: Settings, dr: dict[str, str]
) -> None:
    pid = await _register(api, dr)
    me = bearer(any_settings, "patient", "org-a", patient=pid)
    assert await _clinic_inbox(api, dr) == []

    # A message with two files: one notification about the message, none per file.
    files = [("file", (FILE_NAME, make_pdf(), "application/pdf")), ("file", ("b.pdf", make_pdf(), "application/pdf"))]
    # A retry sends the same bytes (httpx keeps a boundary the Content-Type names).
    retry = {
        **me,
        "Idempotency-Key": f"message-{uuid.uuid4().hex}",
        "Content-Type": "multipart/form-data; boundary=clinic-retry-boundary",
    }
    sent = await api.post("/v1/me/messages", data={"body": MESSAGE}, files=files, headers=retry)
    assert sent.status_code == 201, sent.text
    again = await api.post("/v1/me/messages", data={"body": MESSAGE}, files=files, headers=retry)
    assert again.status_code == 201 and again.json()["id"] == sent.json()["id"]
    [message] = await _clinic_inbox(api, dr)
    assert message["kind"] == "patient.message"
    assert (message["target"], message["item_id"], message["patient_id"]) == ("chat-message", sent.json()["id"], pid)
    assert message["title"] == chat.CLINIC_TITLE == "A patient sent a message"

    # A file of the patient's own: once its check has passed.
    uploaded = await api.post(
        "/v1/me/files", params={"filename": FILE_NAME}, content=make_pdf(), headers={**me, "Prefer": "wait=30"}
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["status"] == "ready"
    # A message from the clinic tells the clinic nothing.
    reply = await api.post(f"/v1/patients/{pid}/messages", json={"body": "Thank you."}, headers=dr)
    assert reply.status_code == 201, reply.text

    # A file-request answer: one per file sent in answer, and not also a patient.upload.
    due = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    asked = await api.post(
        f"/v1/patients/{pid}/file-requests",
        json={"message": "Please send your scan.", "accepted_kinds": ["pdf"], "max_files": 2, "due_at": due},
        headers=dr,
    )
    assert asked.status_code == 201, asked.text
    rid = asked.json()["id"]
    answered = await api.post(
        f"/v1/me/file-requests/{rid}/files", params={"filename": FILE_NAME}, content=make_pdf(), headers=me
    )
    assert answered.status_code == 201, answered.text

    # A consent answered: one notice (the same answer again changes nothing, and tells no one again).
    pack = await api.post("/v1/information-packs", json={"name": "About the operation"}, headers=dr)
    assert pack.status_code == 201, pack.text
    chosen = {"name": "Knee surgery", "information_pack_ids": [pack.json()["id"]]}
    form = await api.post("/v1/consent-forms", json=chosen, headers=dr)
    assert form.status_code == 201, form.text
    consent = await api.post(f"/v1/patients/{pid}/consents", json={"form_id": form.json()["id"]}, headers=dr)
    assert consent.status_code == 201, consent.text
    cid = consent.json()["id"]
    for _ in range(2):
        decided = await api.post(f"/v1/me/consents/{cid}/decision", json={"decision": "declined"}, headers=me)
        assert decided.status_code == 200, decided.text

    inbox = await _clinic_inbox(api, dr)
    assert _kinds(inbox) == ["consent.decided", "file-request.answered", "patient.message", "patient.upload"]
    assert {item["kind"]: item["title"] for item in inbox} == CLINIC_TITLES
    by_kind = {item["kind"]: item for item in inbox}
    assert by_kind["patient.upload"]["item_id"] == uploaded.json()["id"]
    assert (by_kind["file-request.answered"]["target"], by_kind["file-request.answered"]["item_id"]) == (
        "file-request",
        rid,
    )
    assert (by_kind["consent.decided"]["target"], by_kind["consent.decided"]["item_id"]) == ("consent-request", cid)
    assert "declined" not in json.dumps(by_kind["consent.decided"])  # the answer itself is on the consent's page
    text = json.dumps(inbox)
    for secret in (NAME, MESSAGE, FILE_NAME, "ottoline@example.org", "MRN-CLINIC-1"):
        assert secret not in text

    # The patient's own inbox holds what the clinic sent them, never what the clinic was told.
    mine = (await api.get("/v1/me/notifications", headers=me)).json()["items"]
    assert mine and not set(_kinds(mine)) & set(CLINIC_TITLES)
    # Another organisation's clinicians see none of it; a patient may not ask.
    other = bearer(any_settings, "clinician", "org-b", sub="dr-b")
    assert await _clinic_inbox(api, other) == []
    assert_problem(await api.get("/v1/notifications", headers=me), 403, "forbidden")


async def test_read_is_shared_by_the_organisations_clinicians(
    api: AsyncTestClient[Any], any_settings: Settings, dr: dict[str, str]
) -> None:
    pid = await _register(api, dr)
    me = bearer(any_settings, "patient", "org-a", patient=pid)
    for text in ("first", "second"):
        response = await api.post("/v1/me/messages", json={"body": text}, headers=me)
        assert response.status_code == 201, response.text
    newest, oldest = await _clinic_inbox(api, dr)
    assert newest["id"] > oldest["id"]
    assert [n["id"] for n in await _clinic_inbox(api, dr, unread="true")] == [newest["id"], oldest["id"]]

    read = await api.post(f"/v1/notifications/{oldest['id']}/read", headers=dr)
    assert read.status_code == 200, read.text
    assert read.json()["read_by"] == "dr-a" and read.json()["read_at"] is not None
    colleague = bearer(any_settings, "clinician", "org-a", sub="dr-colleague")
    assert [n["id"] for n in await _clinic_inbox(api, colleague, unread="true")] == [newest["id"]]
    # Read again by a colleague: the first reader stays.
    again = await api.post(f"/v1/notifications/{oldest['id']}/read", headers=colleague)
    assert again.status_code == 200 and again.json()["read_by"] == "dr-a"
    assert again.json()["read_at"] == read.json()["read_at"]

    other = bearer(any_settings, "clinician", "org-b", sub="dr-b")
    assert_problem(await api.post(f"/v1/notifications/{newest['id']}/read", headers=other), 404, "not-found")
    assert_problem(await api.post(f"/v1/notifications/{newest['id']}/read", headers=me), 403, "forbidden")
    # The patient's read route does not reach a clinic notification either.
    assert_problem(await api.post(f"/v1/me/notifications/{newest['id']}/read", headers=me), 404, "not-found")
    assert [n["id"] for n in await _clinic_inbox(api, dr, unread="true")] == [newest["id"]]


async def test_a_refused_upload_tells_the_clinic_nothing(
    api: AsyncTestClient[Any], any_settings: Settings, dr: dict[str, str]
) -> None:
    pid = await _register(api, dr)
    me = bearer(any_settings, "patient", "org-a", patient=pid)
    broken = make_pdf()[:200]  # a PDF's first bytes: identified, then refused by its check
    response = await api.post(
        "/v1/me/files", params={"filename": "x.pdf"}, content=broken, headers={**me, "Prefer": "wait=30"}
    )
    assert_problem(response, 422, "pdf-unreadable")
    assert await _clinic_inbox(api, dr) == []


class _Receiver:
    """A webhook receiver on 127.0.0.1 that keeps each request's headers and body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Receiver]:
    found = _Receiver()
    monkeypatch.setenv("CARESHARE_WEBHOOK_URL", found.url)
    monkeypatch.setenv("CARESHARE_WEBHOOK_SECRET", SECRET)
    yield found
    found.server.shutdown()


async def test_the_webhook_posts_clinic_events_marked_for_the_clinic(
    receiver: _Receiver, tmp_path: Path, migrated_database: Path
) -> None:
    database = tmp_path / "data" / "careshare.db"
    database.parent.mkdir(parents=True)
    shutil.copyfile(migrated_database, database)
    # In the settings (the server's own delivery loop) and the process (a round run here).
    settings = make_settings(tmp_path / "data", CARESHARE_WEBHOOK_URL=receiver.url, CARESHARE_WEBHOOK_SECRET=SECRET)
    app = create_app(settings)
    dr = bearer(settings, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=app) as api:
        pid = await _register(api, dr)
        me = bearer(settings, "patient", "org-a", patient=pid)
        sent = await api.post("/v1/me/messages", json={"body": MESSAGE}, headers=me)
        assert sent.status_code == 201, sent.text
        cs = app.state.careshare
        for _ in range(100):  # whichever round gets to it first, this one or the server's
            await deliver_due(cs.engine, cs.plugins)
            if any(b'"audience":"clinic"' in body for _, body in receiver.received):
                break
            await asyncio.sleep(0.05)
    bodies = [(headers, json.loads(body)) for headers, body in receiver.received]
    [(headers, body)] = [(h, b) for h, b in bodies if b.get("audience") == "clinic"]
    assert headers[webhook.AUDIENCE_HEADER] == "clinic"
    assert (body["kind"], body["item_id"], body["patient_id"]) == ("patient.message", sent.json()["id"], pid)
    assert headers[webhook.DELIVERY_HEADER] == body["dedupe_key"]
    assert webhook.verify(
        SECRET,
        headers[webhook.TIMESTAMP_HEADER],
        receiver.received[bodies.index((headers, body))][1],
        headers[webhook.SIGNATURE_HEADER],
    )
    assert MESSAGE not in json.dumps(body) and NAME not in json.dumps(body)
