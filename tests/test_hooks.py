"""Each hook's contract: a plugin implementing it is called with the documented arguments.

The file-type hooks are exercised through uploads (tests/test_plugins.py); the migration hook in
tests/test_migrations.py. Hooks the channel issues wire into the API (targets, attachment checks,
sharing, archive, delivery) are checked here for their calling contract.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import pluggy
import pytest
import sqlalchemy as sa
import typer
from litestar import get
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from careshare import hookimpl
from careshare.core import db
from careshare.core.plugins import get_plugin_manager
from careshare.core.problems import Problem, ProblemType
from careshare.host import create_app
from careshare.host.cli import add_plugin_commands
from careshare.testing import bearer

if TYPE_CHECKING:
    from pathlib import Path

    from careshare.core.settings import Settings

CHANNELS = ("chat", "letters", "appointments", "medication", "consents", "file-requests")
LETTER_SENT = ProblemType("letter-already-sent", 409, "Letter already sent", "This letter was sent; start a new one.")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []


def test_hook_careshare_targets() -> None:
    pm = get_plugin_manager()
    results = pm.hook.careshare_targets()
    # Every built-in channel is loaded and answers, with a list (an installed outside channel may answer too).
    answering = {pm.get_name(impl.plugin) for impl in pm.hook.careshare_targets.get_hookimpls()}
    assert set(CHANNELS) <= answering
    assert len(results) == len(answering)
    assert all(isinstance(result, list) for result in results)

    class Offers:
        @hookimpl
        def careshare_targets(self) -> list[str]:
            return ["demo-target"]

    pm.register(Offers())
    assert ["demo-target"] in pm.hook.careshare_targets()


def test_hook_careshare_check_attachment() -> None:
    class LetterRules:
        @hookimpl
        def careshare_check_attachment(self, item: dict[str, Any], attached: list[Any]) -> list[Problem]:
            return [Problem(LETTER_SENT)] if item["sent"] else []

    pm = get_plugin_manager(load_entrypoints=False, plugins=[LetterRules()])
    draft = pm.hook.careshare_check_attachment(target="letters", item={"sent": False}, file=None, attached=[])
    sent = pm.hook.careshare_check_attachment(target="letters", item={"sent": True}, file=None, attached=[])
    assert draft == [[]]
    assert [p.code for problems in sent for p in problems] == ["letter-already-sent"]


def test_hook_careshare_shared() -> None:
    seen: list[Any] = []

    class Notifier:
        @hookimpl
        def careshare_shared(self, event: Any) -> None:
            seen.append(event)

    pm = get_plugin_manager(load_entrypoints=False, plugins=[Notifier()])
    pm.hook.careshare_shared(event={"item": "m1"})
    assert seen == [{"item": "m1"}]


def test_hook_careshare_archive() -> None:
    class Archive:
        @hookimpl
        def careshare_archive(self, patient: str) -> list[dict[str, str]]:
            return [{"channel": "demo", "patient": patient}]

    pm = get_plugin_manager(load_entrypoints=False, plugins=[Archive()])
    assert pm.hook.careshare_archive(patient="p1") == [[{"channel": "demo", "patient": "p1"}]]


def test_hook_careshare_deliver() -> None:
    class Inbox:
        @hookimpl
        def careshare_deliver(self, notification: dict[str, str]) -> bool | None:
            return True if notification["via"] == "inbox" else None

    class Mailer:
        @hookimpl
        def careshare_deliver(self, notification: dict[str, str], cs: Any) -> bool | None:
            return cs["smtp"] if notification["via"] == "email" else None

    pm = get_plugin_manager(load_entrypoints=False, plugins=[Inbox(), Mailer()])
    assert pm.hook.careshare_deliver(notification={"via": "inbox"}, cs={"smtp": False}) == [True]
    assert pm.hook.careshare_deliver(notification={"via": "email"}, cs={"smtp": "sent"}) == ["sent"]


def test_a_misspelt_argument_is_refused_at_registration() -> None:
    class Wrong:
        @hookimpl
        def careshare_identify(self, header: bytes) -> None:
            return None

    with pytest.raises(pluggy.PluginValidationError):
        get_plugin_manager(load_entrypoints=False, plugins=[Wrong()])


@get("/v1/demo-channel/ping")
async def ping() -> dict[str, str]:
    return {"pong": "yes"}


class DemoChannel:
    @hookimpl
    def careshare_routes(self) -> list[Any]:
        return [ping]


async def test_hook_careshare_routes(settings: Settings) -> None:
    mounted = get_plugin_manager()
    mounted.register(DemoChannel(), name="demo-channel")
    blocked = get_plugin_manager(blocked={"demo-channel"})
    assert blocked.register(DemoChannel(), name="demo-channel") is None  # blocked names stay out
    headers = bearer(settings, "clinician", "org-a", sub="dr-r")
    async with AsyncTestClient(app=create_app(settings, plugins=mounted)) as client:
        response = await client.get("/v1/demo-channel/ping", headers=headers)
        assert response.status_code == 200
        assert response.json() == {"pong": "yes"}
    async with AsyncTestClient(app=create_app(settings, plugins=blocked)) as client:
        response = await client.get("/v1/demo-channel/ping", headers=headers)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "not-found"


async def test_hook_careshare_background(settings: Settings) -> None:
    """Each job runs once the schema is migrated, beside the API, and is cancelled when the host stops."""
    # The test client runs the app on a loop of its own in another thread: a thread-safe event.
    ran, stopped = threading.Event(), []

    class Heartbeat:
        @hookimpl
        def careshare_background(self, cs: Any) -> list[Any]:
            async def beat() -> None:
                async with cs.reader.connect() as conn:  # the schema is there already
                    await conn.execute(sa.select(db.patients.c.id))
                ran.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    stopped.append("beat")
                    raise

            async def once() -> None:
                stopped.append("once")

            return [beat, once()]  # a coroutine function and a coroutine

    pm = get_plugin_manager(load_entrypoints=False, plugins=[Heartbeat()])
    async with AsyncTestClient(app=create_app(settings, plugins=pm)) as client:
        assert await asyncio.to_thread(ran.wait, 30)
        assert (await client.get("/healthz")).status_code == 200
        assert stopped == ["once"]
    assert stopped == ["once", "beat"]


def test_hook_careshare_commands(tmp_path: Path) -> None:
    group = typer.Typer(name="demo", help="A demo group.", no_args_is_help=True)

    @group.command("hello")
    def hello(name: str = "clinic") -> None:
        typer.echo(f"hello {name}")

    def standalone() -> None:
        typer.echo("standalone ran")

    class Commands:
        @hookimpl
        def careshare_commands(self) -> list[Any]:
            return [group, standalone]

    cli = typer.Typer()

    @cli.command()
    def base() -> None:
        """A command of the host's own, so the group and command are added beside it."""

    pm = get_plugin_manager(load_entrypoints=False, plugins=[Commands()])
    add_plugin_commands(add_plugin_commands(cli, pm), pm)  # twice: each is added once
    assert CliRunner().invoke(cli, ["demo", "hello", "--name", "ward"]).stdout == "hello ward\n"
    assert CliRunner().invoke(cli, ["standalone"]).stdout == "standalone ran\n"
    assert len(cli.registered_groups) == 1 and len(cli.registered_commands) == 2
    # The built-in medication plugin contributes ``careshare reminders run-due`` this way.
    listed = CliRunner().invoke(add_plugin_commands(typer.Typer(), get_plugin_manager()), ["reminders", "--help"])
    assert "run-due" in listed.stdout
