"""Deleted files and file search: who deleted a file, and a folded copy of each file name that searches match.

Revision ID: 0011_core
Revises: 0010_core
Create Date: 2026-12-04 05:00:00.000000
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0011_core"
down_revision = "0010_core"
branch_labels = None
depends_on = None


def _fold(text: str) -> str:  # as core.patients.fold was when this ran
    return unicodedata.normalize("NFKC", text).casefold()


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("deleted_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("name_key", sa.String(length=4096), nullable=True))
    files = sa.table("files", sa.column("id"), sa.column("filename"), sa.column("name_key"))
    connection = op.get_bind()
    for row in connection.execute(sa.select(files.c.id, files.c.filename)).all():
        connection.execute(files.update().where(files.c.id == row.id).values(name_key=_fold(row.filename)))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("name_key")
        batch.drop_column("deleted_by")
