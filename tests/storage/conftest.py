"""Storage fixtures: every test runs on SQLite (tmp_path) and on a throwaway real PostgreSQL database."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dqd_server.storage import JobStore, default_url

@pytest.fixture(scope="session")
def pg_session_url(pg_server) -> str:  # noqa: ANN001 - tests/conftest.py PgServer
    """One database for the session's job tests (tables emptied before each test)."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], str]:
    """Makes URLs of new, empty databases (for migration tests)."""
    if backend == "sqlite":
        counter = iter(range(1000))
        return lambda: default_url(tmp_path / f"fresh{next(counter)}")
    server = request.getfixturevalue("pg_server")
    return server.new_database


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return default_url(tmp_path / "data")
    url: str = request.getfixturevalue("pg_session_url")
    return url


@pytest.fixture
def make_store(db_url: str, tmp_path: Path, backend: str) -> Iterator[Callable[..., JobStore]]:
    """Opens JobStores on the test database (each with its own engine, like separate workers)."""
    stores: list[JobStore] = []

    def make(**kwargs: float) -> JobStore:
        store = JobStore(db_url, tmp_path / "results", **kwargs)
        stores.append(store)
        return store

    first = make()
    if backend == "postgresql":
        with first.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE jobs, detection_results, detection_metrics RESTART IDENTITY CASCADE"))
    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., JobStore]) -> JobStore:
    return make_store()
