"""Resumable uploads in progress, and when the clinic saw a file a patient sent.

Revision ID: 0003_core
Revises: 0002_core
Create Date: 2026-11-24 11:35:07.903655
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from careshare.core.db import UTCDateTime


revision = '0003_core'
down_revision = '0002_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('uploads',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('org_id', sa.String(length=200), nullable=False),
    sa.Column('patient_id', sa.String(length=26), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_by_role', sa.String(length=16), nullable=False),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('filename', sa.String(length=1024), nullable=True),
    sa.Column('purpose', sa.JSON(), nullable=False),
    sa.Column('file_id', sa.String(length=26), nullable=True),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_uploads_org_id_organisations')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_uploads_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_uploads'))
    )
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.create_index('ix_uploads_expires', ['expires_at'], unique=False)

    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seen_at', UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('seen_by', sa.String(length=200), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_column('seen_by')
        batch_op.drop_column('seen_at')

    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_index('ix_uploads_expires')

    op.drop_table('uploads')
