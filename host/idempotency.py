"""The ``Idempotency-Key`` wrapper: a retried POST gets its first answer again, and runs once.

An ASGI middleware around every API route (``CareshareInit`` installs it after the client
limits, so the body it reads is timed like any other). For a ``POST`` carrying the header, once
the caller is known from its token (``careshare.host.auth``): claim the key
(:func:`careshare.core.idempotency.claim`), run the handler while the body is hashed as it
streams through (never held in memory), and keep a ``2xx`` answer before it is sent. A retry with
the same request gets that answer with ``Idempotent-Replayed: true``; one that comes while the
first still runs waits for it a little (``CARESHARE_IDEMPOTENCY_WAIT_SECONDS``), then is
``409 idempotency-key-in-use``; the key with another request is ``422 idempotency-key-reused``.
A refusal is not kept: the key is given back and the request may be sent again with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from careshare.core.idempotency import (
    IDEMPOTENCY_KEY_IN_USE,
    IDEMPOTENCY_KEY_REUSED,
    IDEMPOTENCY_WAIT,
    LEASE,
    MAX_STORED_BYTES,
    REPLAYED_HEADER,
    STORED_HEADERS,
    Answer,
    Caller,
    Claimed,
    Stored,
    applies,
    check_key,
    claim,
    complete,
    release,
    renew,
    request_fingerprint,
)
from careshare.core.problems import Problem
from careshare.host.limits import RetryLater

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from careshare.core.models import Principal
    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings

__all__ = ["idempotency_middleware"]

logger = logging.getLogger("careshare.host")

_KEY_HEADER = b"idempotency-key"
#: Seconds a client told ``idempotency-key-in-use`` is asked to wait.
IN_USE_RETRY_AFTER = 2.0


class _Gone(Exception):
    """The client went away while its body was read: nobody to answer."""


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not applies(scope["method"], scope["path"]):
            await app(scope, receive, send)
            return
        values = [bytes(value) for name, value in scope.get("headers", ()) if name.lower() == _KEY_HEADER]
        if not values:
            await app(scope, receive, send)
            return
        key = check_key(values)
        cs: Careshare = scope["litestar_app"].state.careshare
        who = _caller(scope, cs.settings)
        if who is None:  # no usable token: the route's own check refuses the request, keyed or not
            await app(scope, receive, send)
            return
        caller = Caller(org=who.org, role=who.role, subject=who.subject, key=key)
        try:
            await _keyed(app, scope, receive, send, cs, caller, who)
        except _Gone:
            return

    return middleware


async def _keyed(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, cs: Careshare, caller: Caller, who: Principal
) -> None:
    engine = cs.engine
    fingerprint = request_fingerprint(
        scope["method"], scope["path"], scope.get("query_string", b""), scope.get("headers", ())
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cs.settings.get(IDEMPOTENCY_WAIT)
    pause = 0.02
    while True:
        outcome = await claim(engine, caller, fingerprint)
        if isinstance(outcome, Claimed):
            break
        if isinstance(outcome, Stored):
            if await _body_sha256(receive) != outcome.body_sha256:
                raise Problem(IDEMPOTENCY_KEY_REUSED)
            await _replay(send, outcome.answer)
            return
        left = deadline - loop.time()
        if left <= 0:
            raise RetryLater(IDEMPOTENCY_KEY_IN_USE, IN_USE_RETRY_AFTER)
        await asyncio.sleep(min(pause, left))  # the first request may finish soon: then its answer
        pause = min(pause * 2, 0.25)
    body = _HashedBody(receive)
    answer = _KeptAnswer(send, body, engine, caller, outcome.token, lambda kept: _about(scope, who, kept))
    lease = asyncio.create_task(_renewing(cs, caller, outcome.token), name="careshare-idempotency-lease")
    try:
        await app(scope, body.receive, answer.send)
        await answer.finish()
    finally:
        lease.cancel()
        if not answer.kept:
            try:
                await asyncio.shield(release(engine, caller, outcome.token))
            except Exception as exc:  # the lease lapses instead
                logger.warning("idempotency key release failed error=%s", type(exc).__name__)


async def _renewing(cs: Careshare, caller: Caller, token: str) -> None:
    """Keep the claim while the request runs (a long upload outlives one lease)."""
    while True:
        await asyncio.sleep(LEASE.total_seconds() / 3)
        try:
            if not await renew(cs.engine, caller, token):
                return
        except Exception as exc:  # the database is briefly away: the next round tries again
            logger.warning("idempotency lease renewal failed error=%s", type(exc).__name__)


class _HashedBody:
    """The request's ``receive``, hashing the body's bytes as they pass."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.digest = hashlib.sha256()
        self.complete = False
        self.gone = False

    async def receive(self) -> Message:
        message = await self._receive()
        if not self.complete:
            if message["type"] == "http.request":
                self.digest.update(message.get("body", b""))
                self.complete = not message.get("more_body", False)
            else:  # http.disconnect: the handler hears of it as usual
                self.gone = True
        return message

    async def sha256(self) -> str:
        """The whole body's hash, reading what the handler left unread (``_Gone`` if the client left)."""
        while not self.complete:
            if self.gone:
                raise _Gone
            await self.receive()
        return self.digest.hexdigest()


