"""Expiring links for people outside the app: what each opens, until when, revoked or not, how often used.

Revision ID: 0006_core
Revises: 0005_core
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from careshare.core.db import UTCDateTime


revision = "0006_core"
down_revision = "0005_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "links",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("file_id", sa.String(length=26), nullable=False),
        sa.Column("rendition", sa.String(length=32), nullable=False),
        sa.Column("attachment_id", sa.String(length=26), nullable=True),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("item_id", sa.String(length=26), nullable=True),
        sa.Column("patient_id", sa.String(length=26), nullable=True),
        sa.Column("purpose", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name=op.f("fk_links_file_id_files")),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f("fk_links_org_id_organisations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links")),
    )
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.create_index("ix_links_org_file", ["org_id", "file_id", "id"], unique=False)
        batch_op.create_index("ix_links_attachment", ["attachment_id"], unique=False)
        batch_op.create_index("ix_links_item", ["target", "item_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("links", schema=None) as batch_op:
        batch_op.drop_index("ix_links_item")
        batch_op.drop_index("ix_links_attachment")
        batch_op.drop_index("ix_links_org_file")

    op.drop_table("links")
