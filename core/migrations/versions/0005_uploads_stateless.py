"""Resumable uploads any API process can serve: who holds an upload, until when, and who asked for it.

Revision ID: 0005_core
Revises: 0004_core
Create Date: 2026-12-03 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from careshare.core.db import UTCDateTime


revision = '0005_core'
down_revision = '0004_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('holder', sa.String(length=26), nullable=True))
        batch_op.add_column(sa.Column('held_until', UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('takeover', sa.String(length=26), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_column('takeover')
        batch_op.drop_column('held_until')
        batch_op.drop_column('holder')
