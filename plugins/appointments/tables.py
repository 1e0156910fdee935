"""The appointments channel's tables on the shared metadata: appointment types (templates) and appointments."""

from __future__ import annotations

import sqlalchemy as sa

from careshare.core.db import ID, UTCDateTime, metadata
from careshare.core.templates import MAX_NAME_CHARS, template_table

__all__ = ["appointment_types", "appointments"]

appointment_types = template_table("appointment_types")

appointments = sa.Table(
    "appointments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("type_id", ID, sa.ForeignKey("appointment_types.id"), nullable=False),
    # The type's name and description as they were at booking: later edits reach later bookings only.
    sa.Column("type_name", sa.String(MAX_NAME_CHARS), nullable=False),
    sa.Column("type_description", sa.Text, nullable=False),
    sa.Column("starts_at", UTCDateTime, nullable=False),
    sa.Column("booked_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_appointments_org_patient", "org_id", "patient_id", "id"),
)
