"""A little of everything through the HTTP API, so path parameters can name real objects (``careshare.testing.seed``).

:func:`seed` creates, for one clinician and one of their patients, an object behind every path
parameter the built-in routes take, and returns their ids keyed by the route prefix that ends in
the parameter (``"/v1/patients/{pid}"``, ``"/v1/appointment-types/{tid}/attachments/{aid}"``).
:func:`fill_path` then turns a route path into a real address. It works on any ``httpx.AsyncClient``
(a Litestar ``AsyncTestClient`` too), against an app in process or a real server.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["PARAMETER", "Seeded", "fill_path", "prefixes", "seed"]

#: A path parameter as the route table writes it (``{pid:str}``) or the OpenAPI does (``{pid}``).
PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")
_WAIT = {"Prefer": "wait=30"}


def prefixes(path: str) -> list[tuple[str, str]]:
    """``(parameter, prefix ending in it)`` for each path parameter, in the OpenAPI's spelling."""
    plain = PARAMETER.sub(lambda m: "{" + m.group(1) + "}", path)
    return [(m.group(1), plain[: m.end()]) for m in PARAMETER.finditer(plain)]


def fill_path(path: str, ids: dict[str, str]) -> str | None:
    """``path`` with each parameter replaced by the seeded id for its prefix; None if one has none."""
    plain = PARAMETER.sub(lambda m: "{" + m.group(1) + "}", path)
    for name, prefix in prefixes(path):
        if prefix not in ids:
            return None
        plain = plain.replace("{" + name + "}", ids[prefix], 1)
    return plain


class Seeded(dict[str, str]):
    """Ids by route prefix, plus the patient's id as ``patient``."""


async def _json(response: httpx.Response, status: int | tuple[int, ...] = 201) -> Any:
    wanted = (status,) if isinstance(status, int) else status
    assert response.status_code in wanted, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


