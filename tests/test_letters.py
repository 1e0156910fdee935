"""Letters through the API: templates in a sandbox, drafts, files under a total, sending, the PDF, email.

Everything is real: the app over HTTP, SQLite, the blob store, PDFs and DICOM files made by the
real libraries, WeasyPrint's PDF read back with pypdfium2, and an aiosmtpd SMTP server on
127.0.0.1 that receives, refuses, or refuses for good. Email delivery is driven with
``deliver_due(now=...)``, the clock moved past each backoff instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import functools
import io
import os
import smtplib
import threading
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pikepdf
import pypdfium2
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from careshare.core import db
from careshare.core.notifications import MAX_ATTEMPTS, deliver_due
from careshare.host import create_app
from careshare.plugins.letters import TARGET
from careshare.plugins.letters.letters import DEFAULT_MAX_ATTACHMENT_BYTES
from careshare.plugins.letters.mail import MAIL_FROM, SMTP_URL, SmtpServer, refusal_reason
from careshare.testing import bearer, free_port, make_pdf, make_settings
from careshare.testing.strategies.dicom import build_dataset, to_bytes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from email.message import EmailMessage
    from pathlib import Path

    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings
    from careshare.testing import PostgresCluster


async def new_patient(client: AsyncTestClient[Any], clinician: dict[str, str], external_id: str, **extra: Any) -> str:
    response = await client.post(
        "/v1/patients", json={"name": "Pat One", "external_id": external_id, **extra}, headers=clinician
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def upload(
    client: AsyncTestClient[Any], headers: dict[str, str], pid: str, data: bytes, name: str
) -> dict[str, Any]:
    response = await client.post(f"/v1/patients/{pid}/files?filename={name}", content=data, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def draft(client: AsyncTestClient[Any], headers: dict[str, str], pid: str, **body: Any) -> dict[str, Any]:
    response = await client.post(
        f"/v1/patients/{pid}/letters", json=body or {"subject": "Your results", "body": "All is well."}, headers=headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def pdf_text(data: bytes) -> str:
    with pikepdf.open(io.BytesIO(data)) as opened:  # it opens as a PDF at all
        assert len(opened.pages) >= 1
    document = pypdfium2.PdfDocument(data)
    try:
        return "\n".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    finally:
        document.close()


def padded_pdf(padding: int) -> bytes:
    """A real one-page PDF carrying ``padding`` random (incompressible) bytes in a stream."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 200))
    pdf.Root.Padding = pdf.make_stream(os.urandom(padding))
    out = io.BytesIO()
    pdf.save(out, compress_streams=False)
    return out.getvalue()


# -- templates ----------------------------------------------------------------------------------


async def test_a_template_fills_in_the_patients_details(
    client: AsyncTestClient[Any], clinician: dict[str, str]
) -> None:
    pid = await new_patient(client, clinician, "MRN-T1")
    saved = await client.put("/v1/letter-settings", json={"organisation_name": "Riverside Clinic"}, headers=clinician)
    assert saved.status_code == 200, saved.text
    template = await client.post(
        "/v1/letter-templates",
        json={
            "name": "Results",
            "subject": "Results for {{ patient.name }}",
            "body": "Dear {{ patient.name }} ({{ patient.external_id }}),\n\n{{ organisation.name }}, {{ date_iso }}."
            "\n\n{{ clinician.name }}",
        },
        headers=clinician,
    )
    assert template.status_code == 201, template.text
    letter = await draft(client, clinician, pid, template_id=template.json()["id"])
    assert letter["status"] == "draft"
    assert letter["subject"] == "Results for Pat One"
    assert letter["body"].startswith("Dear Pat One (MRN-T1),\n\nRiverside Clinic, 20")
    assert letter["body"].endswith("\n\ndr-a")
    # Given text wins over the template's.
    given_subject = await draft(client, clinician, pid, template_id=template.json()["id"], subject="Own subject")
    assert given_subject["subject"] == "Own subject"
    assert given_subject["body"].startswith("Dear Pat One")
    listed = await client.get("/v1/letter-templates", headers=clinician)
    assert [t["name"] for t in listed.json()["items"]] == ["Results"]


SANDBOX_REFUSALS = [
    ("Dear {{ patient.name }},\n\n{{ ''.__class__.__mro__ }}", 3),
    ("one\n{{ ''.__class__.__base__.__subclasses__() }}", 2),
    ("{{ patient.name.__class__ }}", 1),
    ("{{ cycler.__init__.__globals__ }}", 1),
    ("line 1\nline 2\n{% if patient.name %}\nunclosed", 3),  # where the unclosed block opens
    ("a\n{{ patient.nmae }}", 2),
    ("{{ 'x' * 1000000000 }}", 1),
    ("{{ '%999999999s' % 'x' }}", 1),
    ("{{ 'x'|center(1000000000) }}", 1),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}", None),
]


async def test_the_sandbox_refuses_a_template_with_its_line(
    client: AsyncTestClient[Any], clinician: dict[str, str]
) -> None:
    for body, line in SANDBOX_REFUSALS:
        response = await client.post(
            "/v1/letter-templates", json={"name": "Bad", "subject": "Letter", "body": body}, headers=clinician
        )
        assert response.status_code == 422, (body, response.text)
        problem = response.json()
        assert (problem["code"], problem["field"]) == ("template-invalid", "body"), body
        if line is not None:
            assert problem["line"] == line, body
            assert f"line {line} of the body" in problem["detail"]
    subject = await client.post(
        "/v1/letter-templates", json={"name": "Bad", "subject": "{{ oops", "body": "fine"}, headers=clinician
    )
    assert (subject.status_code, subject.json()["field"], subject.json()["line"]) == (422, "subject", 1)
    listed = await client.get("/v1/letter-templates", headers=clinician)
    assert listed.json()["items"] == []


