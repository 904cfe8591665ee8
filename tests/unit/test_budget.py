"""Team budgets: what counts toward a day and a month, and the refusal message."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_claude_batches.budget import BudgetExceeded, check_budget, team_spend
from airflow_claude_batches.ledger import LedgerRecord
from airflow_claude_batches.policy import TeamPolicy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def record(batch: str, created: datetime, estimate: float, actual: float | None = None, team="alpha"):
    return LedgerRecord(
        batch_id=f"msgbatch_{batch}",
        team=team,
        job_type="enrich",
        job_id="job",
        job_key="job",
        request_count=1,
        created_at=created,
        estimated_cost_usd=estimate,
        actual_cost_usd=actual,
    )


RECORDS = [
    record("today_ended", datetime(2026, 11, 27, 1, tzinfo=timezone.utc), 4.0, actual=1.0),
    record("today_running", datetime(2026, 11, 27, 11, tzinfo=timezone.utc), 2.0),
    record("earlier_this_month", datetime(2026, 11, 3, tzinfo=timezone.utc), 10.0, actual=7.0),
    record("last_month", datetime(2026, 10, 31, 23, 59, tzinfo=timezone.utc), 100.0, actual=100.0),
    record("other_team", datetime(2026, 11, 27, 2, tzinfo=timezone.utc), 50.0, team="beta"),
]


def test_spend_counts_actual_when_known_else_the_estimate_by_utc_day_and_month():
    spend = team_spend(RECORDS, "alpha", NOW)
    assert (spend.daily_usd, spend.monthly_usd) == (3.0, 10.0)
    assert (spend.day, spend.month) == ("2026-11-27", "2026-11")


def test_day_boundary_is_utc():
    # 00:30 on the 28th in UTC is still the 27th in New York: the 27th's spend no longer counts today.
    late = datetime(2026, 11, 28, 0, 30, tzinfo=timezone.utc)
    assert team_spend(RECORDS, "alpha", late).daily_usd == 0.0


def test_within_budget_passes():
    team = TeamPolicy(name="alpha", daily_budget_usd=5.0, monthly_budget_usd=20.0)
    assert check_budget(RECORDS, team, 2.0, NOW).daily_usd == 3.0


def test_over_both_budgets_names_every_number():
    team = TeamPolicy(name="alpha", daily_budget_usd=5.0, monthly_budget_usd=11.0)
    with pytest.raises(BudgetExceeded) as error:
        check_budget(RECORDS, team, 2.5, NOW)
    assert str(error.value) == (
        "Team alpha would go over its budget, nothing was sent: "
        "daily budget $5.00 (2026-11-27 UTC): $3.0000 already committed + this job's estimate $2.5000 "
        "= $5.5000; monthly budget $11.00 (2026-11 UTC): $10.0000 already committed + this job's "
        "estimate $2.5000 = $12.5000"
    )


def test_no_budget_means_no_limit():
    assert check_budget(RECORDS, TeamPolicy(name="alpha"), 1e9, NOW).monthly_usd == 10.0
