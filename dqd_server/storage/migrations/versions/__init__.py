"""Hand-written Alembic revisions, one file per schema change (alembic skips this ``__init__``)."""
