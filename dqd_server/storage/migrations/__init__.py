"""Alembic migrations of the dqd storage schema, shipped in the package and run by ``storage.migrate``."""
