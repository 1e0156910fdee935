"""The chat channel end to end over HTTP: a channel that is only a plugin.

Clinicians send messages with files (uploaded in the same request or picked), patients read,
download and reply; a message goes out whole or not at all; what was sent stays readable for good,
and only by the patient it was sent to.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from careshare.core import db
from careshare.core.files import discard_new_files
from careshare.core.storage import content_key
from careshare.host import create_app
from careshare.plugins.chat import MAX_FILES
from careshare.plugins.chat.routes import CLINIC_MESSAGE_TITLE, PATIENT_MESSAGE_TITLE
from careshare.plugins.chat.tables import chat_messages
from careshare.testing import bearer, make_pdf, make_settings
from careshare.testing.api import assert_problem
from careshare.testing.strategies.images import encode, exif_bytes, quadrants

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from careshare.core.settings import Settings

PROBLEM_JSON = "application/problem+json"
#: Every table a sent (or half-sent) message could leave rows in.
TABLES = (
    chat_messages,
    db.files,
    db.renditions,
    db.blobs,
    db.attachments,
    db.shares,
    db.notifications,
    db.deliveries,
)


# -- helpers -----------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pdf(label: str, pages: int = 1) -> bytes:
    """A real PDF whose bytes no other test file shares (the label lands in its metadata)."""
    return make_pdf(pages, text=label)


def jpeg_with_gps(seed: int) -> bytes:
    """A photo carrying GPS metadata: its shareable copy differs from the original (metadata stripped)."""
    return encode([quadrants((64, 48), noise=8, seed=seed)], "JPEG", exif=exif_bytes(orientation=6, gps=True))


async def register(client: AsyncTestClient[Any], headers: dict[str, str], external_id: str) -> str:
    response = await client.post(
        "/v1/patients", json={"name": f"P {external_id}", "external_id": external_id}, headers=headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def upload(
    client: AsyncTestClient[Any], headers: dict[str, str], path: str, data: bytes, name: str
) -> dict[str, Any]:
    response = await client.post(path, content=data, params={"filename": name}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def send_form(
    client: AsyncTestClient[Any],
    headers: dict[str, str],
    path: str,
    files: list[tuple[str, bytes]],
    body: str | None = "Here are your results.",
    **fields: str | list[str],
) -> httpx.Response:
    data: dict[str, Any] = {**({"body": body} if body is not None else {}), **fields}
    parts = [("file", (name, content, "application/octet-stream")) for name, content in files]
    return await client.post(path, data=data, files=parts, headers=headers)


async def counts(client: AsyncTestClient[Any]) -> dict[str, int]:
    engine = client.app.state.careshare.engine
    async with engine.connect() as conn:
        return {
            table.name: int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
            for table in TABLES
        }


def blobs_on_disk(settings: Settings) -> set[str]:
    """Every stored object of the local blob store, content and staging, relative to its root."""
    root = settings.data_dir / "blobs"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


async def download(client: AsyncTestClient[Any], headers: dict[str, str], url: str) -> bytes:
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return response.content


# -- sending with uploads, and what the patient then sees ----------------------------------------


async def test_clinician_uploads_and_sends_in_one_multipart_request(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    scan, photo = pdf("results", pages=2), jpeg_with_gps(seed=1)
    response = await send_form(
        client, clinician, f"/v1/patients/{patient_id}/messages", [("results.pdf", scan), ("wound.jpg", photo)]
    )
    assert response.status_code == 201, response.text
    sent = response.json()
    assert sent["author_role"] == "clinician" and sent["author"] == "dr-a"
    assert sent["body"] == "Here are your results."
    assert [(a["filename"], a["kind"]) for a in sent["attachments"]] == [("results.pdf", "pdf"), ("wound.jpg", "image")]

    # Each upload landed in the patient's files (from the clinic) and its shareable copy was attached.
    files = (await client.get(f"/v1/patients/{patient_id}/files", headers=clinician)).json()["items"]
    by_id = {f["id"]: f for f in files}
    assert {a["file_id"] for a in sent["attachments"]} == set(by_id)
    assert all(f["source"] == "clinic" for f in files)
    photo_file = by_id[sent["attachments"][1]["file_id"]]
    assert photo_file["sha256"] == sha256(photo)

    # The patient's conversation shows the message with its attachments.
    mine = (await client.get("/v1/me/messages", headers=patient)).json()
    assert [m["id"] for m in mine["items"]] == [sent["id"]]
    [message] = mine["items"]
    assert message["body"] == "Here are your results." and message["author_role"] == "clinician"
    assert "author" not in message
    assert message["attachments"] == sent["attachments"]
    for attachment in message["attachments"]:
        assert set(attachment) >= {"file_id", "filename", "kind", "media_type", "size", "url"}
        assert attachment["url"] == f"/v1/attachments/{attachment['id']}/content"

    # A notification that says nothing clinical, and the archive entry under "chat".
    [notification] = (await client.get("/v1/me/notifications", headers=patient)).json()["items"]
    assert notification["kind"] == "message"
    assert notification["title"] == CLINIC_MESSAGE_TITLE
    assert (notification["target"], notification["item_id"]) == ("chat-message", sent["id"])
    assert "results" not in notification["title"].lower()
    archive = (await client.get("/v1/me/archive", headers=patient)).json()
    assert archive["count"] == 1
    [entry] = archive["channels"]["chat"]
    assert entry["item_id"] == sent["id"] and entry["title"] == CLINIC_MESSAGE_TITLE
    assert [a["id"] for a in entry["attachments"]] == [a["id"] for a in sent["attachments"]]

    # The patient downloads exactly the shareable rendition: for the photo, not the original with GPS.
    for attachment in message["attachments"]:
        received = await download(client, patient, attachment["url"])
        shareable = next(r for r in by_id[attachment["file_id"]]["renditions"] if r["role"] == "shareable")
        assert sha256(received) == shareable["sha256"] == attachment["sha256"]
        assert len(received) == attachment["size"] == shareable["size"]
        assert received == await download(client, clinician, shareable["url"])
    assert message["attachments"][1]["sha256"] != sha256(photo)

    # Every share and every read is audited.
    audit = (await client.get(f"/v1/patients/{patient_id}/audit", headers=clinician)).json()["items"]
    actions = [(e["action"], e["actor_role"]) for e in audit if e["item_id"] == sent["id"]]
    assert actions.count(("item.shared", "clinician")) == 1
    assert actions.count(("file.shared", "clinician")) == 2
    assert actions.count(("file.read", "patient")) == 2


async def test_files_and_text_fields_keep_the_order_of_the_form(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    picked = await upload(client, clinician, f"/v1/patients/{patient_id}/files", pdf("picked"), "picked.pdf")
    boundary = "chat-order-boundary"
    parts = [
        ("file", "first.pdf", pdf("first")),
        ("file_id", None, picked["id"].encode()),
        ("body", None, b"Text after a file."),
        ("file", "third.pdf", pdf("third")),
    ]
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    response = await client.post(
        f"/v1/patients/{patient_id}/messages",
        content=body,
        headers={**clinician, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 201, response.text
    sent = response.json()
    assert sent["body"] == "Text after a file."
    assert [a["filename"] for a in sent["attachments"]] == ["first.pdf", "picked.pdf", "third.pdf"]
    assert sent["attachments"][1]["file_id"] == picked["id"]


async def test_the_chat_target_is_declared_by_the_plugin(
    client: AsyncTestClient[Any], clinician: dict[str, str]
) -> None:
    targets = {t["name"]: t for t in (await client.get("/v1/targets", headers=clinician)).json()["items"]}
    chat = targets["chat-message"]
    assert chat["channel"] == "chat"
    assert chat["max_count"] == MAX_FILES == 10
    assert chat["accepts"] == ["dicom", "image", "pdf", "video"]
    assert chat["sources"] == ["library", "patient"]
    assert chat["video_allowed"] is True and chat["draft_required"] is False


# -- who may see what -----------------------------------------------------------------------------


async def test_another_patient_and_another_organisation_get_404_for_all_of_it(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
) -> None:
    response = await send_form(client, clinician, f"/v1/patients/{patient_id}/messages", [("scan.pdf", pdf("secret"))])
    assert response.status_code == 201, response.text
    sent = response.json()
    [attachment] = sent["attachments"]
    assert (await client.get(attachment["url"], headers=patient)).status_code == 200

    second = bearer(settings, "patient", "org-a", patient=await register(client, clinician, "MRN-2"))
    other_clinician = bearer(settings, "clinician", "org-b", sub="dr-b")
    # A patient of another organisation whose token names this patient's id.
    impostor = bearer(settings, "patient", "org-b", patient=patient_id)
    messages = f"/v1/patients/{patient_id}/messages"
    file_id = attachment["file_id"]

    for outsider in (second, impostor, other_clinician):
        assert_problem(await client.get(attachment["url"], headers=outsider), 404, "not-found")
        assert_problem(await client.get(f"/v1/files/{file_id}", headers=outsider), 404, "not-found")
        assert_problem(
            await client.get(f"/v1/files/{file_id}/content", params={"rendition": "shareable"}, headers=outsider),
            404,
            "not-found",
        )
    assert_problem(await client.get(messages, headers=other_clinician), 404, "not-found")
    assert_problem(await client.post(messages, json={"body": "hello"}, headers=other_clinician), 404, "not-found")
    assert_problem(await send_form(client, other_clinician, messages, [("x.pdf", pdf("outsider"))]), 404, "not-found")
    # Picking this organisation's file into a message elsewhere: not found either.
    elsewhere = await register(client, other_clinician, "B-1")
    assert_problem(
        await client.post(
            f"/v1/patients/{elsewhere}/messages", json={"body": "hi", "file_ids": [file_id]}, headers=other_clinician
        ),
        404,
        "not-found",
    )
    # The impostor's token names a patient their organisation does not have.
    assert_problem(await client.get("/v1/me/messages", headers=impostor), 404, "not-found")
    assert_problem(await client.get("/v1/me/archive", headers=impostor), 404, "not-found")
    assert_problem(await client.post("/v1/me/messages", json={"body": "hi"}, headers=impostor), 404, "not-found")
    assert (await client.get("/v1/me/notifications", headers=impostor)).json()["items"] == []
    # The second patient's own conversation, archive and inbox hold nothing of it.
    assert (await client.get("/v1/me/messages", headers=second)).json()["items"] == []
    assert (await client.get("/v1/me/archive", headers=second)).json() == {"channels": {}, "count": 0}
    assert (await client.get("/v1/me/notifications", headers=second)).json()["items"] == []
    # Patients never use the clinic's routes.
    assert_problem(await client.get(messages, headers=second), 403, "forbidden")
    # Nothing was added by all these attempts.
    listed = (await client.get(messages, headers=clinician)).json()["items"]
    assert [m["id"] for m in listed] == [sent["id"]]


# -- all or nothing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "status", "code"),
    [
        (make_pdf(user_password="open-sesame"), 422, "pdf-password-protected"),
        (random.Random(0).randbytes(4096), 415, "unsupported-file-type"),
    ],
    ids=["password-pdf", "random-bytes"],
)
async def test_one_bad_file_sends_nothing_and_stores_nothing(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
    bad: bytes,
    status: int,
    code: str,
) -> None:
    # Bytes already stored for another file must survive the clean-up of their new copy.
    kept = await upload(client, clinician, f"/v1/patients/{patient_id}/files", pdf("kept"), "kept.pdf")
    kept_bytes = await download(client, clinician, f"/v1/files/{kept['id']}/content")
    before, on_disk = await counts(client), blobs_on_disk(settings)

    good = [("a.pdf", pdf("new-a")), ("b.jpg", jpeg_with_gps(seed=2)), ("kept-again.pdf", kept_bytes)]
    response = await send_form(
        client,
        clinician,
        f"/v1/patients/{patient_id}/messages",
        [*good[:2], ("bad.pdf", bad), good[2], ("after.pdf", pdf("new-after"))],
    )

    assert_problem(response, status, code)
    assert await counts(client) == before
    assert blobs_on_disk(settings) == on_disk
    assert (await client.get("/v1/me/messages", headers=patient)).json()["items"] == []
    assert (await client.get("/v1/me/notifications", headers=patient)).json()["items"] == []
    assert await download(client, clinician, f"/v1/files/{kept['id']}/content") == kept_bytes


async def test_a_refused_attachment_rule_discards_the_files_uploaded_with_the_message(
    client: AsyncTestClient[Any], settings: Settings, clinician: dict[str, str], patient_id: str
) -> None:
    other = await register(client, clinician, "MRN-2")
    theirs = await upload(client, clinician, f"/v1/patients/{other}/files", pdf("theirs"), "theirs.pdf")
    before, on_disk = await counts(client), blobs_on_disk(settings)

    response = await send_form(
        client,
        clinician,
        f"/v1/patients/{patient_id}/messages",
        [("mine.pdf", pdf("mine")), ("photo.jpg", jpeg_with_gps(seed=3))],
        file_id=theirs["id"],
    )

    assert_problem(response, 422, "file-not-available")
    assert await counts(client) == before
    assert blobs_on_disk(settings) == on_disk


# -- picking files ----------------------------------------------------------------------------------


async def test_picking_patient_files_and_library_files(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
) -> None:
    clinic_file = await upload(client, clinician, f"/v1/patients/{patient_id}/files", pdf("clinic"), "letter.pdf")
    sent_by_patient = await upload(client, patient, "/v1/me/files", jpeg_with_gps(seed=4), "rash.jpg")
    leaflet = await upload(client, clinician, "/v1/library/files", pdf("leaflet"), "leaflet.pdf")
    picked = [leaflet["id"], clinic_file["id"], sent_by_patient["id"]]

    response = await client.post(
        f"/v1/patients/{patient_id}/messages",
        json={"body": "Please read these.", "file_ids": picked},
        headers=clinician,
    )
    assert response.status_code == 201, response.text
    sent = response.json()
    assert [a["file_id"] for a in sent["attachments"]] == picked
    for attachment in sent["attachments"]:
        assert await download(client, patient, attachment["url"])

    other = await register(client, clinician, "MRN-2")
    theirs = await upload(client, clinician, f"/v1/patients/{other}/files", pdf("theirs"), "theirs.pdf")
    before = await counts(client)
    refused = await client.post(
        f"/v1/patients/{patient_id}/messages",
        json={"body": "Wrong file.", "file_ids": [leaflet["id"], theirs["id"]]},
        headers=clinician,
    )
    body = assert_problem(refused, 422, "file-not-available")
    assert "library" in body["detail"]
    assert await counts(client) == before

    unknown = await client.post(f"/v1/patients/{patient_id}/messages", json={"file_ids": ["0" * 26]}, headers=clinician)
    assert_problem(unknown, 404, "not-found")
    assert await counts(client) == before


async def test_more_than_ten_files_is_too_many_attachments(
    client: AsyncTestClient[Any], settings: Settings, clinician: dict[str, str], patient_id: str
) -> None:
    ten = [
        (await upload(client, clinician, f"/v1/patients/{patient_id}/files", pdf(f"n{i}"), f"n{i}.pdf"))["id"]
        for i in range(MAX_FILES)
    ]
    accepted = await client.post(f"/v1/patients/{patient_id}/messages", json={"file_ids": ten}, headers=clinician)
    assert accepted.status_code == 201, accepted.text
    assert len(accepted.json()["attachments"]) == MAX_FILES

    extra = (await upload(client, clinician, f"/v1/patients/{patient_id}/files", pdf("n10"), "n10.pdf"))["id"]
    before, on_disk = await counts(client), blobs_on_disk(settings)
    refused = await client.post(
        f"/v1/patients/{patient_id}/messages", json={"file_ids": [*ten, extra]}, headers=clinician
    )
    body = assert_problem(refused, 422, "too-many-attachments")
    assert body["limit"] == MAX_FILES and "chat-message" in body["rule"]

    # Uploads: the eleventh file part is refused before it is read; the ten before it are discarded.
    uploads = [(f"u{i}.pdf", pdf(f"upload-{i}")) for i in range(MAX_FILES + 1)]
    refused = await send_form(client, clinician, f"/v1/patients/{patient_id}/messages", uploads)
    assert_problem(refused, 422, "too-many-attachments")
    # Ten picked and one uploaded are eleven too.
    mixed = await send_form(
        client, clinician, f"/v1/patients/{patient_id}/messages", [("u.pdf", pdf("one-more"))], file_id=ten
    )
    assert_problem(mixed, 422, "too-many-attachments")
    assert await counts(client) == before
    assert blobs_on_disk(settings) == on_disk


# -- for good ---------------------------------------------------------------------------------------


async def test_deleting_the_source_file_later_does_not_revoke_what_was_sent(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    response = await send_form(client, clinician, f"/v1/patients/{patient_id}/messages", [("x.jpg", jpeg_with_gps(5))])
    assert response.status_code == 201, response.text
    [attachment] = response.json()["attachments"]
    before = await download(client, patient, attachment["url"])

    engine = client.app.state.careshare.engine
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(db.files).where(db.files.c.id == attachment["file_id"]).values(deleted_at=db.utcnow())
        )

    assert_problem(await client.get(f"/v1/files/{attachment['file_id']}", headers=clinician), 404, "not-found")
    assert await download(client, patient, attachment["url"]) == before
    assert sha256(before) == attachment["sha256"]
    [message] = (await client.get("/v1/me/messages", headers=patient)).json()["items"]
    assert message["attachments"] == [attachment]
    [entry] = (await client.get("/v1/me/archive", headers=patient)).json()["channels"]["chat"]
    assert entry["attachments"] == [attachment]
    # A deleted file cannot be sent again.
    again = await client.post(
        f"/v1/patients/{patient_id}/messages", json={"file_ids": [attachment["file_id"]]}, headers=clinician
    )
    assert_problem(again, 404, "not-found")


# -- patients reply -------------------------------------------------------------------------------


async def test_patient_replies_with_a_file(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    photo = jpeg_with_gps(seed=6)
    response = await send_form(client, patient, "/v1/me/messages", [("knee.jpg", photo)], body="It looks better today.")
    assert response.status_code == 201, response.text
    reply = response.json()
    assert reply["author_role"] == "patient" and reply["body"] == "It looks better today."
    [attachment] = reply["attachments"]

    # The upload is in the patient's files as sent by the patient, new for the clinic.
    sent_by_patient = (
        await client.get(f"/v1/patients/{patient_id}/files", params={"source": "patient"}, headers=clinician)
    ).json()["items"]
    assert [f["id"] for f in sent_by_patient] == [attachment["file_id"]]
    assert sent_by_patient[0]["sha256"] == sha256(photo) and sent_by_patient[0]["seen"] is False

    # The clinic reads it in the conversation and downloads the attachment.
    [seen] = (await client.get(f"/v1/patients/{patient_id}/messages", headers=clinician)).json()["items"]
    assert seen["id"] == reply["id"] and seen["author"] == f"patient:{patient_id}"
    assert await download(client, clinician, attachment["url"]) == await download(client, patient, attachment["url"])

    # In the patient's archive, without a notification to themselves.
    [entry] = (await client.get("/v1/me/archive", headers=patient)).json()["channels"]["chat"]
    assert entry["item_id"] == reply["id"] and entry["title"] == PATIENT_MESSAGE_TITLE
    assert (await client.get("/v1/me/notifications", headers=patient)).json()["items"] == []

    # A JSON reply picks files the patient sent; the clinic's files and the library are not theirs to pick.
    picked = await client.post(
        "/v1/me/messages", json={"body": "Same photo again.", "file_ids": [attachment["file_id"]]}, headers=patient
    )
    assert picked.status_code == 201, picked.text
    clinic_file = await upload(client, clinician, f"/v1/patients/{patient_id}/files", pdf("clinic"), "c.pdf")
    leaflet = await upload(client, clinician, "/v1/library/files", pdf("leaflet"), "leaflet.pdf")
    for file_id in (clinic_file["id"], leaflet["id"]):
        refused = await client.post("/v1/me/messages", json={"file_ids": [file_id]}, headers=patient)
        assert_problem(refused, 404, "not-found")
    conversation = (await client.get("/v1/me/messages", headers=patient)).json()["items"]
    assert [m["id"] for m in conversation] == [picked.json()["id"], reply["id"]]


async def test_a_refused_reply_leaves_nothing(
    client: AsyncTestClient[Any], settings: Settings, patient: dict[str, str]
) -> None:
    before, on_disk = await counts(client), blobs_on_disk(settings)
    response = await send_form(
        client, patient, "/v1/me/messages", [("ok.pdf", pdf("reply-ok")), ("bad.bin", random.Random(1).randbytes(2048))]
    )
    assert_problem(response, 415, "unsupported-file-type")
    assert await counts(client) == before
    assert blobs_on_disk(settings) == on_disk


# -- reading ----------------------------------------------------------------------------------------


async def test_conversations_are_cursor_paginated_newest_first(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    sent = []
    for i in range(5):
        headers, path = (patient, "/v1/me/messages") if i == 2 else (clinician, f"/v1/patients/{patient_id}/messages")
        response = await client.post(path, json={"body": f"message {i}"}, headers=headers)
        assert response.status_code == 201, response.text
        sent.append(response.json()["id"])

    for headers, path in ((clinician, f"/v1/patients/{patient_id}/messages"), (patient, "/v1/me/messages")):
        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(path, params=params, headers=headers)).json()
            pages.append([m["body"] for m in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == [["message 4", "message 3"], ["message 2", "message 1"], ["message 0"]]
    whole = (await client.get("/v1/me/messages", headers=patient)).json()["items"]
    assert [m["id"] for m in whole] == sent[::-1]
    assert [m["author_role"] for m in whole] == ["clinician", "clinician", "patient", "clinician", "clinician"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "$.body"),
        ({"body": "   "}, "$.body"),
        ({"body": "x" * 10_001}, "$.body"),
        ({"body": "hi", "subject": "no such field"}, "subject"),
        ({"body": "hi", "file_ids": ["a" * 26, "a" * 26]}, "$.file_ids"),
        ({"body": 12}, "$.body"),
    ],
    ids=["empty", "blank", "too-long", "unknown-field", "file-twice", "not-text"],
)
async def test_invalid_messages_are_refused_and_send_nothing(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, body: dict[str, Any], error: str
) -> None:
    before = await counts(client)
    response = await client.post(f"/v1/patients/{patient_id}/messages", json=body, headers=clinician)
    problem = assert_problem(response, 422, "invalid-request")
    assert any(error in str(e) for e in problem["errors"]), problem
    assert await counts(client) == before


async def test_malformed_forms_are_refused(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    path = f"/v1/patients/{patient_id}/messages"
    unknown = await send_form(client, clinician, path, [("a.pdf", pdf("form"))], subject="no such field")
    assert_problem(unknown, 422, "invalid-request")
    wrong_field = await client.post(
        path, data={"body": "hi"}, files=[("attachment", ("a.pdf", pdf("form"), "application/pdf"))], headers=clinician
    )
    assert_problem(wrong_field, 422, "invalid-request")
    cut_short = await client.post(
        path,
        content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF-1.7',
        headers={**clinician, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_problem(cut_short, 400, "upload-malformed")
    assert (await counts(client))[db.files.name] == 0


async def test_a_file_over_the_upload_limit_is_refused_mid_stream_and_nothing_stays(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", CARESHARE_MAX_UPLOAD_BYTES=str(64 * 1024))
    headers = bearer(settings, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=create_app(settings)) as client:
        patient_id = await register(client, headers, "MRN-1")
        before, on_disk = await counts(client), blobs_on_disk(settings)
        # Each file has the limit to itself: a small one passes the limit, the next one crosses it.
        response = await send_form(
            client,
            headers,
            f"/v1/patients/{patient_id}/messages",
            [("small.pdf", pdf("small")), ("big.pdf", pdf("big") + b"%" * (80 * 1024))],
        )
        assert_problem(response, 413, "upload-too-large")
        assert await counts(client) == before
        assert blobs_on_disk(settings) == on_disk


# -- discard_new_files --------------------------------------------------------------------------------


async def test_discard_new_files_keeps_blobs_and_files_still_in_use(
    client: AsyncTestClient[Any], settings: Settings, clinician: dict[str, str], patient_id: str
) -> None:
    cs = client.app.state.careshare
    data = pdf("twice")
    first = await upload(client, clinician, f"/v1/patients/{patient_id}/files", data, "first.pdf")
    second = await upload(client, clinician, f"/v1/patients/{patient_id}/files", data, "second.pdf")
    attached = await upload(client, clinician, f"/v1/patients/{patient_id}/files", pdf("attached"), "a.pdf")
    sent = await client.post(
        f"/v1/patients/{patient_id}/messages", json={"file_ids": [attached["id"]]}, headers=clinician
    )
    assert sent.status_code == 201, sent.text
    original = settings.data_dir / "blobs" / content_key(sha256(data))
    assert original.exists()

    # The same bytes are still another file's: only the second file's rows go.
    await discard_new_files(cs, [second["id"]])
    assert_problem(await client.get(f"/v1/files/{second['id']}", headers=clinician), 404, "not-found")
    assert (await client.get(f"/v1/files/{first['id']}/content", headers=clinician)).content == data
    # An attached file stays, and so does everything it refers to.
    before = await counts(client)
    await discard_new_files(cs, [attached["id"]])
    assert await counts(client) == before
    # The last file of those bytes: rows and objects of its renditions go, but for a copy another file
    # still uses (two blank one-page PDFs have the same thumbnail).
    hashes = {r["sha256"] for r in first["renditions"]} - {r["sha256"] for r in attached["renditions"]}
    assert hashes
    await discard_new_files(cs, [first["id"]])
    after = await counts(client)
    assert after[db.files.name] == before[db.files.name] - 1
    assert after[db.renditions.name] == before[db.renditions.name] - len(first["renditions"])
    assert after[db.blobs.name] == before[db.blobs.name] - len(hashes)
    assert not any((settings.data_dir / "blobs" / content_key(h)).exists() for h in hashes)
    assert all((settings.data_dir / "blobs" / content_key(r["sha256"])).exists() for r in attached["renditions"])
    await discard_new_files(cs, [])
