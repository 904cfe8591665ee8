"""
Team spend budgets: a job that would take its team over its daily or monthly budget is refused.

Spend is counted from the ledger, by each batch's ``created_at`` in UTC: the calendar day and the
calendar month that hold *now*. A batch counts at its actual cost once its results are persisted
(``actual_cost_usd``), and at its estimate until then, running or not: the estimate is an upper
bound (every request's output counted at ``max_tokens``), so a budget is never passed by optimism.
The job being submitted counts at its estimate. The check runs before anything is sent.

Reading the ledger costs one read per batch ever recorded; the retention DAG keeps that bounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from airflow_claude_batches.ledger import LedgerRecord
from airflow_claude_batches.policy import TeamPolicy

__all__ = ["BudgetExceeded", "TeamSpend", "check_budget", "team_spend"]


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


def _committed_cost(record: LedgerRecord) -> float:
    if record.actual_cost_usd is not None:
        return record.actual_cost_usd
    return record.estimated_cost_usd or 0.0


def team_spend(records: Iterable[LedgerRecord], team: str, now: datetime | None = None) -> TeamSpend:
    """Sum the team's batches created in the UTC day and month of ``now``."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    daily = monthly = 0.0
    for record in records:
        if record.team != team:
            continue
        created = record.created_at.astimezone(timezone.utc)
        if (created.year, created.month) != (now.year, now.month):
            continue
        cost = _committed_cost(record)
        monthly += cost
        if created.day == now.day:
            daily += cost
    return TeamSpend(team, now.strftime("%Y-%m-%d"), now.strftime("%Y-%m"), daily, monthly)


def check_budget(
    records: Iterable[LedgerRecord], team: TeamPolicy, estimate_usd: float, now: datetime | None = None
) -> TeamSpend:
    """
    Refuse a job whose estimate would take ``team`` over its daily or monthly budget.

    :return: the team's spend before this job (for logs).
    :raises BudgetExceeded: naming the budget, what is already committed, the job's estimate and
        the total, for every budget that would be passed.
    """
    spend = team_spend(records, team.name, now)
    problems = [
        f"{label} budget ${budget:.2f} ({period} UTC): ${spent:.4f} already committed + this job's "
        f"estimate ${estimate_usd:.4f} = ${spent + estimate_usd:.4f}"
        for label, budget, period, spent in (
            ("daily", team.daily_budget_usd, spend.day, spend.daily_usd),
            ("monthly", team.monthly_budget_usd, spend.month, spend.monthly_usd),
        )
        if budget is not None and spent + estimate_usd > budget
    ]
    if problems:
        raise BudgetExceeded(
            f"Team {team.name} would go over its budget, nothing was sent: " + "; ".join(problems)
        )
    return spend
