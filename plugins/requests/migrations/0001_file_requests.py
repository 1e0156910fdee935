"""File requests and the files that answer them.

Revision ID: file_requests_0001
Revises: (none: the first revision of the file-requests branch)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from careshare.core.db import UTCDateTime

revision = "file_requests_0001"
down_revision = None
branch_labels = ("file-requests",)
depends_on = "0003_core"


def upgrade() -> None:
    op.create_table(
        "file_requests",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=26), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("accepted_kinds", sa.JSON(), nullable=False),
        sa.Column("max_files", sa.Integer(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name="fk_file_requests_org_id_organisations"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name="fk_file_requests_patient_id_patients"),
        sa.PrimaryKeyConstraint("id", name="pk_file_requests"),
    )
    op.create_index("ix_file_requests_org_patient", "file_requests", ["org_id", "patient_id", "id"], unique=False)
    op.create_table(
        "file_request_answers",
        sa.Column("request_id", sa.String(length=26), nullable=False),
        sa.Column("file_id", sa.String(length=26), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("reviewed_by", sa.String(length=200), nullable=True),
        sa.Column("reviewed_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["file_requests.id"], name="fk_file_request_answers_request_id_file_requests"
        ),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name="fk_file_request_answers_file_id_files"),
        sa.PrimaryKeyConstraint("request_id", "file_id", name="pk_file_request_answers"),
    )


def downgrade() -> None:
    op.drop_table("file_request_answers")
    op.drop_index("ix_file_requests_org_patient", table_name="file_requests")
    op.drop_table("file_requests")
