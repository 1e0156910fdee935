"""Alembic revisions of the chat channel's tables (branch ``chat``), applied by the host at start-up."""
