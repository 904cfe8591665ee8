"""The ledger in a database: batches, their status history, spend commitments, admission, locks.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "cb_admission",
        sa.Column("entry_id", sa.String(length=96), nullable=False),
        sa.Column("team", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("job_type", sa.String(length=128), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("created_requests", sa.Integer(), nullable=False),
        sa.Column("priority_rank", sa.Integer(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(), nullable=False),
        sa.Column("stale_after_seconds", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("admitted_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("entry_id"),
    )
    op.create_table(
        "cb_batches",
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("team", sa.String(length=32), nullable=False),
        sa.Column("job_type", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("job_key", sa.String(length=64), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=True),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("try_number", sa.Integer(), nullable=True),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("first_index", sa.Integer(), nullable=False),
        sa.Column("processing_status", sa.String(length=16), nullable=False),
        sa.Column("processing", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("errored", sa.Integer(), nullable=False),
        sa.Column("canceled", sa.Integer(), nullable=False),
        sa.Column("expired", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("results_expire_at", sa.DateTime(), nullable=True),
        sa.Column("estimated_cost_usd", sa.Float(), nullable=True),
        sa.Column("actual_cost_usd", sa.Float(), nullable=True),
        sa.Column("results_uri", sa.Text(), nullable=True),
        sa.Column("consumed_at", sa.DateTime(), nullable=True),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_index("ix_cb_batches_created", "cb_batches", ["created_at"], unique=False)
    op.create_index("ix_cb_batches_job", "cb_batches", ["team", "job_key"], unique=False)
    op.create_index("ix_cb_batches_team_created", "cb_batches", ["team", "created_at"], unique=False)
    op.create_index(
        "ix_cb_batches_unfinished",
        "cb_batches",
        ["processing_status", "created_at"],
        unique=False,
        sqlite_where=sa.text("processing_status <> 'ended'"),
        postgresql_where=sa.text("processing_status <> 'ended'"),
    )
    op.create_table(
        "cb_locks", sa.Column("name", sa.String(length=64), nullable=False), sa.PrimaryKeyConstraint("name")
    )
    op.create_table(
        "cb_spend_commitments",
        sa.Column("team", sa.String(length=32), nullable=False),
        sa.Column("job_key", sa.String(length=64), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("amount_usd", sa.Float(), nullable=False),
        sa.Column("committed_at", sa.DateTime(), nullable=False),
        sa.Column("batch_id", sa.String(length=128), nullable=True),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("team", "job_key", "batch_index"),
    )
    op.create_index("ix_cb_commitments_open", "cb_spend_commitments", ["team", "committed_at"], unique=False)
    op.create_table(
        "cb_batch_status_history",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("observed_at", sa.DateTime(), nullable=False),
        sa.Column("processing_status", sa.String(length=16), nullable=False),
        sa.Column("processing", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("errored", sa.Integer(), nullable=False),
        sa.Column("canceled", sa.Integer(), nullable=False),
        sa.Column("expired", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["cb_batches.batch_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_cb_history_batch", "cb_batch_status_history", ["batch_id", "observed_at"], unique=False
    )


def downgrade() -> None:
    for table in (
        "cb_batch_status_history",
        "cb_spend_commitments",
        "cb_locks",
        "cb_batches",
        "cb_admission",
    ):
        op.drop_table(table)
