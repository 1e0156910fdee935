"""Liveness and readiness: the database answers and the blob store is reachable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from litestar import get
from litestar.di import NamedDependency

from careshare.web.openapi import documented

if TYPE_CHECKING:
    from careshare.core.runtime import Careshare

__all__ = ["healthz"]


@get("/healthz", tags=["health"], operation_class=documented(public=True))
async def healthz(cs: NamedDependency[Careshare]) -> dict[str, Any]:
    async with cs.reader.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
    return {"status": "ok", "plugins": sorted(name for name, plugin in cs.plugins.list_name_plugin() if plugin)}
