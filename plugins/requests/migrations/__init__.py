"""Alembic revisions of the file-request tables (returned by ``careshare_migrations``)."""
