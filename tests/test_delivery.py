"""Notification delivery: the outbox, retries with backoff, the signed webhook, the inbox, the loop.

Every test talks to a real HTTP receiver on 127.0.0.1 (``http.server`` in a thread) and drives
delivery with ``deliver_due(now=...)``, moving the clock past each backoff instead of sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from careshare import hookimpl
from careshare.core import db
from careshare.core.ids import new_id
from careshare.core.models import Principal
from careshare.core.notifications import (
    LONGEST_RETRY_SECONDS,
    MAX_ATTEMPTS,
    Undeliverable,
    backoff,
    deliver_due,
    deliveries_of,
    enqueue,
    run_delivery_loop,
)
from careshare.core.patients import register_organisation, register_patient
from careshare.core.plugins import get_plugin_manager
from careshare.core.runtime import Careshare
from careshare.core.sharing import share
from careshare.core.targets import Item, Target, attach
from careshare.host import create_app
from careshare.host.app import CareshareInit
from careshare.plugins import webhook
from careshare.testing import bearer, make_pdf, make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from datetime import datetime
    from pathlib import Path

    from careshare.core.notifications import Delivery, Notification
    from careshare.core.settings import Settings

SECRET = "whsec-test-0123456789"
CLINICIAN = Principal(subject="dr-a", role="clinician", org="org-a")
BODY_KEYS = {"id", "dedupe_key", "kind", "title", "organisation", "patient_id", "target", "item_id", "created_at"}


@attrs.frozen
class Received:
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """A push gateway stand-in: answers the planned statuses in order, then ``then`` for good."""

    def __init__(self, plan: list[int], then: int = 200) -> None:
        self.plan = list(plan)
        self.then = then
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = receiver.plan.pop(0) if receiver.plan else receiver.then
                    receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]


@pytest.fixture
def receive(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start a receiver with a plan of statuses and point the webhook at it."""
    started: list[Receiver] = []

    def start(plan: list[int] | None = None, then: int = 200) -> Receiver:
        receiver = Receiver(plan or [], then)
        receiver.thread.start()
        started.append(receiver)
        monkeypatch.setenv("CARESHARE_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("CARESHARE_WEBHOOK_SECRET", SECRET)
        return receiver

    yield start
    for receiver in started:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture(params=["sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on SQLite; tests where row locking matters parametrize PostgreSQL in too."""
    if request.param == "sqlite":
        return make_settings(tmp_path / "data")
    url = request.getfixturevalue("postgres").create_database(f"delivery_{uuid.uuid4().hex}")
    return make_settings(tmp_path / "data", CARESHARE_DATABASE_URL=url)


@pytest.fixture
async def cs(database: Settings) -> AsyncIterator[Careshare]:
    """A started careshare whose only delivery channel is the webhook plugin."""
    system = Careshare.build(database, get_plugin_manager(load_entrypoints=False, plugins=[webhook]))
    await system.start()
    try:
        yield system
    finally:
        await system.close()


async def new_patient(cs: Careshare, external_id: str = "MRN-1") -> str:
    await register_organisation(cs.engine, CLINICIAN.org)
    async with cs.engine.begin() as conn:
        found = await register_patient(conn, CLINICIAN, name="Pat One", external_id=external_id, email=None)
    return found.id


async def notify(cs: Careshare, patient_id: str, *, item_id: str | None = None) -> Notification:
    """Share an item with the patient through the real sharing code: the notification comes with it."""
    async with cs.engine.begin() as conn:
        shared = await share(
            conn,
            cs.plugins,
            CLINICIAN,
            channel="notes",
            target="note",
            item_id=item_id or new_id(),
            patient_id=patient_id,
            title="A new document from your clinic",
            notification_kind="item.shared",
        )
    assert shared.notification is not None
    return shared.notification


async def state(cs: Careshare, notification: Notification) -> Delivery:
    """The one delivery; with every plugin loaded, the webhook's (the letters plugin keeps a row of its own)."""
    async with cs.engine.connect() as conn:
        rows = await deliveries_of(conn, notification.id)
    if len(rows) > 1:
        rows = [d for d in rows if d.channel == cs.plugins.get_name(webhook)]
    (delivery,) = rows
    return delivery


def expected_signature(timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_webhook_retried_after_backoff_until_the_receiver_accepts(cs: Careshare, receive: Any) -> None:
    receiver = receive([500, 500])
    notification = await notify(cs, await new_patient(cs))
    t0 = db.utcnow()

    assert await deliver_due(cs.engine, cs.plugins, now=t0) == 1
    first = await state(cs, notification)
    assert (first.state, first.attempts, first.last_error) == ("pending", 1, "not delivered")
    assert first.next_attempt_at == t0 + timedelta(seconds=backoff(1))
    # Not before the backoff has passed ...
    assert await deliver_due(cs.engine, cs.plugins, now=first.next_attempt_at - timedelta(milliseconds=1)) == 0
    # ... and then again.
    assert await deliver_due(cs.engine, cs.plugins, now=first.next_attempt_at) == 1
    second = await state(cs, notification)
    assert (second.state, second.attempts) == ("pending", 2)
    assert second.next_attempt_at == first.next_attempt_at + timedelta(seconds=backoff(2))
    assert backoff(2) > backoff(1)
    assert await deliver_due(cs.engine, cs.plugins, now=second.next_attempt_at - timedelta(milliseconds=1)) == 0
    assert await deliver_due(cs.engine, cs.plugins, now=second.next_attempt_at) == 1

    done = await state(cs, notification)
    assert (done.state, done.attempts, done.last_error) == ("delivered", 3, None)
    assert done.delivered_at is not None
    assert await deliver_due(cs.engine, cs.plugins, now=t0 + timedelta(days=30)) == 0
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len(receiver.accepted) == 1
    for request in receiver.requests:
        assert request.headers["careshare-delivery"] == notification.dedupe_key
        timestamp = request.headers["careshare-timestamp"]
        assert request.headers["careshare-signature"] == expected_signature(timestamp, request.body)


async def test_webhook_signature_is_verifiable(cs: Careshare, receive: Any) -> None:
    receiver = receive()
    patient_id = await new_patient(cs)
    notification = await notify(cs, patient_id)
    before = int(time.time())
    assert await deliver_due(cs.engine, cs.plugins) == 1
    (request,) = receiver.requests

    timestamp = request.headers["careshare-timestamp"]
    assert before <= int(timestamp) <= int(time.time())
    signature = request.headers["careshare-signature"]
    assert signature == expected_signature(timestamp, request.body)
    assert webhook.verify(SECRET, timestamp, request.body, signature)
    assert not webhook.verify(SECRET, timestamp, request.body + b" ", signature)
    assert not webhook.verify("another-secret", timestamp, request.body, signature)
    assert not webhook.verify(SECRET, str(int(timestamp) + 1), request.body, signature)
    assert not webhook.verify(SECRET, timestamp, request.body, signature, now=int(timestamp) + 3600)
    assert request.headers["careshare-delivery"] == notification.dedupe_key
    assert request.headers["content-type"] == "application/json"

    body = json.loads(request.body)
    assert set(body) == BODY_KEYS
    assert body["id"] == notification.id
    assert body["dedupe_key"] == notification.dedupe_key
    assert body["organisation"] == "org-a"
    assert body["patient_id"] == patient_id
    assert (body["kind"], body["title"], body["target"]) == ("item.shared", "A new document from your clinic", "note")
    assert body["item_id"] == notification.item_id
    assert body["created_at"] == notification.created_at.isoformat()
    assert (await state(cs, notification)).state == "delivered"


async def test_a_receiver_that_always_fails_ends_failed(cs: Careshare, receive: Any) -> None:
    receiver = receive(then=503)
    notification = await notify(cs, await new_patient(cs))
    at = db.utcnow()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert await deliver_due(cs.engine, cs.plugins, now=at) == 1, attempt
        at = (await state(cs, notification)).next_attempt_at
    failed = await state(cs, notification)
    assert (failed.state, failed.attempts, failed.last_error) == ("failed", MAX_ATTEMPTS, "not delivered")
    assert failed.delivered_at is None
    assert await deliver_due(cs.engine, cs.plugins, now=at + timedelta(days=365)) == 0
    assert len(receiver.requests) == MAX_ATTEMPTS
    assert receiver.accepted == []


async def test_an_unset_webhook_answers_none_and_is_not_retried(
    cs: Careshare, receive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = receive()
    monkeypatch.delenv("CARESHARE_WEBHOOK_URL")
    notification = await notify(cs, await new_patient(cs))
    assert await deliver_due(cs.engine, cs.plugins) == 1
    delivery = await state(cs, notification)
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("delivered", 1, None)
    assert await deliver_due(cs.engine, cs.plugins, now=db.utcnow() + timedelta(days=1)) == 0
    assert receiver.requests == []


@pytest.mark.parametrize("url", ["ftp://push:hunter2@127.0.0.1/hook", "file:///etc/passwd?token=hunter2", "http:///x"])
async def test_urls_other_than_http_are_refused_without_leaking_them(
    cs: Careshare, receive: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    receiver = receive()
    monkeypatch.setenv("CARESHARE_WEBHOOK_URL", url)
    notification = await notify(cs, await new_patient(cs))
    with caplog.at_level(logging.WARNING):
        assert await deliver_due(cs.engine, cs.plugins) == 1
    delivery = await state(cs, notification)
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("pending", 1, "not delivered")
    assert "CARESHARE_WEBHOOK_URL" in caplog.text
    assert "hunter2" not in caplog.text
    assert receiver.requests == []


async def test_no_secret_no_webhook(cs: Careshare, receive: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = receive()
    monkeypatch.delenv("CARESHARE_WEBHOOK_SECRET")
    notification = await notify(cs, await new_patient(cs))
    assert await deliver_due(cs.engine, cs.plugins) == 1
    assert (await state(cs, notification)).state == "pending"
    assert receiver.requests == []
    # Once the operator sets the secret, the waiting notification goes out.
    monkeypatch.setenv("CARESHARE_WEBHOOK_SECRET", SECRET)
    assert await deliver_due(cs.engine, cs.plugins, now=db.utcnow() + timedelta(seconds=backoff(1))) == 1
    assert (await state(cs, notification)).state == "delivered"
    assert len(receiver.accepted) == 1


async def test_an_unreachable_receiver_is_retried(cs: Careshare, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = Receiver([])  # bound, then closed: nothing listens on its port
    gone.server.server_close()
    monkeypatch.setenv("CARESHARE_WEBHOOK_URL", gone.url)
    monkeypatch.setenv("CARESHARE_WEBHOOK_SECRET", SECRET)
    notification = await notify(cs, await new_patient(cs))
    assert await deliver_due(cs.engine, cs.plugins) == 1
    delivery = await state(cs, notification)
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("pending", 1, "not delivered")


class Exploding:
    """A delivery channel whose receiver library raises, with a secret in the message."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    @hookimpl
    def careshare_deliver(self, notification: Any) -> bool:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("token=hunter2 refused")
        return True


class Timing:
    """A wrapper around every delivery: not a channel, so it gets no delivery row."""

    @hookimpl(wrapper=True)
    def careshare_deliver(self) -> Any:
        return (yield)


async def test_exceptions_are_recorded_by_type_only(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    exploding = Exploding(failures=1)
    system = Careshare.build(settings, get_plugin_manager(load_entrypoints=False, plugins=[exploding, Timing()]))
    await system.start()
    try:
        notification = await notify(system, await new_patient(system))
        with caplog.at_level(logging.WARNING):
            assert await deliver_due(system.engine, system.plugins) == 1
        delivery = await state(system, notification)  # one row: the wrapper is no channel
        assert (delivery.state, delivery.attempts, delivery.last_error) == ("pending", 1, "RuntimeError")
        assert "RuntimeError" in caplog.text
        assert "hunter2" not in caplog.text
        assert await deliver_due(system.engine, system.plugins, now=delivery.next_attempt_at) == 1
        delivery = await state(system, notification)
        assert (delivery.state, delivery.attempts, delivery.last_error) == ("delivered", 2, None)
        assert exploding.calls == 2
    finally:
        await system.close()


class Refusing:
    """A delivery channel that can never deliver (an email larger than its server takes)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def careshare_deliver(self, notification: Any) -> bool:
        self.calls += 1
        raise Undeliverable("larger than the server takes")


async def test_an_undeliverable_notification_fails_at_once_and_is_never_tried_again(settings: Settings) -> None:
    refusing = Refusing()
    system = Careshare.build(settings, get_plugin_manager(load_entrypoints=False, plugins=[refusing]))
    await system.start()
    try:
        notification = await notify(system, await new_patient(system))
        assert await deliver_due(system.engine, system.plugins) == 1
        delivery = await state(system, notification)
        assert (delivery.state, delivery.attempts) == ("failed", 1)
        assert delivery.last_error == "undeliverable: larger than the server takes"
        assert delivery.delivered_at is None
        for days in (1, 30, 365):  # far past every backoff: never claimed again
            assert await deliver_due(system.engine, system.plugins, now=db.utcnow() + timedelta(days=days)) == 0
        assert refusing.calls == 1
    finally:
        await system.close()


async def test_one_key_one_notification_one_delivery(cs: Careshare, receive: Any) -> None:
    receiver = receive()
    patient_id = await new_patient(cs)
    made = []
    for _ in range(2):
        async with cs.engine.begin() as conn:
            made.append(
                await enqueue(
                    conn,
                    cs.plugins,
                    org="org-a",
                    patient_id=patient_id,
                    kind="reminder",
                    title="Time for your reminder",
                    target=None,
                    item_id=None,
                    dedupe_key="reminder:42:2024-05-01",
                )
            )
    assert made[0] == made[1]
    async with cs.engine.connect() as conn:
        count = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(db.notifications)
                .where(db.notifications.c.patient_id == patient_id)
            )
        ).scalar_one()
        deliveries = await deliveries_of(conn, made[0].id)
    assert count == 1
    assert [(d.channel, d.state) for d in deliveries] == [(cs.plugins.get_name(webhook), "pending")]
    assert await deliver_due(cs.engine, cs.plugins) == 1
    assert await deliver_due(cs.engine, cs.plugins, now=db.utcnow() + timedelta(days=1)) == 0
    assert [r.headers["careshare-delivery"] for r in receiver.requests] == ["reminder:42:2024-05-01"]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_concurrent_rounds_deliver_once(cs: Careshare, receive: Any) -> None:
    receiver = receive()
    notification = await notify(cs, await new_patient(cs))
    now = db.utcnow()
    # Rounds that overlap: on PostgreSQL they read the same due row, and only one claim wins.
    tried = await asyncio.gather(*(deliver_due(cs.engine, cs.plugins, now=now) for _ in range(4)))
    assert sorted(tried) == [0, 0, 0, 1]
    assert len(receiver.requests) == 1
    assert (await state(cs, notification)).attempts == 1


async def test_inbox_lists_notifications_read_and_unread(
    client: AsyncTestClient[Any],
    settings: Settings,
    clinician: dict[str, str],
    patient_id: str,
    patient: dict[str, str],
) -> None:
    system = client.app.plugins.get(CareshareInit).cs
    first = await notify(system, patient_id)
    second = await notify(system, patient_id)

    listed = await client.get("/v1/me/notifications", headers=patient)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [i["id"] for i in items] == [second.id, first.id]
    assert all(i["read"] is False and i["read_at"] is None for i in items)
    assert {i["title"] for i in items} == {"A new document from your clinic"}

    read = await client.post(f"/v1/me/notifications/{first.id}/read", headers=patient)
    assert read.status_code == 200, read.text
    assert read.json()["read"] is True
    again = await client.post(f"/v1/me/notifications/{first.id}/read", headers=patient)
    assert again.json()["read_at"] == read.json()["read_at"]

    items = (await client.get("/v1/me/notifications", headers=patient)).json()["items"]
    assert {i["id"]: i["read"] for i in items} == {first.id: True, second.id: False}
    unread = (await client.get("/v1/me/notifications", params={"unread": "true"}, headers=patient)).json()["items"]
    assert [i["id"] for i in unread] == [second.id]

    # Another patient sees none of it and cannot mark it read.
    other = await client.post("/v1/patients", json={"name": "Pat Two", "external_id": "MRN-2"}, headers=clinician)
    other_headers = bearer(settings, "patient", "org-a", patient=other.json()["id"])
    assert (await client.get("/v1/me/notifications", headers=other_headers)).json()["items"] == []
    assert (await client.post(f"/v1/me/notifications/{second.id}/read", headers=other_headers)).status_code == 404


class Notes:
    """A minimal channel for the loop test: a ``note`` target files attach to."""

    @hookimpl
    def careshare_targets(self) -> list[Target]:
        return [Target(name="note", channel="notes")]


async def wait_delivered(system: Careshare, notification: Notification, seconds: float = 20.0) -> Delivery:
    deadline = time.monotonic() + seconds
    while True:
        delivery = await state(system, notification)
        if delivery.state != "pending" or time.monotonic() > deadline:
            return delivery
        await asyncio.sleep(0.05)


async def test_the_running_app_delivers_without_a_manual_call(
    settings: Settings, receive: Any, clinician: dict[str, str]
) -> None:
    receiver = receive([500])  # one failure too: the loop retries on its own after the backoff
    marker = "SECRET-CLINICAL-DETAIL-7731"
    # The running app reads the webhook's settings from its own settings' environment, as it reads core's.
    settings = attrs.evolve(
        settings,
        environ={**settings.environ, "CARESHARE_WEBHOOK_URL": receiver.url, "CARESHARE_WEBHOOK_SECRET": SECRET},
    )
    app = create_app(settings, plugins=get_plugin_manager(plugins=[Notes()]))
    async with AsyncTestClient(app=app) as client:
        system = app.plugins.get(CareshareInit).cs
        registered = await client.post("/v1/patients", json={"name": "Pat", "external_id": "MRN-9"}, headers=clinician)
        pid = registered.json()["id"]
        uploaded = await client.post(
            f"/v1/patients/{pid}/files",
            content=make_pdf(text=marker),
            params={"filename": f"{marker}.pdf"},
            headers=clinician,
        )
        assert uploaded.status_code == 201, uploaded.text
        file = uploaded.json()
        item_id = new_id()
        async with system.engine.begin() as conn:
            note = Item(target="note", id=item_id, org="org-a", patient_id=pid)
            (attachment,) = await attach(conn, system.plugins, CLINICIAN, Target("note", "notes"), note, [file["id"]])
        notification = await notify(system, pid, item_id=item_id)

        delivery = await wait_delivered(system, notification)
        assert (delivery.state, delivery.attempts) == ("delivered", 2)
        archive = (await client.get("/v1/me/archive", headers=bearer(settings, "patient", "org-a", patient=pid))).json()
        assert archive["count"] == 1

    (accepted,) = receiver.accepted
    assert accepted.headers["careshare-signature"] == expected_signature(
        accepted.headers["careshare-timestamp"], accepted.body
    )
    # What was shared never travels: no bytes, no name, no hash, no ids of the file.
    assert set(json.loads(accepted.body)) == BODY_KEYS
    for leak in (marker, file["id"], attachment.id, attachment.sha256, file["filename"]):
        assert leak.encode() not in accepted.body
    assert b"%PDF" not in accepted.body


async def test_the_delivery_loop_survives_failed_rounds(
    settings: Settings, receive: Any, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = receive()
    system = Careshare.build(settings, get_plugin_manager(load_entrypoints=False, plugins=[webhook]))
    loop = asyncio.create_task(run_delivery_loop(system.engine, system.plugins, interval=0.01))
    try:
        with caplog.at_level(logging.WARNING):
            # No tables yet: every round fails, and the loop goes on.
            deadline = time.monotonic() + 20
            while caplog.text.count("delivery round failed") < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        assert caplog.text.count("delivery round failed error=OperationalError") >= 3
        assert not loop.done()
        await system.start()  # the database comes back
        notification = await notify(system, await new_patient(system))
        assert (await wait_delivered(system, notification)).state == "delivered"
        assert len(receiver.accepted) == 1
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
        await system.close()


@given(st.integers(min_value=-5, max_value=10_000), st.integers(min_value=0, max_value=10_000))
def test_backoff_grows_and_is_capped(attempts: int, more: int) -> None:
    assert 0 < backoff(attempts) <= backoff(attempts + more) <= LONGEST_RETRY_SECONDS
    if attempts >= 1:
        assert backoff(attempts + 1) == min(2 * backoff(attempts), LONGEST_RETRY_SECONDS)


@given(
    secret=st.text(min_size=1),
    body=st.binary(),
    timestamp=st.integers(min_value=0, max_value=2**40),
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_any_body_verifies_and_any_change_fails(
    secret: str, body: bytes, timestamp: int, position: int, flip: int
) -> None:
    signature = webhook.sign(secret, timestamp, body)
    assert signature == "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, "sha256").hexdigest()
    stamp = str(timestamp)
    assert webhook.verify(secret, stamp, body, signature, now=timestamp)
    if body:
        changed = bytearray(body)
        changed[position % len(body)] ^= flip
        assert not webhook.verify(secret, stamp, bytes(changed), signature, now=timestamp)
    assert not webhook.verify(secret, stamp, body + b"\n", signature, now=timestamp)
    assert not webhook.verify(secret + "x", stamp, body, signature, now=timestamp)
    assert not webhook.verify(secret, str(timestamp + 1), body, signature, now=timestamp)
    assert not webhook.verify(
        secret, stamp, body, signature[:-1] + ("0" if signature[-1] != "0" else "1"), now=timestamp
    )


def test_the_payload_is_the_notification_and_nothing_more() -> None:
    from careshare.core.notifications import Notification

    created: datetime = db.utcnow()
    notification = Notification(
        id="n1",
        org="org-a",
        patient_id="p1",
        kind="letter.sent",
        title="A letter from your clinic",
        target="letter",
        item_id="l1",
        dedupe_key="letter:l1:p1",
        created_at=created,
    )
    assert json.loads(webhook.payload(notification)) == {
        "id": "n1",
        "dedupe_key": "letter:l1:p1",
        "kind": "letter.sent",
        "title": "A letter from your clinic",
        "organisation": "org-a",
        "patient_id": "p1",
        "target": "letter",
        "item_id": "l1",
        "created_at": created.isoformat(),
    }
