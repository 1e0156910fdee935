"""The file-request tables, on the shared metadata: a request sent to a patient and the files that answer it."""

from __future__ import annotations

import sqlalchemy as sa

from careshare.core.db import ID, UTCDateTime, metadata

__all__ = ["file_request_answers", "file_requests"]

file_requests = sa.Table(
    "file_requests",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("accepted_kinds", sa.JSON, nullable=False),
    sa.Column("max_files", sa.Integer, nullable=False),
    sa.Column("due_at", UTCDateTime, nullable=False),
    # open | answered | completed | cancelled; "expired" is never stored: it follows from due_at on read.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_file_requests_org_patient", "org_id", "patient_id", "id"),
)

file_request_answers = sa.Table(
    "file_request_answers",
    metadata,
    sa.Column("request_id", ID, sa.ForeignKey("file_requests.id"), primary_key=True),
    sa.Column("file_id", ID, sa.ForeignKey("files.id"), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),  # pending | accepted | rejected
    sa.Column("reason", sa.String(1000)),
    sa.Column("reviewed_by", sa.String(200)),
    sa.Column("reviewed_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
