"""``careshare reminders run-due``: produce the medication reminders due now, for cron (the server also does it itself)."""

from __future__ import annotations

import asyncio

import typer

__all__ = ["reminders"]

reminders = typer.Typer(name="reminders", help="Medication reminders.", no_args_is_help=True)


@reminders.command("run-due")
def run_due() -> None:
    """Produce every reminder due now that does not exist yet (safe beside a running server) and print how many."""
    from careshare.core.runtime import Careshare
    from careshare.core.settings import Settings
    from careshare.plugins.medication.reminders import produce_due_reminders

    async def run() -> int:
        cs = Careshare.build(Settings.from_env())
        try:
            await cs.start()
            return await produce_due_reminders(cs)
        finally:
            await cs.close()

    produced = asyncio.run(run())
    typer.echo(f"{produced} reminder{'' if produced == 1 else 's'} produced")
