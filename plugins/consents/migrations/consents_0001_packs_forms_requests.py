"""Information packs, consent forms and consent requests (with their copies of the packs).

Revision ID: consents_0001
Revises: (none: the first revision of the consents branch)
Create Date: 2026-12-01 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from careshare.core.db import UTCDateTime

revision = "consents_0001"
down_revision = None
branch_labels = ("consents",)
depends_on = "0003_core"


def _org(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["org_id"], ["organisations.id"], name=op.f(f"fk_{table}_org_id_organisations"))


def upgrade() -> None:
    op.create_table(
        "information_packs",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        _org("information_packs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_information_packs")),
    )
    op.create_index("ix_information_packs_org", "information_packs", ["org_id", "id"], unique=False)
    op.create_table(
        "consent_forms",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        _org("consent_forms"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_forms")),
    )
    op.create_index("ix_consent_forms_org", "consent_forms", ["org_id", "id"], unique=False)
    op.create_table(
        "consent_form_packs",
        sa.Column("form_id", sa.String(length=26), nullable=False),
        sa.Column("pack_id", sa.String(length=26), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["form_id"], ["consent_forms.id"], name=op.f("fk_consent_form_packs_form_id_consent_forms")
        ),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["information_packs.id"], name=op.f("fk_consent_form_packs_pack_id_information_packs")
        ),
        sa.PrimaryKeyConstraint("form_id", "pack_id", name=op.f("pk_consent_form_packs")),
    )
    op.create_table(
        "consent_requests",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=26), nullable=False),
        sa.Column("form_id", sa.String(length=26), nullable=False),
        sa.Column("form_name", sa.String(length=200), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", UTCDateTime(timezone=True), nullable=True),
        _org("consent_requests"),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], name=op.f("fk_consent_requests_patient_id_patients")),
        sa.ForeignKeyConstraint(
            ["form_id"], ["consent_forms.id"], name=op.f("fk_consent_requests_form_id_consent_forms")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_requests")),
    )
    op.create_index("ix_consent_requests_org_patient", "consent_requests", ["org_id", "patient_id", "id"], unique=False)
    op.create_table(
        "consent_request_packs",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("consent_id", sa.String(length=26), nullable=False),
        sa.Column("pack_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consent_requests.id"], name=op.f("fk_consent_request_packs_consent_id_consent_requests")
        ),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["information_packs.id"], name=op.f("fk_consent_request_packs_pack_id_information_packs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_request_packs")),
    )
    op.create_index(
        "ix_consent_request_packs_consent", "consent_request_packs", ["consent_id", "position"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_consent_request_packs_consent", table_name="consent_request_packs")
    op.drop_table("consent_request_packs")
    op.drop_index("ix_consent_requests_org_patient", table_name="consent_requests")
    op.drop_table("consent_requests")
    op.drop_table("consent_form_packs")
    op.drop_index("ix_consent_forms_org", table_name="consent_forms")
    op.drop_table("consent_forms")
    op.drop_index("ix_information_packs_org", table_name="information_packs")
    op.drop_table("information_packs")