JINJA_BITS = st.sampled_from(
    [
        "{{",
        "}}",
        "{%",
        "%}",
        "{#",
        "#}",
        " patient.name ",
        " date ",
        "if ",
        "endif",
        "for x in ",
        "endfor",
        "|",
        "(",
        ")",
        "'",
        '"',
        "__class__",
        ".",
        "\n",
        "raw",
        "endraw",
        "set ",
        "=",
        "*",
        "**",
        "9",
        "range(",
        "~",
        "-",
        "macro ",
        "call",
    ]
)


@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(source=st.lists(st.one_of(JINJA_BITS, st.text(max_size=8)), max_size=25).map("".join))
async def test_any_template_text_is_saved_or_refused_never_a_500(
    client: AsyncTestClient[Any], clinician: dict[str, str], source: str
) -> None:
    response = await client.post(
        "/v1/letter-templates", json={"name": "Any", "subject": "Letter", "body": source}, headers=clinician
    )
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:
        assert response.json()["body"] == source
    elif response.json()["code"] == "invalid-request":  # text no database stores
        assert "\x00" in source or any(0xD800 <= ord(c) <= 0xDFFF for c in source), response.text
    else:
        assert response.json()["code"] == "template-invalid"
        assert response.json()["field"] == "body"


# -- drafts, the PDF and sending to the app -----------------------------------------------------


async def test_markup_in_a_letter_is_printed_as_text_never_run(
    client: AsyncTestClient[Any], clinician: dict[str, str]
) -> None:
    pid = await new_patient(client, clinician, "MRN-E1")
    response = await client.post(
        "/v1/patients",
        json={"name": "<b>Bold</b> <img src='file:///etc/hostname'>", "external_id": "MRN-E2"},
        headers=clinician,
    )
    marked = response.json()["id"]
    template = await client.post(
        "/v1/letter-templates",
        json={"name": "Hi", "subject": "Hello", "body": "Dear {{ patient.name }},\n\n<i>see</i> & more"},
        headers=clinician,
    )
    assert template.status_code == 201, template.text
    letter = await draft(client, clinician, marked, template_id=template.json()["id"])
    # The body is plain text: the app shows exactly these characters.
    assert letter["body"] == "Dear <b>Bold</b> <img src='file:///etc/hostname'>,\n\n<i>see</i> & more"
    sent = await client.post(f"/v1/letters/{letter['id']}/send", json={}, headers=clinician)
    assert sent.status_code == 200, sent.text
    pdf = await client.get(f"/v1/letters/{letter['id']}/pdf", headers=clinician)
    text = pdf_text(pdf.content)
    # Escaped where it became HTML: the tags are printed, not obeyed (no image fetched, no bold).
    assert "Dear <b>Bold</b> <img src='file:///etc/hostname'>," in text
    assert "<i>see</i> & more" in text
    with pikepdf.open(io.BytesIO(pdf.content)) as opened:
        assert not any("/XObject" in page.Resources and len(page.Resources.XObject) for page in opened.pages), (
            "the PDF holds an image: something was fetched"
        )
    assert pid  # the other patient stays untouched


