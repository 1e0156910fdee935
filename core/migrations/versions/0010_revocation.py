"""Revocation: a share or one attachment withdrawn from the patient, with who, when and why.

Revision ID: 0010_core
Revises: 0009_core
Create Date: 2026-12-04 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from careshare.core.db import UTCDateTime

revision = "0010_core"
down_revision = "0009_core"
branch_labels = None
depends_on = None

TABLES = ("shares", "attachments")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True))
            batch_op.add_column(sa.Column("revoked_by", sa.String(length=200), nullable=True))
            batch_op.add_column(sa.Column("revoke_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("revoke_reason")
            batch_op.drop_column("revoked_by")
            batch_op.drop_column("revoked_at")
