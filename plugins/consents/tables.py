"""The consents channel's tables on the shared metadata: packs and forms (templates), and requests sent to patients.

An information pack's files are core attachments (target ``information-pack``). A consent request
keeps its own copy of each pack as it was when asked (``consent_request_packs``, whose files are
attachments of target ``consent-pack``), so later edits of a pack never change what a patient read.
"""

from __future__ import annotations

import sqlalchemy as sa

from careshare.core.db import ID, UTCDateTime, metadata
from careshare.core.templates import template_table

__all__ = ["consent_form_packs", "consent_forms", "consent_request_packs", "consent_requests", "information_packs"]

#: Information packs are templates (``core.templates``): the same columns as appointment and medication types.
information_packs = template_table("information_packs")

consent_forms = sa.Table(
    "consent_forms",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_consent_forms_org", "org_id", "id"),
)

consent_form_packs = sa.Table(
    "consent_form_packs",
    metadata,
    sa.Column("form_id", ID, sa.ForeignKey("consent_forms.id"), primary_key=True),
    sa.Column("pack_id", ID, sa.ForeignKey("information_packs.id"), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
)

consent_requests = sa.Table(
    "consent_requests",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("org_id", sa.String(200), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("patient_id", ID, sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("form_id", ID, sa.ForeignKey("consent_forms.id"), nullable=False),
    sa.Column("form_name", sa.String(200), nullable=False),  # as it was when asked
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # requested | given | declined
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", UTCDateTime),
    sa.Index("ix_consent_requests_org_patient", "org_id", "patient_id", "id"),
)

consent_request_packs = sa.Table(
    "consent_request_packs",
    metadata,
    # The item id of the pack's copied attachments (target ``consent-pack``).
    sa.Column("id", ID, primary_key=True),
    sa.Column("consent_id", ID, sa.ForeignKey("consent_requests.id"), nullable=False),
    sa.Column("pack_id", ID, sa.ForeignKey("information_packs.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Index("ix_consent_request_packs_consent", "consent_id", "position"),
)
