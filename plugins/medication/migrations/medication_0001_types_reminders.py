"""Medication types (templates), medications prescribed from them, and the reminders sent for them.

Revision ID: medication_0001
Revises: (none: the first revision of the medication branch)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from careshare.core.db import UTCDateTime

revision = "medication_0001"
down_revision = None
branch_labels = ("medication",)
depends_on = "0003_core"


def upgrade() -> None:
    op.create_table(
        "medication_types",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name="fk_medication_types_org_id_organisations"),
        sa.PrimaryKeyConstraint("id", name="pk_medication_types"),
    )
    op.create_index("ix_medication_types_org", "medication_types", ["org_id", "id"], unique=False)
    op.create_table(
        "medications",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=26), nullable=False),
        sa.Column("type_id", sa.String(length=26), nullable=False),
        sa.Column("type_name", sa.String(length=200), nullable=False),
        sa.Column("times", sa.JSON(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("prescribed_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name="fk_medications_org_id_organisations"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name="fk_medications_patient_id_patients"),
        sa.ForeignKeyConstraint(["type_id"], ["medication_types.id"], name="fk_medications_type_id_medication_types"),
        sa.PrimaryKeyConstraint("id", name="pk_medications"),
    )
    op.create_index("ix_medications_org_patient", "medications", ["org_id", "patient_id", "id"], unique=False)
    op.create_index("ix_medications_dates", "medications", ["start_date", "end_date"], unique=False)
    op.create_table(
        "medication_reminders",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("medication_id", sa.String(length=26), nullable=False),
        sa.Column("patient_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("notification_key", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name="fk_medication_reminders_org_id_organisations"),
        sa.ForeignKeyConstraint(
            ["medication_id"], ["medications.id"], name="fk_medication_reminders_medication_id_medications"
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name="fk_medication_reminders_patient_id_patients"),
        sa.PrimaryKeyConstraint("id", name="pk_medication_reminders"),
        sa.UniqueConstraint("notification_key", name="uq_medication_reminders_notification_key"),
    )
    op.create_index(
        "ix_medication_reminders_due", "medication_reminders", ["medication_id", "kind", "due_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_medication_reminders_due", table_name="medication_reminders")
    op.drop_table("medication_reminders")
    op.drop_index("ix_medications_dates", table_name="medications")
    op.drop_index("ix_medications_org_patient", table_name="medications")
    op.drop_table("medications")
    op.drop_index("ix_medication_types_org", table_name="medication_types")
    op.drop_table("medication_types")
