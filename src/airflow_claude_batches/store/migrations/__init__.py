"""
The ledger schema's migrations (Alembic, as Airflow does), run by ``airflow claude-batches db migrate``.

Alembic is driven from code (no ``alembic.ini``): the scripts live beside this file and the version
is kept in ``cb_alembic_version``, so the ledger can share a database with other Alembic users.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from airflow_claude_batches.store.database import LedgerDatabase

__all__ = ["VERSION_TABLE", "revisions", "upgrade"]

VERSION_TABLE = "cb_alembic_version"
_HERE = Path(__file__).parent


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def _current(conn: Connection) -> str | None:
    # Reading the revision is a check, not a migration: keep Alembic's "Context impl" lines out of logs.
    quiet = logging.getLogger("alembic.runtime.migration")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    finally:
        quiet.setLevel(level)


def revisions(database: LedgerDatabase) -> tuple[str | None, str]:
    """The database's current revision (None when it has no schema yet) and the code's head."""
    with database.engine.connect() as conn:
        current = _current(conn)
    return current, head()


def upgrade(database: LedgerDatabase, revision: str = "head") -> tuple[str | None, str]:
    """Bring the schema to ``revision``; idempotent. Returns (revision before, revision after)."""
    from alembic import command

    config = _config()
    with database.engine.connect().execution_options(claude_write=True) as conn:
        before = _current(conn)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()
    return before, revisions(database)[0] or ""
