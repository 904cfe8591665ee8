"""Platform team: daily retention of every team's batch results, as each job type's policy says.

Warns about results nobody consumed before the API drops them (day 29), archives or purges stored
results at the job type's ``retention_days``, then deletes the batch at the API. All the logic is in
:mod:`airflow_claude_batches.jobs.retention`; the policy is read when the task runs, never at parse time.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_claude_batches.jobs.retention import run_retention


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["claude-batches", "platform"],
)
def claude_batches_retention():
    @task
    def apply_retention() -> dict[str, Any]:
        """Counts per action to XCom; fails (listing the batches) if any batch failed."""
        report = run_retention()
        report.raise_for_failures()
        return report.summary()

    apply_retention()


claude_batches_retention()
