"""Helpers for tests that drive the HTTP API (``careshare.testing.api``): problems, uploads, patients, downloads."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    from litestar.testing import AsyncTestClient

__all__ = ["PROBLEM_JSON", "assert_problem", "download", "register", "sha256", "upload"]

PROBLEM_JSON = "application/problem+json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The problem body, once the response is an RFC 9457 problem of ``status`` and ``code`` without a traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["code"] == code, body
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
