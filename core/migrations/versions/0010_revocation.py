"""Revocation: a share or one attachment withdrawn from the patient, with who, when and why.

Revision ID: 0010_core
Revises: 0009_core
Create Date: 2026-12-04 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0010_core"
down_revision = "0009_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
