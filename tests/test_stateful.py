"""A stateful property test of sharing: random sequences of uploads, sends, replies, file requests,
answers, reviews, reads and downloads by several clinicians and patients of two organisations.

The machine drives the real app over HTTP (Litestar's synchronous ``TestClient``: no event loop
inside Hypothesis) and keeps a plain model of what was shared with whom. After every step the
invariants compare the API with the model: a patient sees exactly what was shared with them, the
counts match, every notification points at an item of the archive and every notifying item has
its notification, reads are counted, attachments reach only their patient (and their clinic), and
the other organisation's clinician gets ``404`` for everything.
"""

from __future__ import annotations

import collections
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import attrs
import hypothesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from litestar.testing import TestClient

from careshare.host import create_app
from careshare.plugins.chat.routes import CLINIC_MESSAGE_TITLE, PATIENT_MESSAGE_TITLE
from careshare.plugins.requests.file_requests import REQUEST_TITLE
from careshare.testing import bearer, make_pdf, make_settings

# -- the cast ----------------------------------------------------------------------------------

ORG_A, ORG_B = "org-a", "org-b"
PATIENTS = ("pa1", "pa2", "pb1")
PATIENT_ORG = {"pa1": ORG_A, "pa2": ORG_A, "pb1": ORG_B}
CLINICIANS = ("dr-a1", "dr-a2", "dr-b")
CLINICIAN_ORG = {"dr-a1": ORG_A, "dr-a2": ORG_A, "dr-b": ORG_B}
ORG_CLINICIANS = {ORG_A: ("dr-a1", "dr-a2"), ORG_B: ("dr-b",)}
#: The clinician of the *other* organisation, who must see nothing of a patient's.
OUTSIDER = {ORG_A: "dr-b", ORG_B: "dr-a1"}
FAR_FUTURE = "2999-01-01T00:00:00+00:00"
#: An id shaped like the real ones that names nothing.
MISSING_ID = "01zzzzzzzzzzzzzzzzzzzzzzzz"
GARBAGE = b"not a file careshare shares\x00\x01\x02" * 8

CHAT, REQUESTS = "chat", "file-requests"
CHAT_TARGET, REQUEST_TARGET = "chat-message", "file-request"

