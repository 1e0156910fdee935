"""Idempotency keys: one stored answer per (organisation, caller, key) for the POSTs that create or share.

A client that sends ``Idempotency-Key`` on a ``POST`` and retries it (a lost answer, a timeout)
gets the first answer again instead of a second message, booking or letter. The host's wrapper
(``careshare.host.idempotency``) claims the key before the handler runs, hashes the body as it
streams through, and stores the handler's ``2xx`` answer here; this module holds the table's
rules: claims with a lease (a claim whose process died lapses), the stored answer, and the sweep
of expired keys. What a request is, for a key used twice: its method, path, query and the sha256
of its body (``draft-ietf-httpapi-idempotency-key-header``, whose 409 and 422 answers these are).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.ids import new_id
from careshare.core.problems import Problem, ProblemType
from careshare.core.settings import Setting

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "FINGERPRINT_HEADERS",
    "IDEMPOTENCY_KEY_INVALID",
    "IDEMPOTENCY_KEY_IN_USE",
    "IDEMPOTENCY_KEY_REUSED",
    "IDEMPOTENCY_WAIT",
    "KEEP",
    "KEY_HEADER",
    "KEY_PATTERN",
    "LEASE",
    "MAX_KEY_CHARS",
    "MAX_STORED_BYTES",
    "REPLAYED_HEADER",
    "STORED_HEADERS",
    "Answer",
    "Caller",
    "Claimed",
    "InFlight",
    "Stored",
    "applies",
    "check_key",
    "claim",
    "complete",
    "release",
    "renew",
    "request_fingerprint",
    "sweep_keys",
]

logger = logging.getLogger(__name__)

KEY_HEADER = "idempotency-key"
#: Sent with a stored answer given again.
REPLAYED_HEADER = "idempotent-replayed"
MAX_KEY_CHARS = 200
#: What the OpenAPI promises: printable ASCII, no space at either end (HTTP strips it), 1 to 200 characters.
KEY_PATTERN = "^[!-~]([ -~]*[!-~])?$"
#: How long a finished request's answer is kept (a retry after that runs the request again).
KEEP = timedelta(hours=24)
#: How long a claim holds without its process renewing it; the request renews it while it runs.
LEASE = timedelta(minutes=5)
#: Answers larger than this are sent but not kept (every creating POST answers a small JSON body).
MAX_STORED_BYTES = 1024 * 1024
#: The answer's headers given again with it; the rest (dates, lengths, cookies) are the replay's own.
STORED_HEADERS = frozenset(
    {
        "content-type",
        "location",
        "content-location",
        "etag",
        "preference-applied",
        "tus-resumable",
        "upload-offset",
        "upload-length",
        "upload-expires",
    }
)

#: Request headers that are part of what a request asks for (a file's name, a resumable upload's size).
FINGERPRINT_HEADERS = frozenset({b"content-type", b"content-disposition", b"upload-length", b"upload-metadata"})

IDEMPOTENCY_KEY_INVALID = ProblemType(
    "idempotency-key-invalid",
    400,
    "Idempotency key not usable",
    f"The Idempotency-Key header must be 1 to {MAX_KEY_CHARS} printable ASCII characters, sent once."
    " Send a new key such as a UUID.",
)
IDEMPOTENCY_KEY_IN_USE = ProblemType(
    "idempotency-key-in-use",
    409,
    "Request with this key still running",
    "A request with this Idempotency-Key is still being handled. Wait the seconds named in Retry-After,"
    " then send it again with the same key to get its answer.",
)
IDEMPOTENCY_KEY_REUSED = ProblemType(
    "idempotency-key-reused",
    422,
    "Idempotency key already used",
    "This Idempotency-Key was already used for a different request. Use a new key for a new request.",
)


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 300:
        raise ValueError(raw)
    return value


IDEMPOTENCY_WAIT: Setting[float] = Setting(
    "CARESHARE_IDEMPOTENCY_WAIT_SECONDS",
    5.0,
    "seconds a retry waits for the first request with its Idempotency-Key to finish before 409 idempotency-key-in-use",
    _seconds,
    "a number of seconds from 0 to 300",
)


def applies(method: str, path: str) -> bool:
    """Whether a request may carry a key: every ``POST`` of the API (they create, share or decide)."""
    return method == "POST" and path.startswith("/v1/")


def check_key(values: list[bytes]) -> str:
    """The key the header values name; ``idempotency-key-invalid`` unless one value of 1..200 printable ASCII."""
    if len(values) != 1:
        raise Problem(IDEMPOTENCY_KEY_INVALID)
    raw = values[0].strip(b" \t")
    if not 0 < len(raw) <= MAX_KEY_CHARS or any(byte < 0x20 or byte > 0x7E for byte in raw):
        raise Problem(IDEMPOTENCY_KEY_INVALID)
    return raw.decode("ascii")


def request_fingerprint(method: str, path: str, query: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> str:
    """What a request asks for, but its body (hashed as it streams: ``body_sha256``).

    Of its headers, those of :data:`FINGERPRINT_HEADERS` count: they change what is made.
    """
    digest = hashlib.sha256()
    named = sorted((name.lower(), value) for name, value in headers if name.lower() in FINGERPRINT_HEADERS)
    for part in (method.encode(), path.encode("utf-8", "surrogateescape"), query, *(b"%s:%s" % h for h in named)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@attrs.frozen
class Caller:
    """Whose key: the same key of another organisation, role or subject is another key."""

    org: str
    role: str
    subject: str
    key: str

    def where(self) -> sa.ColumnElement[bool]:
        table = db.idempotency_keys
        return sa.and_(
            table.c.org_id == self.org,
            table.c.role == self.role,
            table.c.subject == self.subject,
            table.c.key == self.key,
        )


@attrs.frozen
class Answer:
    """An answer as stored: status, the :data:`STORED_HEADERS` it had, its body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@attrs.frozen
