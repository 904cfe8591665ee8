"""The dashboard's flagged batches: an index of the results nobody consumed yet, by when they expire.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

_UNCONSUMED = sa.text("consumed_at IS NULL AND archived_at IS NULL AND deleted_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_cb_batches_unconsumed",
        "cb_batches",
        ["results_expire_at"],
        unique=False,
        sqlite_where=_UNCONSUMED,
        postgresql_where=_UNCONSUMED,
    )


def downgrade() -> None:
    op.drop_index("ix_cb_batches_unconsumed", table_name="cb_batches")
