"""Platform team: hourly sweep for batches at the API that the ledger does not know.

A batch created around the service (a script with the team's key) or orphaned by a lost create is
recorded as unmanaged, alerted once and shown on the dashboard. All the logic is in
:mod:`airflow_claude_batches.jobs.reconcile`.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_claude_batches.jobs.reconcile import run_reconcile


@dag(
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["claude-batches", "platform"],
)
def claude_batches_reconcile():
    @task
    def find_unmanaged_batches() -> dict[str, Any]:
        """What the sweep found, to XCom; the alerts go out as each unmanaged batch is recorded."""
        return run_reconcile().summary()

    find_unmanaged_batches()


claude_batches_reconcile()
