"""The foundation's HTTP contract, through Litestar's test client on the real app.

Uploads and downloads, Range/ETag, refusals that leave nothing behind, who may see what,
patient registration and the problem+json shape of every error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import pikepdf
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from careshare.core import db
from careshare.host import create_app
from careshare.testing import bearer, make_pdf, make_settings
from careshare.testing.api import assert_problem, count_rows, register, stored_objects
from careshare.testing.api import post_file as upload
from careshare.testing.api import post_file_ok as upload_ok

if TYPE_CHECKING:
    from careshare.core.settings import Settings

CORPUS = Path("/work/shared/corpus")
FILE_FIELDS = {
    "id",
    "owner",
    "filename",
    "kind",
    "media_type",
    "size",
    "sha256",
    "status",
    "metadata",
    "check",
    "renditions",
    "uploaded_by",
    "created_at",
}
# Hypothesis reuses the function's fixtures across examples; each property below is written so
# that what earlier examples stored cannot change what a later one must see.
reuses_fixtures = hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- helpers -----------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encrypted_pdf(revision: int, *, user: str, owner: str) -> bytes:
    """A PDF encrypted with security handler revision ``revision`` (R2..R6) by pikepdf/qpdf."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    # R2/R3 are RC4 only and cannot leave metadata unencrypted; R4 may use AES; R5/R6 are AES-256.
    options: dict[str, Any] = {"R": revision, "aes": revision >= 4, "metadata": revision >= 4}
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Encryption R=5 is deprecated", UserWarning)
        pdf.save(out, encryption=pikepdf.Encryption(user=user, owner=owner, **options))
    return out.getvalue()


def corpus_pdfs() -> list[tuple[str, str]]:
    """``(file name, expected outcome)`` of each PDF in the shared corpus manifest, once each."""
    with (CORPUS / "MANIFEST.tsv").open(newline="") as handle:
        rows = {row["path"]: row["expected"] for row in csv.DictReader(handle, delimiter="\t")}
    return sorted((path.removeprefix("pdf/"), expected) for path, expected in rows.items() if path.startswith("pdf/"))


# -- upload and download round trips --------------------------------------------------------------


