"""Route guards: who may call a route, as Litestar dependencies over the authenticated ``caller``.

The host authenticates every request (``caller``, a :class:`~careshare.core.models.Principal` from the
bearer token); a guard narrows it. A controller names one as its ``principal`` dependency::

    dependencies = {"principal": Provide(clinician)}
"""

from __future__ import annotations

from litestar.di import NamedDependency

from careshare.core.models import Principal
from careshare.core.problems import FORBIDDEN_ROLE, Problem

__all__ = ["clinician", "patient", "signed_in"]


async def signed_in(caller: NamedDependency[Principal]) -> Principal:
    return caller


async def clinician(caller: NamedDependency[Principal]) -> Principal:
    if not caller.is_clinician:
        raise Problem(FORBIDDEN_ROLE, "Only clinicians may do this.")
    return caller


async def patient(caller: NamedDependency[Principal]) -> Principal:
    if caller.is_clinician:
        raise Problem(FORBIDDEN_ROLE, "This address is for patients; clinicians use /v1/patients/{pid}/...")
    return caller
