"""Expiring links: signed, single-purpose download URLs for people outside the app, revocable and audited.

A link is a row (what it opens, who made it and for what, until when, how often it was used)
and a token ``<link id>.<HMAC-SHA256 of the id under the server secret>``: unguessable without
the secret, checked in constant time, and recomputable, so a retried email carries the same URL.
A link opens exactly one thing: a rendition of a file (as it is when the link is followed) or a
pinned attachment (the bytes that were shared, for good).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import attrs
import sqlalchemy as sa

from careshare.core import db
from careshare.core.audit import record_event
from careshare.core.ids import new_id
from careshare.core.models import Principal
from careshare.core.problems import NOT_FOUND, Problem, ProblemType
from careshare.core.targets import FILE_NOT_READY

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from careshare.core.settings import Settings

__all__ = [
    "ATTACHMENT_WITHDRAWN",
    "DEFAULT_LINK_SECONDS",
    "LINK_EXPIRED",
    "LINK_REVOKED",
    "MAX_LINK_SECONDS",
    "MAX_PURPOSE_CHARS",
    "Link",
    "LinkTarget",
    "attachment_link",
    "file_link",
    "find_links",
    "link_token",
    "link_url",
    "links_of",
    "open_link",
    "revoke_link",
]

logger = logging.getLogger(__name__)

#: A link lives a day unless its maker says otherwise, and never more than a week.
DEFAULT_LINK_SECONDS = 24 * 3600
MAX_LINK_SECONDS = 7 * 24 * 3600
MAX_PURPOSE_CHARS = 200
#: Domain separation: a MAC made for a link is never valid for anything else signed with the secret.
_MAC_CONTEXT = b"careshare-link-v1\x00"
_ID_CHARS = frozenset("0123456789abcdefghjkmnpqrstvwxyz")

LINK_EXPIRED = ProblemType(
    "link-expired",
    410,
    "Link expired",
    "This download link has expired. Ask the care team that sent it for a new one.",
)
LINK_REVOKED = ProblemType(
    "link-revoked",
    410,
    "Link withdrawn",
    "The care team withdrew this download link. Ask them for a new one if you still need the file.",
)
ATTACHMENT_WITHDRAWN = ProblemType(
    "attachment-withdrawn",
    409,
    "File withdrawn from the patient",
    "This file, or the item carrying it, was withdrawn from the patient, so a link to it would not open.",
)
GONE_DETAIL = "What this link opened is no longer available. Ask the care team that sent it."
WITHDRAWN_DETAIL = "The care team withdrew the file this link opened. Ask them if you still need it."


@attrs.frozen
class Link:
    """One expiring link, as its row says."""

    id: str
    org: str
    kind: Literal["file", "attachment"]
    file_id: str
    rendition: str
    attachment_id: str | None
    target: str | None
    item_id: str | None
    patient_id: str | None
    purpose: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    uses: int
    last_used_at: datetime | None

    def status(self, now: datetime) -> Literal["active", "expired", "revoked"]:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


@attrs.frozen
class LinkTarget:
    """What a followed link serves: the bytes and how to name them."""

    link: Link
    sha256: str
    size: int
    media_type: str
    filename: str
    role: str


def _mac(secret: str, link_id: str) -> str:
    digest = hmac.new(secret.encode(), _MAC_CONTEXT + link_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def link_token(secret: str, link_id: str) -> str:
    """The token of a link: its id and the MAC that proves the server made it."""
    return f"{link_id}.{_mac(secret, link_id)}"


def link_url(settings: Settings, link_id: str) -> str:
    """Where a person outside the app follows the link: ``<CARESHARE_PUBLIC_URL>/v1/links/<token>``."""
    return f"{settings.public_url}/v1/links/{link_token(settings.secret_key, link_id)}"


def _verified_id(secret: str, token: str) -> str | None:
    """The link id a token names if its MAC is the server's, else None (any other string: None)."""
    link_id, dot, mac = token.partition(".")
    if not dot or len(link_id) != 26 or not set(link_id) <= _ID_CHARS or len(mac) != 43:
        return None
    return link_id if hmac.compare_digest(mac.encode(), _mac(secret, link_id).encode()) else None


