"""The query parameters of a file list: one Litestar dependency every file list of the host and plugins shares."""

from __future__ import annotations

from typing import Annotated

from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter

from careshare.core.files import FileSearch
from careshare.core.kinds import kinds, listed
from careshare.core.runtime import Careshare
from careshare.web.openapi import AWARE_DATE_TIME
from careshare.web.views import aware_datetime, invalid

__all__ = ["MAX_NAME_QUERY_CHARS", "file_search"]

MAX_NAME_QUERY_CHARS = 200
_TIME = {"pattern": AWARE_DATE_TIME["pattern"], "format": "date-time"}


async def file_search(
    cs: NamedDependency[Careshare],
    name: Annotated[
        str,
        QueryParameter(max_length=MAX_NAME_QUERY_CHARS, description="part of the file name, in any case"),
    ] = "",
    kind: Annotated[
        str | None, QueryParameter(pattern="^[a-z0-9-]{1,32}$", description="one kind: pdf, image, dicom, video ...")
    ] = None,
    status: Annotated[str | None, QueryParameter(pattern="^(processing|ready|rejected)$")] = None,
    source: Annotated[str | None, QueryParameter(pattern="^(clinic|patient)$")] = None,
    unseen: FromQuery[bool] = False,
    since: Annotated[
        str | None, QueryParameter(description="arrived at or after (ISO 8601 with offset)", schema_extra=_TIME)
    ] = None,
    before: Annotated[
        str | None, QueryParameter(description="arrived before (ISO 8601 with offset)", schema_extra=_TIME)
    ] = None,
) -> FileSearch:
    """The :class:`~careshare.core.files.FileSearch` a file list's query asks for, or ``invalid-request`` naming what is wrong."""
    known = kinds(cs.plugins)
    if kind is not None and kind not in known:
        raise invalid(f"kind: one of {listed(sorted(known))}")
    start = aware_datetime(since, "since") if since is not None else None
    end = aware_datetime(before, "before") if before is not None else None
    if start is not None and end is not None and end <= start:
        raise invalid("before: must come after since (before is exclusive, since inclusive)")
    return FileSearch(name=name, kind=kind, status=status, source=source, unseen=unseen, since=start, before=end)