class Claimed:
    """The key is this request's: run it, then :func:`complete` or :func:`release` with ``token``."""

    token: str


@attrs.frozen
class Stored:
    """The key's request has finished: its answer, and the body's hash the retry must match."""

    answer: Answer
    body_sha256: str


@attrs.frozen
class InFlight:
    """The key's first request is still running (its lease ends at ``until``)."""

    until: datetime


async def claim(engine: AsyncEngine, caller: Caller, fingerprint: str) -> Claimed | Stored | InFlight:
    """Take the key for a request, or say what holds it.

    A new key is inserted (a racing insert of the same key is a no-op, then read); an expired row
    (its answer past :data:`KEEP`, or a claim whose lease lapsed: its process died) is taken over.
    A key held for another method, path or query is ``idempotency-key-reused`` at once.
    """
    table = db.idempotency_keys
    for _ in range(5):
        now = db.utcnow()
        token = new_id()
        fresh = {
            "state": "in_flight",
            "token": token,
            "fingerprint": fingerprint,
            "body_sha256": None,
            "status": None,
            "headers": None,
            "body": None,
            "patient_id": None,
            "item_id": None,
            "created_at": now,
            "expires_at": now + LEASE,
        }
        async with engine.begin() as conn:
            inserted = await conn.execute(
                db.insert_ignore(conn, table).values(
                    org_id=caller.org, role=caller.role, subject=caller.subject, key=caller.key, **fresh
                )
            )
            if inserted.rowcount == 1:
                return Claimed(token)
            row = (await conn.execute(sa.select(table).where(caller.where()))).first()
            if row is None:
                continue  # swept or released between the two statements: insert again
            if row.expires_at <= now:
                taken = await conn.execute(
                    sa.update(table).where(caller.where(), table.c.token == row.token).values(**fresh)
                )
                if taken.rowcount == 1:
                    return Claimed(token)
                continue
            if row.fingerprint != fingerprint:
                raise Problem(IDEMPOTENCY_KEY_REUSED)
            if row.state == "done":
                headers = tuple((str(name), str(value)) for name, value in row.headers or ())
                return Stored(Answer(row.status, headers, bytes(row.body or b"")), row.body_sha256)
            return InFlight(row.expires_at)
    raise RuntimeError("idempotency key claim did not settle")  # five races in a row: a bug, not load


async def complete(
    engine: AsyncEngine,
    caller: Caller,
    token: str,
    body_sha256: str,
    answer: Answer,
    *,
    patient_id: str | None = None,
    item_id: str | None = None,
) -> bool:
    """Store the answer of the claimed request (kept for :data:`KEEP`); False when the claim was lost.

    ``patient_id``: the patient the answer is about (it may hold their name or words), and
    ``item_id``: the id of what it made, so that erasing the patient removes it with their rows.
    """
    table = db.idempotency_keys
    now = db.utcnow()
    async with engine.begin() as conn:
        stored = await conn.execute(
            sa.update(table)
            .where(caller.where(), table.c.token == token, table.c.state == "in_flight")
            .values(
                state="done",
                body_sha256=body_sha256,
                status=answer.status,
                headers=[list(pair) for pair in answer.headers],
                body=answer.body,
                patient_id=patient_id,
                item_id=item_id,
                expires_at=now + KEEP,
            )
        )
    return stored.rowcount == 1


async def release(engine: AsyncEngine, caller: Caller, token: str) -> None:
    """Give the key back: the request was refused or failed, so a retry with it runs again."""
    table = db.idempotency_keys
    async with engine.begin() as conn:
        await conn.execute(sa.delete(table).where(caller.where(), table.c.token == token, table.c.state == "in_flight"))


async def renew(engine: AsyncEngine, caller: Caller, token: str) -> bool:
    """Extend the claim's lease while its request runs (a long upload); False when the claim was lost."""
    table = db.idempotency_keys
    async with engine.begin() as conn:
        renewed = await conn.execute(
            sa.update(table)
            .where(caller.where(), table.c.token == token, table.c.state == "in_flight")
            .values(expires_at=db.utcnow() + LEASE)
        )
    return renewed.rowcount == 1


async def sweep_keys(engine: AsyncEngine, now: datetime | None = None) -> int:
    """Delete expired keys: answers past :data:`KEEP` and lapsed claims. Returns how many."""
    table = db.idempotency_keys
    async with engine.begin() as conn:
        swept = await conn.execute(sa.delete(table).where(table.c.expires_at <= (now or db.utcnow())))
    return int(swept.rowcount or 0)
