"""Support team: classify yesterday's tickets, a small time-sensitive job read from a JSONL file.

The requests are passed by reference (a file URI, here shipped beside the DAG; in production an
``s3://`` export), so the task's rendered fields stay small whatever the size of the job.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator

TICKETS = Path(__file__).parent / "data" / "support_tickets.jsonl"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["claude-batches", "team:support"],
)
def support_ticket_classification():
    classify = ClaudeBatchSubmitOperator(
        task_id="classify_tickets",
        team="support",
        job_type="classification",
        job_id="tickets-{{ dag_run.run_after | ts_nodash | lower }}",
        requests=TICKETS.as_uri(),
        poll_interval=5,
    )

    @task
    def report(summary: dict) -> dict:
        """What downstream tasks get from the job: counts, cost and where the results are."""
        counts, cost = summary["request_counts"], summary["actual_cost_usd"]
        print(f"Classified {counts} at ${cost}: {summary['results_uri']}")
        return summary["request_counts"]

    report(classify.output)


support_ticket_classification()
