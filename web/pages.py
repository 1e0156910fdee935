"""Lists, a page at a time, newest first: the one shape of every channel's list routes.

A channel's list is a loader in its own module (``load(conn, principal, [patient_id,] cursor=,
limit=) -> (items, next_cursor)``, usually ``core.db.newest_first`` underneath) and a function
that shapes one item as JSON. :func:`page_route` turns the two into the route, as a controller
attribute::

    class MyConsents(Controller):
        path = "/v1/me/consents"
        dependencies = {"principal": Provide(patient)}

        mine = page_route("/", list_consents, partial(consent_json, for_clinician=False), of="caller")
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from litestar import get
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from careshare.core.models import Principal
from careshare.core.runtime import Careshare
from careshare.web.views import PageLimit, page_json

__all__ = ["PageOf", "page_route", "show_route"]

T = TypeVar("T")
#: Whose items a page lists: the path's patient (``{pid}``), the signed-in patient's own, or the
#: caller's organisation's.
PageOf = Literal["patient", "caller", "organisation"]
Loader = Callable[..., Awaitable[tuple[Sequence[T], str | None]]]
_PATH_PARAMETER = re.compile(r"\{(\w+):str\}")


async def _page(
    cs: Careshare, load: Loader[T], shape: Callable[[T], dict[str, Any]], *args: Any, cursor: str | None, limit: int
) -> dict[str, Any]:
    async with cs.reader.connect() as conn:
        items, next_cursor = await load(conn, *args, cursor=cursor, limit=limit)
    return page_json([shape(item) for item in items], next_cursor)


def page_route(
    path: str, load: Loader[T], shape: Callable[[T], dict[str, Any]], *, of: PageOf, **options: Any
) -> HTTPRouteHandler:
    """``@get(path)`` answering ``{"items": [...], "next_cursor"}`` with ``cursor`` and ``limit`` (1-200, 50).

    ``of="patient"``: ``load(conn, principal, pid, ...)`` for the path parameter ``{pid}``;
    ``of="caller"``: the same loader with the signed-in patient's own id; ``of="organisation"``:
    ``load(conn, principal, ...)``. The loader checks access (a patient of another organisation is
    ``not-found``), as it does for every other caller of it. ``options`` go to :func:`litestar.get`.
    """
    if of == "patient":

        async def handler(
            self: Any,
            cs: NamedDependency[Careshare],
            principal: NamedDependency[Principal],
            pid: FromPath[str],
            cursor: FromQuery[str | None] = None,
            limit: PageLimit = 50,
        ) -> dict[str, Any]:
            return await _page(cs, load, shape, principal, pid, cursor=cursor, limit=limit)

    elif of == "caller":

        async def handler(
            self: Any,
            cs: NamedDependency[Careshare],
            principal: NamedDependency[Principal],
            cursor: FromQuery[str | None] = None,
            limit: PageLimit = 50,
        ) -> dict[str, Any]:
            return await _page(cs, load, shape, principal, str(principal.patient), cursor=cursor, limit=limit)

    elif of == "organisation":

        async def handler(
            self: Any,
            cs: NamedDependency[Careshare],
            principal: NamedDependency[Principal],
            cursor: FromQuery[str | None] = None,
            limit: PageLimit = 50,
        ) -> dict[str, Any]:
            return await _page(cs, load, shape, principal, cursor=cursor, limit=limit)

    else:
        raise ValueError(f"of must be 'patient', 'caller' or 'organisation', not {of!r}")
    handler.__name__ = handler.__qualname__ = "list"  # the OpenAPI operation: V1...List
    return get(path, **options)(handler)


def show_route(
    path: str, load: Callable[[Any, Principal, str], Awaitable[T]], shape: Callable[[T], dict[str, Any]], **options: Any
) -> HTTPRouteHandler:
    """``@get(path)`` answering one item: ``shape(await load(conn, principal, id))``.

    ``path`` ends in the item's parameter (``"/{cid:str}"``), whatever its name; the loader checks
    access (``not-found`` for another organisation's item or another patient's).
    """
    names = _PATH_PARAMETER.findall(path)
    if not names:
        raise ValueError(f"{path!r} names no path parameter ('/{{id:str}}')")
    name = names[-1]

    async def handler(self: Any, cs: Careshare, principal: Principal, **ids: str) -> dict[str, Any]:
        async with cs.reader.connect() as conn:
            return shape(await load(conn, principal, ids[name]))

    # Litestar reads the parameters from the signature: give the handler the path's own name.
    parameters = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("cs", inspect.Parameter.KEYWORD_ONLY, annotation=NamedDependency[Careshare]),
        inspect.Parameter("principal", inspect.Parameter.KEYWORD_ONLY, annotation=NamedDependency[Principal]),
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=FromPath[str]),
    ]
    handler.__signature__ = inspect.Signature(parameters, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    handler.__annotations__ = {p.name: p.annotation for p in parameters[1:]} | {"return": dict[str, Any]}
    handler.__name__ = handler.__qualname__ = "show"  # the OpenAPI operation: V1...Show
    return get(path, **options)(handler)
