"""Alembic environment: runs on the connection handed over by :func:`..upgrade` (online mode only)."""

from alembic import context

from airflow_claude_batches.store.migrations import VERSION_TABLE
from airflow_claude_batches.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
