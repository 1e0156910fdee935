"""The spine end to end: register a patient, upload a PDF, read it back."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from careshare.testing import make_pdf

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient


async def test_upload_and_download_round_trip(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    body = make_pdf(pages=2)
    response = await client.post(
        f"/v1/patients/{patient_id}/files?filename=leaflet.pdf", content=body, headers=clinician
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["sha256"] == hashlib.sha256(body).hexdigest()
    assert created["kind"] == "pdf" and created["metadata"]["pages"] == 2
    content = await client.get(f"/v1/files/{created['id']}/content", headers=clinician)
    assert content.status_code == 200
    assert hashlib.sha256(content.content).hexdigest() == created["sha256"]
