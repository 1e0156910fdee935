"""Alembic revisions of the medication channel's tables (branch ``medication``), applied by the host at start-up."""
