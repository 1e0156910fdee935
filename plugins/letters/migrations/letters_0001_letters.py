"""Letter templates, letters and per-organisation letter settings.

Revision ID: letters_0001
Revises: (none: the first revision of the letters branch)
Create Date: 2026-12-01 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from careshare.core.db import UTCDateTime

revision = "letters_0001"
down_revision = None
branch_labels = ("letters",)
depends_on = "0003_core"


def upgrade() -> None:
    op.create_table(
        "letter_templates",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name="fk_letter_templates_org_id_organisations"),
        sa.PrimaryKeyConstraint("id", name="pk_letter_templates"),
    )
    op.create_index("ix_letter_templates_org", "letter_templates", ["org_id", "id"], unique=False)
    op.create_table(
        "letters",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=26), nullable=False),
        sa.Column("template_id", sa.String(length=26), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("sent_by", sa.String(length=200), nullable=True),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=True),
        sa.Column("pdf_size", sa.BigInteger(), nullable=True),
        sa.Column("email_requested", sa.Boolean(), nullable=False),
        sa.Column("email_to", sa.String(length=320), nullable=True),
        sa.Column("email_sent_at", UTCDateTime(), nullable=True),
        sa.Column("email_sending_since", UTCDateTime(), nullable=True),
        sa.Column("email_error", sa.String(length=200), nullable=True),
        sa.Column("notification_id", sa.String(length=26), nullable=True),
        sa.Column("send_key", sa.String(length=200), nullable=True),
        sa.Column("send_fingerprint", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name="fk_letters_org_id_organisations"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name="fk_letters_patient_id_patients"),
        sa.ForeignKeyConstraint(
            ["template_id"], ["letter_templates.id"], name="fk_letters_template_id_letter_templates"
        ),
        sa.ForeignKeyConstraint(["pdf_sha256"], ["blobs.sha256"], name="fk_letters_pdf_sha256_blobs"),
        sa.PrimaryKeyConstraint("id", name="pk_letters"),
        sa.UniqueConstraint("org_id", "send_key", name="uq_letters_org_send_key"),
    )
    op.create_index("ix_letters_org_patient", "letters", ["org_id", "patient_id", "id"], unique=False)
    op.create_table(
        "letter_settings",
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("max_attachment_bytes", sa.BigInteger(), nullable=True),
        sa.Column("organisation_name", sa.String(length=200), nullable=True),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name="fk_letter_settings_org_id_organisations"),
        sa.PrimaryKeyConstraint("org_id", name="pk_letter_settings"),
    )


def downgrade() -> None:
    op.drop_table("letter_settings")
    op.drop_index("ix_letters_org_patient", table_name="letters")
    op.drop_table("letters")
    op.drop_index("ix_letter_templates_org", table_name="letter_templates")
    op.drop_table("letter_templates")