async def _body_sha256(receive: Receive) -> str:
    return await _HashedBody(receive).sha256()


class _KeptAnswer:
    """The handler's ``send``: a ``2xx`` answer is held until whole, kept, then sent; others pass at once."""

    def __init__(
        self,
        send: Send,
        body: _HashedBody,
        engine: Any,
        caller: Caller,
        token: str,
        about: Callable[[Answer], tuple[str | None, str | None]],
    ) -> None:
        self._send = send
        self._about = about
        self._body = body
        self._engine = engine
        self._caller = caller
        self._token = token
        self._start: Message | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._passing = False
        self.kept = False

    async def send(self, message: Message) -> None:
        if self._passing:
            await self._send(message)
        elif message["type"] == "http.response.start":
            if 200 <= message["status"] < 300:
                self._start = message
            else:
                self._passing = True  # a refusal: sent as it is, the key given back
                await self._send(message)
        elif message["type"] == "http.response.body" and self._start is not None:
            chunk = bytes(message.get("body", b""))
            self._chunks.append(chunk)
            self._size += len(chunk)
            more = bool(message.get("more_body", False))
            if self._size > MAX_STORED_BYTES:
                await self._flush(more=more)  # too large to keep: sent on, not kept
            elif not more:
                await self._keep()
                await self._flush(more=False)
        else:
            await self._flush(more=True)
            await self._send(message)

    async def finish(self) -> None:
        """After the handler: an answer that never ended is sent as it is (and not kept)."""
        if self._start is not None:
            await self._flush(more=False)

    async def _keep(self) -> None:
        assert self._start is not None
        headers = tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in self._start.get("headers", ())
            if name.decode("latin-1").lower() in STORED_HEADERS
        )
        answer = Answer(self._start["status"], headers, b"".join(self._chunks))
        try:
            body_sha256 = await self._body.sha256()
        except _Gone:
            return  # the client left before its whole body came: nobody will retry this one
        try:
            patient_id, item_id = self._about(answer)
            self.kept = await complete(
                self._engine, self._caller, self._token, body_sha256, answer, patient_id=patient_id, item_id=item_id
            )
        except Exception as exc:  # the answer still goes out; a retry runs the request again
            logger.warning("idempotency answer not kept error=%s", type(exc).__name__)
            return
        if not self.kept:
            logger.warning("idempotency answer not kept: the claim lapsed")

    async def _flush(self, *, more: bool) -> None:
        """Send what is held (``more``: the answer goes on) and pass the rest on."""
        self._passing = True
        if self._start is not None:
            start, self._start = self._start, None
            chunks, self._chunks = self._chunks, []
            await self._send(start)
            await self._send({"type": "http.response.body", "body": b"".join(chunks), "more_body": more})


def _about(scope: Scope, who: Principal, answer: Answer) -> tuple[str | None, str | None]:
    """The patient a kept answer is about and the id of what it made, for erasure (``careshare.core.erasure``).

    The patient: the calling patient, the route's ``{pid}``, or the answer's ``patient_id`` (a
    registration's ``id``); the item: the answer's ``id``.
    """
    shown: Any = None
    if answer.body and answer.body[:1] == b"{":
        try:
            shown = json.loads(answer.body)
        except ValueError:
            shown = None
    shown = shown if isinstance(shown, dict) else {}
    item = _an_id(shown.get("id"))
    pid = (scope.get("path_params") or {}).get("pid")
    if who.patient:
        patient = who.patient
    elif isinstance(pid, str):
        patient = pid
    elif scope["path"].rstrip("/") == "/v1/patients":
        patient = item
    else:
        patient = _an_id(shown.get("patient_id"))
    return patient, item


def _an_id(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 26 else None


async def _replay(send: Send, answer: Answer) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    headers += [(b"content-length", str(len(answer.body)).encode()), (REPLAYED_HEADER.encode(), b"true")]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})


def _caller(scope: Scope, settings: Settings) -> Principal | None:
    """Who calls, as ``careshare.host.auth.principal`` finds it (bearer token, or the console's session), or None."""
    from careshare.host.auth import verify_token
    from careshare.host.console import CONSOLE_API_SCOPE

    token = _session_token(scope) if scope.get(CONSOLE_API_SCOPE) else _bearer(scope)
    if not token:
        return None
    try:
        return verify_token(settings.secret_key, token)
    except Problem:
        return None


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _bearer(scope: Scope) -> str:
    scheme, _, token = _header(scope, b"authorization").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _session_token(scope: Scope) -> str:
    from careshare.host.console.session import SESSION_COOKIE

    raw = _header(scope, b"cookie")
    if SESSION_COOKIE not in raw:
        return ""
    with contextlib.suppress(CookieError):
        morsel = SimpleCookie(raw).get(SESSION_COOKIE)
        return morsel.value.strip() if morsel is not None else ""
    return ""
