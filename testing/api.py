"""Helpers for tests that drive the HTTP API (``careshare.testing.api``): problems, uploads, patients, downloads."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings

__all__ = [
    "PROBLEM_JSON",
    "assert_problem",
    "count_rows",
    "download",
    "post_file",
    "post_file_ok",
    "register",
    "sha256",
    "stored_objects",
    "upload",
]

PROBLEM_JSON = "application/problem+json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The problem body, once the response is an RFC 9457 problem of ``status`` and ``code`` without a traceback.

    A ``HEAD`` answer has no body: its status is checked, and the body is ``{}``.
    """
    assert response.status_code == status, response.text
    if response.request.method == "HEAD":
        return {}
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers["content-type"]
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"].endswith(f"/{code}")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in response.text
    return dict(body)


async def register(client: AsyncTestClient[Any], headers: dict[str, str], external_id: str) -> str:
    """Register a patient; returns their id."""
    response = await client.post(
        "/v1/patients", json={"name": f"P {external_id}", "external_id": external_id}, headers=headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def upload(
    client: AsyncTestClient[Any], headers: dict[str, str], data: bytes, filename: str, *, to: str = "/v1/library/files"
) -> dict[str, Any]:
    """Upload ``data`` (to the library unless ``to`` names another files route); returns the file JSON."""
    response = await client.post(to, params={"filename": filename}, content=data, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def download(client: AsyncTestClient[Any], headers: dict[str, str], url: str) -> bytes:
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return response.content


async def post_file(
    client: AsyncTestClient[Any],
    headers: dict[str, str],
    patient_id: str,
    body: bytes,
    filename: str | None = "document.pdf",
) -> httpx.Response:
    """``body`` as the raw upload of a file for ``patient_id`` (``?filename=`` unless None): the answer."""
    params = {"filename": filename} if filename is not None else None
    return await client.post(f"/v1/patients/{patient_id}/files", content=body, params=params, headers=headers)


async def post_file_ok(
    client: AsyncTestClient[Any], headers: dict[str, str], patient_id: str, body: bytes, filename: str = "document.pdf"
) -> dict[str, Any]:
    """:func:`post_file`, which must answer ``201``; the file's JSON."""
    response = await post_file(client, headers, patient_id, body, filename)
    assert response.status_code == 201, response.text
    return dict(response.json())


def stored_objects(settings: Settings) -> dict[str, list[Path]]:
    """Every object file of the local blob store, by top-level area (``sha256``, ``staging``, ``other``)."""
    root = settings.data_dir / "blobs"
    found: dict[str, list[Path]] = {"sha256": [], "staging": [], "other": []}
    if root.exists():
        for path in root.rglob("*"):
            if path.is_file():
                area = path.relative_to(root).parts[0]
                found[area if area in found else "other"].append(path)
    return found


async def count_rows(client: AsyncTestClient[Any], table: sa.Table) -> int:
    """How many rows ``table`` holds in the database of ``client``'s app."""
    engine = client.app.state.careshare.engine
    async with engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
