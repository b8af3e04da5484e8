"""The shipped Alembic migrations: idempotent, race-free at start-up, and equal to the models."""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from dqd_server.storage import Base, create_engine, migrate
from dqd_server.storage.database import alembic_config, current_revision

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def _diffs(engine: sa.Engine, metadata: sa.MetaData) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, metadata))


def test_migrate_is_idempotent_and_matches_models(fresh_url: Callable[[], str]) -> None:
    url = fresh_url()
    migrate(url)
    migrate(url)  # second call: a no-op
    engine = create_engine(url)
    try:
        assert HEAD == "0002"
        assert current_revision(engine) == HEAD
        assert _diffs(engine, Base.metadata) == []

        insp = sa.inspect(engine)
        assert set(insp.get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
        for name, table in Base.metadata.tables.items():
            db_cols = {c["name"]: c for c in insp.get_columns(name)}
            assert list(db_cols) == [c.name for c in table.columns], name
            for col in table.columns:
                assert db_cols[col.name]["nullable"] == col.nullable, (name, col.name)
        checks = {c["name"] for c in insp.get_check_constraints("jobs")}
        assert "ck_jobs_status" in checks
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("jobs")}
        assert ("job_key",) in uniques
        indexes = {tuple(i["column_names"]) for t in ("detection_results", "detection_metrics")
                   for i in insp.get_indexes(t)}
        assert {("job_id",), ("timestamp",), ("field_name",), ("timestamp", "metric_name")} <= indexes
    finally:
        engine.dispose()


def test_schema_comparison_notices_a_drift(fresh_url: Callable[[], str]) -> None:
    """Guards the test above: the comparison does report a column the migrations lack."""
    url = fresh_url()
    migrate(url)
    drifted = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["jobs"].append_column(sa.Column("extra", sa.Integer))
    engine = create_engine(url)
    try:
        assert any(d[0] == "add_column" for d in _diffs(engine, drifted))  # type: ignore[index]
    finally:
        engine.dispose()


def _migrate_in_worker(url: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(10)
        migrate(url)
        results.put(None)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(f"{type(exc).__name__}: {exc}")


def test_two_worker_processes_migrating_at_once(fresh_url: Callable[[], str]) -> None:
    """Two worker processes start together on an empty database: both succeed, the schema is at head.

    (Without the advisory lock this fails on PostgreSQL with a UniqueViolation on every try.)
    """
    url = fresh_url()
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_migrate_in_worker, args=(url, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert outcomes == [None, None]
    engine = create_engine(url)
    try:
        assert current_revision(engine) == HEAD
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()