async def seed(
    client: httpx.AsyncClient, clinician: dict[str, str], patient_of: Any, *, pdf: bytes, tag: str = "seed"
) -> Seeded:
    """Create one of everything for ``clinician``'s organisation; ``patient_of(pid)`` gives a patient's headers."""
    ids = Seeded()
    post, get = client.post, client.get

    patient = await _json(
        await post(
            "/v1/patients",
            json={"name": "Seed Patient", "external_id": f"{tag}-1", "email": "p@example.org"},
            headers=clinician,
        )
    )
    pid = patient["id"]
    ids["patient"] = pid
    ids["/v1/patients/{pid}"] = pid
    me = patient_of(pid)

    clinic_file = await _json(
        await post(
            f"/v1/patients/{pid}/files", params={"filename": "scan.pdf"}, content=pdf, headers={**clinician, **_WAIT}
        )
    )
    library_file = await _json(
        await post("/v1/library/files", params={"filename": "leaflet.pdf"}, content=pdf, headers={**clinician, **_WAIT})
    )
    # The patient's own upload: the file route the patient may read (their clinic's files they may not).
    sent_file = await _json(
        await post("/v1/me/files", params={"filename": "mine.pdf"}, content=pdf, headers={**me, **_WAIT})
    )
    ids["/v1/files/{fid}"] = sent_file["id"]
    ids["clinic_file"] = clinic_file["id"]
    ids["library_file"] = library_file["id"]

    await _json(
        await post(
            f"/v1/patients/{pid}/messages", json={"body": "Hello", "file_ids": [clinic_file["id"]]}, headers=clinician
        )
    )

    # Letters: a template, a draft with a file on it, and a sent letter (the patient sees sent ones only).
    template = await _json(
        await post(
            "/v1/letter-templates",
            json={"name": "Plain", "subject": "Your visit", "body": "Dear {{ patient.name }}"},
            headers=clinician,
        )
    )
    ids["/v1/letter-templates/{tid}"] = template["id"]
    draft = await _json(
        await post(f"/v1/patients/{pid}/letters", json={"template_id": template["id"]}, headers=clinician)
    )
    attached = await _json(
        await post(f"/v1/letters/{draft['id']}/attachments", json={"file_id": library_file["id"]}, headers=clinician)
    )
    ids["/v1/letters/{lid}"] = draft["id"]
    ids["/v1/letters/{lid}/attachments/{aid}"] = attached["attachments"][0]["id"]
    sent = await _json(
        await post(f"/v1/patients/{pid}/letters", json={"subject": "Results", "body": "All fine."}, headers=clinician)
    )
    await _json(await post(f"/v1/letters/{sent['id']}/send", json={"email": False}, headers=clinician), 200)
    ids["/v1/me/letters/{lid}"] = sent["id"]
    ids["sent_letter"] = sent["id"]

    # A file request the patient answered with a file.
    asked = await _json(
        await post(
            f"/v1/patients/{pid}/file-requests",
            json={
                "message": "A photo please",
                "accepted_kinds": ["pdf"],
                "max_files": 3,
                "due_at": "2030-01-01T00:00:00+00:00",
            },
            headers=clinician,
        )
    )
    rid = asked["id"]
    answer = await _json(
        await post(
            f"/v1/me/file-requests/{rid}/files", params={"filename": "answer.pdf"}, content=pdf, headers={**me, **_WAIT}
        )
    )
    ids["/v1/file-requests/{rid}"] = rid
    ids["/v1/me/file-requests/{rid}"] = rid
    ids["/v1/file-requests/{rid}/files/{fid}"] = answer["file"]["id"]

    # Appointment and medication types (templates), each with a library file, then one of each for the patient.
    for kind in ("appointment-types", "medication-types"):
        made = await _json(await post(f"/v1/{kind}", json={"name": f"Seed {kind}"}, headers=clinician))
        with_file = await _json(
            await post(f"/v1/{kind}/{made['id']}/attachments", json={"file_id": library_file["id"]}, headers=clinician)
        )
        ids[f"/v1/{kind}/{{tid}}"] = made["id"]
        ids[f"/v1/{kind}/{{tid}}/attachments/{{aid}}"] = with_file["attachments"][0]["id"]
    booked = await _json(
        await post(
            f"/v1/patients/{pid}/appointments",
            json={"type_id": ids["/v1/appointment-types/{tid}"], "starts_at": "2030-03-04T09:30:00+01:00"},
            headers=clinician,
        )
    )
    ids["/v1/attachments/{aid}"] = booked["attachments"][0]["id"]
    medication = await _json(
        await post(
            f"/v1/patients/{pid}/medications",
            json={
                "type_id": ids["/v1/medication-types/{tid}"],
                "schedule": {"times": ["08:00"], "start": "2030-01-01"},
            },
            headers=clinician,
        )
    )
    ids["/v1/medications/{mid}"] = medication["id"]

    # Consents: an information pack with a file, a form of it, a consent asked of the patient.
    pack = await _json(await post("/v1/information-packs", json={"name": "About the procedure"}, headers=clinician))
    pack_file = await _json(
        await post(
            f"/v1/information-packs/{pack['id']}/attachments", json={"file_id": library_file["id"]}, headers=clinician
        )
    )
    ids["/v1/information-packs/{pack_id}"] = pack["id"]
    ids["/v1/information-packs/{pack_id}/attachments/{aid}"] = pack_file["id"]
    form = await _json(
        await post(
            "/v1/consent-forms", json={"name": "Consent", "information_pack_ids": [pack["id"]]}, headers=clinician
        )
    )
    ids["/v1/consent-forms/{form_id}"] = form["id"]
    consent = await _json(await post(f"/v1/patients/{pid}/consents", json={"form_id": form["id"]}, headers=clinician))
    ids["/v1/consents/{cid}"] = consent["id"]
    ids["/v1/me/consents/{cid}"] = consent["id"]

    inbox = await _json(await get("/v1/me/notifications", headers=me), 200)
    ids["/v1/me/notifications/{nid}"] = inbox["items"][0]["id"]

    # Expiring links (where the server has them): one to a file, one to an attachment.
    for route, prefix in (
        (f"/v1/files/{sent_file['id']}/links", "/v1/files/{fid}/links/{lid}"),
        (f"/v1/attachments/{ids['/v1/attachments/{aid}']}/links", "/v1/attachments/{aid}/links/{lid}"),
    ):
        made = await post(route, json={}, headers=clinician)
        if made.status_code == 201:
            ids[prefix] = made.json()["id"]
            ids["/v1/links/{token}"] = made.json()["url"].rsplit("/", 1)[1]

    # Resumable uploads (tus), one by the patient and one by the clinic, both left unfinished.
    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": str(len(pdf))}
    for headers, route in ((me, "/v1/me/uploads"), (clinician, f"/v1/patients/{pid}/uploads")):
        created = await post(route, headers={**headers, **tus})
        assert created.status_code == 201, created.text
        prefix = "/v1/me/uploads/{uid}" if route == "/v1/me/uploads" else "/v1/patients/{pid}/uploads/{uid}"
        ids[prefix] = created.headers["location"].rstrip("/").rsplit("/", 1)[1]
    return ids