def _link(row: sa.Row[object]) -> Link:
    m = row._mapping
    return Link(
        id=m["id"],
        org=m["org_id"],
        kind="attachment" if m["attachment_id"] is not None else "file",
        file_id=m["file_id"],
        rendition=m["rendition"],
        attachment_id=m["attachment_id"],
        target=m["target"],
        item_id=m["item_id"],
        patient_id=m["patient_id"],
        purpose=m["purpose"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        revoked_by=m["revoked_by"],
        uses=m["uses"],
        last_used_at=m["last_used_at"],
    )


async def _audit(conn: AsyncConnection, link: Link, principal: Principal, action: str) -> None:
    """One audit event about a link: ids only (never its purpose label, a name or a file name)."""
    await record_event(
        conn,
        principal,
        action,
        patient_id=link.patient_id,
        file_id=link.file_id,
        rendition=link.rendition,
        target="link",
        item_id=link.id,
    )


def _follower(link: Link) -> Principal:
    """Who the audit names for a use: the link itself (no one signed in follows it)."""
    return Principal(subject=f"link:{link.id}", role="link", org=link.org)  # type: ignore[arg-type]


async def _insert(conn: AsyncConnection, principal: Principal, expires_in: int, **values: object) -> Link:
    if not 1 <= expires_in <= MAX_LINK_SECONDS:
        raise ValueError("expires_in out of range")  # callers check it first and name the field
    now = db.utcnow()
    link_id = new_id()
    await conn.execute(
        db.links.insert().values(
            id=link_id,
            org_id=principal.org,
            created_by=principal.subject,
            created_at=now,
            expires_at=now + timedelta(seconds=expires_in),
            uses=0,
            **values,
        )
    )
    link = await _get(conn, principal.org, link_id)
    assert link is not None
    await _audit(conn, link, principal, "link.created")
    return link


async def _get(conn: AsyncConnection, org: str, link_id: str) -> Link | None:
    row = (await conn.execute(sa.select(db.links).where(db.links.c.id == link_id, db.links.c.org_id == org))).first()
    return None if row is None else _link(row)


async def file_link(
    conn: AsyncConnection, principal: Principal, file_id: str, *, rendition: str, purpose: str, expires_in: int
) -> Link:
    """A link to a rendition of a ready file of the principal's organisation (a clinician's)."""
    row = (
        await conn.execute(
            sa.select(db.files.c.id, db.files.c.patient_id, db.files.c.status).where(
                db.files.c.id == file_id, db.files.c.org_id == principal.org, db.files.c.deleted_at.is_(None)
            )
        )
    ).first()
    if row is None:
        raise Problem(NOT_FOUND)
    if row.status != "ready":
        raise Problem(
            FILE_NOT_READY,
            "This file is still being checked, or was refused. Make the link once its status is 'ready'.",
        )
    has = (
        await conn.execute(
            sa.select(db.renditions.c.role).where(db.renditions.c.file_id == file_id, db.renditions.c.role == rendition)
        )
    ).first()
    if has is None:
        raise Problem(NOT_FOUND, f"This file has no '{rendition}' rendition.")
    return await _insert(
        conn,
        principal,
        expires_in,
        file_id=file_id,
        rendition=rendition,
        patient_id=row.patient_id,
        purpose=purpose,
    )


async def attachment_link(
    conn: AsyncConnection, principal: Principal, attachment_id: str, *, purpose: str, expires_in: int
) -> Link:
    """A link to an attachment's pinned bytes (a clinician's, of their organisation)."""
    row = (
        await conn.execute(
            sa.select(db.attachments).where(
                db.attachments.c.id == attachment_id, db.attachments.c.org_id == principal.org
            )
        )
    ).first()
    if row is None:
        raise Problem(NOT_FOUND)
    if await _withdrawn(conn, row):
        raise Problem(ATTACHMENT_WITHDRAWN)
    patient_id = (await conn.execute(sa.select(db.files.c.patient_id).where(db.files.c.id == row.file_id))).scalar()
    return await _insert(
        conn,
        principal,
        expires_in,
        file_id=row.file_id,
        rendition=row.role,
        attachment_id=row.id,
        target=row.target,
        item_id=row.item_id,
        patient_id=patient_id,
        purpose=purpose,
    )


async def links_of(
    conn: AsyncConnection, org: str, *, file_id: str | None = None, attachment_id: str | None = None
) -> list[Link]:
    """The links of one file (made on the file itself) or of one attachment, newest first.

    ``not-found`` when the organisation has no such file or attachment (another's answers the same).
    """
    query = sa.select(db.links).where(db.links.c.org_id == org)
    if attachment_id is not None:
        table, key = db.attachments, attachment_id
        query = query.where(db.links.c.attachment_id == attachment_id)
    else:
        table, key = db.files, str(file_id)
        query = query.where(db.links.c.file_id == file_id, db.links.c.attachment_id.is_(None))
    if (await conn.execute(sa.select(table.c.id).where(table.c.id == key, table.c.org_id == org))).first() is None:
        raise Problem(NOT_FOUND)
    return [_link(row) for row in await conn.execute(query.order_by(db.links.c.id.desc()))]


async def find_links(conn: AsyncConnection, org: str, *, target: str, item_id: str, purpose: str) -> list[Link]:
    """The links made for ``purpose`` on the attachments of one item (a letter's email), oldest first."""
    rows = await conn.execute(
        sa.select(db.links)
        .where(
            db.links.c.org_id == org,
            db.links.c.target == target,
            db.links.c.item_id == item_id,
            db.links.c.purpose == purpose,
        )
        .order_by(db.links.c.id)
    )
    return [_link(row) for row in rows]


async def revoke_link(conn: AsyncConnection, principal: Principal, link_id: str) -> Link:
    """Withdraw a link at once (idempotent: a revoked link keeps its first revocation)."""
    link = await _get(conn, principal.org, link_id)
    if link is None:
        raise Problem(NOT_FOUND)
    if link.revoked_at is None:
        await conn.execute(
            sa.update(db.links)
            .where(db.links.c.id == link_id, db.links.c.revoked_at.is_(None))
            .values(revoked_at=db.utcnow(), revoked_by=principal.subject)
        )
        await _audit(conn, link, principal, "link.revoked")
        link = await _get(conn, principal.org, link_id)
        assert link is not None
    return link


async def open_link(conn: AsyncConnection, secret: str, token: str, *, now: datetime | None = None) -> LinkTarget:
    """Follow a link, in the caller's transaction: what to serve, or the refusal; every outcome of a real link is audited.

    A token the server did not sign is ``not-found`` (and unaudited: it names no organisation).
    Expired and revoked links are refused with ``link-expired`` / ``link-revoked``, and so is a
    link to an attachment withdrawn from its patient (or of an item withdrawn, ``core.sharing.revoke``:
    ``link.refused.withdrawn``); a link whose file or attachment is gone is ``not-found``. The
    caller commits even when this raises: the audit row stays.
    """
    now = now or db.utcnow()
    link_id = _verified_id(secret, token)
    row = None if link_id is None else (await conn.execute(sa.select(db.links).where(db.links.c.id == link_id))).first()
    if row is None:
        raise Problem(NOT_FOUND)
    link = _link(row)
    follower = _follower(link)
    state = link.status(now)
    if state != "active":
        await _audit(conn, link, follower, f"link.refused.{state}")
        raise Problem(LINK_REVOKED if state == "revoked" else LINK_EXPIRED)
    if await _withdrawn(conn, link):
        await _audit(conn, link, follower, "link.refused.withdrawn")
        raise Problem(LINK_REVOKED, WITHDRAWN_DETAIL)
    served = await _what_it_opens(conn, link)
    if served is None:
        await _audit(conn, link, follower, "link.refused.gone")
        raise Problem(NOT_FOUND, GONE_DETAIL)
    await conn.execute(
        sa.update(db.links).where(db.links.c.id == link.id).values(uses=db.links.c.uses + 1, last_used_at=now)
    )
    await _audit(conn, link, follower, "link.read")
    return served


async def _withdrawn(conn: AsyncConnection, opens: Link | sa.Row[Any]) -> bool:
    """Whether the attachment a link opens (or an attachment row), or the item carrying it, was withdrawn."""
    attachment_id = opens.attachment_id if isinstance(opens, Link) else opens.id
    if attachment_id is None:
        return False
    attachment = sa.select(db.attachments.c.id).where(
        db.attachments.c.id == attachment_id, db.attachments.c.revoked_at.is_not(None)
    )
    item = sa.select(db.shares.c.id).where(
        db.shares.c.target == opens.target, db.shares.c.item_id == opens.item_id, db.shares.c.revoked_at.is_not(None)
    )
    found = (await conn.execute(sa.select(sa.or_(sa.exists(attachment), sa.exists(item))))).scalar()
    return bool(found)


async def _what_it_opens(conn: AsyncConnection, link: Link) -> LinkTarget | None:
    if link.attachment_id is not None:
        row = (
            await conn.execute(
                sa.select(db.attachments).where(
                    db.attachments.c.id == link.attachment_id, db.attachments.c.org_id == link.org
                )
            )
        ).first()
        if row is None:  # taken off a draft since
            return None
        return LinkTarget(link, row.sha256, row.size, row.media_type, row.filename, row.role)
    row = (
        await conn.execute(
            sa.select(db.files.c.filename, db.renditions)
            .join(db.renditions, db.renditions.c.file_id == db.files.c.id)
            .where(
                db.files.c.id == link.file_id,
                db.files.c.org_id == link.org,
                db.files.c.deleted_at.is_(None),
                db.files.c.status == "ready",
                db.renditions.c.role == link.rendition,
            )
        )
    ).first()
    if row is None:
        return None
    return LinkTarget(link, row.sha256, row.size, row.media_type, row.filename, row.role)
