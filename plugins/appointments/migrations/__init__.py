"""Alembic revisions of the appointments channel's tables (branch ``appointments``), applied by the host at start-up."""
