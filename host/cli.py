"""The ``careshare`` command: serve the API, run workers, mint development tokens, list plugins, migrate."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import pluggy

    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings

T = TypeVar("T")

__all__ = ["add_plugin_commands", "app", "main"]

app = typer.Typer(help="careshare: share files between clinicians and patients.", no_args_is_help=True)
# Lines are never wrapped: a command in the banner must stay one line to copy.
err = Console(stderr=True, soft_wrap=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_json: Annotated[bool, typer.Option("--log-json", help="One JSON object per log line.")] = False,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Run no checks here: `careshare worker` processes run them.")
    ] = False,
) -> None:
    """Start the HTTP API (settings from CARESHARE_* variables; defaults: ./careshare-data)."""
    import attrs
    import uvicorn

    from careshare.core.settings import Settings
    from careshare.host.app import create_app
    from careshare.host.logging import configure_logging
    from careshare.host.server import uvicorn_config

    configure_logging(json_lines=log_json)
    settings = Settings.from_env()
    if no_worker:
        settings = attrs.evolve(settings, workers=0)
    shown = "[::1]" if host == "::1" else host
    err.print(f"careshare {settings.data_dir} -> http://{shown}:{port}  (API docs: http://{shown}:{port}/schema)")
    err.print(f"Mint a token: {_token_command(settings)} --role clinician --org demo --sub dr-who")
    err.print(f"Web console: http://{shown}:{port}/console (sign in with a token; CARESHARE_DEV_LOGIN=1 adds a form)")
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings, host=host, port=port))
    # uvicorn re-raises the Ctrl-C it stopped on; uvicorn.run ignores it, and so does serve.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise typer.Exit(3)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs at once (default: CARESHARE_WORKERS, else the CPU count).")
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="One JSON object per log line.")] = False,
) -> None:
    """Run queued jobs (the checks of uploaded files) in this process, beside any number of others.

    Uses the same settings as `careshare serve`: on PostgreSQL the procrastinate queue, else the
    embedded queue in the database. Stops on Ctrl-C or SIGTERM; a job it was running is retried.
    """
    import signal

    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings
    from careshare.host.logging import configure_logging

    configure_logging(json_lines=log_json)
    settings = Settings.from_env()
    cs = Careshare.build(settings)
    slots = concurrency or settings.workers or 1

    async def run() -> None:
        await cs.start()
        loop = asyncio.get_running_loop()
        job = asyncio.ensure_future(cs.run_workers(slots))
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, job.cancel)
        err.print(f"careshare worker: {slots} at a time on the {settings.queue_engine} queue")
        try:
            await job
        except asyncio.CancelledError:
            pass
        finally:
            await cs.close()

    asyncio.run(run())


@app.command()
def recheck(
    kind: Annotated[str | None, typer.Option(help="Only files of this kind (pdf, image, dicom, video ...).")] = None,
    handler_version_below: Annotated[
        int | None, typer.Option(help="Only files checked by a handler whose version number is lower.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count the files, queue nothing.")] = False,
) -> None:
    """Queue stored files to be checked again by today's handlers (workers run the checks).

    What was already shared stays as it was sent; new shares get the new renditions.
    """
    from rich.progress import Progress

    from careshare.core.recheck import queue_rechecks, stored_for_recheck
    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings

    async def run() -> int:
        cs = Careshare.build(Settings.from_env())
        try:
            await cs.start()
            ids = await stored_for_recheck(cs, kind=kind, below=handler_version_below)
            if dry_run or not ids:
                return len(ids)
            with Progress(console=err, transient=True) as progress:
                bar = progress.add_task("queueing checks", total=len(ids))
                return await queue_rechecks(cs, ids, lambda done: progress.update(bar, completed=done))
        finally:
            await cs.close()

    count = asyncio.run(run())
    err.print(f"{count} file(s) {'would be' if dry_run else ''} queued to be checked again".replace("  ", " "))


def _token_command(settings: Settings) -> str:
    """The ``careshare token`` command line that signs with this server's key, from any directory."""
    from careshare.core.settings import data_dir_of

    launched = Path(sys.argv[0]) if sys.argv and Path(sys.argv[0]).name == "careshare" else None
    on_path = shutil.which("careshare")
    if launched is None or not launched.exists() or (on_path and Path(on_path).resolve() == launched.resolve()):
        program = "careshare"
    else:
        program = str(launched.resolve())  # absolute: it works from any directory
    program = shlex.quote(program)
    if os.environ.get("CARESHARE_SECRET_KEY"):
        return f"{program} token (with this server's CARESHARE_SECRET_KEY)"
    here = settings.data_dir == data_dir_of({})
    return f"{program} token" if here else f"CARESHARE_DATA_DIR={shlex.quote(str(settings.data_dir))} {program} token"


