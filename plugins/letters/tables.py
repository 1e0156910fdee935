"""The letters channel's tables on the shared metadata: templates, letters, and each organisation's letter settings."""

from __future__ import annotations

import sqlalchemy as sa

from careshare.core.db import ID, SHA256, UTCDateTime, metadata

__all__ = ["letter_settings", "letter_templates", "letters"]

letter_templates = sa.Table(
    "letter_templates",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_letter_templates_org", "org_id", "id"),
)

letters = sa.Table(
    "letters",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("template_id", ID, sa.ForeignKey("letter_templates.id")),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # draft | sent
    # Bumped by every edit of a draft (text or files): a send renders one version, or none.
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("sent_by", sa.String(200)),
    sa.Column("sent_at", UTCDateTime),
    # The letter as a PDF, rendered once at send and kept by content: every read gets the same bytes.
    sa.Column("pdf_sha256", SHA256, sa.ForeignKey("blobs.sha256")),
    sa.Column("pdf_size", sa.BigInteger),
    sa.Column("email_requested", sa.Boolean, nullable=False),
    sa.Column("email_to", sa.String(320)),
    sa.Column("email_sent_at", UTCDateTime),
    # Set while one delivery is talking to the SMTP server: a second one (a lapsed claim) waits.
    sa.Column("email_sending_since", UTCDateTime),
    sa.Column("email_error", sa.String(200)),  # the SMTP reply of the last refusal, addresses removed
    sa.Column("notification_id", ID),
    sa.Column("send_key", sa.String(200)),  # the Idempotency-Key of the send
    sa.Column("send_fingerprint", SHA256),  # what that send asked for, to spot a key reused for another request
    sa.UniqueConstraint("org_id", "send_key", name="uq_letters_org_send_key"),
    sa.Index("ix_letters_org_patient", "org_id", "patient_id", "id"),
)

letter_settings = sa.Table(
    "letter_settings",
    metadata,
    # One row per organisation that changed a default; no row: the defaults.
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), primary_key=True),
    sa.Column("max_attachment_bytes", sa.BigInteger),
    sa.Column("organisation_name", sa.String(200)),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
