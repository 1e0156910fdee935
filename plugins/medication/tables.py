"""The medication channel's tables on the shared metadata: medication types, medications and their reminders."""

from __future__ import annotations

import sqlalchemy as sa

from careshare.core.db import ID, UTCDateTime, metadata
from careshare.core.templates import MAX_NAME_CHARS, template_table

__all__ = ["medication_reminders", "medication_types", "medications"]

medication_types = template_table("medication_types")

medications = sa.Table(
    "medications",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("type_id", ID, sa.ForeignKey("medication_types.id"), nullable=False),
    # The type's name when prescribed; each reminder carries the type's files as they are when it is made.
    sa.Column("type_name", sa.String(MAX_NAME_CHARS), nullable=False),
    sa.Column("times", sa.JSON, nullable=False),  # ["08:00", "20:00"], local to timezone
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("prescribed_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_medications_org_patient", "org_id", "patient_id", "id"),
    sa.Index("ix_medications_dates", "start_date", "end_date"),
)

medication_reminders = sa.Table(
    "medication_reminders",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("medication_id", ID, sa.ForeignKey("medications.id"), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # scheduled | manual
    sa.Column("due_at", UTCDateTime, nullable=False),
    # medication:<id>:<due instant> for scheduled ones: the loop and cron racing make one reminder, not two.
    sa.Column("notification_key", sa.String(200), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("notification_key", name="uq_medication_reminders_notification_key"),
    sa.Index("ix_medication_reminders_due", "medication_id", "kind", "due_at"),
)
