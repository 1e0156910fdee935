"""Bearer tokens (JWT, HS256): minting for development and verifying on every request."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import jwt
from litestar.di import NamedDependency

from careshare.core.models import Principal
from careshare.core.patients import organisation_known
from careshare.core.problems import INVALID_TOKEN, MISSING_TOKEN, UNKNOWN_ORGANISATION, Problem

if TYPE_CHECKING:
    from litestar import Request

    from careshare.core.runtime import Careshare

__all__ = ["known_organisation", "mint_token", "principal", "verify_token"]

ALGORITHM = "HS256"
ROLES = ("clinician", "patient")


def mint_token(
    secret: str,
    *,
    role: str,
    org: str,
    sub: str | None = None,
    patient: str | None = None,
    ttl_seconds: int = 12 * 3600,
) -> str:
    """A signed token; patients need ``patient`` (their id), and their ``sub`` defaults to it."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "patient" and not patient:
        raise ValueError("a patient token needs the patient id")
    subject = sub or (f"patient:{patient}" if role == "patient" else None)
    if not subject:
        raise ValueError("a clinician token needs a subject (--sub)")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "role": role, "org": org, "iat": now, "exp": now + ttl_seconds}
    if role == "patient":
        claims["patient"] = patient
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


#: Why a token was not accepted, for the problem's sentence (nothing of the token itself in it).
EXPIRED = "The bearer token has expired. Sign in again to get a new one."
OTHER_KEY = (
    "The bearer token was not signed with this server's key. Get one from this server's sign-in; "
    "in development, run `careshare token` with the server's CARESHARE_DATA_DIR (or CARESHARE_SECRET_KEY)."
)


def verify_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "role", "org", "exp"]})
    except jwt.ExpiredSignatureError:
        raise Problem(INVALID_TOKEN, EXPIRED) from None
    except jwt.InvalidSignatureError:
        raise Problem(INVALID_TOKEN, OTHER_KEY) from None
    except jwt.PyJWTError:
        raise Problem(INVALID_TOKEN) from None
    role, org, sub, patient_id = claims.get("role"), claims.get("org"), claims.get("sub"), claims.get("patient")
    if role not in ROLES or not isinstance(org, str) or not org or not isinstance(sub, str):
        raise Problem(INVALID_TOKEN)
    if role == "patient" and (not isinstance(patient_id, str) or not patient_id):
        raise Problem(INVALID_TOKEN)
    return Principal(subject=sub, role=role, org=org, patient=patient_id if role == "patient" else None)


async def principal(request: Request[Any, Any, Any], cs: NamedDependency[Careshare]) -> Principal:
    """The dependency every protected route takes: who is calling, from the bearer token.

    A request the console's script made under ``/console/api`` names its caller with the session
    cookie instead (and is refused from another site); see ``careshare.host.console``.
    """
    from careshare.host.console import CONSOLE_API_SCOPE
    from careshare.host.console.session import console_caller
    from careshare.host.limits import token_failures

    if request.scope.get(CONSOLE_API_SCOPE):
        return await console_caller(request, cs)

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(MISSING_TOKEN)
    with token_failures(request):  # 429 while this address fails too often; counts invalid tokens
        who = verify_token(cs.settings.secret_key, token.strip())
    await known_organisation(request, cs, who)
    return who


async def known_organisation(request: Request[Any, Any, Any], cs: Careshare, who: Principal) -> None:
    """``unknown-organisation`` unless the token's organisation exists (remembered once seen)."""
    known: set[str] = request.app.state.setdefault("known_orgs", set())
    if who.org not in known:
        if not await organisation_known(cs.engine, who.org, cs.settings.allowed_orgs):
            raise Problem(UNKNOWN_ORGANISATION)
        known.add(who.org)
