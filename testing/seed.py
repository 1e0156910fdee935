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

import attrs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx

__all__ = [
    "CHANNEL_PARTS",
    "PARAMETER",
    "Seeded",
    "Seeding",
    "fill_path",
    "prefixes",
    "seed",
    "seed_appointments",
    "seed_chat",
    "seed_consents",
    "seed_file_requests",
    "seed_files",
    "seed_letters",
    "seed_medication",
    "seed_shared",
]

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


@attrs.define
class Seeding:
    """Who seeds, for which patient: the clinician's headers, the patient's id and headers, the PDF to upload.

    ``library``: where the library file the parts attach comes from (the contract kit's sample);
    else one PDF is uploaded to the library, once.
    """

    client: httpx.AsyncClient
    clinician: dict[str, str]
    patient_id: str
    me: dict[str, str]
    pdf: bytes
    library: Callable[[], Awaitable[str]] | None = None
    _library_id: str | None = None

    async def post(self, path: str, status: int = 201, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", self.clinician)
        return await _json(await self.client.post(path, **kwargs), status)

    async def upload(self, path: str, filename: str, headers: dict[str, str] | None = None) -> Any:
        """A PDF uploaded to ``path``, answered once its check is done."""
        return await self.post(
            path, params={"filename": filename}, content=self.pdf, headers={**(headers or self.clinician), **_WAIT}
        )

    async def library_file(self) -> str:
        if self._library_id is None:
            if self.library is not None:
                self._library_id = await self.library()
            else:
                self._library_id = str((await self.upload("/v1/library/files", "leaflet.pdf"))["id"])
        return self._library_id


# -- one part per channel: an object behind each parameter of its routes ---------------------------


async def seed_files(s: Seeding) -> dict[str, str]:
    """The host's files: one of the clinic's for the patient, one in the library, one the patient sent."""
    clinic_file = await s.upload(f"/v1/patients/{s.patient_id}/files", "scan.pdf")
    library_file = await s.library_file()
    # The patient's own upload: the file route the patient may read (their clinic's files they may not).
    sent_file = await s.upload("/v1/me/files", "mine.pdf", headers=s.me)
    return {"/v1/files/{fid}": sent_file["id"], "clinic_file": clinic_file["id"], "library_file": library_file}


async def seed_chat(s: Seeding) -> dict[str, str]:
    clinic_file = await s.upload(f"/v1/patients/{s.patient_id}/files", "chat.pdf")
    await s.post(f"/v1/patients/{s.patient_id}/messages", json={"body": "Hello", "file_ids": [clinic_file["id"]]})
    return {}


async def seed_letters(s: Seeding) -> dict[str, str]:
    """A template, a draft with a file on it, and a sent letter (the patient sees sent ones only)."""
    template = await s.post(
        "/v1/letter-templates", json={"name": "Plain", "subject": "Your visit", "body": "Dear {{ patient.name }}"}
    )
    draft = await s.post(f"/v1/patients/{s.patient_id}/letters", json={"template_id": template["id"]})
    library = await s.library_file()
    attached = await s.post(f"/v1/letters/{draft['id']}/attachments", json={"file_id": library})
    sent = await s.post(f"/v1/patients/{s.patient_id}/letters", json={"subject": "Results", "body": "All fine."})
    await s.post(f"/v1/letters/{sent['id']}/send", 200, json={"email": False})
    return {
        "/v1/letter-templates/{tid}": template["id"],
        "/v1/letters/{lid}": draft["id"],
        "/v1/letters/{lid}/attachments/{aid}": attached["attachments"][0]["id"],
        "/v1/me/letters/{lid}": sent["id"],
        "sent_letter": sent["id"],
        "library_file": library,
    }


async def seed_file_requests(s: Seeding) -> dict[str, str]:
    """A file request the patient answered with a file."""
    asked = await s.post(
        f"/v1/patients/{s.patient_id}/file-requests",
        json={
            "message": "A photo please",
            "accepted_kinds": ["pdf"],
            "max_files": 3,
            "due_at": "2030-01-01T00:00:00+00:00",
        },
    )
    rid = asked["id"]
    answer = await s.upload(f"/v1/me/file-requests/{rid}/files", "answer.pdf", headers=s.me)
    return {
        "/v1/file-requests/{rid}": rid,
        "/v1/me/file-requests/{rid}": rid,
        "/v1/file-requests/{rid}/files/{fid}": answer["file"]["id"],
    }


async def _template(s: Seeding, kind: str) -> dict[str, str]:
    """A template (appointment or medication type, information pack) with a library file."""
    made = await s.post(f"/v1/{kind}", json={"name": f"Seed {kind}"})
    library = await s.library_file()
    with_file = await s.post(f"/v1/{kind}/{made['id']}/attachments", json={"file_id": library})
    return {
        "library_file": library,
        f"/v1/{kind}/{{tid}}": made["id"],
        f"/v1/{kind}/{{tid}}/attachments/{{aid}}": with_file["attachments"][0]["id"],
    }


async def seed_appointments(s: Seeding) -> dict[str, str]:
    """An appointment type with a file, and one appointment of it for the patient (its attachment is the patient's)."""
    ids = await _template(s, "appointment-types")
    booked = await s.post(
        f"/v1/patients/{s.patient_id}/appointments",
        json={"type_id": ids["/v1/appointment-types/{tid}"], "starts_at": "2030-03-04T09:30:00+01:00"},
    )
    return {**ids, "/v1/attachments/{aid}": booked["attachments"][0]["id"]}


async def seed_medication(s: Seeding) -> dict[str, str]:
    ids = await _template(s, "medication-types")
    medication = await s.post(
        f"/v1/patients/{s.patient_id}/medications",
        json={"type_id": ids["/v1/medication-types/{tid}"], "schedule": {"times": ["08:00"], "start": "2030-01-01"}},
    )
    return {**ids, "/v1/medications/{mid}": medication["id"]}


async def seed_consents(s: Seeding) -> dict[str, str]:
    """An information pack with a file, a form of it, a consent asked of the patient."""
    ids = await _template(s, "information-packs")
    pack = ids["/v1/information-packs/{tid}"]
    form = await s.post("/v1/consent-forms", json={"name": "Consent", "information_pack_ids": [pack]})
    consent = await s.post(f"/v1/patients/{s.patient_id}/consents", json={"form_id": form["id"]})
    return {
        **ids,
        "/v1/consent-forms/{form_id}": form["id"],
        "/v1/consents/{cid}": consent["id"],
        "/v1/me/consents/{cid}": consent["id"],
    }


async def seed_shared(s: Seeding, ids: dict[str, str]) -> dict[str, str]:
    """After the channels: the patient's and the clinic's first notification, an attachment, links to them, unfinished uploads.

    And a shared item to revoke (``/v1/shares/{target}/{item_id}``): a chat message where chat is
    loaded (no route reads one message), else the oldest share no seeded route names.
    """
    found: dict[str, str] = {}
    archive = await _json(await s.client.get("/v1/me/archive", headers=s.me), 200)
    shared = [e for entries in archive["channels"].values() for e in entries if e["item_id"] not in ids.values()]
    assert shared, "nothing shared with the patient is free to revoke: /v1/shares/{target}/{item_id} goes unchecked"
    revocable = next((e for e in shared if e["target"] == "chat-message"), shared[-1])
    found["/v1/shares/{target}"] = revocable["target"]
    found["/v1/shares/{target}/{item_id}"] = revocable["item_id"]
    inbox = await _json(await s.client.get("/v1/me/notifications", headers=s.me), 200)
    assert inbox["items"], "no channel shared anything with the patient: the host's notification routes go unchecked"
    found["/v1/me/notifications/{nid}"] = inbox["items"][0]["id"]
    # The clinic's inbox: the patient's own upload (seed_files) told the clinic.
    clinic_inbox = await _json(await s.client.get("/v1/notifications", headers=s.clinician), 200)
    assert clinic_inbox["items"], "no patient event told the clinic: the clinic's notification routes go unchecked"
    found["/v1/notifications/{nid}"] = clinic_inbox["items"][0]["id"]
    if "/v1/attachments/{aid}" not in ids:
        attachments = [a for entries in archive["channels"].values() for e in entries for a in e["attachments"]]
        assert attachments, "nothing shared with the patient carries a file: /v1/attachments/{aid} goes unchecked"
        found["/v1/attachments/{aid}"] = attachments[0]["id"]
    # Expiring links (where the server has them): one to a file, one to an attachment.
    for route, prefix in (
        (f"/v1/files/{ids['/v1/files/{fid}']}/links", "/v1/files/{fid}/links/{lid}"),
        (
            f"/v1/attachments/{ids.get('/v1/attachments/{aid}') or found['/v1/attachments/{aid}']}/links",
            "/v1/attachments/{aid}/links/{lid}",
        ),
    ):
        made = await s.client.post(route, json={}, headers=s.clinician)
        if made.status_code == 201:
            found[prefix] = made.json()["id"]
            found["/v1/links/{token}"] = made.json()["url"].rsplit("/", 1)[1]
    # Resumable uploads (tus), one by the patient and one by the clinic, both left unfinished.
    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": str(len(s.pdf))}
    for headers, route in ((s.me, "/v1/me/uploads"), (s.clinician, f"/v1/patients/{s.patient_id}/uploads")):
        created = await s.client.post(route, headers={**headers, **tus})
        assert created.status_code == 201, created.text
        prefix = "/v1/me/uploads/{uid}" if route == "/v1/me/uploads" else "/v1/patients/{pid}/uploads/{uid}"
        found[prefix] = created.headers["location"].rstrip("/").rsplit("/", 1)[1]
    return found


#: The built-in channels' parts, in the order :func:`seed` runs them.
CHANNEL_PARTS = (seed_chat, seed_letters, seed_file_requests, seed_appointments, seed_medication, seed_consents)


async def seed(
    client: httpx.AsyncClient,
    clinician: dict[str, str],
    patient_of: Any,
    *,
    pdf: bytes,
    tag: str = "seed",
    patient_id: str | None = None,
) -> Seeded:
    """Create one of everything for ``clinician``'s organisation; ``patient_of(pid)`` gives a patient's headers.

    The objects are for ``patient_id`` when given, else for a new patient ("Seed Patient").
    """
    if patient_id is None:
        patient = await _json(
            await client.post(
                "/v1/patients",
                json={"name": "Seed Patient", "external_id": f"{tag}-1", "email": "p@example.org"},
                headers=clinician,
            )
        )
        patient_id = str(patient["id"])
    s = Seeding(client, clinician, patient_id, patient_of(patient_id), pdf)
    ids = Seeded({"patient": patient_id, "/v1/patients/{pid}": patient_id})
    ids.update(await seed_files(s))
    for part in CHANNEL_PARTS:
        ids.update(await part(s))
    ids.update(await seed_shared(s, ids))
    return ids
