"""Store fixtures: every store test runs on SQLite and on a throwaway PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from neurorad.store import Database, sqlite_url
from tests.store.pgcluster import PostgresCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "neurorad.db")
    return request.getfixturevalue("pg_cluster").create_database()


@pytest.fixture
def db(db_url) -> Iterator[Database]:
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()
