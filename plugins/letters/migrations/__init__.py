"""Alembic revisions of the letters channel's tables (branch ``letters``), applied by the host at start-up."""
