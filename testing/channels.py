"""The built-in channels' contracts: how the contract kit drives their routes (``careshare.testing.channels``).

Each built-in channel's ``careshare_contract`` hook returns its :class:`~careshare.testing.contract.Contract`
from here, exactly as an outside channel returns its own, so the attachment matrix and the authz
matrix of the built-ins are the kit's tests run on them (``tests/test_attachment_matrix.py``,
``tests/test_authz_matrix.py``). An adapter is about 15 lines; copy one for a channel of your own.

Each contract seeds its own channel (one part of :mod:`careshare.testing.seed` each) and gives the
bodies of its own routes, so the kit runs on one built-in channel as on all of them; :data:`HOST`
does the same for the host's routes when the kit runs on every route of the app.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from careshare.host.routes.docs import ASSETS
from careshare.testing import make_pdf
from careshare.testing.contract import Contract
from careshare.testing.seed import (
    Seeding,
    seed_appointments,
    seed_chat,
    seed_consents,
    seed_file_requests,
    seed_files,
    seed_letters,
    seed_medication,
    seed_shared,
)
from careshare.testing.targets import KINDS, Adapter, Sample, World, outcome, predict_batch, sample_file

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    import httpx
    from hypothesis.strategies import DrawFn

__all__ = [
    "APPOINTMENTS",
    "CHAT",
    "CONSENTS",
    "FILE_REQUESTS",
    "HOST",
    "LETTERS",
    "MEDICATION",
    "ChatMessage",
    "FileRequest",
    "Letter",
    "Template",
    "seed_host",
]

FAR_FUTURE = "2999-01-01T00:00:00+00:00"
#: Chat's own limit (``careshare.plugins.chat.MAX_FILES``), read here so the kit needs no chat import.
CHAT_MAX_FILES = 10
PDF = make_pdf()
TUS = {"Tus-Resumable": "1.0.0"}


# -- the adapters --------------------------------------------------------------------------------


class ChatMessage(Adapter):
    target = "chat-message"
    batch = CHAT_MAX_FILES + 1  # one more than a message carries: the count rule is tried too
    item_per_request = True
    shares = True

    def predict(
        self, rules: Mapping[str, Any], files: Sequence[Sample], attached: Sequence[int], *, is_draft: bool
    ) -> str | None:
        # Chat refuses a message of more files than it carries before it looks at any of them.
        if len(files) > rules["max_count"]:
            return "too-many-attachments"
        return predict_batch(rules, files, attached, is_draft=is_draft)

    async def attach(self, world: World, item: Any, files: Sequence[Sample]) -> httpx.Response:
        return await world.client.post(
            f"/v1/patients/{world.patient_id}/messages",
            json={"body": world.clinical_text, "file_ids": [f.file_id for f in files]},
            headers=world.clinician,
        )

    async def share(self, world: World, item: Any, files: Sequence[Sample]) -> str:
        response = await self.attach(world, item, files)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


class Template(Adapter):
    """A template (information pack, appointment or medication type): made empty, then files attach one by one."""

    def __init__(self, target: str, base: str, *, book: str | None = None) -> None:
        self.target = target
        self.base = base
        #: The patient's route that makes an item of this template (an appointment of its type).
        self.book = book
        self.shares = book is not None

    async def new_item(self, world: World, rules: Mapping[str, Any]) -> str:
        response = await world.client.post(self.base, json={"name": "Template"}, headers=world.clinician)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def attach(self, world: World, item: Any, files: Sequence[Sample]) -> httpx.Response:
        [file] = files
        return await world.client.post(
            f"{self.base}/{item}/attachments", json={"file_id": file.file_id}, headers=world.clinician
        )

    async def share(self, world: World, item: Any, files: Sequence[Sample]) -> str:
        assert self.book is not None
        response = await world.client.post(
            self.book.format(pid=world.patient_id),
            json={"type_id": item, "starts_at": "2030-05-01T10:00:00+00:00"},
            headers=world.clinician,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


class Letter(Adapter):
    """A draft for the patient takes files one by one; once sent, every attachment is ``draft-required``."""

    target = "letter"
    can_finish = True
    shares = True

    async def new_item(self, world: World, rules: Mapping[str, Any]) -> str:
        response = await world.client.post(
            f"/v1/patients/{world.patient_id}/letters",
            json={"subject": world.clinical_text, "body": "Dear patient"},
            headers=world.clinician,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def attach(self, world: World, item: Any, files: Sequence[Sample]) -> httpx.Response:
        [file] = files
        return await world.client.post(
            f"/v1/letters/{item}/attachments", json={"file_id": file.file_id}, headers=world.clinician
        )

    async def finish(self, world: World, item: Any) -> None:
        response = await world.client.post(f"/v1/letters/{item}/send", json={"email": False}, headers=world.clinician)
        # A plan may send twice: a sent letter is not sent again.
        assert response.status_code == 200 or outcome(response) == "draft-required", response.text

    async def share(self, world: World, item: Any, files: Sequence[Sample]) -> str:
        await self.finish(world, item)
        return str(item)


class FileRequest(Adapter):
    """Not a declared target: each request says which kinds and how many; the patient answers by uploading."""

    target = "file-request"
    declared = False
    sources = ("patient",)

    def draw_rules(self, draw: DrawFn, declared: Mapping[str, Any] | None) -> Mapping[str, Any]:
        kinds = draw(st.frozensets(st.sampled_from(KINDS), min_size=1))
        return {"accepts": sorted(kinds), "max_count": draw(st.integers(1, 4)), "rendition": "original"}

    def predict(
        self, rules: Mapping[str, Any], files: Sequence[Sample], attached: Sequence[int], *, is_draft: bool
    ) -> str | None:
        [file] = files
        # The count is checked before the upload is read, the kind once the bytes are identified.
        if len(attached) >= rules["max_count"]:
            return "too-many-files-for-request"
        return None if file.kind in rules["accepts"] else "kind-not-requested"

    async def new_item(self, world: World, rules: Mapping[str, Any]) -> str:
        body = {"message": "Please send", "accepted_kinds": rules["accepts"], "max_files": rules["max_count"]}
        response = await world.client.post(
            f"/v1/patients/{world.patient_id}/file-requests",
            json={**body, "due_at": FAR_FUTURE},
            headers=world.clinician,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def attach(self, world: World, item: Any, files: Sequence[Sample]) -> httpx.Response:
        [file] = files
        return await world.client.post(
            f"/v1/me/file-requests/{item}/files", content=sample_file(file.kind), headers=world.patient
        )


# -- seeds and bodies of the built-in routes -----------------------------------------------------


def _seeding(world: World) -> Seeding:
    async def library() -> str:
        return (await world.sample("pdf", "library")).file_id

    return Seeding(world.client, world.clinician, world.patient_id, world.patient, PDF, library=library)


def _seeder(part: Callable[[Seeding], Awaitable[dict[str, str]]]) -> Callable[[World], Awaitable[dict[str, str]]]:
    async def run(world: World) -> dict[str, str]:
        return await part(_seeding(world))

    run.__qualname__ = run.__name__ = part.__name__
    return run


async def seed_host(world: World) -> dict[str, str]:
    """The host's objects: files, then what the channels shared (its kit runs after theirs)."""
    s = _seeding(world)
    ids = await seed_files(s)
    # The schema's own files (``/schema/{path}``) and Swagger UI's assets are named, not made.
    named = {"/schema/{path}": "openapi.yaml", ASSETS + "/{name}": "swagger-ui.css"}
    return {**ids, **await seed_shared(s, ids), **named}


