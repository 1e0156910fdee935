"""The chat channel's table on the shared metadata: one row per message in a patient's conversation."""

from __future__ import annotations

import sqlalchemy as sa

from careshare.core.db import ID, UTCDateTime, metadata

__all__ = ["chat_messages"]

chat_messages = sa.Table(
    "chat_messages",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("author_role", sa.String(16), nullable=False),  # clinician | patient
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_chat_messages_conversation", "org_id", "patient_id", "id"),
)
