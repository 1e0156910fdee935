"""Webhook delivery of notifications: one HMAC-signed JSON POST per notification, for push gateways.

Configured by two settings it declares (``careshare_settings``), read with core's from the same
environment and checked at start-up; read again for each notification, from the running
careshare's settings (or the process environment when the caller hands none):

- ``CARESHARE_WEBHOOK_URL``: the http or https URL to POST to. Unset or empty: this plugin
  delivers nothing (answers None) and the in-app inbox is the only channel.
- ``CARESHARE_WEBHOOK_SECRET``: the HMAC-SHA256 key shared with the receiver. Without it nothing
  is sent (answers False, so the notification waits for the secret, retried with backoff).

Each request carries the JSON body (never file contents, never clinical text beyond the title) and:

- ``Careshare-Timestamp``: unix seconds when the request was signed;
- ``Careshare-Signature``: ``sha256=`` + hex HMAC-SHA256(secret, ``<timestamp>.<body>``), the
  timestamp's ASCII digits, a dot, then the exact body bytes;
- ``Careshare-Delivery``: the notification's ``dedupe_key``. Delivery is at least once, so a
  receiver keeps the keys it has seen and ignores repeats.
- ``Careshare-Audience``: ``patient`` or ``clinic``, who the notification is for (as in the body).

Notifications for the clinic (``audience`` ``clinic``: a patient's message, upload, file-request
answer or consent answer, see :mod:`careshare.core.notifications`) are posted the same way, signed
and retried alike; their body carries ``"audience": "clinic"`` and a ``kind`` such as
``patient.message``, ``patient.upload``, ``file-request.answered`` or ``consent.decided``. A patient's notification has no ``audience`` key
(its body is as it always was). A push gateway that sends to patients' phones must look at
``Careshare-Audience`` (or the body's ``audience``) and never push a ``clinic`` one to the patient.

A receiver recomputes the HMAC over the raw body bytes (before any JSON parsing), compares in
constant time and refuses timestamps far from its clock (:func:`verify` does all three). A 2xx
answer means delivered; anything else, a redirect included, is retried with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from careshare import __version__, hookimpl
from careshare.core.settings import Setting

if TYPE_CHECKING:
    from collections.abc import Mapping

    from careshare.core.notifications import Notification
    from careshare.core.runtime import Careshare

__all__ = ["SECRET", "URL", "careshare_deliver", "careshare_settings", "payload", "sign", "verify"]

logger = logging.getLogger(__name__)

URL_VARIABLE = "CARESHARE_WEBHOOK_URL"
SECRET_VARIABLE = "CARESHARE_WEBHOOK_SECRET"


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http URL")
    return url


URL: Setting[str | None] = Setting(
    URL_VARIABLE,
    None,
    "Where notifications are POSTed, signed (http or https); unset: no webhook.",
    parse=_http_url,
    expected="an http or https URL with a host",
    secret=True,  # a URL may hold credentials
)
SECRET: Setting[str | None] = Setting(
    SECRET_VARIABLE,
    None,
    "The HMAC-SHA256 key webhook requests are signed with; unset: no webhook is sent.",
    parse=str,
    expected="the key shared with the receiver",
    secret=True,
)
SIGNATURE_HEADER = "Careshare-Signature"
TIMESTAMP_HEADER = "Careshare-Timestamp"
DELIVERY_HEADER = "Careshare-Delivery"
AUDIENCE_HEADER = "Careshare-Audience"
#: Short: this runs in a worker thread of the delivery loop, and a slow receiver is simply retried.
TIMEOUT = httpx.Timeout(5.0, connect=3.0)
#: How far a receiver should accept a timestamp from its own clock (replay window).
TOLERANCE_SECONDS = 300


def payload(notification: Any) -> bytes:
    """The exact body bytes sent for ``notification``: what happened, never what was shared."""
    created_at = notification.created_at
    body: dict[str, Any] = {
        "id": notification.id,
        "dedupe_key": notification.dedupe_key,
        "kind": notification.kind,
        "title": notification.title,
        "organisation": notification.org,
        "patient_id": notification.patient_id,
        "target": notification.target,
        "item_id": notification.item_id,
        "created_at": created_at.isoformat() if hasattr(created_at, "isoformat") else str(created_at),
    }
    audience = getattr(notification, "audience", "patient")
    if audience != "patient":  # the clinic's: told apart; the patient's body stays as receivers know it
        body["audience"] = audience
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``Careshare-Signature`` value: ``sha256=`` + hex HMAC-SHA256 over ``<timestamp>.<body>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """What a receiver checks: a fresh timestamp and a signature that matches the raw body."""
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@hookimpl
def careshare_settings() -> list[Setting[Any]]:
    return [URL, SECRET]


@hookimpl
def careshare_deliver(notification: Notification, cs: Careshare | None) -> bool | None:
    # The running careshare's settings; a caller without one (a test's delivery round) has the process's.
    environ: Mapping[str, str] = cs.settings.environ if cs is not None else os.environ
    if not (environ.get(URL_VARIABLE) or "").strip():
        return None  # not configured: the in-app inbox is enough
    try:
        url = URL.read(environ)
    except ValueError as exc:
        # The message names the variable and what it must be, never the URL (it may hold credentials).
        logger.warning("webhook not sent: %s", exc)
        return False
    assert url is not None
    parts = urlsplit(url)
    secret = SECRET.read(environ)
    if not secret:
        logger.warning("webhook not sent: %s is not set (unsigned webhooks are never sent)", SECRET_VARIABLE)
        return False
    body = payload(notification)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"careshare-webhook/{__version__}",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        DELIVERY_HEADER: notification.dedupe_key,
        AUDIENCE_HEADER: getattr(notification, "audience", "patient"),
    }
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
            response = client.post(url, content=body, headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        logger.warning("webhook not delivered host=%s error=%s", parts.hostname, type(exc).__name__)
        return False
    if response.is_success:
        return True
    logger.warning("webhook not delivered host=%s status=%d", parts.hostname, response.status_code)
    return False
