"""The contract kit as a pytest plugin (entry point ``pytest11``: ``careshare``), loaded wherever careshare is installed.

Fixtures, all on real components (a real app on a real SQLite database in a temporary directory,
real tokens, real HTTP through Litestar's test client or a real uvicorn):

- ``careshare_plugins``: the plugin names under test, from the test module's ``careshare_plugins``
  list, else ``--careshare-contract``, else the ini's ``careshare_contract``, else None (every
  installed plugin). The app loads them and
  every installed plugin that is not a channel (file types, delivery, scanning); other channels
  are disabled (``CARESHARE_DISABLE_PLUGINS``), so a channel is tried on its own.
- ``careshare_settings``, ``careshare_app``, ``careshare_client`` (in process), ``careshare_server``
  (a real server's base URL: use it or the client, not both), ``careshare_tokens``,
  ``careshare_world`` (a clinician, their patient, another patient, the sample files).
- ``careshare_contracts``, ``careshare_adapters``, ``careshare_declared``, ``careshare_routes``,
  ``careshare_access``: what :mod:`careshare.testing.contract`'s tests run on.

``pytest --careshare-contract=discharge`` runs the kit's tests on the ``discharge`` plugin without a
test file of the channel's own. Hypothesis profiles: ``default`` (60 examples), ``ci`` (40, chosen
when ``$CI`` is set), ``thorough`` (2000: ``--hypothesis-profile=thorough``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# The kit's modules report their failed asserts in full, as the tests' own do.
pytest.register_assert_rewrite("careshare.testing.contract", "careshare.testing.authz", "careshare.testing.targets")

try:
    import pytest_asyncio
    from hypothesis import HealthCheck
    from hypothesis import settings as hypothesis_settings
except ImportError:  # careshare without its test extra: this plugin loads in every pytest of the venv
    pytest_asyncio = None  # the kit's fixtures then say what is missing when used

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

    import pluggy
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from careshare.core.settings import Settings
    from careshare.testing.authz import Access, Route
    from careshare.testing.contract import Contract
    from careshare.testing.targets import Adapter, World

__all__ = ["Tokens"]

if pytest_asyncio is not None:
    # Property runs: a modest count on CI's two cores, many more with --hypothesis-profile=thorough.
    hypothesis_settings.register_profile("default", max_examples=60, deadline=None)
    hypothesis_settings.register_profile(
        "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    hypothesis_settings.register_profile("thorough", max_examples=2000, deadline=None)
    hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "default")


def _async_fixture(**kwargs: Any) -> Callable[[Any], Any]:
    if pytest_asyncio is None:

        def missing(function: Any) -> Any:
            @pytest.fixture(name=function.__name__, scope=kwargs.get("scope", "function"))
            def needs_the_test_extra() -> None:
                pytest.fail(
                    "the careshare contract kit needs pytest-asyncio and hypothesis: pip install 'careshare[test]'"
                )

            return needs_the_test_extra

        return missing
    return pytest_asyncio.fixture(**kwargs)  # type: ignore[no-any-return]


CONTRACT_OPTION = "--careshare-contract"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("careshare", "careshare contract kit")
    group.addoption(
        CONTRACT_OPTION,
        action="append",
        default=[],
        metavar="PLUGIN",
        help="run the careshare contract kit on these plugins (entry point names, comma-separated or repeated)",
    )
    parser.addini(
        "careshare_contract",
        type="args",
        default=[],
        help="the plugins the careshare contract kit's tests are for, where a test module names none",
    )


def _option_plugins(config: pytest.Config) -> tuple[str, ...] | None:
    names = [n.strip() for value in config.getoption(CONTRACT_OPTION) or () for n in value.split(",") if n.strip()]
    return tuple(sorted(set(names))) or None


def _ini_plugins(config: pytest.Config) -> tuple[str, ...] | None:
    names = [n.strip() for value in config.getini("careshare_contract") for n in value.split(",") if n.strip()]
    return tuple(sorted(set(names))) or None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long property runs (fewer examples in CI)")
    if _option_plugins(config) is not None:
        from careshare.testing import contract

        # The kit's own tests, collected as if named on the command line.
        config.args.append(str(Path(contract.__file__)))


def chosen_plugins(config: pytest.Config, module: Any) -> tuple[str, ...] | None:
    """The plugin names under test: the module's ``careshare_plugins``, the option, the ini's, else None (all).

    Read at collection (the routes parametrize the authz test), so a module variable, not a fixture.
    """
    if module is not None and hasattr(module, "careshare_plugins"):
        declared = module.careshare_plugins
        return None if declared is None else tuple(sorted(declared))
    return _option_plugins(config) or _ini_plugins(config)


@functools.cache
def _installed() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every installed plugin, the installed channels), by entry point name."""
    from careshare.core.plugins import get_plugin_manager
    from careshare.testing.contract import channel_names

    pm = get_plugin_manager()
    names = tuple(sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None))
    return names, tuple(sorted(channel_names(pm)))


