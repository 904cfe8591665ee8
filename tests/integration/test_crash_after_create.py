"""A real worker killed right after the API made its batch: the retry adopts it, pays once, stores all.

The emulator holds the create's answer (``http[0].when = "after"`` with ``delay_seconds``): the batch
exists and is billed, the worker is still waiting for the id. The test then SIGKILLs the task's
process (``airflow worker -- <ti id>``, the task runner the supervisor forked), the task fails, and
its retry (``retries=1``) must find the batch through its create intent instead of creating another.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from tests.integration.airflow_cluster import follow_runs
from tests.integration.conftest import CRASH_DAG_ID, CRASH_REQUESTS, RunningCluster

pytestmark = pytest.mark.integration


def task_process(ti_id: str) -> int | None:
    """The pid of the task runner of task instance ``ti_id`` (its process title names the id)."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.startswith(f"airflow worker -- {ti_id}"):
            return int(pid)
    return None


def test_a_worker_killed_right_after_create_is_retried_into_one_batch_with_complete_results(
    file_cluster: RunningCluster, cluster_emulator
) -> None:
    client = file_cluster.client
    client.wait_for_dag(CRASH_DAG_ID)
    before = cluster_emulator.stats()["batches"]
    cluster_emulator.set_faults(http=[{"route": "create", "when": "after", "delay_seconds": 60}])
    run_id = client.trigger(CRASH_DAG_ID)
    try:
        deadline = time.monotonic() + 120
        while cluster_emulator.stats()["batches"] == before:  # the API made the batch; no answer yet
            assert time.monotonic() < deadline, "the task never sent its create"
            time.sleep(0.2)
        ti = client.task_instances(CRASH_DAG_ID, run_id)["classify"]
        pid = task_process(ti["id"])
        assert pid is not None, f"no process for task instance {ti['id']}"
        os.kill(pid, signal.SIGKILL)
    finally:
        cluster_emulator.set_faults()

    ((run, states),) = follow_runs(client, {CRASH_DAG_ID: run_id}, timeout=240).values()
    assert run["state"] == "success", sorted(states)
    ti = client.task_instances(CRASH_DAG_ID, run_id)["classify"]
    assert ti["try_number"] == 2, ti  # the first try died; the retry finished the job

    assert cluster_emulator.stats()["batches"] == before + 1  # one batch, paid once
    (record,) = [
        r for r in file_cluster.ledger().records() if r.dag_id == CRASH_DAG_ID and r.run_id == run_id
    ]
    assert record.processing_status == "ended" and record.request_count == CRASH_REQUESTS
    assert record.results_uri is not None
    from airflow.sdk import ObjectStoragePath

    from airflow_claude_batches.store.results import verify_results

    manifest = verify_results(ObjectStoragePath(record.results_uri))
    assert manifest.counts["succeeded"] == CRASH_REQUESTS  # complete results
