"""
Where the ledger database is, one engine for it per process, and transactions that lock.

- ``[claude_batches] ledger_conn_id`` names an Airflow connection of type ``postgres`` (production,
  shared by every worker and the triggerer) or ``sqlite`` (``host`` = the file's path).
- Empty, the ledger is the embedded SQLite file ``ledger.db`` in the local results root
  (``$AIRFLOW_HOME/claude_batches/ledger.db`` by default), in WAL mode: right for one machine (the
  demo, ``airflow standalone``), wrong for workers on several machines.

Never Airflow's metadata database: Airflow 3 tasks must not touch it.

:meth:`LedgerDatabase.write` opens a transaction that may write: ``BEGIN IMMEDIATE`` on SQLite (the
database's write lock up front, so a read-then-write never deadlocks and concurrent writers queue on
``busy_timeout``), a plain transaction on PostgreSQL where :meth:`LedgerDatabase.lock` takes a named
row lock (``SELECT … FOR UPDATE``) for check-then-act sequences such as budgets and admission.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.pool import NullPool

from airflow_claude_batches.store import schema

__all__ = ["LedgerConfigError", "LedgerDatabase", "LedgerSchemaError", "ledger_database"]

LEDGER_FILE = "ledger.db"
#: How long a SQLite writer waits for the write lock before failing.
SQLITE_BUSY_TIMEOUT_S = 60


class LedgerConfigError(ValueError):
    """The ledger database is not configured in a way this provider can use."""


class LedgerSchemaError(RuntimeError):
    """The ledger database's schema is not the one this provider's code needs."""


class LedgerDatabase:
    """One ledger database: its engine and its transactions. Build it with :func:`ledger_database`."""

    def __init__(self, url: URL | str, *, auto_migrate: bool = False) -> None:
        self.url = url if isinstance(url, URL) else _parse(url)
        self.auto_migrate = auto_migrate
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine = _engine(self.url)
        self._checked = False

    def __repr__(self) -> str:
        return f"LedgerDatabase({self.url.render_as_string(hide_password=True)})"

    @property
    def display_url(self) -> str:
        """The URL without its password, for messages."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        self.ensure_schema()
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that writes; committed on success, rolled back on any error."""
        self.ensure_schema()
        with self.engine.connect().execution_options(claude_write=True) as conn, conn.begin():
            yield conn

    def lock(self, conn: Connection, name: str) -> None:
        """Hold the named lock until ``conn``'s transaction ends (SQLite's write lock already does)."""
        if self.is_sqlite:
            return
        conn.execute(postgresql.insert(schema.locks).values(name=name).on_conflict_do_nothing())
        conn.execute(select(schema.locks.c.name).where(schema.locks.c.name == name).with_for_update())

    def ensure_schema(self) -> None:
        """Fail with the command to run unless the schema is current (create an embedded one)."""
        if self._checked:
            return
        from airflow_claude_batches.store import migrations

        current, head = migrations.revisions(self)
        if current != head:
            if current is None and self.auto_migrate:
                migrations.upgrade(self)
            else:
                raise LedgerSchemaError(
                    f"The ledger database {self.display_url} is at schema revision {current or 'none'}, "
                    f"this version of airflow-claude-batches needs {head}: run "
                    "`airflow claude-batches db migrate`."
                )
        self._checked = True


def _parse(url: str) -> URL:
    from sqlalchemy.engine import make_url

    return make_url(url)


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: URL) -> Engine:
    """One engine per database per process (its pool is shared by every thread)."""
    key = url.render_as_string(hide_password=False)
    with _ENGINES_LOCK:
        if (engine := _ENGINES.get(key)) is None:
            engine = _ENGINES[key] = _create_engine(url)
        return engine


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        require_postgres_driver()
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    # No pool: a SQLite connection costs microseconds, and idle pooled ones would pin file handles.
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("claude_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def require_postgres_driver() -> None:
    """A PostgreSQL ledger needs psycopg2, which the ``[postgres]`` extra brings: say so plainly."""
    import importlib.util

    from airflow_claude_batches.exceptions import MissingExtraError

    if importlib.util.find_spec("psycopg2") is None:
        raise MissingExtraError(
            "the ledger's PostgreSQL connection needs the psycopg2 driver: "
            "pip install 'airflow-claude-batches[postgres]'"
        )


def _dispose_after_fork() -> None:
    """A forked child must not reuse its parent's connections (LocalExecutor and Celery fork)."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_dispose_after_fork)


def sqlite_url(path: Path | str) -> URL:
    return URL.create("sqlite", database=str(path))


def _url_from_connection(conn_id: str) -> URL:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type in ("postgres", "postgresql"):
        extra = conn.extra_dejson
        query = {k: str(v) for k, v in extra.items() if k in ("sslmode", "sslrootcert", "sslcert", "sslkey")}
        return URL.create(
            "postgresql+psycopg2",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or "localhost",
            port=conn.port or None,
            database=conn.schema or None,
            query=query,
        )
    if conn.conn_type == "sqlite":
        if not conn.host:
            raise LedgerConfigError(f"ledger connection {conn_id!r} (sqlite) needs the file's path as host")
        return sqlite_url(conn.host)
    raise LedgerConfigError(
        f"ledger connection {conn_id!r} has type {conn.conn_type!r}: use a 'postgres' connection "
        "(or 'sqlite' with the file path as host)"
    )


def default_sqlite_path() -> Path:
    """``ledger.db`` in the local results root, or under ``$AIRFLOW_HOME/claude_batches``."""
    from airflow_claude_batches.store.paths import store_root

    root = store_root()
    if root.protocol in ("file", "local", ""):
        base = Path(root.path)
    else:
        from airflow.configuration import get_airflow_home

        base = Path(get_airflow_home()) / "claude_batches"
    return base / LEDGER_FILE


def ledger_database() -> LedgerDatabase:
    """The configured ledger database (see the module docstring)."""
    from airflow.providers.common.compat.sdk import conf

    conn_id = conf.get("claude_batches", "ledger_conn_id", fallback="") or ""
    if conn_id:
        # A task makes several Ledger()s: look the connection up once per CONNECTION_TTL_S, not each time
        # (in a task every lookup is a round trip to the API server).
        now = time.monotonic()
        found = _BY_CONNECTION.get(conn_id)
        if found is None or now - found[0] > CONNECTION_TTL_S:
            database = _cached(_url_from_connection(conn_id), auto_migrate=False)
            found = _BY_CONNECTION[conn_id] = (now, database)
        return found[1]
    path = default_sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return _cached(sqlite_url(path), auto_migrate=True)


_DATABASES: dict[tuple[str, bool], LedgerDatabase] = {}
#: How long a looked-up ``ledger_conn_id`` is reused; a changed connection is seen after this.
CONNECTION_TTL_S = 300.0
_BY_CONNECTION: dict[str, tuple[float, LedgerDatabase]] = {}


def _cached(url: URL, *, auto_migrate: bool) -> LedgerDatabase:
    """One :class:`LedgerDatabase` per URL, so the schema is checked once per process."""
    key = (url.render_as_string(hide_password=False), auto_migrate)
    with _ENGINES_LOCK:
        database = _DATABASES.get(key)
    if database is None:
        database = LedgerDatabase(url, auto_migrate=auto_migrate)
        with _ENGINES_LOCK:
            database = _DATABASES.setdefault(key, database)
    return database
