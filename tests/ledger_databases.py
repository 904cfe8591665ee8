"""Ledger databases for tests: a fresh SQLite file, or a fresh database on a throwaway PostgreSQL.

tests/conftest.py registers this as a plugin. ``ledger_db`` is parametrized over both back ends, so
every test that takes it runs once on SQLite and once on PostgreSQL: one code path serves both.
The PostgreSQL cluster is started once per test session (``initdb`` + ``pg_ctl``, ~3 s).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_claude_batches.store import migrations
from airflow_claude_batches.store.database import LedgerDatabase, sqlite_url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator:
    """One throwaway PostgreSQL cluster for the session."""
    from tests.integration.airflow_cluster import PostgresServer

    server = PostgresServer(Path(tempfile.mkdtemp(prefix="acb-ledger-pg-")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def postgres_database(server) -> LedgerDatabase:
    """A new, migrated database on ``server``."""
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    server.sql(f"CREATE DATABASE {name}")
    database = LedgerDatabase(server.url(name))
    migrations.upgrade(database)
    return database


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_db(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerDatabase:
    """An empty, migrated ledger database: once SQLite, once PostgreSQL."""
    if request.param == "sqlite":
        database = LedgerDatabase(sqlite_url(tmp_path / "ledger.db"))
        migrations.upgrade(database)
        return database
    return postgres_database(request.getfixturevalue("postgres_server"))
