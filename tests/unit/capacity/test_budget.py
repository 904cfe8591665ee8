"""Team budgets in the ledger database: what counts toward a day and a month, commitments, races."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from airflow_claude_batches.capacity.budget import BudgetExceeded, commit_spend, release_spend
from airflow_claude_batches.governance.policy import TeamPolicy
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord

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


@pytest.fixture
def ledger(ledger_db) -> Ledger:
    ledger = Ledger(ledger_db)
    for rec in RECORDS:
        ledger.put(rec)
    return ledger


def commit(ledger: Ledger, team: TeamPolicy, amount: float, job: str = "new", now: datetime = NOW):
    return commit_spend(ledger, team, job_key=job, job_id=job, estimates=[(0, amount)], now=now)


def test_spend_counts_actual_when_known_else_the_estimate_by_utc_day_and_month(ledger):
    spend = commit(ledger, TeamPolicy(name="alpha"), 0.0)
    assert (spend.daily_usd, spend.monthly_usd) == (3.0, 10.0)
    assert (spend.day, spend.month) == ("2026-11-27", "2026-11")


def test_day_boundary_is_utc(ledger):
    # 00:30 on the 28th in UTC is still the 27th in New York: the 27th's spend no longer counts today.
    late = datetime(2026, 11, 28, 0, 30, tzinfo=timezone.utc)
    assert commit(ledger, TeamPolicy(name="alpha"), 0.0, now=late).daily_usd == 0.0


def test_within_budget_passes_and_the_commitment_counts_for_the_next_job(ledger):
    team = TeamPolicy(name="alpha", daily_budget_usd=5.0, monthly_budget_usd=20.0)
    assert commit(ledger, team, 1.5, job="first").daily_usd == 3.0
    assert commit(ledger, team, 0.5, job="second").daily_usd == 4.5
    with pytest.raises(BudgetExceeded, match=r"\$5.0000 already committed"):
        commit(ledger, team, 0.5, job="third")


def test_a_retry_replaces_its_own_commitment_instead_of_adding_to_it(ledger):
    team = TeamPolicy(name="alpha", daily_budget_usd=5.0)
    commit(ledger, team, 1.5, job="job-1")
    assert commit(ledger, team, 1.5, job="job-1").daily_usd == 3.0  # not 4.5


def test_a_created_batch_settles_its_commitment_and_a_released_one_stops_counting(ledger):
    team = TeamPolicy(name="alpha", daily_budget_usd=100.0)
    commit_spend(ledger, team, job_key="k", job_id="k", estimates=[(0, 1.0), (1, 2.0)], now=NOW)
    assert commit(ledger, team, 0.0).daily_usd == 6.0
    created = record("k0", NOW, 1.0).model_copy(update={"job_key": "k"})
    ledger.record_created(created, batch_index=0)
    assert commit(ledger, team, 0.0).daily_usd == 6.0  # batch 0 counts once, through its batch
    release_spend(ledger, "alpha", "k")
    assert commit(ledger, team, 0.0).daily_usd == 4.0  # batch 1 was never created


def test_over_both_budgets_names_every_number_and_commits_nothing(ledger):
    team = TeamPolicy(name="alpha", daily_budget_usd=5.0, monthly_budget_usd=11.0)
    with pytest.raises(BudgetExceeded) as error:
        commit(ledger, team, 2.5)
    assert str(error.value) == (
        "Team alpha would go over its budget, nothing was sent: "
        "daily budget $5.00 (2026-11-27 UTC): $3.0000 already committed + this job's estimate $2.5000 "
        "= $5.5000; monthly budget $11.00 (2026-11 UTC): $10.0000 already committed + this job's "
        "estimate $2.5000 = $12.5000"
    )
    assert commit(ledger, TeamPolicy(name="alpha"), 0.0).daily_usd == 3.0


def test_no_budget_means_no_limit(ledger):
    assert commit(ledger, TeamPolicy(name="alpha"), 1e9).monthly_usd == 10.0


def test_twenty_jobs_racing_for_a_budget_that_fits_three(ledger):
    """Each job fits alone; together only three do. The check and the commitment are one transaction."""
    team = TeamPolicy(name="gamma", daily_budget_usd=3.5)
    passed: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(20)

    def job(n: int) -> None:
        start.wait()
        try:
            commit(ledger, team, 1.0, job=f"job-{n}")
            passed.append(f"job-{n}")
        except BudgetExceeded:
            refused.append(f"job-{n}")

    threads = [threading.Thread(target=job, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(passed), len(refused)) == (3, 17)
    assert commit(ledger, TeamPolicy(name="gamma"), 0.0).daily_usd == 3.0
