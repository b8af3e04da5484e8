"""Alembic environment: migrates the connection ``storage.migrate`` hands over, or the configured URL."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from dqd_server.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():  # `alembic upgrade --sql`: print the DDL for a DBA
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (conn := config.attributes.get("connection")) is not None:
    _run(conn)
else:  # a developer's `alembic -c ... upgrade head`
    from dqd_server.storage.database import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as c:
            _run(c)
    finally:
        engine.dispose()
