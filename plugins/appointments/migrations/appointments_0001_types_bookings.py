"""Appointment types (templates) and appointments booked from them.

Revision ID: appointments_0001
Revises: (none: the first revision of the appointments branch)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from careshare.core.db import UTCDateTime

revision = "appointments_0001"
down_revision = None
branch_labels = ("appointments",)
depends_on = "0003_core"


def upgrade() -> None:
    op.create_table(
        "appointment_types",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name="fk_appointment_types_org_id_organisations"),
        sa.PrimaryKeyConstraint("id", name="pk_appointment_types"),
    )
    op.create_index("ix_appointment_types_org", "appointment_types", ["org_id", "id"], unique=False)
    op.create_table(
        "appointments",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=26), nullable=False),
        sa.Column("type_id", sa.String(length=26), nullable=False),
        sa.Column("type_name", sa.String(length=200), nullable=False),
        sa.Column("type_description", sa.Text(), nullable=False),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.Column("booked_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name="fk_appointments_org_id_organisations"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name="fk_appointments_patient_id_patients"),
        sa.ForeignKeyConstraint(
            ["type_id"], ["appointment_types.id"], name="fk_appointments_type_id_appointment_types"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_appointments"),
    )
    op.create_index("ix_appointments_org_patient", "appointments", ["org_id", "patient_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_appointments_org_patient", table_name="appointments")
    op.drop_table("appointments")
    op.drop_index("ix_appointment_types_org", table_name="appointment_types")
    op.drop_table("appointment_types")
