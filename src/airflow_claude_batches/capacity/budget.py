"""
Team spend budgets: a job that would take its team over its daily or monthly budget is refused.

Spend is counted in the ledger database (:meth:`~airflow_claude_batches.store.ledger.Ledger.spend`): the
team's batches created in the current UTC day and month, at actual cost once their results are
persisted and at their estimate until then (an upper bound: every request's output counted at
``max_tokens``, so a budget is never passed by optimism), plus the spend commitments of jobs checked
but not created yet. The job being submitted counts at its estimate.

:func:`commit_spend` checks and commits in one transaction under the team's lock (``SELECT … FOR
UPDATE`` on PostgreSQL, the write lock on SQLite): two jobs that each fit but not together cannot
both pass. The commitment holds the job's money while it waits for admission and while its batches
are created; it is settled by the batch it becomes, or released if the job gives up before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import update

from airflow_claude_batches.governance.policy import TeamPolicy
from airflow_claude_batches.store import schema
from airflow_claude_batches.store.ledger import Ledger, period_starts, upsert

__all__ = ["BudgetExceeded", "TeamSpend", "commit_spend", "release_spend"]


class BudgetExceeded(ValueError):
    """The job's estimate would take its team over a budget; nothing was sent."""


@dataclass(frozen=True)
class TeamSpend:
    """A team's committed spend (actual where known, else estimated) in the current UTC periods."""

    team: str
    day: str
    month: str
    daily_usd: float
    monthly_usd: float


def commit_spend(
    ledger: Ledger,
    team: TeamPolicy,
    *,
    job_key: str,
    job_id: str,
    estimates: Sequence[tuple[int, float]],
    now: datetime | None = None,
) -> TeamSpend:
    """
    Refuse the job if its estimates would take ``team`` over a budget; else commit them.

    :param estimates: ``(batch index, estimated cost)`` of each batch still to create. A retry
        replaces the job's own open commitments instead of adding to them.
    :return: the team's spend before this job (for logs).
    :raises BudgetExceeded: naming the budget, what is already committed, the job's estimate and
        the total, for every budget that would be passed; nothing is committed then.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    day, month = period_starts(now)
    estimate = sum(amount for _, amount in estimates)
    with ledger.db.write() as conn:
        ledger.db.lock(conn, f"budget:{team.name}")
        spend = TeamSpend(
            team.name,
            now.strftime("%Y-%m-%d"),
            now.strftime("%Y-%m"),
            ledger.spend(conn, team.name, day, exclude_job=job_key).get(team.name, 0.0),
            ledger.spend(conn, team.name, month, exclude_job=job_key).get(team.name, 0.0),
        )
        problems = [
            f"{label} budget ${budget:.2f} ({period} UTC): ${spent:.4f} already committed + this job's "
            f"estimate ${estimate:.4f} = ${spent + estimate:.4f}"
            for label, budget, period, spent in (
                ("daily", team.daily_budget_usd, spend.day, spend.daily_usd),
                ("monthly", team.monthly_budget_usd, spend.month, spend.monthly_usd),
            )
            if budget is not None and spent + estimate > budget
        ]
        if problems:
            raise BudgetExceeded(
                f"Team {team.name} would go over its budget, nothing was sent: " + "; ".join(problems)
            )
        for batch_index, amount in estimates:
            upsert(
                conn,
                schema.spend_commitments,
                {
                    "team": team.name,
                    "job_key": job_key,
                    "batch_index": batch_index,
                    "job_id": job_id,
                    "amount_usd": amount,
                    "committed_at": now,
                    "released_at": None,
                },
                ["team", "job_key", "batch_index"],
            )
    return spend


def release_spend(ledger: Ledger, team: str, job_key: str, now: datetime | None = None) -> None:
    """Release the job's commitments whose batches were never created (the job gave up)."""
    table = schema.spend_commitments
    with ledger.db.write() as conn:
        conn.execute(
            update(table)
            .where(
                table.c.team == team,
                table.c.job_key == job_key,
                table.c.batch_id.is_(None),
                table.c.released_at.is_(None),
            )
            .values(released_at=now or datetime.now(timezone.utc))
        )
