"""The careshare core: hook specifications, models, limits, ingest pipeline, storage and database."""
