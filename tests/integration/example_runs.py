"""The example team DAGs run on a cluster, observed while they run: what the example-DAG tests check
and what the dashboard tests show (one run of each example per cluster serves them all)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tests.integration.airflow_cluster import DAGS_FOLDER, dag_defined_in, follow_runs

if TYPE_CHECKING:
    from tests.integration.conftest import RunningCluster

RUN_TIMEOUT = 180.0
EXAMPLES = {
    "marketing_nightly_enrichment": "claude_batches_marketing",
    "support_ticket_classification": "claude_batches_support",
}


@dataclass
class Observed:
    """One example run, and what was seen while polling it."""

    run_id: str
    run: dict[str, Any] = field(default_factory=dict)
    states: set[str] = field(default_factory=set)
    deferred_tasks: set[str] = field(default_factory=set)
    pools_of_deferred: set[str] = field(default_factory=set)
    trigger_classpaths: set[str] = field(default_factory=set)
    max_deferred_slots: int = 0
    max_occupied_slots: int = 0
    failure: str = ""


def run_examples(cluster: RunningCluster, logical_date: datetime | None) -> dict[str, Observed]:
    """Trigger every example DAG present at once and follow them to the end, recording each team's
    pool while a task is deferred. Concurrent runs keep the suite short and share the executor's
    4 slots like real nightly jobs do."""
    client = cluster.client
    dag_ids = [dag_id for dag_id in sorted(EXAMPLES) if dag_defined_in(DAGS_FOLDER, dag_id)]
    for dag_id in dag_ids:
        client.wait_for_dag(dag_id)
    observed = {dag_id: Observed(client.trigger(dag_id, logical_date=logical_date)) for dag_id in dag_ids}

    def on_poll(dag_id: str, tis: dict[str, dict[str, Any]]) -> None:
        seen = observed[dag_id]
        for task_id, ti in tis.items():
            if ti["state"] == "deferred":
                seen.deferred_tasks.add(task_id)
                seen.pools_of_deferred.add(ti["pool"])
                if ti.get("trigger"):
                    seen.trigger_classpaths.add(ti["trigger"]["classpath"])
                pool = client.pool(ti["pool"])
                seen.max_deferred_slots = max(seen.max_deferred_slots, pool["deferred_slots"])
                seen.max_occupied_slots = max(seen.max_occupied_slots, pool["occupied_slots"])

    runs = {dag_id: seen.run_id for dag_id, seen in observed.items()}
    for dag_id, (run, states) in follow_runs(client, runs, timeout=RUN_TIMEOUT, on_poll=on_poll).items():
        seen = observed[dag_id]
        seen.run, seen.states = run, states
        if run["state"] != "success":
            seen.failure = "\n\n".join(
                f"--- {task_id} ({ti['state']}) ---\n"
                + client.task_log(dag_id, seen.run_id, task_id, ti["try_number"])
                for task_id, ti in client.task_instances(dag_id, seen.run_id).items()
                if ti["state"] not in ("success", "skipped") and ti["try_number"]
            )
    return observed
