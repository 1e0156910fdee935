"""The contract kit: the tests every channel passes, run unchanged on any plugin (``careshare.testing.contract``).

A channel's own test suite runs them with a file of three lines::

    from careshare.testing.contract import *  # noqa: F403

    careshare_plugins = ["discharge"]  # the entry point names under test; None: every installed plugin

or without a file, ``pytest --careshare-contract=discharge``. The fixtures come from the pytest
plugin :mod:`careshare.testing.pytest_plugin` (entry point ``pytest11``). What the tests check:

- every target the plugins declare has an adapter (:func:`test_contract_every_target_has_an_adapter`);
- every target x every kind x every source, in drawn sequences of requests, attaches or refuses
  exactly as its declared rules predict (:func:`test_contract_attaching_gives_what_the_declared_rules_predict`);
- what is shared reaches the patient's archive with exactly its files and the patient's inbox
  with a notification that names no clinical text, no file and not the patient, and another
  patient sees none of it (:func:`test_contract_shared_items_reach_the_archive_and_inbox`);
- every route of the plugins answers each of eight callers as its guard says, and a foreign
  caller reads none of the seeded objects (:func:`test_contract_route_answers_each_caller_as_its_guard_says`).

What the kit reads from the plugin's declarations: its targets' rules (``GET /v1/targets``), its
routes (an app with it against one without it) and their guards. What it cannot read, the plugin
gives through its ``careshare_contract`` hook: one :class:`Contract` with an
:class:`~careshare.testing.targets.Adapter` per target, a seed and the bodies of its routes.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careshare.testing.authz import CALLERS, Access, Route, Unfilled, call, check
from careshare.testing.targets import KINDS, Adapter, Sample, World, outcome

if TYPE_CHECKING:
    import pluggy
    from hypothesis.strategies import DrawFn
    from litestar.testing import AsyncTestClient

__all__ = [
    "Contract",
    "adapters_of",
    "check_coverage",
    "contracts_of",
    "subjects",
    "test_contract_attaching_gives_what_the_declared_rules_predict",
    "test_contract_every_target_has_an_adapter",
    "test_contract_litestar_options_answers_show_nothing",
    "test_contract_route_answers_each_caller_as_its_guard_says",
    "test_contract_shared_items_reach_the_archive_and_inbox",
]

#: Requests one example makes on its item (a sequence of attachments).
MAX_STEPS = 5
HOOK_HELP = (
    "return careshare.testing.contract.Contract(adapters=[...]) from the plugin's careshare_contract hook "
    "(docs/plugins.md, 'Testing a channel: the contract kit')"
)

Seeder = Callable[[World], Awaitable[Mapping[str, str]]]
Bodies = Callable[[Mapping[str, str]], Mapping[tuple[str, str], Mapping[str, Any]]]


def _no_bodies(ids: Mapping[str, str]) -> Mapping[tuple[str, str], Mapping[str, Any]]:
    return {}


@attrs.frozen
class Contract:
    """What a channel tells the kit that its declarations cannot: how to drive its routes.

    ``adapters``: one per target the plugin declares (and one per undeclared kind of item the kit
    should try, as file requests are). ``seed``: makes, through the API, an object behind each path
    parameter of the plugin's routes and returns their ids by the route prefix ending in the
    parameter (``{"/v1/discharge-summaries/{sid}": "..."}``); the kit adds the patient's own
    (``/v1/patients/{pid}``). ``bodies``: for each (method, path) that needs one, the request
    arguments that would succeed for the caller the route is for (``{"json": {...}}``), so that a
    foreign caller's refusal is the access check, not the body check. ``public``: routes public
    by design. ``not_readable``: reads of a seeded object that are refused by design (and why).
    ``not_secret``: seeded prefixes whose ids a caller may see (an address that is its own credential).
    """

    adapters: Sequence[Adapter] = ()
    seed: Seeder | None = None
    bodies: Bodies = _no_bodies
    public: frozenset[tuple[str, str]] = frozenset()
    public_prefixes: tuple[str, ...] = ()
    not_readable: Mapping[tuple[str, str], str] = attrs.field(factory=dict)
    not_secret: frozenset[str] = frozenset()


# -- which plugins, which contracts ----------------------------------------------------------------


def channel_names(pm: pluggy.PluginManager) -> set[str]:
    """The loaded plugins that are channels: they declare targets or serve routes."""
    found = set()
    for name, plugin in pm.list_name_plugin():
        if plugin is not None and {"careshare_targets", "careshare_routes"} & {
            caller.name for caller in pm.get_hookcallers(plugin) or ()
        }:
            found.add(name)
    return found


def subjects(pm: pluggy.PluginManager, plugins: Collection[str] | None) -> list[str]:
    """The plugin names under test: ``plugins``, each checked to be loaded; None: every channel."""
    if plugins is None:
        return sorted(channel_names(pm))
    loaded = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    unknown = sorted(set(plugins) - loaded)
    if unknown:
        raise pytest.UsageError(
            f"careshare contract: no plugin {unknown} is installed (entry point group 'careshare'); "
            f"installed: {sorted(loaded)}"
        )
    return sorted(plugins)


def contracts_of(pm: pluggy.PluginManager, plugins: Collection[str] | None) -> dict[str, list[Contract]]:
    """Each plugin under test with the contracts its ``careshare_contract`` gives (the host's when all are)."""
    found: dict[str, list[Contract]] = {}
    for name in subjects(pm, plugins):
        hook = getattr(pm.get_plugin(name), "careshare_contract", None)
        found[name] = list(hook()) if hook is not None else []
    if plugins is None:
        from careshare.testing.channels import HOST

        found["(host)"] = [HOST]
    return found


def declared_targets(pm: pluggy.PluginManager, plugins: Collection[str] | None) -> dict[str, str]:
    """Each target the plugins under test declare, with the plugin declaring it."""
    found = {}
    for name in subjects(pm, plugins):
        hook = getattr(pm.get_plugin(name), "careshare_targets", None)
        for target in hook() if hook is not None else ():
            found[target.name] = name
    return found


def adapters_of(contracts: Mapping[str, Sequence[Contract]]) -> dict[str, Adapter]:
    """The adapters of the contracts by the target each drives (a target driven twice is an error)."""
    found: dict[str, Adapter] = {}
    for name, adapter in ((a.target, a) for c in itertools.chain.from_iterable(contracts.values()) for a in c.adapters):
        if not name:
            raise AssertionError(f"{type(adapter).__name__}: an adapter names the target it drives (target = '...')")
        if name in found:
            raise AssertionError(f"two adapters drive target {name!r}")
        found[name] = adapter
    return found


def check_coverage(declared: Mapping[str, str], loaded: Collection[str], adapters: Mapping[str, Adapter]) -> None:
    """Fail, naming them, on targets without an adapter and on adapters of declared targets nobody loads."""
    missing = sorted(f"{target!r} (plugin {plugin!r})" for target, plugin in declared.items() if target not in adapters)
    assert not missing, f"targets the contract kit cannot drive, without an adapter: {', '.join(missing)}; {HOOK_HELP}"
    stale = sorted(name for name, adapter in adapters.items() if adapter.declared and name not in loaded)
    assert not stale, f"adapters for targets the app does not serve (GET /v1/targets): {stale}"


# -- the attachment matrix -------------------------------------------------------------------------


async def loaded_rules(client: AsyncTestClient[Any], headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = await client.get("/v1/targets", headers=headers)
    assert response.status_code == 200, response.text
    return {t["name"]: t for t in response.json()["items"]}


@pytest.mark.asyncio
async def test_contract_every_target_has_an_adapter(
    careshare_world: World, careshare_declared: Mapping[str, str], careshare_adapters: Mapping[str, Adapter]
) -> None:
    """Every target the plugins under test declare is one the kit can drive, and the app serves it."""
    loaded = await loaded_rules(careshare_world.client, careshare_world.clinician)
    assert set(careshare_declared) <= set(loaded), f"declared but not served: {set(careshare_declared) - set(loaded)}"
    check_coverage(careshare_declared, loaded, careshare_adapters)


@st.composite
def plans(
    draw: DrawFn, adapters: Mapping[str, Adapter], loaded: Mapping[str, Mapping[str, Any]]
) -> tuple[str, Mapping[str, Any], list[Any]]:
    """A target, its rules, and the requests to make: each a list of (kind, source), or "finish"."""
    name = draw(st.sampled_from(sorted(adapters)))
    adapter = adapters[name]
    rules = adapter.draw_rules(draw, loaded.get(name))
    file = st.tuples(st.sampled_from(KINDS), st.sampled_from(adapter.sources))
    request: st.SearchStrategy[Any] = st.lists(file, min_size=1, max_size=adapter.batch, unique=adapter.batch > 1)
    if adapter.can_finish:
        request = request | st.just("finish")
    return name, rules, draw(st.lists(request, min_size=1, max_size=MAX_STEPS))


@pytest.mark.slow
@pytest.mark.asyncio
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_contract_attaching_gives_what_the_declared_rules_predict(
    careshare_world: World,
    careshare_declared: Mapping[str, str],
    careshare_adapters: Mapping[str, Adapter],
    data: st.DataObject,
) -> None:
    """Every target x every kind x every source: each request answers what the declared rules predict."""
    world = careshare_world
    loaded = await loaded_rules(world.client, world.clinician)
    check_coverage(careshare_declared, loaded, careshare_adapters)
    name, rules, requests = data.draw(plans(careshare_adapters, loaded), label="plan")
    adapter = careshare_adapters[name]
    item = await adapter.new_item(world, rules)
    attached: list[int] = []  # sizes of what the item carries, as the rules count them
    is_draft = True
    for step in requests:
        if step == "finish":
            await adapter.finish(world, item)
            is_draft = False
            continue
        files = [await world.sample(kind, source) for kind, source in step]
        expected = adapter.predict(rules, files, attached, is_draft=is_draft)
        response = await adapter.attach(world, item, files)
        assert outcome(response) == expected, (name, step, response.text)
        if expected is None and not adapter.item_per_request:
            attached += [f.sizes[rules["rendition"]] for f in files]


# -- archive and notifications ---------------------------------------------------------------------


def _entry(archive: Mapping[str, Any], item_id: str) -> dict[str, Any] | None:
    return next(
        (e for e in itertools.chain.from_iterable(archive["channels"].values()) if e["item_id"] == item_id), None
    )


@st.composite
def shares(draw: DrawFn, adapters: Mapping[str, Adapter], loaded: Mapping[str, Mapping[str, Any]]) -> Any:
    """A target whose items reach the patient, and the (kind, source) of files its rules accept."""
    sharing = sorted(name for name, adapter in adapters.items() if adapter.shares)
    if not sharing:
        return None
    name = draw(st.sampled_from(sharing))
    rules = adapters[name].draw_rules(draw, loaded.get(name))
    # Accepted kinds from accepted places, no more than the target carries; sizes are checked once uploaded.
    owners = [s for s in adapters[name].sources if s in rules.get("sources", ("patient", "library"))]
    kinds = [k for k in KINDS if k in rules["accepts"] and rules.get(f"{k}_allowed") is not False]
    if not owners or not kinds:
        return name, rules, []
    most = min(3, rules["max_count"] or 3)
    files = draw(st.lists(st.tuples(st.sampled_from(kinds), st.sampled_from(owners)), max_size=most, unique=True))
    return name, rules, files


@pytest.mark.slow
@pytest.mark.asyncio
# A small space (a target, a few accepted files): a fifth of the profile's examples covers it.
@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=max(6, settings.default.max_examples // 5)
)
@given(data=st.data())
async def test_contract_shared_items_reach_the_archive_and_inbox(
    careshare_world: World, careshare_adapters: Mapping[str, Adapter], data: st.DataObject
) -> None:
    """What is shared is in the patient's archive with exactly its files, and in their inbox without clinical text.

    The other patient's archive and inbox show none of it. The notification names no clinical text
    (what the adapter wrote as :attr:`World.clinical_text`), no file name and not the patient.
    """
    world = careshare_world
    loaded = await loaded_rules(world.client, world.clinician)
    plan = data.draw(shares(careshare_adapters, loaded), label="share")
    if plan is None:
        pytest.skip("no adapter of the plugins under test shares items with a patient (Adapter.shares)")
    name, rules, picks = plan
    adapter = careshare_adapters[name]
    item = await adapter.new_item(world, rules)
    files: list[Sample] = []
    for kind, source in picks:
        file = await world.sample(kind, source)
        if adapter.predict(rules, [*files, file], [], is_draft=True) is not None:
            continue  # over a size limit: the matrix tries that; here only what attaches
        if not adapter.item_per_request:
            response = await adapter.attach(world, item, [file])
            assert outcome(response) is None, (name, kind, source, response.text)
        files.append(file)
    shared = await adapter.share(world, item, files)

    archive = await world.client.get("/v1/me/archive", headers=world.patient)
    assert archive.status_code == 200, archive.text
    entry = _entry(archive.json(), shared)
    assert entry is not None, f"{name}: the shared item {shared} is not in the patient's archive: {archive.text}"
    assert [a["file_id"] for a in entry["attachments"]] == [f.file_id for f in files], entry
    for attachment in entry["attachments"]:
        content = await world.client.get(attachment["url"], headers=world.patient)
        assert content.status_code == 200, (attachment, content.text)
        assert len(content.content) == attachment["size"], attachment

    inbox = await world.client.get("/v1/me/notifications", headers=world.patient)
    assert inbox.status_code == 200, inbox.text
    notes = [n for n in inbox.json()["items"] if n["item_id"] == shared]
    assert notes, f"{name}: no notification in the patient's inbox names the shared item {shared}"
    told = inbox.text
    forbidden = [world.clinical_text, world.patient_name, *(f"sample-{f.kind}" for f in files)]
    shown = [text for text in forbidden if text and text in told]
    assert not shown, f"{name}: the patient's notifications show {shown}"

    for path in ("/v1/me/archive", "/v1/me/notifications"):
        other = await world.client.get(path, headers=world.other_patient)
        assert other.status_code == 200, other.text
        assert shared not in other.text, f"{name}: the other patient's {path} shows item {shared}"


# -- authz of the routes ---------------------------------------------------------------------------

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")  # the authz tests share one seeded app and its loop


@MODULE_LOOP
async def test_contract_route_answers_each_caller_as_its_guard_says(
    careshare_access: Access, careshare_route: Route
) -> None:
    """Each of eight callers (no token, bad tokens, foreign, the wrong role, the right one) gets what the guard says."""
    failures = []
    # The clinician calls last: the bodies may change what the others would see.
    for who in CALLERS:
        try:
            response = await call(careshare_access, careshare_route, who)
        except Unfilled as error:
            pytest.fail(str(error))
        try:
            check(careshare_access, careshare_route, who, response)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)


@MODULE_LOOP
async def test_contract_litestar_options_answers_show_nothing(
    careshare_access: Access, careshare_routes: Sequence[Route]
) -> None:
    """Litestar answers OPTIONS itself on every path (no handler of ours runs): no body, no data."""
    automatic = [r for r in careshare_routes if r.automatic and not careshare_access.is_public(r)]
    assert automatic, "the plugins under test serve no route"
    for route in automatic:
        response = await call(careshare_access, route, "anonymous")
        assert response.status_code == 204, f"{route.label}: {response.status_code}"
        assert response.content == b"", route.label
