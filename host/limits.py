"""Slow, stuck and greedy clients: body read timeouts, caps on concurrent uploads, rate limits.

One :class:`Limiter` (keyed token buckets) serves every limit: upload slots per caller and per
process (no refill; a slot comes back when the body is in), patient uploads per patient and failed
tokens per client address (refilling). The counts are this process's own (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from careshare.core.problems import Problem, ProblemType

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator

    from litestar import Request
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from careshare.core.settings import Settings

__all__ = [
    "REQUEST_TIMEOUT",
    "TOO_MANY_TOKEN_FAILURES",
    "TOO_MANY_UPLOADS",
    "UPLOAD_RATE_LIMITED",
    "ClientLimits",
    "Limiter",
    "RetryLater",
    "client_limits",
    "limits_of",
    "token_failures",
]

logger = logging.getLogger("careshare.host")

REQUEST_TIMEOUT = ProblemType(
    "request-timeout",
    408,
    "Request took too long to arrive",
    "The request stopped arriving before it was complete. Check the connection and send it again.",
)
TOO_MANY_UPLOADS = ProblemType(
    "too-many-uploads",
    429,
    "Too many uploads at once",
    "Too many uploads are arriving at once. Wait until one has finished (see Retry-After) and send this one again.",
)
UPLOAD_RATE_LIMITED = ProblemType(
    "upload-rate-limited",
    429,
    "Too many uploads",
    "You have sent many files in a short time. Wait the seconds named in Retry-After, then send this file again.",
)
TOO_MANY_TOKEN_FAILURES = ProblemType(
    "too-many-token-failures",
    429,
    "Too many refused sign-ins",
    "Too many requests from your address carried a token that was not accepted. Wait the seconds named in"
    " Retry-After, then sign in again.",
)

#: Seconds a refused upload is told to wait for a slot (nobody knows when one frees up).
SLOT_RETRY_AFTER = 5.0
_PROBLEM_JSON = b"application/problem+json"


class RetryLater(Problem):
    """A refusal sent with headers: ``Retry-After`` (also as the member ``retry_after``), ``Connection``."""

    def __init__(
        self, type_: ProblemType, retry_after: float | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        extra: dict[str, Any] = {}
        self.headers = dict(headers or {})
        if retry_after is not None:
            seconds = max(1, math.ceil(retry_after))
            extra["retry_after"] = seconds
            self.headers["Retry-After"] = str(seconds)
        super().__init__(type_, **extra)


class Limiter:
    """Token buckets by key: ``capacity`` tokens each, refilled at ``per_second`` (0: only by ``release``).

    A bucket that is full again is forgotten, so memory follows the keys in use; past ``max_keys``
    the oldest buckets are forgotten too (forgiving them). A ``capacity`` of 0 limits nothing.
    Not thread-safe: one event loop uses it.
    """

    def __init__(
        self,
        capacity: int,
        per_second: float = 0.0,
        *,
        retry_after: float = SLOT_RETRY_AFTER,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.retry_after = retry_after
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def level(self, key: Hashable) -> float:
        """The tokens ``key`` has now."""
        tokens, stamp = self._buckets.get(key, (float(self.capacity), 0.0))
        if self.per_second > 0:
            tokens = min(float(self.capacity), tokens + (self.clock() - stamp) * self.per_second)
        return tokens

    def wait(self, key: Hashable) -> float:
        """0 when ``key`` has a token now, else the seconds until it has one."""
        if self.capacity <= 0:
            return 0.0
        missing = 1.0 - self.level(key)
        if missing <= 0:
            return 0.0
        return missing / self.per_second if self.per_second > 0 else self.retry_after

    def acquire(self, key: Hashable) -> float:
        """Take a token: 0 when granted, else the seconds to wait (and nothing is taken)."""
        wait = self.wait(key)
        if wait == 0.0 and self.capacity > 0:
            self._store(key, self.level(key) - 1.0)
        return wait

    def release(self, key: Hashable) -> None:
        """Give a token back (an upload slot freed, or a counted attempt that did not happen)."""
        if self.capacity > 0:
            self._store(key, self.level(key) + 1.0)

    def _store(self, key: Hashable, tokens: float) -> None:
        self._buckets.pop(key, None)
        if tokens >= self.capacity:
            return
        self._buckets[key] = (tokens, self.clock())
        while len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]


class ClientLimits:
    """This process's limiters, built from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.caller_uploads = Limiter(settings.max_uploads_per_caller)
        self.process_uploads = Limiter(settings.max_uploads)
        self.patient_uploads = Limiter(
            settings.patient_uploads_per_hour, settings.patient_uploads_per_hour / 3600.0, max_keys=100_000
        )
        self.token_failures = Limiter(
            settings.token_failures_per_minute, settings.token_failures_per_minute / 60.0, max_keys=100_000
        )


def limits_of(app: Any) -> ClientLimits:
    """The :class:`ClientLimits` of a careshare app, made on first use."""
    limits = app.state.get("client_limits")
    if limits is None:
        limits = ClientLimits(app.state.careshare.settings)
        app.state["client_limits"] = limits
    return limits


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


@contextlib.contextmanager
def token_failures(request: Request[Any, Any, Any]) -> Iterator[None]:
    """Around a token's check: ``429`` while the client's address has failed too often, and count failures."""
    from careshare.core.problems import INVALID_TOKEN

    limiter = limits_of(request.app).token_failures
    address = _client_address(request.scope)
    wait = limiter.wait(address)
    if wait > 0:
        raise RetryLater(TOO_MANY_TOKEN_FAILURES, wait)
    try:
        yield
    except Problem as exc:
        if exc.type is INVALID_TOKEN:
            limiter.acquire(address)
        raise


