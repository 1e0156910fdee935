"""Alembic environment: runs revisions over the async engine (called from ``careshare.core.db.migrate``)."""

from __future__ import annotations

import asyncio

from alembic import context

from careshare.core.db import create_engine, metadata

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(config.attributes["database_url"])
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("careshare migrations run online only")
asyncio.run(_run_async())
