"""Files from patients land in their record as new until a clinician marks them seen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from careshare.testing import bearer, make_pdf

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings


async def test_a_patient_upload_is_new_until_seen(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
) -> None:
    sent = await client.post("/v1/me/files?filename=rash.pdf", content=make_pdf(text="rash"), headers=patient)
    assert sent.status_code == 201, sent.text
    assert sent.json()["source"] == "patient" and sent.json()["seen"] is False
    clinic_copy = await client.post(f"/v1/patients/{patient_id}/files", content=make_pdf(pages=2), headers=clinician)
    assert clinic_copy.status_code == 201

    listing = f"/v1/patients/{patient_id}/files"
    new = (await client.get(listing, params={"source": "patient", "unseen": "true"}, headers=clinician)).json()
    assert [f["id"] for f in new["items"]] == [sent.json()["id"]]

    assert (await client.post(f"/v1/files/{sent.json()['id']}/seen", headers=patient)).status_code == 403
    other_org = bearer(settings, "clinician", "org-b", sub="dr-b")
    assert (await client.post(f"/v1/files/{sent.json()['id']}/seen", headers=other_org)).status_code == 404

    marked = await client.post(f"/v1/files/{sent.json()['id']}/seen", headers=clinician)
    assert marked.status_code == 200
    assert marked.json()["seen"] is True and marked.json()["seen_at"]
    again = await client.post(f"/v1/files/{sent.json()['id']}/seen", headers=clinician)
    assert again.json()["seen_at"] == marked.json()["seen_at"]  # idempotent: the first look counts

    new = (await client.get(listing, params={"source": "patient", "unseen": "true"}, headers=clinician)).json()
    assert new["items"] == []
    everything = (await client.get(listing, headers=clinician)).json()
    assert {f["source"] for f in everything["items"]} == {"clinic", "patient"}
    audit = (await client.get(f"/v1/patients/{patient_id}/audit", headers=clinician)).json()
    assert [e["action"] for e in audit["items"]].count("file.seen") == 1