@app.command()
def token(
    role: Annotated[str, typer.Option(help="clinician or patient")],
    org: Annotated[str, typer.Option(help="Organisation id")],
    sub: Annotated[str | None, typer.Option(help="User id (clinicians)")] = None,
    patient: Annotated[str | None, typer.Option(help="Patient id (patients)")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds")] = 12 * 3600,
    register: Annotated[
        bool, typer.Option(help="Register the organisation in the database when it is new (development)")
    ] = True,
) -> None:
    """Print a signed bearer token for development (only the token, on stdout).

    A new organisation is registered in the database of ``CARESHARE_DATA_DIR`` /
    ``CARESHARE_DATABASE_URL`` first (``--no-register`` does not), so the token works at once.
    """
    from careshare.core.settings import Settings, secret_is_kept
    from careshare.host.auth import mint_token

    kept = secret_is_kept(os.environ)
    settings = Settings.from_env()
    if not kept:
        err.print(
            f"[yellow]No signing key was kept in {settings.data_dir}: made a new one.[/yellow] "
            "A server started on another data directory refuses this token (401 invalid-token): "
            "run this command with the server's CARESHARE_DATA_DIR (its banner names it)."
        )
    try:
        value = mint_token(settings.secret_key, role=role, org=org, sub=sub, patient=patient, ttl_seconds=ttl)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if register and org not in settings.allowed_orgs and _with_runtime(settings, _register(org)):
        err.print(f"registered organisation {org!r} in {settings.data_dir}")
    typer.echo(value)


def _register(org: str) -> Callable[[Careshare], Awaitable[bool]]:
    from careshare.core.patients import register_organisation

    return lambda cs: register_organisation(cs.engine, org)


def _with_runtime(settings: Settings, job: Callable[[Careshare], Awaitable[T]]) -> T:
    """Run ``job`` on a started runtime (migrated database), closing it after."""
    from careshare.core.runtime import Careshare

    async def run() -> T:
        cs = Careshare.build(settings)
        try:
            await cs.start()
            return await job(cs)
        finally:
            await cs.close()

    return asyncio.run(run())


org_app = typer.Typer(help="Organisations whose tokens this server accepts.", no_args_is_help=True)
app.add_typer(org_app, name="org")


@org_app.command("create")
def org_create(
    org: Annotated[str, typer.Argument(help="Organisation id, as tokens name it in their org claim")],
) -> None:
    """Register an organisation: tokens naming it are accepted from now on."""
    from careshare.core.settings import Settings

    org = org.strip()
    if not org or len(org) > 200:
        err.print("[red]an organisation id is 1 to 200 characters[/red]")
        raise typer.Exit(2)
    if _with_runtime(Settings.from_env(), _register(org)):
        err.print(f"registered organisation {org!r}")
    else:
        err.print(f"organisation {org!r} was registered already")


@org_app.command("list")
def org_list() -> None:
    """Print the registered organisations, one id per line."""
    from careshare.core.patients import list_organisations
    from careshare.core.settings import Settings

    for org, _created in _with_runtime(Settings.from_env(), lambda cs: list_organisations(cs.engine)):
        typer.echo(org)


audit_app = typer.Typer(help="The audit trail: every share, upload and read.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("export")
def audit_export(
    since: Annotated[str, typer.Option(help="ISO 8601 time with its offset: events at or after it")],
    org: Annotated[str | None, typer.Option(help="Only this organisation's events")] = None,
) -> None:
    """Print audit events as JSON lines, oldest first (ids only: no names, no file names)."""
    import json

    from careshare.core.audit import export_events
    from careshare.core.models import parse_time
    from careshare.core.settings import Settings

    try:
        start = parse_time(since)
    except ValueError as exc:
        err.print(f"[red]--since: {exc}[/red]")
        raise typer.Exit(2) from None

    async def export(cs: Careshare) -> int:
        count = 0
        async for event in export_events(cs.engine, since=start, org=org):
            typer.echo(json.dumps(event, ensure_ascii=False))
            count += 1
        return count

    count = _with_runtime(Settings.from_env(), export)
    err.print(f"{count} event(s)")


@app.command()
def erase(
    patient_id: Annotated[str, typer.Argument(help="The patient's id (as the API gives it)")],
    org: Annotated[str, typer.Option(help="The patient's organisation")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be erased; change nothing.")] = False,
) -> None:
    """Erase a patient on request: every row and blob of theirs; the audit keeps a tombstone.

    Refused while CARESHARE_RETENTION_DAYS have not passed since the patient's last record.
    """
    from careshare.core.erasure import erase_patient
    from careshare.core.models import Principal
    from careshare.core.problems import Problem
    from careshare.core.settings import Settings

    operator = Principal(subject="careshare-cli", role="clinician", org=org)
    try:
        done = _with_runtime(Settings.from_env(), lambda cs: erase_patient(cs, operator, patient_id, dry_run=dry_run))
    except Problem as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from None
    table = Table("table", "rows", title="would be erased" if dry_run else "erased")
    for name, count in sorted(done.rows.items()):
        table.add_row(name, str(count))
    table.add_row("blob objects", str(done.blobs))
    err.print(table)
    if dry_run:
        err.print("dry run: nothing was changed")


@app.command()
def plugins() -> None:
    """List each plugin with the hooks it implements."""
    from careshare.core.plugins import get_plugin_manager, plugin_hooks
    from careshare.core.settings import Settings

    table = Table("plugin", "module", "hooks", "settings")
    for row in plugin_hooks(get_plugin_manager(blocked=Settings.from_env().disabled_plugins)):
        table.add_row(row["name"], row["module"], ", ".join(row["hooks"]), ", ".join(row["settings"]))
    Console().print(table)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (serve does this on start too)."""
    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings

    async def run() -> None:
        cs = Careshare.build(Settings.from_env())
        try:
            await cs.start()
        finally:
            await cs.close()

    asyncio.run(run())
    err.print("schema up to date")


def add_plugin_commands(cli: typer.Typer, pm: pluggy.PluginManager | None = None) -> typer.Typer:
    """Add every plugin's ``careshare_commands`` to ``cli`` (once each): Typer apps as groups, functions as commands."""
    import itertools

    from careshare.core.plugins import get_plugin_manager
    from careshare.core.settings import disabled_plugins

    pm = pm or get_plugin_manager(blocked=disabled_plugins())
    for contributed in itertools.chain.from_iterable(pm.hook.careshare_commands()):
        if isinstance(contributed, typer.Typer):
            if not any(group.typer_instance is contributed for group in cli.registered_groups):
                cli.add_typer(contributed)
        elif not any(command.callback is contributed for command in cli.registered_commands):
            cli.command()(contributed)
    return cli


def main() -> None:
    add_plugin_commands(app)()