def disabled_for(plugins: Sequence[str] | None) -> tuple[str, ...]:
    """The channels an app for ``plugins`` leaves out: every installed channel not under test."""
    if plugins is None:
        return ()
    installed, channels = _installed()
    unknown = sorted(set(plugins) - set(installed))
    if unknown:
        raise pytest.UsageError(f"careshare contract: no plugin {unknown} is installed; installed: {list(installed)}")
    return tuple(sorted(set(channels) - set(plugins)))


@functools.cache
def _route_table(plugins: tuple[str, ...] | None) -> tuple[Route, ...]:
    from careshare.testing.authz import route_table

    return tuple(route_table(plugins, disabled=disabled_for(plugins)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "careshare_route" in metafunc.fixturenames:
        plugins = chosen_plugins(metafunc.config, metafunc.module)
        routes = [r for r in _route_table(plugins) if not r.automatic]
        metafunc.parametrize("careshare_route", routes, ids=[r.label for r in routes])


# -- settings, app, client, server, tokens ---------------------------------------------------------


@pytest.fixture(scope="module")
def careshare_plugins(request: pytest.FixtureRequest) -> tuple[str, ...] | None:
    """The plugin names under test (None: every installed plugin)."""
    return chosen_plugins(request.config, getattr(request, "module", None))


@pytest.fixture(scope="session")
def careshare_migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database every installed plugin's migrations brought up to date, once per session."""
    from careshare.core.runtime import Careshare
    from careshare.testing import make_settings

    settings = make_settings(tmp_path_factory.mktemp("migrated") / "data")
    cs = Careshare.build(settings)
    try:
        asyncio.run(cs.start())
    finally:
        asyncio.run(cs.close())
    path = Path(settings.database_url.split("///", 1)[1])
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def kit_settings(data_dir: Path, plugins: Sequence[str] | None, migrated: Path, **env: str) -> Settings:
    """Settings for an app of ``plugins`` on ``data_dir``, its database a copy of the migrated one.

    Start-up then finds every revision applied and skips the migrations (a disabled plugin's
    tables stay migrated, as in a deployment that turned it off).
    """
    from careshare.testing import make_settings

    disabled = ",".join(disabled_for(plugins))
    settings = make_settings(data_dir, **({"CARESHARE_DISABLE_PLUGINS": disabled} if disabled else {}), **env)
    if settings.database_url.startswith("sqlite+aiosqlite:///"):
        database = Path(settings.database_url.split("///", 1)[1])
        if not database.exists():
            database.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(migrated, database)
    return settings


@pytest.fixture
def careshare_settings(
    tmp_path: Path, careshare_plugins: tuple[str, ...] | None, careshare_migrated_database: Path
) -> Settings:
    return kit_settings(tmp_path / "data", careshare_plugins, careshare_migrated_database)


@pytest.fixture
def careshare_app(careshare_settings: Settings) -> Litestar:
    from careshare.host import create_app

    return create_app(careshare_settings)


@_async_fixture()
async def careshare_client(careshare_app: Litestar) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app in process, its lifespan run (migrations, delivery, workers), through Litestar's test client."""
    from litestar.testing import AsyncTestClient

    async with AsyncTestClient(app=careshare_app) as client:
        yield client


@pytest.fixture
def careshare_server(careshare_app: Litestar) -> Iterator[str]:
    """The app served by a real uvicorn on 127.0.0.1 (``careshare serve``'s configuration); its base URL."""
    from careshare.testing import running_server

    with running_server(careshare_app) as url:
        yield url


class Tokens:
    """Signed bearer headers for the app's settings: a clinician, a patient, a clinician of another organisation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def clinician(self, org: str = "org-a", sub: str = "dr-a") -> dict[str, str]:
        from careshare.testing import bearer

        return bearer(self.settings, "clinician", org, sub=sub)

    def patient(self, patient_id: str, org: str = "org-a") -> dict[str, str]:
        from careshare.testing import bearer

        return bearer(self.settings, "patient", org, patient=patient_id)


@pytest.fixture
def careshare_tokens(careshare_settings: Settings) -> Tokens:
    return Tokens(careshare_settings)


async def make_world(client: AsyncTestClient[Any], tokens: Tokens) -> World:
    """A clinician of ``org-a``, their patient (with an email address) and another patient, made through the API."""
    from careshare.testing.targets import World

    clinician = tokens.clinician()
    made = []
    for name, mrn in (("Contract Patient", "contract-1"), ("Other Patient", "contract-2")):
        response = await client.post(
            "/v1/patients", json={"name": name, "external_id": mrn, "email": "p@example.org"}, headers=clinician
        )
        assert response.status_code == 201, response.text
        made.append(str(response.json()["id"]))
    patient_id, other_id = made
    return World(
        client,
        clinician,
        tokens.patient(patient_id),
        patient_id,
        other_id,
        other_patient=tokens.patient(other_id),
        patient_name="Contract Patient",
        patient_of=tokens.patient,
    )


@_async_fixture()
async def careshare_world(careshare_client: AsyncTestClient[Any], careshare_tokens: Tokens) -> World:
    return await make_world(careshare_client, careshare_tokens)


# -- what the contract tests run on ----------------------------------------------------------------


@pytest.fixture(scope="module")
def careshare_pm(careshare_plugins: tuple[str, ...] | None) -> pluggy.PluginManager:
    """The plugins as an app of ``careshare_plugins`` loads them."""
    from careshare.core.plugins import get_plugin_manager

    return get_plugin_manager(blocked=disabled_for(careshare_plugins))


@pytest.fixture(scope="module")
def careshare_contracts(
    careshare_pm: pluggy.PluginManager, careshare_plugins: tuple[str, ...] | None
) -> dict[str, list[Contract]]:
    from careshare.testing.contract import contracts_of

    return contracts_of(careshare_pm, careshare_plugins)


@pytest.fixture(scope="module")
def careshare_adapters(careshare_contracts: dict[str, list[Contract]]) -> dict[str, Adapter]:
    from careshare.testing.contract import adapters_of

    return adapters_of(careshare_contracts)


@pytest.fixture(scope="module")
def careshare_declared(careshare_pm: pluggy.PluginManager, careshare_plugins: tuple[str, ...] | None) -> dict[str, str]:
    from careshare.testing.contract import declared_targets

    return declared_targets(careshare_pm, careshare_plugins)


@pytest.fixture(scope="module")
def careshare_routes(careshare_plugins: tuple[str, ...] | None) -> tuple[Route, ...]:
    return _route_table(careshare_plugins)


@_async_fixture(scope="module", loop_scope="module")
async def careshare_access(
    tmp_path_factory: pytest.TempPathFactory,
    careshare_plugins: tuple[str, ...] | None,
    careshare_migrated_database: Path,
    careshare_contracts: dict[str, list[Contract]],
) -> AsyncIterator[Access]:
    """One app for the module, seeded by the contracts, with each caller's headers (the authz tests only read it)."""
    from litestar.testing import AsyncTestClient

    from careshare.host import create_app
    from careshare.testing.authz import Access, caller_headers

    # Hundreds of refused tokens and patient uploads from one address: the rate limits (tested in
    # their own tests) would answer 429 and hide what the matrix looks at, so they are off here.
    settings = kit_settings(
        tmp_path_factory.mktemp("authz") / "data",
        careshare_plugins,
        careshare_migrated_database,
        CARESHARE_TOKEN_FAILURES_PER_MINUTE="0",
        CARESHARE_PATIENT_UPLOADS_PER_HOUR="0",
    )
    contracts = [c for found in careshare_contracts.values() for c in found]
    async with AsyncTestClient(app=create_app(settings)) as client:
        world = await make_world(client, Tokens(settings))
        ids: dict[str, str] = {"patient": world.patient_id, "/v1/patients/{pid}": world.patient_id}
        seeders = []
        for contract in contracts:
            if contract.seed is not None and contract.seed not in seeders:
                seeders.append(contract.seed)
        for seeder in seeders:
            ids.update(await seeder(world))
        not_secret = {prefix for c in contracts for prefix in c.not_secret}
        secrets = sorted({v for k, v in ids.items() if k not in not_secret} | {world.patient_name})
        bodies: dict[tuple[str, str], dict[str, Any]] = {}
        for contract in contracts:
            bodies.update({key: dict(value) for key, value in contract.bodies(ids).items()})
        yield Access(
            client,
            ids,
            caller_headers(settings, world.patient_id, world.other_patient_id),
            bodies,
            secrets,
            public=frozenset(route for c in contracts for route in c.public),
            public_prefixes=tuple(prefix for c in contracts for prefix in c.public_prefixes),
            not_readable={key: why for c in contracts for key, why in c.not_readable.items()},
        )