class _Body:
    """The request's ``receive``, timed: ``idle`` seconds at most for the next bytes, ``total`` for all.

    Once the body has arrived whole, ``receive`` passes straight through (it then waits for the
    disconnect, which has no time limit). ``done`` runs once, when the body is complete or the
    request ends.
    """

    def __init__(self, receive: Receive, idle: float, total: float | None, done: Callable[[], None]) -> None:
        self._receive = receive
        self.idle = idle
        self.deadline = None if total is None else time.monotonic() + total
        self.complete = False
        self._done: Callable[[], None] | None = done

    def finish(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()
        timeout = self.idle
        if self.deadline is not None:
            timeout = min(timeout, max(0.0, self.deadline - time.monotonic()))
        try:
            async with asyncio.timeout(timeout):
                message = await self._receive()
        except TimeoutError:
            self.complete = True
            self.finish()
            logger.info("request body timed out after=%ss", timeout)
            # The body will not arrive now: close the connection after the answer.
            raise RetryLater(REQUEST_TIMEOUT, headers={"Connection": "close"}) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.complete = True
            self.finish()
        return message


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in (b"", b"0")
    return _header(scope, b"transfer-encoding") is not None


def _streams_body(scope: Scope) -> bool:
    """An upload route: one that takes bodies of any size (``request_max_body_size=None``)."""
    resolve = getattr(scope.get("route_handler"), "resolve_request_max_body_size", None)
    return resolve is not None and resolve() is None


def _caller(scope: Scope, settings: Settings) -> Any:
    """The principal a request's bearer token (or console session) names, or None (the route's own check refuses it)."""
    from careshare.host.auth import verify_token

    scheme, _, token = (_header(scope, b"authorization") or b"").decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        scheme, token = "bearer", _session_token(scope)
    if not token.strip():
        return None
    try:
        return verify_token(settings.secret_key, token.strip())
    except Problem:
        return None


def _session_token(scope: Scope) -> str:
    """The console's session cookie, for uploads the console sends (``host/console/session.py``)."""
    from http.cookies import CookieError, SimpleCookie

    from careshare.host.console.session import SESSION_COOKIE

    raw = (_header(scope, b"cookie") or b"").decode("latin-1")
    if SESSION_COOKIE not in raw:
        return ""
    try:
        morsel = SimpleCookie(raw).get(SESSION_COOKIE)
    except CookieError:
        return ""
    return morsel.value if morsel is not None else ""


async def _refuse(scope: Scope, send: Send, problem: RetryLater) -> None:
    body = json.dumps(problem.to_dict(instance=scope.get("path"))).encode()
    headers = [(b"content-type", _PROBLEM_JSON), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in problem.headers.items()]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def client_limits(app: ASGIApp) -> ASGIApp:
    """Times out request bodies (``408``) and caps uploads (``429``) before the handler runs.

    An upload is a request with a body (not JSON) to a route taking bodies of any size. It holds a
    slot of its caller and of the process while its body arrives; a patient's new upload (not the
    next PATCH of a resumable one, which its creation counted) also takes a token of the patient's
    hourly budget. A body whose next bytes do not come within ``CARESHARE_BODY_READ_TIMEOUT``
    (a JSON body: whole within it) ends the request with ``408`` and ``Connection: close``.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        limits = limits_of(scope["litestar_app"])
        settings = limits.settings
        streams = _streams_body(scope)
        taken: list[tuple[Limiter, Hashable]] = []

        def give_back() -> None:
            while taken:
                limiter, key = taken.pop()
                limiter.release(key)

        media_type = (_header(scope, b"content-type") or b"").partition(b";")[0].strip().lower()
        tus = _header(scope, b"tus-resumable") is not None
        upload = streams and _has_body(scope) and media_type != b"application/json"
        creation = tus and scope["method"] == "POST" and _header(scope, b"upload-length") is not None
        if upload or creation:
            who = _caller(scope, settings)
            if who is not None:
                refusal = _take(limits, who, upload=upload, new_file=creation or (upload and not tus), taken=taken)
                if refusal is not None:
                    give_back()
                    await _refuse(scope, send, refusal)
                    return
        total = None if streams else settings.body_read_timeout_seconds
        body = _Body(receive, settings.body_read_timeout_seconds, total, give_back)
        try:
            await app(scope, body.receive, send)
        finally:
            body.finish()

    return middleware


def _take(
    limits: ClientLimits, who: Any, *, upload: bool, new_file: bool, taken: list[tuple[Limiter, Hashable]]
) -> RetryLater | None:
    """Take the upload slots and the patient's token a request needs, or the refusal (taking nothing more)."""
    steps: list[tuple[Limiter, Hashable, ProblemType]] = []
    if upload:
        steps.append((limits.caller_uploads, (who.org, who.subject), TOO_MANY_UPLOADS))
        steps.append((limits.process_uploads, "process", TOO_MANY_UPLOADS))
    if new_file and who.role == "patient":
        steps.append((limits.patient_uploads, (who.org, who.patient), UPLOAD_RATE_LIMITED))
    for limiter, key, type_ in steps:
        wait = limiter.acquire(key)
        if wait > 0:
            return RetryLater(type_, wait)
        if limiter.per_second == 0:  # a slot: back when the body has arrived
            taken.append((limiter, key))
    return None
