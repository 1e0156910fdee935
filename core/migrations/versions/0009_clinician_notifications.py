"""Clinician notifications: the clinic's inbox of what patients sent.

Revision ID: 0009_core
Revises: 0008_core
Create Date: 2026-12-04 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_core"
down_revision = "0008_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every notification written before this was the patient's.
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audience", sa.String(length=16), server_default="patient", nullable=False))
        batch_op.add_column(sa.Column("read_by", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_notifications_audience", ["org_id", "audience", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_audience")
        batch_op.drop_column("read_by")
        batch_op.drop_column("audience")
