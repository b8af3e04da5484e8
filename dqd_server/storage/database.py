"""Engines tuned per dialect and the start-up migration that every worker may run at once."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
_SQLITE_LOCKED_RETRIES = 5
# pg_advisory_xact_lock key serialising migrations: any fixed bigint, here "dqd_migr" read as ASCII.
MIGRATION_LOCK_KEY = int.from_bytes(b"dqd_migr", "big") & 0x7FFF_FFFF_FFFF_FFFF
# Alembic's ``context``/``op`` are process-global proxies: one upgrade at a time per process.
_ALEMBIC_LOCK = threading.Lock()


def default_url(data_path: str | Path) -> str:
    """The single-node default: a SQLite file ``DATA_PATH/dqd.db``."""
    return f"sqlite:///{Path(data_path).resolve() / 'dqd.db'}"


def create_engine(url: str | sa.URL, **kwargs: Any) -> sa.Engine:
    """An engine for ``url``: SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions;
    PostgreSQL gets ``pool_pre_ping`` and the psycopg 3 driver when the URL names none."""
    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        memory = u.database in (None, "", ":memory:")
        if not memory:
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        connect_args.update(kwargs.pop("connect_args", {}))
        if memory:
            kwargs.setdefault("poolclass", StaticPool)
        engine = sa.create_engine(u, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(u, **kwargs)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event open transactions (pysqlite's own handling skips DDL and
    # starts DEFERRED transactions, which fail with SQLITE_BUSY when they later need to write).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


READ_ONLY = {"dqd_read_only": True}  # execution options of a read-only connection


def _sqlite_on_begin(conn: sa.Connection) -> None:
    # Writers take the write lock up front (one at a time, waiting via the busy timeout); readers
    # use a plain deferred transaction, which in WAL mode neither waits for nor blocks writers.
    read_only = conn.get_execution_options().get("dqd_read_only", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def alembic_config() -> Config:
    """An Alembic config built in code: no alembic.ini is needed at run time."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


def migrate(url: str | sa.URL | sa.Engine) -> None:
    """Upgrade the database at ``url`` to the newest schema; a no-op when it is already there.

    Safe when several worker processes call it at start-up together: on PostgreSQL the upgrade
    runs in one transaction holding ``pg_advisory_xact_lock`` (DDL is transactional there), so the
    second worker waits and then finds the schema at head. On SQLite the whole upgrade runs in one
    ``BEGIN IMMEDIATE`` transaction (transactional DDL, single writer), which the second worker
    waits for through the busy timeout before it, too, finds the schema at head. Within one
    process, a thread lock serialises upgrades too (Alembic's ``context`` proxy is process-global).
    """
    owned = not isinstance(url, sa.Engine)
    engine = create_engine(url) if owned else url
    cfg = alembic_config()
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=True).replace("%", "%%"))
    try:
        for attempt in range(_SQLITE_LOCKED_RETRIES + 1):
            try:
                with _ALEMBIC_LOCK, engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                return
            except sa.exc.OperationalError as exc:
                # SQLite answers some lock conflicts at once instead of through the busy timeout (switching a
                # new file to WAL while another process opens it); the upgrade rolled back, so try again
                if engine.dialect.name != "sqlite" or "locked" not in str(exc) or attempt == _SQLITE_LOCKED_RETRIES:
                    raise
                engine.dispose()
                time.sleep(0.2 * (attempt + 1))
    finally:
        if owned:
            engine.dispose()


def current_revision(engine: sa.Engine) -> str | None:
    """The schema revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
