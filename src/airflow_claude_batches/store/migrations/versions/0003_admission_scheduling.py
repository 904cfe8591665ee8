"""Scheduling of the shared queue: each admission entry's window, exclusivity, team share, reserve
and the reason it waits.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("cb_admission") as table:
        table.add_column(sa.Column("window", sa.JSON(), nullable=True))
        table.add_column(sa.Column("exclusive", sa.Boolean(), nullable=False, server_default=sa.false()))
        table.add_column(sa.Column("max_queue_share", sa.Float(), nullable=True))
        table.add_column(
            sa.Column("time_sensitive_reserve", sa.Integer(), nullable=False, server_default="0")
        )
        table.add_column(sa.Column("reason", sa.String(length=16), nullable=True))
        table.add_column(sa.Column("reason_detail", sa.Text(), nullable=True))


def downgrade() -> None:
    columns = ("window", "exclusive", "max_queue_share", "time_sensitive_reserve", "reason", "reason_detail")
    with op.batch_alter_table("cb_admission") as table:
        for column in columns:
            table.drop_column(column)
