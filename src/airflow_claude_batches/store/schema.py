"""
The ledger database's tables (SQLAlchemy Core), shared by the code and the Alembic migrations.

Every table is prefixed ``cb_`` so the ledger can live in a schema shared with other applications.
Timestamps are stored as naive UTC (:class:`UTCDateTime`) so SQLite compares them as PostgreSQL does.
Each index serves a query that runs per submit, per trigger poll or per dashboard page view; the
comments name it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "COUNT_KINDS",
    "UTCDateTime",
    "admission",
    "batch_status_history",
    "batches",
    "create_intents",
    "locks",
    "metadata",
    "spend_commitments",
]

#: The API's ``request_counts`` keys, one integer column each.
COUNT_KINDS = ("processing", "succeeded", "errored", "canceled", "expired")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC and read back as aware UTC, on every back end."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: ledger times must be timezone-aware")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


metadata = MetaData()

_UNFINISHED = text("processing_status <> 'ended'")
_UNCONSUMED = text("consumed_at IS NULL AND archived_at IS NULL AND deleted_at IS NULL")

batches = Table(
    "cb_batches",
    metadata,
    Column("batch_id", String(128), primary_key=True),
    Column("team", String(32), nullable=False),
    Column("job_type", String(128), nullable=False),
    Column("job_id", Text, nullable=False),
    Column("job_key", String(64), nullable=False),
    Column("dag_id", String(250)),
    Column("task_id", String(250)),
    Column("run_id", String(250)),
    Column("try_number", Integer),
    Column("request_count", Integer, nullable=False),
    Column("first_index", Integer, nullable=False, default=0),
    Column("processing_status", String(16), nullable=False),
    *(Column(kind, Integer, nullable=False, default=0) for kind in COUNT_KINDS),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("results_expire_at", UTCDateTime),
    Column("estimated_cost_usd", Float),
    Column("actual_cost_usd", Float),
    Column("results_uri", Text),
    Column("consumed_at", UTCDateTime),
    Column("archived_at", UTCDateTime),
    Column("deleted_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
    Column("origin", String(16), nullable=False, server_default="managed"),
    Column("purged_at", UTCDateTime),
    # Budget check per submit and the dashboard's per-team spend: a team's batches in a period, with
    # the costs in the index so the sum reads no table row.
    Index("ix_cb_batches_team_spend", "team", "created_at", "actual_cost_usd", "estimated_cost_usd"),
    # The dashboard's batch list, newest first.
    Index("ix_cb_batches_created", "created_at"),
    # Admission per submit: managed batches still in flight (few rows of many).
    Index(
        "ix_cb_batches_unfinished",
        "processing_status",
        "created_at",
        sqlite_where=_UNFINISHED,
        postgresql_where=_UNFINISHED,
    ),
    # A job's batches (retries, re-attach).
    Index("ix_cb_batches_job", "team", "job_key"),
    # The dashboard's unmanaged batches.
    Index("ix_cb_batches_origin", "origin"),
    # The dashboard's per-team visibility: which DAGs each team's batches came from.
    Index("ix_cb_batches_team_dag", "team", "dag_id"),
    # The dashboard's flagged batches: results nobody consumed yet, by when the API drops them.
    Index(
        "ix_cb_batches_unconsumed",
        "results_expire_at",
        sqlite_where=_UNCONSUMED,
        postgresql_where=_UNCONSUMED,
    ),
)

#: One row per planned batch of a job, written before its create is sent: after a lost answer or a
#: crash, the next attempt looks for the batch at the API instead of paying for it twice.
create_intents = Table(
    "cb_create_intents",
    metadata,
    Column("team", String(32), primary_key=True),
    Column("job_key", String(64), primary_key=True),
    Column("batch_index", Integer, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("planned_batches", Integer, nullable=False),
    Column("planned_requests", Integer, nullable=False),
    Column("first_index", Integer, nullable=False),
    Column("intended_at", UTCDateTime, nullable=False),
    Column("batch_id", String(128)),
)

batch_status_history = Table(
    "cb_batch_status_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("batch_id", String(128), ForeignKey("cb_batches.batch_id", ondelete="CASCADE"), nullable=False),
    Column("observed_at", UTCDateTime, nullable=False),
    Column("processing_status", String(16), nullable=False),
    *(Column(kind, Integer, nullable=False) for kind in COUNT_KINDS),
    # One batch's counts over time.
    Index("ix_cb_history_batch", "batch_id", "observed_at"),
)

spend_commitments = Table(
    "cb_spend_commitments",
    metadata,
    Column("team", String(32), primary_key=True),
    Column("job_key", String(64), primary_key=True),
    Column("batch_index", Integer, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("amount_usd", Float, nullable=False),
    Column("committed_at", UTCDateTime, nullable=False),
    Column("batch_id", String(128)),
    Column("released_at", UTCDateTime),
    # Budget check: a team's commitments whose batch does not exist yet.
    Index("ix_cb_commitments_open", "team", "committed_at"),
)

admission = Table(
    "cb_admission",
    metadata,
    Column("entry_id", String(96), primary_key=True),
    Column("team", String(32), nullable=False),
    Column("job_id", Text, nullable=False),
    Column("job_type", String(128), nullable=False),
    Column("request_count", Integer, nullable=False),
    Column("created_requests", Integer, nullable=False, default=0),
    Column("priority_rank", Integer, nullable=False),
    Column("enqueued_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("stale_after_seconds", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("admitted_at", UTCDateTime),
    # The job's scheduling rules as its policy said at submit, and why it waited at the last check.
    Column("window", JSON),
    Column("exclusive", Boolean, nullable=False, default=False),
    Column("max_queue_share", Float),
    Column("time_sensitive_reserve", Integer, nullable=False, default=0),
    Column("reason", String(16)),
    Column("reason_detail", Text),
)

#: One row per named lock (``admission``, ``budget:{team}``), taken with ``SELECT … FOR UPDATE``.
locks = Table("cb_locks", metadata, Column("name", String(64), primary_key=True))