async def test_a_draft_is_edited_then_sent_and_is_then_immutable(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    letter = await draft(client, clinician, patient_id)
    assert (letter["status"], letter["email_status"], letter["pdf"]) == ("draft", "not-requested", None)
    edited = await client.patch(
        f"/v1/letters/{letter['id']}", json={"body": "Line one.\n\nSecond paragraph."}, headers=clinician
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["body"] == "Line one.\n\nSecond paragraph."
    assert edited.json()["subject"] == "Your results"

    # The patient sees no draft: not in the list, not by id, no PDF.
    assert (await client.get("/v1/me/letters", headers=patient)).json()["items"] == []
    assert (await client.get(f"/v1/me/letters/{letter['id']}", headers=patient)).status_code == 404
    assert (await client.get(f"/v1/letters/{letter['id']}/pdf", headers=patient)).status_code == 404
    assert (await client.get(f"/v1/letters/{letter['id']}/pdf", headers=clinician)).status_code == 404

    sent = await client.post(f"/v1/letters/{letter['id']}/send", json={"email": False}, headers=clinician)
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "sent"
    assert sent.json()["email_status"] == "not-requested"
    assert sent.json()["pdf"]["url"] == f"/v1/letters/{letter['id']}/pdf"

    again = await client.patch(f"/v1/letters/{letter['id']}", json={"body": "changed"}, headers=clinician)
    assert again.status_code == 409
    assert again.json()["code"] == "draft-required"
    assert "can no longer change" in again.json()["detail"]
    resend = await client.post(f"/v1/letters/{letter['id']}/send", json={}, headers=clinician)
    assert resend.status_code == 409
    assert resend.json()["code"] == "draft-required"
    # The words fit what was tried: sending again, not attaching.
    assert resend.json()["title"] == "Already sent: only a draft can change"
    assert "not sent twice" in resend.json()["detail"] and "attach" not in resend.json()["detail"]
    assert (await client.get(f"/v1/letters/{letter['id']}", headers=clinician)).json()["body"] == (
        "Line one.\n\nSecond paragraph."
    )

    # Now the patient has it: inbox, archive, letters, and the very same PDF every time.
    mine = await client.get("/v1/me/letters", headers=patient)
    assert [item["id"] for item in mine.json()["items"]] == [letter["id"]]
    assert "status" not in mine.json()["items"][0]  # the clinic's working fields stay with the clinic
    first = await client.get(f"/v1/letters/{letter['id']}/pdf", headers=patient)
    second = await client.get(f"/v1/letters/{letter['id']}/pdf", headers=clinician)
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/pdf"
    assert first.content == second.content
    assert first.headers["etag"] == f'"{sent.json()["pdf"]["sha256"]}"'
    text = pdf_text(first.content)
    assert "Your results" in text and "Second paragraph." in text and "Page 1 of 1" in text
    ranged = await client.get(f"/v1/letters/{letter['id']}/pdf", headers={**patient, "Range": "bytes=0-3"})
    assert (ranged.status_code, ranged.content) == (206, b"%PDF")

    notifications = (await client.get("/v1/me/notifications", headers=patient)).json()["items"]
    assert [(n["kind"], n["title"], n["item_id"]) for n in notifications] == [
        ("letter", "New letter from your care team", letter["id"])
    ]
    archive = (await client.get("/v1/me/archive", headers=patient)).json()["channels"]
    assert [(e["target"], e["item_id"]) for e in archive["letters"]] == [("letter", letter["id"])]

    audit = (await client.get(f"/v1/patients/{patient_id}/audit", headers=clinician)).json()["items"]
    reads = [e for e in audit if e["action"] == "letter.read"]
    assert {e["actor_role"] for e in reads} == {"patient", "clinician"}
    assert all(e["rendition"] == "letter-pdf" for e in reads)


async def test_another_patient_and_another_organisation_see_nothing(
    client: AsyncTestClient[Any], settings: Settings, clinician: dict[str, str], patient_id: str
) -> None:
    letter = await draft(client, clinician, patient_id)
    sent = await client.post(f"/v1/letters/{letter['id']}/send", json={}, headers=clinician)
    assert sent.status_code == 200
    other = bearer(settings, "patient", "org-a", patient=await new_patient(client, clinician, "MRN-O1"))
    elsewhere = bearer(settings, "clinician", "org-b", sub="dr-b")
    for headers, path in [
        (other, f"/v1/letters/{letter['id']}/pdf"),
        (other, f"/v1/me/letters/{letter['id']}"),
        (elsewhere, f"/v1/letters/{letter['id']}"),
        (elsewhere, f"/v1/letters/{letter['id']}/pdf"),
    ]:
        response = await client.get(path, headers=headers)
        assert (response.status_code, response.json()["code"]) == (404, "not-found"), path
    assert (await client.get("/v1/me/letters", headers=other)).json()["items"] == []
    attachment = await client.post(f"/v1/letters/{letter['id']}/send", json={}, headers=elsewhere)
    assert attachment.status_code == 404


async def test_idempotent_send_returns_the_first_result(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    letter = await draft(client, clinician, patient_id)
    key = {**clinician, "Idempotency-Key": "send-1"}
    first = await client.post(f"/v1/letters/{letter['id']}/send", json={"email": False}, headers=key)
    retry = await client.post(f"/v1/letters/{letter['id']}/send", json={"email": False}, headers=key)
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    reused = await client.post(f"/v1/letters/{letter['id']}/send", json={"email": True}, headers=key)
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency-key-reused")
    other = await draft(client, clinician, patient_id)
    elsewhere = await client.post(f"/v1/letters/{other['id']}/send", json={"email": False}, headers=key)
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (422, "idempotency-key-reused")
    assert (await client.get(f"/v1/letters/{other['id']}", headers=clinician)).json()["status"] == "draft"
    # Two sends with one key at the same moment: one letter sent, one share, one notification.
    racing = await draft(client, clinician, patient_id)
    raced = {**clinician, "Idempotency-Key": "send-2"}
    answers = await asyncio.gather(
        *(client.post(f"/v1/letters/{racing['id']}/send", json={}, headers=raced) for _ in range(3))
    )
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({(a.json()["id"], a.json()["sent_at"]) for a in answers}) == 1
    notifications = (await client.get("/v1/me/notifications", headers=patient)).json()["items"]
    assert sorted(n["item_id"] for n in notifications) == sorted([letter["id"], racing["id"]])
    # Without a body, a send is a send to the app only.
    plain = await draft(client, clinician, patient_id)
    bare = await client.post(f"/v1/letters/{plain['id']}/send", headers=clinician)
    assert (bare.status_code, bare.json()["email_status"]) == (200, "not-requested")


async def test_email_is_refused_before_anything_is_sent_without_an_address_or_a_server(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    letter = await draft(client, clinician, patient_id)
    response = await client.post(f"/v1/letters/{letter['id']}/send", json={"email": True}, headers=clinician)
    assert (response.status_code, response.json()["code"]) == (422, "email-address-missing")
    reachable = await new_patient(client, clinician, "MRN-M1", email="pat@example.org")
    second = await draft(client, clinician, reachable)
    response = await client.post(f"/v1/letters/{second['id']}/send", json={"email": True}, headers=clinician)
    assert (response.status_code, response.json()["code"]) == (422, "email-not-configured")  # no CARESHARE_SMTP_URL
    for unsent in (letter, second):
        assert (await client.get(f"/v1/letters/{unsent['id']}", headers=clinician)).json()["status"] == "draft"
    assert (await client.get("/v1/me/notifications", headers=patient)).json()["items"] == []


async def test_patients_cannot_use_clinician_routes_and_bad_fields_are_named(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    letter = await draft(client, clinician, patient_id)
    for method, path in [
        ("post", f"/v1/patients/{patient_id}/letters"),
        ("get", f"/v1/letters/{letter['id']}"),
        ("post", f"/v1/letters/{letter['id']}/send"),
        ("get", "/v1/letter-settings"),
        ("post", "/v1/letter-templates"),
    ]:
        response = await getattr(client, method)(path, headers=patient, **({"json": {}} if method == "post" else {}))
        assert (response.status_code, response.json()["code"]) == (403, "forbidden"), path
    for body, field in [
        ({"body": "no subject"}, "$.subject"),
        ({"subject": "   ", "body": ""}, "$.subject"),
        ({"subject": "x" * 301}, "$.subject"),
        ({"subject": "nul\x00"}, "$.subject"),
        ({"subject": "ok", "body": 3}, "$.body"),
        ({"subject": "ok", "extra": 1}, "extra"),
    ]:
        response = await client.post(f"/v1/patients/{patient_id}/letters", json=body, headers=clinician)
        assert (response.status_code, response.json()["code"]) == (422, "invalid-request"), body
        assert field in str(response.json()["errors"]), body
    missing = await client.post(f"/v1/patients/{patient_id}/letters", json={"template_id": "nope"}, headers=clinician)
    assert missing.status_code == 404


# -- files on a letter --------------------------------------------------------------------------


async def test_files_attach_to_drafts_only_and_dicom_travels_as_its_image(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    pixels = np.arange(64 * 64, dtype="u2").reshape(64, 64)
    scan = await upload(client, clinician, patient_id, to_bytes(build_dataset(pixels)), "scan.dcm")
    assert scan["kind"] == "dicom"
    leaflet = await client.post("/v1/library/files?filename=leaflet.pdf", content=make_pdf(), headers=clinician)
    assert leaflet.status_code == 201
    letter = await draft(client, clinician, patient_id)
    for file_id in (scan["id"], leaflet.json()["id"]):
        response = await client.post(
            f"/v1/letters/{letter['id']}/attachments", json={"file_id": file_id}, headers=clinician
        )
        assert response.status_code == 201, response.text
    attached = response.json()["attachments"]
    assert [(a["kind"], a["media_type"], a["filename"]) for a in attached] == [
        ("dicom", "image/png", "scan.png"),
        ("pdf", "application/pdf", "leaflet.pdf"),
    ]
    shareable = next(r for r in scan["renditions"] if r["role"] == "shareable")
    assert attached[0]["sha256"] == shareable["sha256"]
    assert response.json()["attachments_total_bytes"] == sum(a["size"] for a in attached)

    # A file can come off a draft; the rest keep their order.
    removed = await client.delete(f"/v1/letters/{letter['id']}/attachments/{attached[0]['id']}", headers=clinician)
    assert removed.status_code == 200, removed.text
    assert [a["id"] for a in removed.json()["attachments"]] == [attached[1]["id"]]
    again = await client.post(
        f"/v1/letters/{letter['id']}/attachments", json={"file_id": scan["id"]}, headers=clinician
    )
    assert [a["kind"] for a in again.json()["attachments"]] == ["pdf", "dicom"]

    sent = await client.post(f"/v1/letters/{letter['id']}/send", json={}, headers=clinician)
    assert sent.status_code == 200
    late = await client.post(f"/v1/letters/{letter['id']}/attachments", json={"file_id": scan["id"]}, headers=clinician)
    assert (late.status_code, late.json()["code"]) == (409, "draft-required")
    gone = await client.delete(
        f"/v1/letters/{letter['id']}/attachments/{again.json()['attachments'][0]['id']}", headers=clinician
    )
    assert (gone.status_code, gone.json()["code"]) == (409, "draft-required")
    pdf = pdf_text((await client.get(f"/v1/letters/{letter['id']}/pdf", headers=clinician)).content)
    assert "leaflet.pdf" in pdf and "scan.png" in pdf  # the letter lists what it encloses

    # The patient reads the PNG, never the DICOM.
    mine = (await client.get(f"/v1/me/letters/{letter['id']}", headers=patient)).json()
    for attachment in mine["attachments"]:
        content = await client.get(attachment["url"], headers=patient)
        assert content.status_code == 200
        assert content.headers["content-type"].split(";")[0] in ("image/png", "application/pdf")
        assert b"DICM" not in content.content[:200]


async def test_another_patients_file_is_refused_and_uploads_attach_or_leave_nothing(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    other = await new_patient(client, clinician, "MRN-F2")
    theirs = await upload(client, clinician, other, make_pdf(), "theirs.pdf")
    letter = await draft(client, clinician, patient_id)
    refused = await client.post(
        f"/v1/letters/{letter['id']}/attachments", json={"file_id": theirs["id"]}, headers=clinician
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "file-not-available")
    uploaded = await client.post(
        f"/v1/letters/{letter['id']}/attachments",
        files={"file": ("new.pdf", make_pdf(2), "application/pdf")},
        headers=clinician,
    )
    assert uploaded.status_code == 201, uploaded.text
    (attachment,) = uploaded.json()["attachments"]
    assert attachment["kind"] == "pdf"
    files = (await client.get(f"/v1/patients/{patient_id}/files", headers=clinician)).json()["items"]
    assert [f["id"] for f in files] == [attachment["file_id"]]
    # An upload the letter refuses is not kept in the patient's files either.
    saved = await client.put("/v1/letter-settings", json={"max_attachment_bytes": 100}, headers=clinician)
    assert saved.status_code == 200
    refused = await client.post(
        f"/v1/letters/{letter['id']}/attachments",
        files={"file": ("big.pdf", make_pdf(3), "application/pdf")},
        headers=clinician,
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "attachments-too-large")
    files = (await client.get(f"/v1/patients/{patient_id}/files", headers=clinician)).json()["items"]
    assert [f["id"] for f in files] == [attachment["file_id"]]


async def test_25_mb_over_all_files_of_a_letter(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    assert TARGET.max_total_bytes == DEFAULT_MAX_ATTACHMENT_BYTES == 25_000_000
    letter = await draft(client, clinician, patient_id)
    first = await upload(client, clinician, patient_id, padded_pdf(12_450_000), "a.pdf")
    second = await upload(client, clinician, patient_id, padded_pdf(12_450_000), "b.pdf")
    for file in (first, second):
        response = await client.post(
            f"/v1/letters/{letter['id']}/attachments", json={"file_id": file["id"]}, headers=clinician
        )
        assert response.status_code == 201, response.text
    total = response.json()["attachments_total_bytes"]
    assert 24_900_000 <= total < 24_910_000  # "24.9 MB" accepted
    room = DEFAULT_MAX_ATTACHMENT_BYTES - total
    exact = await sized_file(client, clinician, patient_id, room)
    one_over = await sized_file(client, clinician, patient_id, room + 1)
    over = await client.post(
        f"/v1/letters/{letter['id']}/attachments", json={"file_id": one_over["id"]}, headers=clinician
    )
    assert (over.status_code, over.json()["code"]) == (422, "attachments-too-large")
    assert (over.json()["limit"], over.json()["current"], over.json()["total"]) == (25_000_000, total, 25_000_001)
    assert f"{total:,}" in over.json()["detail"] and "25,000,000" in over.json()["detail"]
    fits = await client.post(
        f"/v1/letters/{letter['id']}/attachments", json={"file_id": exact["id"]}, headers=clinician
    )
    assert fits.status_code == 201, fits.text
    assert fits.json()["attachments_total_bytes"] == 25_000_000


async def sized_file(client: AsyncTestClient[Any], headers: dict[str, str], pid: str, size: int) -> dict[str, Any]:
    """A PDF whose shareable copy is exactly ``size`` bytes: upload, read the size back, adjust, again."""
    padding = max(size - 1000, 1)
    for _ in range(6):
        stored = await upload(client, headers, pid, padded_pdf(padding), "fit.pdf")
        got = next(r for r in stored["renditions"] if r["role"] == "shareable")["size"]
        if got == size:
            return stored
        padding += size - got
    raise AssertionError(f"no PDF of exactly {size} bytes")


#: Paddings of the PDFs the property below picks from (each uploaded once per test run).
PADDINGS = (1, 700, 1_500, 2_600, 4_000, 5_000)


@pytest.fixture
def uploaded() -> dict[int, dict[str, Any]]:
    """Files already uploaded in this test run, by padding (Hypothesis examples share the fixture)."""
    return {}


@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], max_examples=15)
@given(
    paddings=st.lists(st.sampled_from(PADDINGS), min_size=1, max_size=4, unique=True),
    cut=st.integers(min_value=0, max_value=4),
    slack=st.integers(min_value=-2, max_value=2),
)
async def test_the_total_counts_every_file_against_the_organisations_limit(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient_id: str,
    uploaded: dict[int, dict[str, Any]],
    paddings: list[int],
    cut: int,
    slack: int,
) -> None:
    files = []
    for padding in paddings:
        if padding not in uploaded:
            uploaded[padding] = await upload(client, clinician, patient_id, padded_pdf(padding), "p.pdf")
        files.append(uploaded[padding])
    sizes = [next(r for r in f["renditions"] if r["role"] == "shareable")["size"] for f in files]
    # A limit at (or a byte or two either side of) the total of the first files: the boundary itself.
    limit = max(sum(sizes[:cut]) + slack, 1)
    saved = await client.put("/v1/letter-settings", json={"max_attachment_bytes": limit}, headers=clinician)
    assert saved.json()["effective"]["max_attachment_bytes"] == limit
    letter = await draft(client, clinician, patient_id)
    total = 0
    for file, size in zip(files, sizes, strict=True):
        response = await client.post(
            f"/v1/letters/{letter['id']}/attachments", json={"file_id": file["id"]}, headers=clinician
        )
        if total + size <= limit:
            assert response.status_code == 201, response.text
            total += size
            assert response.json()["attachments_total_bytes"] == total
        else:
            assert (response.status_code, response.json()["code"]) == (422, "attachments-too-large")
            assert (response.json()["limit"], response.json()["current"]) == (limit, total)
            assert response.json()["total"] == total + size
    shown = await client.get(f"/v1/letters/{letter['id']}", headers=clinician)
    assert shown.json()["attachments_total_bytes"] == total <= limit


async def test_a_lower_organisation_limit_takes_effect_and_stops_a_send(
    client: AsyncTestClient[Any], settings: Settings, clinician: dict[str, str], patient_id: str
) -> None:
    letter = await draft(client, clinician, patient_id)
    file = await upload(client, clinician, patient_id, padded_pdf(5_000), "p.pdf")
    assert (
        await client.post(f"/v1/letters/{letter['id']}/attachments", json={"file_id": file["id"]}, headers=clinician)
    ).status_code == 201
    assert (await client.get("/v1/letter-settings", headers=clinician)).json() == {
        "max_attachment_bytes": None,
        "organisation_name": None,
        "effective": {"max_attachment_bytes": 25_000_000, "organisation_name": "org-a"},
    }
    lowered = await client.put("/v1/letter-settings", json={"max_attachment_bytes": 1_000}, headers=clinician)
    assert lowered.status_code == 200
    second = await draft(client, clinician, patient_id)
    refused = await client.post(
        f"/v1/letters/{second['id']}/attachments", json={"file_id": file["id"]}, headers=clinician
    )
    assert (refused.status_code, refused.json()["limit"]) == (422, 1_000)
    stopped = await client.post(f"/v1/letters/{letter['id']}/send", json={}, headers=clinician)
    assert (stopped.status_code, stopped.json()["code"]) == (422, "attachments-too-large")
    # Another organisation keeps the default.
    other = bearer(settings, "clinician", "org-b", sub="dr-b")
    assert (await client.get("/v1/letter-settings", headers=other)).json()["effective"][
        "max_attachment_bytes"
    ] == 25_000_000
    for bad in ({"max_attachment_bytes": 0}, {"max_attachment_bytes": 10**9}, {"organisation_name": " "}):
        response = await client.put("/v1/letter-settings", json=bad, headers=clinician)
        assert (response.status_code, response.json()["code"]) == (422, "invalid-request"), bad
    reset = await client.put("/v1/letter-settings", json={}, headers=clinician)
    assert reset.json()["effective"]["max_attachment_bytes"] == 25_000_000
    sent = await client.post(f"/v1/letters/{letter['id']}/send", json={}, headers=clinician)
    assert sent.status_code == 200, sent.text


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    return postgres.create_database(f"letters_{uuid.uuid4().hex}")


@pytest.mark.postgres
async def test_letters_on_postgresql_with_racing_sends(tmp_path: Path, pg_url: str) -> None:
    settings = make_settings(tmp_path / "pg", CARESHARE_DATABASE_URL=pg_url)
    clinician = bearer(settings, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=create_app(settings)) as client:
        pid = await new_patient(client, clinician, "MRN-PG")
        template = await client.post(
            "/v1/letter-templates",
            json={"name": "T", "subject": "For {{ patient.name }}", "body": "Hi"},
            headers=clinician,
        )
        letter = await draft(client, clinician, pid, template_id=template.json()["id"])
        file = await upload(client, clinician, pid, make_pdf(), "a.pdf")
        added = await client.post(
            f"/v1/letters/{letter['id']}/attachments", json={"file_id": file["id"]}, headers=clinician
        )
        assert added.status_code == 201, added.text
        keyed = {**clinician, "Idempotency-Key": "pg-1"}
        answers = await asyncio.gather(
            *(client.post(f"/v1/letters/{letter['id']}/send", json={}, headers=keyed) for _ in range(3))
        )
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        assert {a.json()["sent_at"] for a in answers} == {answers[0].json()["sent_at"]}
        other = await draft(client, clinician, pid)
        reused = await client.post(f"/v1/letters/{other['id']}/send", json={}, headers=keyed)
        assert (reused.status_code, reused.json()["code"]) == (422, "idempotency-key-reused")
        edited = await client.patch(f"/v1/letters/{letter['id']}", json={"body": "x"}, headers=clinician)
        assert (edited.status_code, edited.json()["code"]) == (409, "draft-required")
        patient = bearer(settings, "patient", "org-a", patient=pid)
        notifications = (await client.get("/v1/me/notifications", headers=patient)).json()["items"]
        assert [n["item_id"] for n in notifications] == [letter["id"]]
        assert (await client.get(f"/v1/letters/{letter['id']}/pdf", headers=patient)).status_code == 200


# -- email ----------------------------------------------------------------------------------------


ADDRESS = "pat.one@example.org"


class Mailbox:
    """An SMTP server's handler: answers the planned refusals in order, then accepts every message."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.refuse_always: str | None = None
        self.received: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.tries = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.tries += 1
            if self.refuse_always:
                return self.refuse_always
            if self.plan:
                return self.plan.pop(0)
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.received.append(message)  # type: ignore[arg-type]
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


SMTP_USER, SMTP_PASSWORD = "careshare", "s3cret:pass"


def smtp_login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    """The server's check of the login careshare sends (``user:password@`` in the URL)."""
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok)


def smtp_controller(mailbox: Mailbox, port: int) -> Controller:
    """A real SMTP server on 127.0.0.1 that takes mail only after a login (plain: it is the loopback)."""
    return Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        data_size_limit=None,
        authenticator=smtp_login,
        auth_required=True,
        auth_require_tls=False,
    )


@pytest.fixture
def smtp() -> Iterator[Controller]:
    """A real SMTP server on 127.0.0.1; its handler is a :class:`Mailbox`."""
    controller = smtp_controller(Mailbox(), free_port())
    controller.start()
    try:
        yield controller
    finally:
        with contextlib.suppress(Exception):  # a test may have stopped it already
            controller.stop()


@pytest.fixture
def mailbox(smtp: Controller) -> Mailbox:
    return smtp.handler  # type: ignore[no-any-return]


def system(client: AsyncTestClient[Any]) -> Careshare:
    return client.app.state.careshare  # type: ignore[no-any-return]


async def deliver(client: AsyncTestClient[Any], round_: int) -> int:
    """One delivery round on a clock ``round_`` days ahead (past any backoff), in the app's event loop."""
    cs = system(client)
    now = db.utcnow() + timedelta(days=round_)
    one_round = functools.partial(deliver_due, cs.engine, cs.plugins, now=now, cs=cs)
    return int(await asyncio.to_thread(client.blocking_portal.call, one_round))


async def emailed_letter(
    client: AsyncTestClient[Any], clinician: dict[str, str], **send: Any
) -> tuple[str, dict[str, Any]]:
    pid = await new_patient(client, clinician, "MRN-M1", email=ADDRESS)
    letter = await draft(client, clinician, pid, subject="Your biopsy results", body="The biopsy showed no cancer.")
    response = await client.post(f"/v1/letters/{letter['id']}/send", json={"email": True}, **send)
    assert response.status_code == 200, response.text
    return pid, dict(response.json())


class TestLetterEmail:
    """The app with a real SMTP server; its background delivery loop is stopped: each test drives every round."""

    @pytest.fixture
    def settings(self, tmp_path: Path, smtp: Controller) -> Settings:
        return make_settings(
            tmp_path / "data",
            CARESHARE_SMTP_URL=f"smtp://{SMTP_USER}:{quote(SMTP_PASSWORD, safe='')}@127.0.0.1:{smtp.port}",
            CARESHARE_MAIL_FROM="letters@riverside.example",
        )

    @pytest.fixture
    async def client(self, settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
        async with AsyncTestClient(app=create_app(settings)) as test_client:

            def stop_delivery_loop() -> int:
                found = [task for task in asyncio.all_tasks() if task.get_name() == "careshare-delivery"]
                for task in found:
                    task.cancel()
                return len(found)

            # The app runs in the client's portal thread, with its own event loop.
            assert test_client.blocking_portal.call(stop_delivery_loop) == 1
            yield test_client

    async def test_the_email_carries_the_pdf_and_every_file_as_shared(
        self, client: AsyncTestClient[Any], clinician: dict[str, str], mailbox: Mailbox
    ) -> None:
        box = mailbox
        await client.put("/v1/letter-settings", json={"organisation_name": "Riverside Clinic"}, headers=clinician)
        pid = await new_patient(client, clinician, "MRN-M1", email=ADDRESS)
        letter = await draft(client, clinician, pid, subject="Your biopsy results", body="The biopsy showed no cancer.")
        files = [
            await upload(client, clinician, pid, make_pdf(2), "report.pdf"),
            await upload(client, clinician, pid, make_pdf(1, text="leaflet"), "leaflet.pdf"),
        ]
        for file in files:
            added = await client.post(
                f"/v1/letters/{letter['id']}/attachments", json={"file_id": file["id"]}, headers=clinician
            )
            assert added.status_code == 201
        sent = await client.post(f"/v1/letters/{letter['id']}/send", json={"email": True}, headers=clinician)
        assert sent.status_code == 200, sent.text
        assert sent.json()["email_status"] == "pending"

        await deliver(client, 1)
        assert len(box.received) == 1
        message = box.received[0]
        assert box.envelopes == [("letters@riverside.example", [ADDRESS])]
        assert message["To"] == ADDRESS
        assert message["Subject"] == "A letter from Riverside Clinic"
        assert message["Message-ID"] == f"<letter-{letter['id']}@riverside.example>"
        text = message.get_body(preferencelist=("plain",)).get_content()
        assert "biopsy" not in text.lower() and "biopsy" not in message["Subject"].lower()

        parts = list(message.iter_attachments())
        assert [p.get_filename() for p in parts] == ["letter.pdf", "report.pdf", "leaflet.pdf"]
        letter_pdf = parts[0].get_content()
        assert "The biopsy showed no cancer." in pdf_text(letter_pdf)
        pinned = (await client.get(f"/v1/letters/{letter['id']}/pdf", headers=clinician)).content
        assert letter_pdf == pinned
        for part, attachment in zip(parts[1:], sent.json()["attachments"], strict=True):
            shared = await client.get(attachment["url"], headers=clinician)
            assert part.get_content_type() == attachment["media_type"]
            assert part.get_content() == shared.content
            assert (
                await client.get(f"/v1/files/{attachment['file_id']}/content?rendition=shareable", headers=clinician)
            ).content == shared.content

        shown = (await client.get(f"/v1/letters/{letter['id']}", headers=clinician)).json()
        assert (shown["email_status"], shown["email_error"]) == ("sent", None)
        # A later round sends nothing again.
        assert await deliver(client, 2) == 0
        assert len(box.received) == 1

    async def test_two_refusals_then_one_email(
        self, client: AsyncTestClient[Any], clinician: dict[str, str], mailbox: Mailbox
    ) -> None:
        box = mailbox
        box.plan = ["451 4.3.0 Try again later", "451 4.3.0 Try again later"]
        _, letter = await emailed_letter(client, clinician, headers=clinician)
        for round_ in (1, 2):
            await deliver(client, round_)
            shown = (await client.get(f"/v1/letters/{letter['id']}", headers=clinician)).json()
            assert (shown["email_status"], shown["email_error"]) == ("pending", "451 4.3.0 Try again later")
        await deliver(client, 3)
        assert box.tries == 3
        assert len(box.received) == 1
        assert (await client.get(f"/v1/letters/{letter['id']}", headers=clinician)).json()["email_status"] == "sent"
        for round_ in (4, 5):
            await deliver(client, round_)
        assert (box.tries, len(box.received)) == (3, 1)

    async def test_a_server_that_always_refuses_ends_failed_and_the_letter_is_still_in_the_app(
        self, client: AsyncTestClient[Any], settings: Settings, clinician: dict[str, str], mailbox: Mailbox
    ) -> None:
        box = mailbox
        box.refuse_always = f"554 5.7.1 Message to <{ADDRESS}> rejected"
        pid, letter = await emailed_letter(client, clinician, headers=clinician)
        for round_ in range(1, MAX_ATTEMPTS + 3):
            await deliver(client, round_)
        assert box.tries == MAX_ATTEMPTS
        assert box.received == []
        shown = (await client.get(f"/v1/letters/{letter['id']}", headers=clinician)).json()
        assert shown["email_status"] == "failed"
        assert shown["email_error"] == "554 5.7.1 Message to <address> rejected"  # the address is patient data
        patient = bearer(settings, "patient", "org-a", patient=pid)
        archive = (await client.get("/v1/me/archive", headers=patient)).json()["channels"]
        assert [e["item_id"] for e in archive["letters"]] == [letter["id"]]
        assert (await client.get(f"/v1/letters/{letter['id']}/pdf", headers=patient)).status_code == 200

    async def test_an_idempotent_retry_sends_one_email(
        self, client: AsyncTestClient[Any], clinician: dict[str, str], mailbox: Mailbox
    ) -> None:
        box = mailbox
        keyed = {**clinician, "Idempotency-Key": "letter-7"}
        pid, letter = await emailed_letter(client, clinician, headers=keyed)
        retry = await client.post(f"/v1/letters/{letter['id']}/send", json={"email": True}, headers=keyed)
        assert retry.status_code == 200
        assert retry.json()["id"] == letter["id"] and retry.json()["sent_at"] == letter["sent_at"]
        different = await client.post(f"/v1/letters/{letter['id']}/send", json={"email": False}, headers=keyed)
        assert (different.status_code, different.json()["code"]) == (422, "idempotency-key-reused")
        for round_ in (1, 2, 3):
            await deliver(client, round_)
        assert len(box.received) == 1
        assert pid

    async def test_an_unreachable_server_is_retried_with_the_reason(
        self, client: AsyncTestClient[Any], clinician: dict[str, str], smtp: Controller, mailbox: Mailbox
    ) -> None:
        _, letter = await emailed_letter(client, clinician, headers=clinician)
        smtp.stop()  # the server goes away after the letter was sent
        await deliver(client, 1)
        shown = (await client.get(f"/v1/letters/{letter['id']}", headers=clinician)).json()
        assert (shown["email_status"], shown["email_error"]) == ("pending", "ConnectionRefusedError")
        assert (await client.get(f"/v1/letters/{letter['id']}/pdf", headers=clinician)).status_code == 200
        back = smtp_controller(mailbox, smtp.port)
        back.start()  # the server is back: the next round sends it
        try:
            await deliver(client, 2)
        finally:
            back.stop()
        assert len(mailbox.received) == 1
        assert (await client.get(f"/v1/letters/{letter['id']}", headers=clinician)).json()["email_status"] == "sent"


def test_smtp_urls_and_refusal_reasons(tmp_path: Path) -> None:
    assert SmtpServer.from_url("smtp://mail.example:2525") == SmtpServer(
        "mail.example", 2525, tls=False, starttls=False
    )
    assert SmtpServer.from_url("smtp://mail.example?starttls=true").starttls
    upgraded = SmtpServer.from_url("smtp+starttls://user%40x:p%3Ass@mail.example")
    assert (upgraded.port, upgraded.starttls, upgraded.user, upgraded.password) == (587, True, "user@x", "p:ss")
    assert SmtpServer.from_url("smtps://mail.example").tls
    with pytest.raises(ValueError, match="CARESHARE_SMTP_URL"):
        SmtpServer.from_url("http://mail.example")
    refused = smtplib.SMTPRecipientsRefused({ADDRESS: (550, f"5.1.1 <{ADDRESS}>: no such user".encode())})
    assert refusal_reason(refused) == "550 5.1.1 <address>: no such user"
    assert refusal_reason(ConnectionResetError("x")) == "ConnectionResetError"
    for bad in ("mail.example:25", "http://mail.example", "smtp://", "smtp://mail.example:port"):
        with pytest.raises(ValueError, match="CARESHARE_SMTP_URL"):
            make_settings(tmp_path, CARESHARE_SMTP_URL=bad).get(SMTP_URL)
    with pytest.raises(ValueError, match="CARESHARE_MAIL_FROM"):
        make_settings(tmp_path, CARESHARE_MAIL_FROM="letters").get(MAIL_FROM)
    configured = make_settings(tmp_path, CARESHARE_SMTP_URL="smtp://u:pa55w0rd@mail.example:25")
    assert configured.get(SMTP_URL) == "smtp://u:pa55w0rd@mail.example:25"
    assert "pa55w0rd" not in repr(configured)
    assert make_settings(tmp_path).get(MAIL_FROM) == "careshare@localhost"