# Sized for about half a minute on CI's busy workers under the "ci" profile (40 examples there:
# 5 sequences); the "thorough" profile (2000) runs hundreds of longer sequences.
_BASE_EXAMPLES = hypothesis.settings.default.max_examples
MAX_EXAMPLES = max(4, _BASE_EXAMPLES // 8)
STEP_COUNT = 20 if _BASE_EXAMPLES <= 100 else 40


@attrs.frozen
class FileRef:
    id: str
    org: str
    patient: str | None  # None: the organisation's library
    source: str  # "clinic" | "patient"
    shareable_sha256: str


@attrs.frozen
class MessageRef:
    id: str
    patient: str
    author_role: str


@attrs.frozen
class RequestRef:
    id: str
    patient: str


@attrs.frozen
class AnswerRef:
    request_id: str
    file_id: str
    patient: str


@attrs.define
class RequestModel:
    patient: str
    accepted_kinds: tuple[str, ...]
    max_files: int
    stored_status: str = "open"
    answers: dict[str, str] = attrs.Factory(dict)  # file id -> pending | accepted | rejected

    @property
    def is_open(self) -> bool:
        return self.stored_status in ("open", "answered")

    def count(self, decision: str) -> int:
        return sum(1 for d in self.answers.values() if d == decision)

    @property
    def remaining(self) -> int:
        return max(self.max_files - len(self.answers) + self.count("rejected"), 0) if self.is_open else 0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expect(response: Any, status: int, code: str | None = None) -> Any:
    """Assert the status (and the problem's code); the JSON body, if any."""
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    if code is not None:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        assert response.json()["code"] == code, response.text
    if response.headers.get("content-type", "").split(";")[0].endswith("json"):
        return response.json()
    return None


def shareable(file_json: dict[str, Any]) -> str:
    return next(r["sha256"] for r in file_json["renditions"] if r["role"] == "shareable")


class SharingMachine(RuleBasedStateMachine):
    files = Bundle("files")
    messages = Bundle("messages")
    requests = Bundle("requests")
    answers = Bundle("answers")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="careshare-stateful-"))
        self.settings = make_settings(self.tmp / "data")
        self.client = TestClient(app=create_app(self.settings))
        self.client.__enter__()
        self.counter = 0
        self.clinician = {
            name: bearer(self.settings, "clinician", org, sub=name) for name, org in CLINICIAN_ORG.items()
        }
        self.pid: dict[str, str] = {}
        for name in PATIENTS:
            created = expect(
                self.client.post(
                    "/v1/patients",
                    json={"name": f"Patient {name}", "external_id": f"MRN-{name}"},
                    headers=self.clinician[ORG_CLINICIANS[PATIENT_ORG[name]][0]],
                ),
                201,
            )
            self.pid[name] = created["id"]
        self.patient = {
            name: bearer(self.settings, "patient", PATIENT_ORG[name], patient=self.pid[name]) for name in PATIENTS
        }
        # The model: plain dicts of what exists and what was shared with whom.
        #: patient -> (channel, item id) -> {"target", "title", "attachments": [(attachment id, sha256)]}
        self.archive: dict[str, dict[tuple[str, str], dict[str, Any]]] = {p: {} for p in PATIENTS}
        #: patient -> every notification expected, as (kind, target, item id)
        self.notified: dict[str, list[tuple[str, str, str]]] = {p: [] for p in PATIENTS}
        #: patient -> ids of the notifications they marked read
        self.read: dict[str, set[str]] = {p: set() for p in PATIENTS}
        #: patient -> their chat messages (either author)
        self.conversation: dict[str, set[str]] = {p: set() for p in PATIENTS}
        #: patient -> ids of their files (clinic and patient sources); org -> library file ids
        self.patient_files: dict[str, set[str]] = {p: set() for p in PATIENTS}
        self.library: dict[str, set[str]] = {ORG_A: set(), ORG_B: set()}
        #: patient -> files the patient sent themselves (what they may attach to a reply)
        self.own_files: dict[str, list[FileRef]] = {p: [] for p in PATIENTS}
        self.requests_model: dict[str, RequestModel] = {}
        #: attachment id -> (patient, sha256); and those whose access was checked already
        self.attachments: dict[str, tuple[str, str]] = {}
        self.checked_attachments: set[str] = set()
        self.every_file: list[FileRef] = []

    def teardown(self) -> None:
        try:
            self.client.__exit__(None, None, None)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------------

    def pdf(self, label: str) -> bytes:
        self.counter += 1
        return make_pdf(text=f"{label}-{self.counter}")

    def org_clinician(self, patient: str, which: int) -> str:
        names = ORG_CLINICIANS[PATIENT_ORG[patient]]
        return names[which % len(names)]

    def usable_by_clinic(self, file: FileRef, patient: str) -> bool:
        """May a clinician attach ``file`` to a message for ``patient``: their file or the library."""
        return file.org == PATIENT_ORG[patient] and file.patient in (None, patient)

    def record_file(self, file_json: dict[str, Any], patient: str | None, org: str, source: str) -> FileRef:
        ref = FileRef(file_json["id"], org, patient, source, shareable(file_json))
        assert file_json["source"] == source or patient is None
        if patient is None:
            self.library[org].add(ref.id)
        else:
            self.patient_files[patient].add(ref.id)
            if source == "patient":
                self.own_files[patient].append(ref)
        self.every_file.append(ref)
        return ref

    def record_message(self, patient: str, sent: dict[str, Any], *, from_clinic: bool) -> MessageRef:
        mid = sent["id"]
        attached = [(a["id"], a["sha256"]) for a in sent["attachments"]]
        self.archive[patient][(CHAT, mid)] = {
            "target": CHAT_TARGET,
            "title": CLINIC_MESSAGE_TITLE if from_clinic else PATIENT_MESSAGE_TITLE,
            "attachments": attached,
        }
        if from_clinic:
            self.notified[patient].append(("message", CHAT_TARGET, mid))
        self.conversation[patient].add(mid)
        for aid, digest in attached:
            self.attachments[aid] = (patient, digest)
        return MessageRef(mid, patient, "clinician" if from_clinic else "patient")

    def all_pages(self, path: str, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
            page = expect(self.client.get(path, params=query, headers=headers), 200)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    def check_request_json(self, rid: str, shown: dict[str, Any]) -> None:
        model = self.requests_model[rid]
        assert shown["status"] == model.stored_status, (shown, model)
        assert shown["remaining"] == model.remaining, (shown, model)
        assert shown["counts"] == {d: model.count(d) for d in ("pending", "accepted", "rejected")}, (shown, model)
        assert {a["file_id"]: a["decision"] for a in shown["answers"]} == model.answers

    # -- a start, so that short runs still reach answers and reviews --------------------------------

    @initialize(target=files, patient=st.sampled_from(PATIENTS), which=st.integers(0, 1))
    def first_file(self, patient: str, which: int) -> FileRef:
        return self.clinician_uploads_to_patient(patient, which)

    @initialize(
        target=requests,
        patient=st.sampled_from(PATIENTS),
        which=st.integers(0, 1),
        kinds=st.sampled_from([("pdf",), ("image", "pdf")]),
        max_files=st.integers(1, 3),
    )
    def first_request(self, patient: str, which: int, kinds: tuple[str, ...], max_files: int) -> RequestRef:
        return self.clinician_requests_files(patient, which, kinds, max_files)

    # -- uploads -----------------------------------------------------------------------------------

    @rule(target=files, patient=st.sampled_from(PATIENTS), which=st.integers(0, 1))
    def clinician_uploads_to_patient(self, patient: str, which: int) -> FileRef:
        doctor = self.org_clinician(patient, which)
        uploaded = expect(
            self.client.post(
                f"/v1/patients/{self.pid[patient]}/files",
                content=self.pdf("clinic"),
                params={"filename": "results.pdf"},
                headers=self.clinician[doctor],
            ),
            201,
        )
        assert uploaded["owner"] == {"type": "patient", "id": self.pid[patient]}
        return self.record_file(uploaded, patient, PATIENT_ORG[patient], "clinic")

    @rule(target=files, doctor=st.sampled_from(CLINICIANS))
    def clinician_uploads_to_library(self, doctor: str) -> FileRef:
        org = CLINICIAN_ORG[doctor]
        uploaded = expect(
            self.client.post(
                "/v1/library/files",
                content=self.pdf("library"),
                params={"filename": "leaflet.pdf"},
                headers=self.clinician[doctor],
            ),
            201,
        )
        assert uploaded["owner"] == {"type": "library", "id": org}
        return self.record_file(uploaded, None, org, "clinic")

    @rule(target=files, patient=st.sampled_from(PATIENTS))
    def patient_uploads(self, patient: str) -> FileRef:
        uploaded = expect(
            self.client.post(
                "/v1/me/files",
                content=self.pdf("patient"),
                params={"filename": "photo-of-letter.pdf"},
                headers=self.patient[patient],
            ),
            201,
        )
        return self.record_file(uploaded, patient, PATIENT_ORG[patient], "patient")

    # -- chat ----------------------------------------------------------------------------------------

    @rule(
        target=messages,
        patient=st.sampled_from(PATIENTS),
        which=st.integers(0, 1),
        picked=st.lists(files, max_size=3),
        inline=st.booleans(),
    )
    def clinician_sends(self, patient: str, which: int, picked: list[FileRef], inline: bool) -> MessageRef:
        doctor = self.org_clinician(patient, which)
        chosen = list(dict.fromkeys(f for f in picked if self.usable_by_clinic(f, patient)))
        path = f"/v1/patients/{self.pid[patient]}/messages"
        headers = self.clinician[doctor]
        if inline:
            parts = [("file", ("scan.pdf", self.pdf("inline"), "application/octet-stream"))]
            fields = {"body": "Your results, attached.", "file_id": [f.id for f in chosen]}
            response = self.client.post(path, data=fields, files=parts, headers=headers)
        else:
            response = self.client.post(
                path, json={"body": "Please read this.", "file_ids": [f.id for f in chosen]}, headers=headers
            )
        sent = expect(response, 201)
        assert sent["author"] == doctor
        assert [a["file_id"] for a in sent["attachments"]][: len(chosen)] == [f.id for f in chosen]
        assert [a["sha256"] for a in sent["attachments"]][: len(chosen)] == [f.shareable_sha256 for f in chosen]
        assert len(sent["attachments"]) == len(chosen) + inline
        if inline:
            new_file = sent["attachments"][-1]
            self.patient_files[patient].add(new_file["file_id"])
        return self.record_message(patient, sent, from_clinic=True)

    @rule(
        target=messages,
        patient=st.sampled_from(PATIENTS),
        data=st.data(),
        inline=st.booleans(),
    )
    def patient_replies(self, patient: str, data: st.DataObject, inline: bool) -> MessageRef:
        own = self.own_files[patient]
        chosen = data.draw(st.lists(st.sampled_from(own), max_size=2, unique=True)) if own else []
        headers = self.patient[patient]
        if inline:
            parts = [("file", ("mine.pdf", self.pdf("reply"), "application/octet-stream"))]
            fields = {"body": "Thank you.", "file_id": [f.id for f in chosen]}
            response = self.client.post("/v1/me/messages", data=fields, files=parts, headers=headers)
        else:
            response = self.client.post(
                "/v1/me/messages", json={"body": "Thanks!", "file_ids": [f.id for f in chosen]}, headers=headers
            )
        sent = expect(response, 201)
        assert sent["author_role"] == "patient"
        assert "author" not in sent
        assert [a["sha256"] for a in sent["attachments"]][: len(chosen)] == [f.shareable_sha256 for f in chosen]
        assert len(sent["attachments"]) == len(chosen) + inline
        if inline:
            new_file = sent["attachments"][-1]
            self.patient_files[patient].add(new_file["file_id"])
            self.own_files[patient].append(
                FileRef(new_file["file_id"], PATIENT_ORG[patient], patient, "patient", new_file["sha256"])
            )
        return self.record_message(patient, sent, from_clinic=False)

    @rule(
        patient=st.sampled_from(PATIENTS),
        which=st.integers(0, 1),
        good=st.lists(files, max_size=2),
        bad_file=files,
        how=st.sampled_from(["picked", "missing", "garbage", "outsider", "patient-picks"]),
        bad_first=st.booleans(),
    )
    def failing_send_changes_nothing(
        self, patient: str, which: int, good: list[FileRef], bad_file: FileRef, how: str, bad_first: bool
    ) -> None:
        """A send with one bad part is refused whole: no message, file, share or notification.

        The model does not change, so the invariants after this step prove that nothing did.
        """
        chosen = [f.id for f in dict.fromkeys(f for f in good if self.usable_by_clinic(f, patient))]
        path = f"/v1/patients/{self.pid[patient]}/messages"
        headers = self.clinician[self.org_clinician(patient, which)]
        if how == "picked" and self.usable_by_clinic(bad_file, patient):
            how = "missing"
        if how == "garbage":
            parts = [
                ("file", ("good.pdf", self.pdf("doomed"), "application/octet-stream")),
                ("file", ("bad.bin", GARBAGE, "application/octet-stream")),
            ]
            if bad_first:
                parts.reverse()
            response = self.client.post(
                path, data={"body": "Two files.", "file_id": chosen}, files=parts, headers=headers
            )
            expect(response, 415, "unsupported-file-type")
            return
        if how == "outsider":
            # A clinician of the other organisation: the patient does not exist for them.
            outsider = self.clinician[OUTSIDER[PATIENT_ORG[patient]]]
            response = self.client.post(path, json={"body": "Hello", "file_ids": chosen}, headers=outsider)
            expect(response, 404, "not-found")
            return
        if how == "patient-picks":
            # A patient may attach only files they sent themselves.
            foreign = bad_file.id if bad_file.source != "patient" or bad_file.patient != patient else MISSING_ID
            mine = [f.id for f in self.own_files[patient][:1]]
            ids = [foreign, *mine] if bad_first else [*mine, foreign]
            response = self.client.post(
                "/v1/me/messages", json={"body": "See this", "file_ids": ids}, headers=self.patient[patient]
            )
            expect(response, 404, "not-found")
            return
        bad_id = bad_file.id if how == "picked" else MISSING_ID
        ids = [bad_id, *chosen] if bad_first else [*chosen, bad_id]
        response = self.client.post(path, json={"body": "Some files", "file_ids": ids}, headers=headers)
        if how == "picked" and bad_file.org == PATIENT_ORG[patient]:
            expect(response, 422, "file-not-available")  # another patient's file of the same clinic
        else:
            expect(response, 404, "not-found")  # another organisation's file, or none at all

    @rule(message=messages)
    def conversation_shows_message(self, message: MessageRef) -> None:
        item = self.archive[message.patient][(CHAT, message.id)]
        for headers, path in (
            (self.patient[message.patient], "/v1/me/messages"),
            (
                self.clinician[ORG_CLINICIANS[PATIENT_ORG[message.patient]][-1]],
                f"/v1/patients/{self.pid[message.patient]}/messages",
            ),
        ):
            shown = {m["id"]: m for m in self.all_pages(path, headers)}
            assert message.id in shown
            assert shown[message.id]["author_role"] == message.author_role
            assert [(a["id"], a["sha256"]) for a in shown[message.id]["attachments"]] == item["attachments"]
        for other in PATIENTS:
            if other != message.patient:
                ids = {m["id"] for m in self.all_pages("/v1/me/messages", self.patient[other])}
                assert message.id not in ids

    # -- file requests ------------------------------------------------------------------------------

    @rule(
        target=requests,
        patient=st.sampled_from(PATIENTS),
        which=st.integers(0, 1),
        kinds=st.sampled_from([("pdf",), ("image", "pdf"), ("dicom", "pdf", "video"), ("image",)]),
        max_files=st.integers(1, 3),
    )
    def clinician_requests_files(self, patient: str, which: int, kinds: tuple[str, ...], max_files: int) -> RequestRef:
        body = {"message": "Please send your last letter.", "accepted_kinds": list(kinds), "max_files": max_files}
        created = expect(
            self.client.post(
                f"/v1/patients/{self.pid[patient]}/file-requests",
                json={**body, "due_at": FAR_FUTURE},
                headers=self.clinician[self.org_clinician(patient, which)],
            ),
            201,
        )
        rid = created["id"]
        self.requests_model[rid] = RequestModel(patient, tuple(sorted(kinds)), max_files)
        self.check_request_json(rid, created)
        self.archive[patient][(REQUESTS, rid)] = {"target": REQUEST_TARGET, "title": REQUEST_TITLE, "attachments": []}
        self.notified[patient].append(("file-request", REQUEST_TARGET, rid))
        return RequestRef(rid, patient)

    @rule(target=answers, request=requests, intruder=st.integers(0, 4))
    def patient_answers(self, request: RequestRef, intruder: int) -> Any:
        model = self.requests_model[request.id]
        path = f"/v1/me/file-requests/{request.id}/files"
        content = self.pdf("answer")
        if intruder == 4:
            # Another patient (of either organisation) cannot even see the request.
            other = next(p for p in PATIENTS if p != request.patient)
            response = self.client.post(
                path, content=content, params={"filename": "a.pdf"}, headers=self.patient[other]
            )
            expect(response, 404, "not-found")
            return multiple()
        response = self.client.post(
            path, content=content, params={"filename": "letter.pdf"}, headers=self.patient[request.patient]
        )
        if not model.is_open:
            expect(response, 409, "request-closed")
            return multiple()
        if model.remaining == 0:
            expect(response, 422, "too-many-files-for-request")
            return multiple()
        if "pdf" not in model.accepted_kinds:
            expect(response, 422, "kind-not-requested")
            return multiple()
        answered = expect(response, 201)
        fid = answered["file"]["id"]
        model.answers[fid] = "pending"
        model.stored_status = "answered"
        self.check_request_json(request.id, answered["request"])
        self.record_file(answered["file"], request.patient, PATIENT_ORG[request.patient], "patient")
        return AnswerRef(request.id, fid, request.patient)

    @rule(
        answer=answers,
        which=st.integers(0, 2),
        decision=st.sampled_from(["rejected", "accepted"]),
    )
    def clinician_reviews(self, answer: AnswerRef, which: int, decision: str) -> None:
        model = self.requests_model[answer.request_id]
        org = PATIENT_ORG[answer.patient]
        path = f"/v1/file-requests/{answer.request_id}/files/{answer.file_id}/review"
        body = {
            "decision": decision,
            "reason": "It is blurred; please scan it again." if decision == "rejected" else None,
        }
        if which == 2:
            expect(self.client.post(path, json=body, headers=self.clinician[OUTSIDER[org]]), 404, "not-found")
            return
        response = self.client.post(path, json=body, headers=self.clinician[self.org_clinician(answer.patient, which)])
        if model.stored_status == "cancelled":
            expect(response, 409, "request-closed")
            return
        if model.answers[answer.file_id] != "pending":
            expect(response, 409, "answer-already-reviewed")
            return
        reviewed = expect(response, 200)
        if decision == "accepted" and model.is_open and model.count("accepted") + 1 >= model.max_files:
            model.stored_status = "completed"
        model.answers[answer.file_id] = decision
        if decision == "rejected":
            self.notified[answer.patient].append(("file-request-rejected", REQUEST_TARGET, answer.request_id))
        self.check_request_json(answer.request_id, reviewed)

    @rule(request=requests, action=st.sampled_from(["complete", "cancel"]))
    def clinician_closes_request(self, request: RequestRef, action: str) -> None:
        model = self.requests_model[request.id]
        doctor = ORG_CLINICIANS[PATIENT_ORG[request.patient]][0]
        response = self.client.post(f"/v1/file-requests/{request.id}/{action}", headers=self.clinician[doctor])
        if not model.is_open:
            expect(response, 409, "request-closed")
            return
        closed = expect(response, 200)
        model.stored_status = "completed" if action == "complete" else "cancelled"
        self.check_request_json(request.id, closed)

    # -- the patient reads ---------------------------------------------------------------------------

    @rule(patient=st.sampled_from(PATIENTS), data=st.data())
    def patient_reads_notification(self, patient: str, data: st.DataObject) -> None:
        inbox = self.all_pages("/v1/me/notifications", self.patient[patient])
        if not inbox:
            return
        chosen = data.draw(st.sampled_from(sorted(n["id"] for n in inbox)))
        for other in PATIENTS:
            if other != patient:
                path = f"/v1/me/notifications/{chosen}/read"
                expect(self.client.post(path, headers=self.patient[other]), 404, "not-found")
        marked = expect(self.client.post(f"/v1/me/notifications/{chosen}/read", headers=self.patient[patient]), 200)
        assert marked["id"] == chosen
        assert marked["read"] is True
        assert marked["read_at"] is not None
        self.read[patient].add(chosen)

    @precondition(lambda self: bool(self.attachments))
    @rule(data=st.data())
    def patient_downloads_attachment(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(sorted(self.attachments)))
        patient, digest = self.attachments[aid]
        response = self.client.get(f"/v1/attachments/{aid}/content", headers=self.patient[patient])
        expect(response, 200)
        assert sha256(response.content) == digest
        assert response.headers["etag"] == f'"{digest}"'

    # -- invariants ----------------------------------------------------------------------------------

    def fetch_archive(self, patient: str) -> dict[tuple[str, str], dict[str, Any]]:
        shown = expect(self.client.get("/v1/me/archive", headers=self.patient[patient]), 200)
        items = {(channel, item["item_id"]): item for channel, entries in shown["channels"].items() for item in entries}
        assert shown["count"] == len(items) == sum(len(v) for v in shown["channels"].values())
        return items

    @invariant()
    def patient_sees_exactly_what_was_shared(self) -> None:
        for patient in PATIENTS:
            shown = self.fetch_archive(patient)
            expected = self.archive[patient]
            assert set(shown) == set(expected), (patient, set(shown) ^ set(expected))
            for key, item in shown.items():
                assert item["target"] == expected[key]["target"]
                assert item["title"] == expected[key]["title"]
                assert [(a["id"], a["sha256"]) for a in item["attachments"]] == expected[key]["attachments"]
            conversation = {m["id"] for m in self.all_pages("/v1/me/messages", self.patient[patient])}
            assert conversation == self.conversation[patient]

    @invariant()
    def notifications_match_shares(self) -> None:
        for patient in PATIENTS:
            inbox = self.all_pages("/v1/me/notifications", self.patient[patient])
            got = collections.Counter((n["kind"], n["target"], n["item_id"]) for n in inbox)
            assert got == collections.Counter(self.notified[patient]), patient
            archive = self.fetch_archive(patient)
            in_archive = {(item["target"], item_id) for (_, item_id), item in archive.items()}
            # No notification without an item ...
            for n in inbox:
                assert (n["target"], n["item_id"]) in in_archive, n
            # ... and no item the clinic shared without its notification (the patient's own replies notify no one).
            notified_items = {(n["target"], n["item_id"]) for n in inbox}
            for (_, item_id), item in archive.items():
                if item["title"] != PATIENT_MESSAGE_TITLE:
                    assert (item["target"], item_id) in notified_items, item
                else:
                    assert (item["target"], item_id) not in notified_items, item
            assert {n["id"] for n in inbox if n["read"]} == self.read[patient]
            unread = self.all_pages("/v1/me/notifications", self.patient[patient], unread="true")
            assert len(unread) == len(inbox) - len(self.read[patient])
            assert all(not n["read"] for n in unread)

    @invariant()
    def files_and_requests_match(self) -> None:
        for patient in PATIENTS:
            doctor = self.clinician[ORG_CLINICIANS[PATIENT_ORG[patient]][0]]
            listed = {f["id"] for f in self.all_pages(f"/v1/patients/{self.pid[patient]}/files", doctor)}
            assert listed == self.patient_files[patient], (patient, listed ^ self.patient_files[patient])
            mine = self.all_pages("/v1/me/file-requests", self.patient[patient])
            assert {r["id"] for r in mine} == {rid for rid, m in self.requests_model.items() if m.patient == patient}
            for shown in mine:
                self.check_request_json(shown["id"], shown)
        for org, names in ORG_CLINICIANS.items():
            listed = {f["id"] for f in self.all_pages("/v1/library/files", self.clinician[names[-1]])}
            assert listed == self.library[org]

    @invariant()
    def attachments_reach_only_their_patient(self) -> None:
        """Each new attachment once, fully; and the newest one again every step (a sample, to stay fast)."""
        unchecked = [aid for aid in self.attachments if aid not in self.checked_attachments]
        sample = unchecked or sorted(self.attachments)[-1:]
        for aid in sample:
            patient, digest = self.attachments[aid]
            path = f"/v1/attachments/{aid}/content"
            got = self.client.get(path, headers=self.patient[patient])
            expect(got, 200)
            assert sha256(got.content) == digest
            colleague = self.clinician[ORG_CLINICIANS[PATIENT_ORG[patient]][-1]]
            expect(self.client.get(path, headers=colleague), 200)
            expect(self.client.get(path, headers=self.clinician[OUTSIDER[PATIENT_ORG[patient]]]), 404, "not-found")
            for other in PATIENTS:
                if other != patient:
                    expect(self.client.get(path, headers=self.patient[other]), 404, "not-found")
            self.checked_attachments.add(aid)

    @invariant()
    def other_organisation_sees_nothing(self) -> None:
        for patient in PATIENTS:
            outsider = self.clinician[OUTSIDER[PATIENT_ORG[patient]]]
            pid = self.pid[patient]
            for path in (
                f"/v1/patients/{pid}",
                f"/v1/patients/{pid}/messages",
                f"/v1/patients/{pid}/files",
                f"/v1/patients/{pid}/file-requests",
                f"/v1/patients/{pid}/audit",
            ):
                expect(self.client.get(path, headers=outsider), 404, "not-found")
        # A sample: the newest file and request of each organisation.
        for org in (ORG_A, ORG_B):
            outsider = self.clinician[OUTSIDER[org]]
            newest_file = next((f for f in reversed(self.every_file) if f.org == org), None)
            if newest_file is not None:
                expect(self.client.get(f"/v1/files/{newest_file.id}", headers=outsider), 404, "not-found")
            newest_request = next(
                (rid for rid in reversed(self.requests_model) if PATIENT_ORG[self.requests_model[rid].patient] == org),
                None,
            )
            if newest_request is not None:
                expect(self.client.get(f"/v1/file-requests/{newest_request}", headers=outsider), 404, "not-found")


SharingMachine.TestCase.settings = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    stateful_step_count=STEP_COUNT,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestSharingMachine = SharingMachine.TestCase
