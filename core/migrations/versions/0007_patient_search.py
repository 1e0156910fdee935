"""Search keys: a folded copy of each name and external id of the patients table, what a search matches.

Revision ID: 0007_core
Revises: 0006_core
Create Date: 2026-12-04 00:55:00.000000
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0007_core"
down_revision = "0006_core"
branch_labels = None
depends_on = None


def _fold(text: str) -> str:  # as core.patients.fold was when this ran
    return unicodedata.normalize("NFKC", text).casefold()


def search_key(name: str, external_id: str) -> str:
    return _fold(name) + "\x1f" + _fold(external_id)


def upgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.add_column(sa.Column("search_key", sa.String(length=2200), nullable=True))
    patients = sa.table(
        "patients", sa.column("id"), sa.column("name"), sa.column("external_id"), sa.column("search_key")
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(patients.c.id, patients.c.name, patients.c.external_id)).all():
        connection.execute(
            patients.update()
            .where(patients.c.id == row.id)
            .values(search_key=search_key(row.name, row.external_id))
        )


def downgrade() -> None:
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("search_key")
