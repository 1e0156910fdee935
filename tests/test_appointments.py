"""Appointments end to end over HTTP: a booking carries its type's files as they were when it was booked.

The type (a template) is edited between two bookings; each booking keeps its own files, the patient
downloads exactly the pinned renditions, is notified once per booking, and nobody else sees them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from careshare.plugins.appointments.bookings import BOOKED_TITLE
from careshare.testing import bearer, make_pdf
from careshare.testing.api import assert_problem, download, register, sha256, upload
from careshare.testing.strategies.images import encode, exif_bytes, quadrants

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings

TYPES = "/v1/appointment-types"
STARTS_AT = "2030-03-04T09:30:00+01:00"


def shareable_sha(file: dict[str, Any]) -> str:
    return next(r["sha256"] for r in file["renditions"] if r["role"] == "shareable")


async def book(
    client: AsyncTestClient[Any], clinician: dict[str, str], pid: str, tid: str, starts_at: str = STARTS_AT
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/patients/{pid}/appointments", json={"type_id": tid, "starts_at": starts_at}, headers=clinician
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_each_booking_carries_the_type_files_as_they_were_when_booked(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
) -> None:
    # A photo with GPS metadata: its shareable copy differs from the original, so pinning the right one shows.
    photo = encode([quadrants((48, 32), noise=6, seed=3)], "JPEG", exif=exif_bytes(orientation=6, gps=True))
    a = await upload(client, clinician, make_pdf(text="directions"), "directions.pdf")
    b = await upload(client, clinician, photo, "entrance.jpg")
    c = await upload(client, clinician, make_pdf(2, text="fasting"), "fasting.pdf")
    assert b["sha256"] != shareable_sha(b)
    tid = (await client.post(TYPES, json={"name": "Endoscopy"}, headers=clinician)).json()["id"]
    for file in (a, b):
        await client.post(f"{TYPES}/{tid}/attachments", json={"file_id": file["id"]}, headers=clinician)

    first = await book(client, clinician, patient_id, tid)
    attached_b = (await client.get(f"{TYPES}/{tid}", headers=clinician)).json()["attachments"][1]
    removed = await client.delete(f"{TYPES}/{tid}/attachments/{attached_b['id']}", headers=clinician)
    assert removed.status_code == 200, removed.text
    await client.post(f"{TYPES}/{tid}/attachments", json={"file_id": c["id"]}, headers=clinician)
    await client.patch(f"{TYPES}/{tid}", json={"name": "Endoscopy (morning)"}, headers=clinician)
    second = await book(client, clinician, patient_id, tid, "2030-03-11T08:00:00Z")

    mine = (await client.get("/v1/me/appointments", headers=patient)).json()["items"]
    assert [m["id"] for m in mine] == [second["id"], first["id"]]
    by_id = {m["id"]: m for m in mine}
    assert [x["file_id"] for x in by_id[first["id"]]["attachments"]] == [a["id"], b["id"]]
    assert [x["file_id"] for x in by_id[second["id"]]["attachments"]] == [a["id"], c["id"]]
    assert by_id[first["id"]]["type"]["name"] == "Endoscopy"
    assert by_id[second["id"]]["type"]["name"] == "Endoscopy (morning)"
    assert by_id[first["id"]]["starts_at"] == "2030-03-04T08:30:00+00:00"
    assert "booked_by" not in by_id[first["id"]]

    # The patient downloads each pinned rendition: the shareable copy, byte for byte.
    expected = {a["id"]: shareable_sha(a), b["id"]: shareable_sha(b), c["id"]: shareable_sha(c)}
    for appointment in mine:
        for attachment in appointment["attachments"]:
            body = await download(client, patient, attachment["url"])
            assert sha256(body) == attachment["sha256"] == expected[attachment["file_id"]]
            assert len(body) == attachment["size"]

    notes = (await client.get("/v1/me/notifications", headers=patient)).json()["items"]
    assert sorted((n["item_id"], n["title"], n["kind"]) for n in notes) == sorted(
        [(first["id"], BOOKED_TITLE, "appointment"), (second["id"], BOOKED_TITLE, "appointment")]
    )
    archive = (await client.get("/v1/me/archive", headers=patient)).json()["channels"]["appointments"]
    assert {entry["item_id"] for entry in archive} == {first["id"], second["id"]}

    # Another patient of the same clinic sees none of it.
    other = bearer(settings, "patient", "org-a", patient=await register(client, clinician, "MRN-2"))
    assert (await client.get("/v1/me/appointments", headers=other)).json()["items"] == []
    for attachment in mine[0]["attachments"]:
        assert_problem(await client.get(attachment["url"], headers=other), 404, "not-found")
    assert (await client.get("/v1/me/notifications", headers=other)).json()["items"] == []
    listed = (await client.get(f"/v1/patients/{patient_id}/appointments", headers=clinician)).json()["items"]
    assert [(m["id"], m["booked_by"]) for m in listed] == [(second["id"], "dr-a"), (first["id"], "dr-a")]


async def test_other_organisations_and_patients_cannot_book(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient: dict[str, str],
    patient_id: str,
) -> None:
    outsider = bearer(settings, "clinician", "org-b", sub="dr-b")
    theirs = (await client.post(TYPES, json={"name": "Clinic B"}, headers=outsider)).json()["id"]
    response = await client.post(
        f"/v1/patients/{patient_id}/appointments", json={"type_id": theirs, "starts_at": STARTS_AT}, headers=clinician
    )
    assert_problem(response, 404, "not-found")
    # Nor can org-b book org-a's patient, or list their appointments.
    mine = (await client.post(TYPES, json={"name": "Clinic A"}, headers=clinician)).json()["id"]
    response = await client.post(
        f"/v1/patients/{patient_id}/appointments", json={"type_id": mine, "starts_at": STARTS_AT}, headers=outsider
    )
    assert_problem(response, 404, "not-found")
    assert_problem(await client.get(f"/v1/patients/{patient_id}/appointments", headers=outsider), 404, "not-found")
    assert (await client.get(f"/v1/patients/{patient_id}/appointments", headers=clinician)).json()["items"] == []
    response = await client.post(
        f"/v1/patients/{patient_id}/appointments", json={"type_id": mine, "starts_at": STARTS_AT}, headers=patient
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(await client.get(f"/v1/patients/{patient_id}/appointments", headers=patient), 403, "forbidden")
    assert_problem(await client.get(TYPES, headers=patient), 403, "forbidden")


async def test_a_start_without_offset_or_unreadable_is_refused(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient: dict[str, str], patient_id: str
) -> None:
    tid = (await client.post(TYPES, json={"name": "Clinic"}, headers=clinician)).json()["id"]
    for starts_at, says in (
        ("2030-03-04T09:30:00", "time zone offset"),
        ("next Tuesday", "ISO 8601"),
        ("2030-02-30T09:30:00+00:00", "ISO 8601"),
    ):
        response = await client.post(
            f"/v1/patients/{patient_id}/appointments", json={"type_id": tid, "starts_at": starts_at}, headers=clinician
        )
        problem = assert_problem(response, 422, "invalid-request")
        assert problem["errors"][0].startswith("$.starts_at: ")
        assert says in problem["detail"]
    assert (await client.get("/v1/me/appointments", headers=patient)).json()["items"] == []
    assert (await client.get("/v1/me/notifications", headers=patient)).json()["items"] == []
