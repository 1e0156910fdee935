"""The discharge summaries table.

Revision ID: discharge_0001
Revises: (none: the first revision of the discharge branch)
"""

from __future__ import annotations

from alembic import op
from careshare_discharge import summaries

revision, down_revision, branch_labels, depends_on = "discharge_0001", None, ("discharge",), "0003_core"


def upgrade() -> None:
    summaries.create(op.get_bind())


def downgrade() -> None:
    summaries.drop(op.get_bind())
