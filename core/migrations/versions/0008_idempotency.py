"""Idempotency keys: one stored answer per (organisation, caller, key) for every POST that creates or shares.

Revision ID: 0008_core
Revises: 0007_core
Create Date: 2026-12-04 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0008_core"
down_revision = "0007_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