async def test_raw_body_with_query_filename_round_trips(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    body = make_pdf(pages=3)
    created = await upload_ok(client, clinician, patient_id, body, "Clinic letter.pdf")

    assert set(created) >= FILE_FIELDS
    assert created["owner"] == {"type": "patient", "id": patient_id}
    assert created["filename"] == "Clinic letter.pdf"
    assert (created["kind"], created["media_type"], created["status"]) == ("pdf", "application/pdf", "ready")
    assert created["size"] == len(body)
    assert created["sha256"] == sha256(body)
    assert created["metadata"]["pages"] == 3
    assert created["check"]["handler"] == "pdf"
    assert created["check"]["input_sha256"] == sha256(body)
    assert created["uploaded_by"] == "dr-a"
    roles = {r["role"]: r for r in created["renditions"]}
    assert roles["original"] == {
        "role": "original",
        "media_type": "application/pdf",
        "size": len(body),
        "sha256": sha256(body),
        "url": f"/v1/files/{created['id']}/content?rendition=original",
    }
    assert "shareable" in roles

    shown = await client.get(f"/v1/files/{created['id']}", headers=clinician)
    assert shown.status_code == 200
    assert shown.json() == created

    content = await client.get(f"/v1/files/{created['id']}/content", headers=clinician)
    assert content.status_code == 200
    assert content.content == body
    assert sha256(content.content) == created["sha256"]
    assert content.headers["content-type"].startswith("application/pdf")
    assert content.headers["content-length"] == str(len(body))
    assert content.headers["x-content-type-options"] == "nosniff"
    assert content.headers["etag"] == f'"{created["sha256"]}"'
    assert content.headers["accept-ranges"] == "bytes"
    assert content.headers["content-disposition"].startswith("attachment;")
    assert "filename*=UTF-8''Clinic%20letter.pdf" in content.headers["content-disposition"]


async def test_raw_body_with_content_disposition_filename_star(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    body = make_pdf()
    name = "Befund Röntgen 📄.pdf"
    response = await client.post(
        f"/v1/patients/{patient_id}/files",
        content=body,
        headers={**clinician, "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["filename"] == name

    content = await client.get(f"/v1/files/{created['id']}/content", headers=clinician)
    assert sha256(content.content) == created["sha256"] == sha256(body)
    disposition = content.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert f"filename*=UTF-8''{quote(name, safe='')}" in disposition
    # The ASCII fallback is plain ASCII, so old clients and header parsers cope.
    assert disposition.isascii()


async def test_content_disposition_filename_star_wins_over_query(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    response = await client.post(
        f"/v1/patients/{patient_id}/files?filename=from-query.pdf",
        content=make_pdf(),
        headers={**clinician, "Content-Disposition": "attachment; filename*=UTF-8''from-header.pdf"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "from-header.pdf"


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="plain name.pdf"', "plain name.pdf"),
        ("attachment; filename*=utf-8''%E2%82%AC%20rates.pdf", "€ rates.pdf"),
        ("attachment; filename*=ISO-8859-1''%A3%20rates.pdf", "£ rates.pdf"),
        ("attachment; filename=\"fallback.pdf\"; filename*=UTF-8''real.pdf", "real.pdf"),
        ("attachment; filename*=UTF-8''%FF%FE.pdf; filename=\"fallback.pdf\"", "fallback.pdf"),
        ("attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd.pdf", "passwd.pdf"),
    ],
)
async def test_content_disposition_filename_forms(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, disposition: str, expected: str
) -> None:
    response = await client.post(
        f"/v1/patients/{patient_id}/files",
        content=make_pdf(),
        headers={**clinician, "Content-Disposition": disposition},
    )
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == expected


async def test_multipart_field_file_round_trips(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    body = make_pdf(pages=2)
    response = await client.post(
        f"/v1/patients/{patient_id}/files",
        files={"file": ("Überweisung.pdf", body, "application/octet-stream")},
        data={"note": "other fields are ignored"},
        headers=clinician,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) >= FILE_FIELDS
    assert created["filename"] == "Überweisung.pdf"
    assert created["size"] == len(body)
    assert created["sha256"] == sha256(body)

    content = await client.get(f"/v1/files/{created['id']}/content", headers=clinician)
    assert content.content == body


def _multipart(*parts: tuple[str, str | None, bytes], boundary: str = "b0undary", close: bool = True) -> bytes:
    out = b""
    for name, filename, data in parts:
        file_part = f'; filename="{filename}"' if filename is not None else ""
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{file_part}\r\n\r\n'.encode()
        out += data + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=b0undary", _multipart(("file", "a.pdf", make_pdf()), close=False)[:-10]),
        ("multipart/form-data; boundary=b0undary", b"this is not multipart at all"),
        ("multipart/form-data", _multipart(("file", "a.pdf", make_pdf()))),
        ("multipart/form-data; boundary=b0undary", b"--b0undary--\r\n"),
        ("multipart/form-data; boundary=b0undary", _multipart(("files", "a.pdf", make_pdf()))),
    ],
    ids=["truncated", "not-multipart", "no-boundary", "no-parts", "wrong-field"],
)
async def test_malformed_multipart_is_400_and_leaves_nothing(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient_id: str,
    settings: Settings,
    content_type: str,
    body: bytes,
) -> None:
    response = await client.post(
        f"/v1/patients/{patient_id}/files", content=body, headers={**clinician, "Content-Type": content_type}
    )
    assert_problem(response, 400, "upload-malformed")
    await assert_nothing_stored(client, settings, clinician, patient_id)


async def test_multipart_takes_the_first_file_field_only(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    first, second = make_pdf(text="first"), make_pdf(text="second")
    body = _multipart(("note", None, b"hello"), ("file", "first.pdf", first), ("file", "second.pdf", second))
    response = await client.post(
        f"/v1/patients/{patient_id}/files",
        content=body,
        headers={**clinician, "Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 201, response.text
    assert (response.json()["filename"], response.json()["sha256"]) == ("first.pdf", sha256(first))


async def test_client_content_type_is_not_trusted(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    """The bytes decide the type: a PDF sent as image/png named .png is still a PDF."""
    response = await client.post(
        f"/v1/patients/{patient_id}/files?filename=photo.png",
        content=make_pdf(),
        headers={**clinician, "Content-Type": "image/png"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["media_type"] == "application/pdf"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("..\\..\\Windows\\System32\\report.pdf", "report.pdf"),
        ("/absolute/path/scan.pdf", "scan.pdf"),
        ("..", "file"),
        ("con.pdf", "_con.pdf"),
        ("a\u202egnp.pdf", "agnp.pdf"),  # a right-to-left override would disguise the extension
        ("line\r\nbreak.pdf", "line break.pdf"),  # whitespace, control or not, folds to one space
    ],
)
async def test_filenames_are_sanitised(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, raw: str, expected: str
) -> None:
    created = await upload_ok(client, clinician, patient_id, make_pdf(), raw)
    assert created["filename"] == expected
    content = await client.get(f"/v1/files/{created['id']}/content", headers=clinician)
    assert f"filename*=UTF-8''{quote(expected, safe='')}" in content.headers["content-disposition"]


async def test_multipart_path_traversal_filename_is_sanitised(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    response = await client.post(
        f"/v1/patients/{patient_id}/files",
        files={"file": ("../../etc/passwd.pdf", make_pdf(), "application/pdf")},
        headers=clinician,
    )
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "passwd.pdf"


@reuses_fixtures
@given(raw=st.text(max_size=300))
async def test_any_filename_comes_back_safe(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, raw: str
) -> None:
    created = await upload_ok(client, clinician, patient_id, make_pdf(), raw)
    name = created["filename"]
    assert name and "/" not in name and "\\" not in name
    assert name not in {".", ".."}
    assert len(name.encode()) <= 255
    assert not any(ord(char) < 32 for char in name)
    content = await client.get(f"/v1/files/{created['id']}/content", headers=clinician)
    disposition = content.headers["content-disposition"]
    assert disposition.isascii()
    star = disposition.split("filename*=UTF-8''", 1)[1]
    assert unquote(star, errors="strict") == name


# -- Range, ETag and safe headers --------------------------------------------------------------------


@pytest.fixture
async def stored_pdf(client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str) -> tuple[str, bytes]:
    """A PDF of a few kilobytes stored for the patient: ``(file id, its bytes)``."""
    body = make_pdf(pages=12, text="range test")
    created = await upload_ok(client, clinician, patient_id, body)
    return str(created["id"]), body


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=10-", 10, None),
        ("bytes=-5", -5, None),
        ("bytes=0-0", 0, 1),
        ("bytes=3-999999999", 3, None),  # past the end: clipped to the file
        ("bytes=-999999999", 0, None),  # a suffix longer than the file is the whole file
    ],
)
async def test_single_ranges(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    stored_pdf: tuple[str, bytes],
    header: str,
    start: int,
    end: int | None,
) -> None:
    fid, body = stored_pdf
    expected = body[start:end]
    first = body.index(expected) if start < 0 else start
    response = await client.get(f"/v1/files/{fid}/content", headers={**clinician, "Range": header})
    assert response.status_code == 206, response.text
    assert response.content == expected
    assert response.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{len(body)}"
    assert response.headers["content-length"] == str(len(expected))
    assert response.headers["etag"] == f'"{sha256(body)}"'
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{beyond}", "bytes=-0"])
async def test_unsatisfiable_range_is_416(
    client: AsyncTestClient[Any], clinician: dict[str, str], stored_pdf: tuple[str, bytes], header: str
) -> None:
    fid, body = stored_pdf
    value = header.format(size=len(body), beyond=len(body) + 100)
    response = await client.get(f"/v1/files/{fid}/content", headers={**clinician, "Range": value})
    assert_problem(response, 416, "range-not-satisfiable")
    assert response.headers["content-range"] == f"bytes */{len(body)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=9-2", "bytes=abc", "bytes=-"])
async def test_ranges_we_do_not_serve_send_the_whole_file(
    client: AsyncTestClient[Any], clinician: dict[str, str], stored_pdf: tuple[str, bytes], header: str
) -> None:
    """Multiple, foreign-unit or invalid range specs may be ignored (RFC 9110 14.2): 200, all bytes."""
    fid, body = stored_pdf
    response = await client.get(f"/v1/files/{fid}/content", headers={**clinician, "Range": header})
    assert response.status_code == 200
    assert response.content == body
    assert "content-range" not in response.headers


@reuses_fixtures
@given(data=st.data())
async def test_any_range_is_the_slice_of_the_original(
    client: AsyncTestClient[Any], clinician: dict[str, str], stored_pdf: tuple[str, bytes], data: st.DataObject
) -> None:
    fid, body = stored_pdf
    size = len(body)
    start = data.draw(st.integers(0, size + 20), label="start")
    end = data.draw(st.none() | st.integers(start, size + 20), label="end")
    header = f"bytes={start}-" if end is None else f"bytes={start}-{end}"
    response = await client.get(f"/v1/files/{fid}/content", headers={**clinician, "Range": header})
    if start >= size:
        assert_problem(response, 416, "range-not-satisfiable")
        assert response.headers["content-range"] == f"bytes */{size}"
        return
    last = size - 1 if end is None else min(end, size - 1)
    assert response.status_code == 206
    assert response.content == body[start : last + 1]
    assert response.headers["content-range"] == f"bytes {start}-{last}/{size}"
    assert int(response.headers["content-length"]) == last + 1 - start


@reuses_fixtures
@given(length=st.integers(1, 20_000))
async def test_any_suffix_range_is_the_tail_of_the_original(
    client: AsyncTestClient[Any], clinician: dict[str, str], stored_pdf: tuple[str, bytes], length: int
) -> None:
    fid, body = stored_pdf
    response = await client.get(f"/v1/files/{fid}/content", headers={**clinician, "Range": f"bytes=-{length}"})
    assert response.status_code == 206
    assert response.content == body[-length:]
    first = max(len(body) - length, 0)
    assert response.headers["content-range"] == f"bytes {first}-{len(body) - 1}/{len(body)}"


@pytest.mark.parametrize(
    "if_none_match",
    ['"{etag}"', '"other", "{etag}"', 'W/"{etag}"', "*"],
)
async def test_if_none_match_with_the_etag_is_304(
    client: AsyncTestClient[Any], clinician: dict[str, str], stored_pdf: tuple[str, bytes], if_none_match: str
) -> None:
    fid, body = stored_pdf
    first = await client.get(f"/v1/files/{fid}/content", headers=clinician)
    etag = first.headers["etag"]
    assert etag == f'"{sha256(body)}"'
    value = if_none_match.format(etag=etag.strip('"'))
    again = await client.get(f"/v1/files/{fid}/content", headers={**clinician, "If-None-Match": value})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag


async def test_if_none_match_with_another_etag_sends_the_file(
    client: AsyncTestClient[Any], clinician: dict[str, str], stored_pdf: tuple[str, bytes]
) -> None:
    fid, body = stored_pdf
    response = await client.get(f"/v1/files/{fid}/content", headers={**clinician, "If-None-Match": '"0000"'})
    assert response.status_code == 200
    assert response.content == body


async def test_renditions_are_served_and_unknown_ones_are_404(
    client: AsyncTestClient[Any], clinician: dict[str, str], stored_pdf: tuple[str, bytes]
) -> None:
    fid, _ = stored_pdf
    shareable = await client.get(f"/v1/files/{fid}/content?rendition=shareable", headers=clinician)
    assert shareable.status_code == 200
    assert shareable.headers["content-type"].startswith("application/pdf")
    assert "filename*=UTF-8''document.pdf" in shareable.headers["content-disposition"]
    missing = await client.get(f"/v1/files/{fid}/content?rendition=poster", headers=clinician)
    assert_problem(missing, 404, "not-found")


# -- refusals -----------------------------------------------------------------------------------------


async def assert_nothing_stored(
    client: AsyncTestClient[Any], settings: Settings, headers: dict[str, str], pid: str
) -> None:
    """Nothing refused is stored: no bytes on disk (content, staging or held), no rendition rows.

    A file refused by its check keeps its row as ``rejected``, with the code it was refused with,
    so the uploader can see why; one refused before it was accepted (type, size) has no row at all.
    """
    assert stored_objects(settings) == {"sha256": [], "staging": [], "other": []}
    assert await count_rows(client, db.renditions) == 0
    engine = client.app.state.careshare.engine
    async with engine.connect() as conn:
        statuses = list((await conn.execute(sa.select(db.files.c.status))).scalars())
    assert set(statuses) <= {"rejected"}
    listing = await client.get(f"/v1/patients/{pid}/files", headers=headers)
    assert listing.status_code == 200
    items = listing.json()["items"]
    assert len(items) == len(statuses)
    for item in items:
        assert item["status"] == "rejected"
        assert item["renditions"] == []
        assert item["check"]["reason"]
        shown = await client.get(f"/v1/files/{item['id']}", headers=headers)
        assert shown.json()["check"]["reason"] == item["check"]["reason"]


@pytest.mark.parametrize(
    "body",
    [
        b"just some text, not a file we share",
        b"GIF87 is not quite a GIF header",
        b"PK\x03\x04" + bytes(200),
        bytes(range(256)) * 40,
    ],
    ids=["text", "near-gif-magic", "zip", "binary"],
)
async def test_unknown_type_is_415_and_leaves_nothing(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings, body: bytes
) -> None:
    response = await upload(client, clinician, patient_id, body, "looks-like.pdf")
    assert_problem(response, 415, "unsupported-file-type")
    await assert_nothing_stored(client, settings, clinician, patient_id)


@pytest.mark.parametrize("multipart", [False, True], ids=["raw", "multipart"])
async def test_empty_body_is_400(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings, multipart: bool
) -> None:
    if multipart:
        response = await client.post(
            f"/v1/patients/{patient_id}/files", files={"file": ("empty.pdf", b"", "application/pdf")}, headers=clinician
        )
    else:
        response = await upload(client, clinician, patient_id, b"")
    assert_problem(response, 400, "upload-empty")
    await assert_nothing_stored(client, settings, clinician, patient_id)


@pytest.mark.parametrize("revision", [2, 3, 4, 5, 6])
async def test_pdf_needing_a_user_password_is_refused(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings, revision: int
) -> None:
    body = encrypted_pdf(revision, user="open-sesame", owner="owner-secret")
    response = await upload(client, clinician, patient_id, body)
    assert_problem(response, 422, "pdf-password-protected")
    await assert_nothing_stored(client, settings, clinician, patient_id)


@pytest.mark.parametrize("revision", [2, 3, 4, 5, 6])
async def test_pdf_with_only_an_owner_password_is_accepted(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, revision: int
) -> None:
    body = encrypted_pdf(revision, user="", owner="owner-secret")
    created = await upload_ok(client, clinician, patient_id, body)
    assert created["status"] == "ready"
    assert created["metadata"]["encrypted-owner-only"] is True
    content = await client.get(f"/v1/files/{created['id']}/content", headers=clinician)
    assert content.content == body


async def test_plain_pdf_is_not_marked_encrypted(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    created = await upload_ok(client, clinician, patient_id, make_pdf())
    assert "encrypted-owner-only" not in created["metadata"]


@pytest.mark.parametrize(("name", "expected"), corpus_pdfs())
async def test_corpus_pdfs(
    client: AsyncTestClient[Any],
    clinician: dict[str, str],
    patient_id: str,
    settings: Settings,
    name: str,
    expected: str,
) -> None:
    body = (CORPUS / "pdf" / name).read_bytes()
    response = await upload(client, clinician, patient_id, body, name)
    if name == "qpdf_bad1.pdf":
        # "oops\n" with a .pdf name: no %PDF- header, so no handler claims it. The name never decides.
        assert expected == "refuse:corrupt"
        assert_problem(response, 415, "unsupported-file-type")
    elif expected == "accept":
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["sha256"] == sha256(body)
        assert created["kind"] == "pdf"
        content = await client.get(f"/v1/files/{created['id']}/content", headers=clinician)
        assert content.content == body
        return
    elif expected == "refuse:password":
        assert_problem(response, 422, "pdf-password-protected")
    else:
        pytest.fail(f"no expectation written for {name}: {expected}")
    await assert_nothing_stored(client, settings, clinician, patient_id)


async def test_pdf_plugin_disabled_makes_pdf_unsupported(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", CARESHARE_DISABLE_PLUGINS="pdf")
    headers = bearer(settings, "clinician", "org-a", sub="dr-a")
    async with AsyncTestClient(app=create_app(settings)) as client:
        pid = await register(client, headers, "MRN-1")
        response = await upload(client, headers, pid, make_pdf())
        assert_problem(response, 415, "unsupported-file-type")
        await assert_nothing_stored(client, settings, headers, pid)


# -- content-addressed storage --------------------------------------------------------------------------


async def test_same_bytes_are_stored_once_across_organisations(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings
) -> None:
    other_org = bearer(settings, "clinician", "org-b", sub="dr-b")
    other_patient = await register(client, other_org, "MRN-1")
    body = make_pdf(pages=4)

    first = await upload_ok(client, clinician, patient_id, body, "a.pdf")
    second = await upload_ok(client, clinician, patient_id, body, "again.pdf")
    third = await upload_ok(client, other_org, other_patient, body, "b.pdf")

    assert len({first["id"], second["id"], third["id"]}) == 3
    assert first["sha256"] == second["sha256"] == third["sha256"] == sha256(body)
    objects = stored_objects(settings)
    # The original, its shareable copy and its thumbnail: each stored once (handlers write them deterministically).
    outputs = {r["role"]: r["sha256"] for r in first["renditions"]}
    assert [{r["role"]: r["sha256"] for r in c["renditions"]} for c in (second, third)] == [outputs, outputs]
    assert sorted(path.name for path in objects["sha256"]) == sorted(set(outputs.values()))
    assert next(path for path in objects["sha256"] if path.name == sha256(body)).read_bytes() == body
    assert objects["staging"] == [] and objects["other"] == []
    assert await count_rows(client, db.blobs) == len(set(outputs.values())) == 3
    assert await count_rows(client, db.files) == 3
    for headers, created in ((clinician, first), (clinician, second), (other_org, third)):
        content = await client.get(f"/v1/files/{created['id']}/content", headers=headers)
        assert content.content == body


async def test_library_upload_belongs_to_the_organisation(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], settings: Settings
) -> None:
    body = make_pdf(text="leaflet")
    response = await client.post("/v1/library/files?filename=leaflet.pdf", content=body, headers=clinician)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) >= FILE_FIELDS
    assert created["owner"] == {"type": "library", "id": "org-a"}
    listing = await client.get("/v1/library/files", headers=clinician)
    assert [item["id"] for item in listing.json()["items"]] == [created["id"]]
    assert (await client.get(f"/v1/files/{created['id']}/content", headers=clinician)).content == body
    # Patients reach library files only through what is shared with them (later issues).
    assert_problem(await client.get(f"/v1/files/{created['id']}", headers=patient), 404, "not-found")
    outsider = bearer(settings, "clinician", "org-b", sub="dr-b")
    assert_problem(await client.get(f"/v1/files/{created['id']}", headers=outsider), 404, "not-found")