UPLOAD = {"content": PDF, "params": {"filename": "matrix.pdf"}, "headers": {"Prefer": "respond-async"}}


def _library(ids: Mapping[str, str]) -> dict[str, Any]:
    return {"json": {"file_id": ids["library_file"]}}


def host_bodies(ids: Mapping[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    tus_paths = ("/v1/me/uploads/{uid}", "/v1/patients/{pid}/uploads/{uid}")
    return {
        ("POST", "/v1/patients"): {"json": {"name": "Matrix Patient", "external_id": f"matrix-{time.time_ns()}"}},
        ("PATCH", "/v1/patients/{pid}"): {"json": {"name": "Matrix Patient"}},
        # A dry run: the matrix's patient must outlive the check of this route.
        ("POST", "/v1/patients/{pid}/erase"): {"json": {"external_id": "contract-1", "dry_run": True}},
        ("POST", "/v1/patients/{pid}/files"): UPLOAD,
        ("POST", "/v1/library/files"): UPLOAD,
        ("POST", "/v1/me/files"): UPLOAD,
        ("POST", "/v1/files/{fid}/render"): {"json": {}},
        ("POST", "/v1/files/{fid}/links"): {"json": {}},
        ("POST", "/v1/attachments/{aid}/links"): {"json": {}},
        ("POST", "/v1/attachments/{aid}/revoke"): {"json": {"reason": "Authz matrix"}},
        ("POST", "/v1/shares/{target}/{item_id}/revoke"): {"json": {"reason": "Authz matrix"}},
        ("POST", "/v1/me/uploads"): {"headers": {**TUS, "Upload-Length": "10"}},
        ("POST", "/v1/patients/{pid}/uploads"): {"headers": {**TUS, "Upload-Length": "10"}},
        **{(method, path): {"headers": TUS} for path in tus_paths for method in ("HEAD", "GET", "DELETE")},
        **{
            ("PATCH", path): {
                "content": b"0123456789",
                "headers": {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
            }
            for path in tus_paths
        },
    }


def chat_bodies(ids: Mapping[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        ("POST", "/v1/patients/{pid}/messages"): {"json": {"body": "Hello"}},
        ("POST", "/v1/me/messages"): {"json": {"body": "Hello"}},
    }


def letter_bodies(ids: Mapping[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        ("POST", "/v1/letters/{lid}/attachments"): _library(ids),
        ("POST", "/v1/letter-templates"): {"json": {"name": "M", "subject": "S", "body": "B"}},
        ("POST", "/v1/patients/{pid}/letters"): {"json": {"subject": "S", "body": "B"}},
        ("PATCH", "/v1/letters/{lid}"): {"json": {"subject": "Edited"}},
        ("POST", "/v1/letters/{lid}/send"): {"json": {"email": False}},
        ("PUT", "/v1/letter-settings"): {"json": {"organisation_name": "Matrix Clinic"}},
    }


def file_request_bodies(ids: Mapping[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        ("POST", "/v1/me/file-requests/{rid}/files"): UPLOAD,
        ("POST", "/v1/patients/{pid}/file-requests"): {
            "json": {"message": "M", "accepted_kinds": ["pdf"], "max_files": 1, "due_at": "2030-01-01T00:00:00+00:00"}
        },
        ("POST", "/v1/file-requests/{rid}/files/{fid}/review"): {"json": {"decision": "accepted"}},
    }


def _template_bodies(kind: str, ids: Mapping[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    named = {"json": {"name": "Matrix"}}
    return {
        ("POST", f"/v1/{kind}"): named,
        ("PATCH", f"/v1/{kind}/{{tid}}"): named,
        ("POST", f"/v1/{kind}/{{tid}}/attachments"): _library(ids),
    }


def appointment_bodies(ids: Mapping[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        **_template_bodies("appointment-types", ids),
        ("POST", "/v1/patients/{pid}/appointments"): {
            "json": {"type_id": ids["/v1/appointment-types/{tid}"], "starts_at": "2030-05-01T10:00:00+00:00"}
        },
    }


def medication_bodies(ids: Mapping[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        **_template_bodies("medication-types", ids),
        ("POST", "/v1/patients/{pid}/medications"): {
            "json": {
                "type_id": ids["/v1/medication-types/{tid}"],
                "schedule": {"times": ["09:00"], "start": "2030-01-01"},
            }
        },
    }


def consent_bodies(ids: Mapping[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        **_template_bodies("information-packs", ids),
        ("POST", "/v1/consent-forms"): {
            "json": {"name": "F", "information_pack_ids": [ids["/v1/information-packs/{tid}"]]}
        },
        ("POST", "/v1/patients/{pid}/consents"): {"json": {"form_id": ids["/v1/consent-forms/{form_id}"]}},
        ("POST", "/v1/me/consents/{cid}/decision"): {"json": {"decision": "given"}},
    }


#: The host's own routes (patients, files, library, links, uploads, archive, inbox): checked when the
#: kit runs on every route of the app, after the channels (it seeds from what they shared). Public by
#: design: liveness, the OpenAPI description, tus discovery (``OPTIONS`` of the upload routes, asked
#: before sign-in) and the expiring links for people outside the app (the token in the address is the
#: credential).
HOST = Contract(
    seed=seed_host,
    bodies=host_bodies,
    public=frozenset(
        {
            ("GET", "/healthz"),
            ("GET", "/v1/links/{token}"),
            ("HEAD", "/v1/links/{token}"),
            ("OPTIONS", "/v1/me/uploads"),
            ("OPTIONS", "/v1/me/uploads/{uid}"),
            ("OPTIONS", "/v1/patients/{pid}/uploads"),
            ("OPTIONS", "/v1/patients/{pid}/uploads/{uid}"),
        }
    ),
    public_prefixes=("/schema",),
    # A link's address carries its own credential; the schema's file names are no seeded object.
    # A target's name (``/v1/shares/{target}``) is the channel's, public in ``GET /v1/targets``.
    not_secret=frozenset({"/v1/links/{token}", "/schema/{path}", ASSETS + "/{name}", "/v1/shares/{target}"}),
)
CHAT = Contract(adapters=[ChatMessage()], seed=_seeder(seed_chat), bodies=chat_bodies)
LETTERS = Contract(
    adapters=[Letter()],
    seed=_seeder(seed_letters),
    bodies=letter_bodies,
    not_readable={
        ("GET", "/v1/letters/{lid}/pdf"): "the seeded letter of /v1/letters/{lid} is a draft (for PATCH): no PDF",
    },
)
APPOINTMENTS = Contract(
    adapters=[Template("appointment-type", "/v1/appointment-types", book="/v1/patients/{pid}/appointments")],
    seed=_seeder(seed_appointments),
    bodies=appointment_bodies,
)
MEDICATION = Contract(
    adapters=[Template("medication-type", "/v1/medication-types")],
    seed=_seeder(seed_medication),
    bodies=medication_bodies,
)
CONSENTS = Contract(
    adapters=[Template("information-pack", "/v1/information-packs")],
    seed=_seeder(seed_consents),
    bodies=consent_bodies,
)
FILE_REQUESTS = Contract(adapters=[FileRequest()], seed=_seeder(seed_file_requests), bodies=file_request_bodies)
