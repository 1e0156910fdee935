"""Every route of the app x eight callers, generated from the route table (issue 10).

The matrix is the contract kit's (:mod:`careshare.testing.contract`, machinery in
:mod:`careshare.testing.authz`), run here on every route of an app with every installed plugin,
the host's own routes included, as a channel's own suite runs it on the channel's routes. Who may
call each route is read from its handler's guard (the ``principal`` dependency: ``clinician``,
``patient`` or ``signed_in`` of ``careshare.web``), never from a hand list, so a new route is
covered without edits. Path parameters are filled with real objects of organisation ``org-a``
and its patient, made through the API by the contracts' seeds (:func:`careshare.testing.seed.seed`
for the built-ins); a route whose parameter no seeded object fills fails, naming the route, until
the seed makes one. The only hand list is what is public by design (``careshare.testing.channels.HOST``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from careshare.testing.contract import (
    test_contract_litestar_options_answers_show_nothing,
    test_contract_route_answers_each_caller_as_its_guard_says,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from careshare.testing.authz import Route

__all__ = [
    "test_contract_litestar_options_answers_show_nothing",
    "test_contract_route_answers_each_caller_as_its_guard_says",
]

#: Every route of the app, the host's included (the kit's default, written out).
careshare_plugins = None


def test_the_route_table_has_the_api(careshare_routes: Sequence[Route]) -> None:
    """The matrix is only as good as the table it walks: it must hold the routes it should."""
    from careshare.testing.channels import HOST

    checked = [r for r in careshare_routes if not r.automatic]
    labels = {r.label for r in checked}
    for expected in (
        "POST /v1/patients",
        "GET /v1/me",
        "GET /v1/files/{fid}/content",
        "GET /healthz",
        "POST /v1/patients/{pid}/messages",
        "POST /v1/letters/{lid}/send",
    ):
        assert expected in labels
    guards_seen = {r.guard for r in checked}
    assert {"clinician", "patient", "signed_in", "public"} <= guards_seen
    public = {(r.method, r.path) for r in checked if r.guard == "public"}
    unlisted = sorted(f"{m} {p}" for m, p in public - HOST.public if not p.startswith(HOST.public_prefixes))
    assert not unlisted, f"routes without a sign-in guard that are not public by design: {unlisted}"


def test_a_plugins_routes_are_the_ones_it_adds() -> None:
    """The kit finds a channel's routes from its name alone: with it and not without it, the host's left out."""
    from careshare.testing.pytest_plugin import _route_table

    chat = {r.label for r in _route_table(("chat",)) if not r.automatic}
    assert chat == {
        "GET /v1/patients/{pid}/messages",
        "POST /v1/patients/{pid}/messages",
        "GET /v1/me/messages",
        "POST /v1/me/messages",
    }, chat
    everything = {r.label for r in _route_table(None)}
    assert chat < everything and "GET /healthz" not in chat
