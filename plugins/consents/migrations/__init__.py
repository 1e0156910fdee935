"""Alembic revisions of the consents channel's tables (branch ``consents``), applied by the host at start-up."""
