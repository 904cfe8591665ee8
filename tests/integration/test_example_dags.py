"""The example DAGs on a real Airflow: api-server, scheduler, dag-processor and triggerer processes
with the LocalExecutor on PostgreSQL, the emulator as the Anthropic API, results on ``file://`` and
on ``s3://`` (moto_server).

What ``dag.test()`` cannot show and these tests check: the submit task really defers (its trigger
runs in the triggerer process), it keeps its team's pool slot while deferred, and the worker
resumes it to write results and ledger records into the configured store.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytest
from tests.integration.airflow_cluster import DAGS_FOLDER, dag_defined_in, wait_for
from tests.integration.conftest import (
    SELFTEST_DAG_ID,
    SELFTEST_DEFER_SECONDS,
    SELFTEST_POOL,
    ClusterManager,
    RunningCluster,
)
from tests.integration.example_runs import EXAMPLES, Observed, run_examples

pytestmark = pytest.mark.integration

TRIGGER_CLASSPATH = "airflow_claude_batches.triggers.batch.ClaudeBatchTrigger"
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")

# Decided at collection, so a DAG that has not been written yet costs no cluster start.
EXAMPLE_PARAMS = [
    pytest.param(
        dag_id,
        marks=pytest.mark.skipif(
            not dag_defined_in(DAGS_FOLDER, dag_id), reason=f"{dag_id} not in dags/ yet"
        ),
    )
    for dag_id in sorted(EXAMPLES)
]


def test_harness_deferred_task_keeps_its_pool_slot(file_cluster: RunningCluster) -> None:
    """Harness self-test, independent of our code: a deferred core sensor holds its include_deferred
    pool's only slot, so a second run's task waits in ``scheduled`` until the first one finishes."""
    client = file_cluster.client
    client.wait_for_dag(SELFTEST_DAG_ID)
    first = client.trigger(SELFTEST_DAG_ID)
    wait_for(
        lambda: client.task_instances(SELFTEST_DAG_ID, first).get("wait", {}).get("state") == "deferred",
        timeout=60,
        what="the first sensor to defer",
    )
    pool = client.pool(SELFTEST_POOL)
    assert (pool["deferred_slots"], pool["occupied_slots"], pool["open_slots"]) == (1, 1, 0), pool

    second = client.trigger(SELFTEST_DAG_ID)
    # While the first sensor is deferred, the full pool must keep the second task from being queued.
    held = False
    while (first_state := client.task_instances(SELFTEST_DAG_ID, first)["wait"]["state"]) == "deferred":
        second_state = client.task_instances(SELFTEST_DAG_ID, second).get("wait", {}).get("state")
        assert second_state in (None, "scheduled"), f"second task {second_state} while the pool was full"
        held = held or second_state == "scheduled"
        time.sleep(0.5)
    assert held, f"the first sensor stopped deferring ({first_state}) before the second task was scheduled"

    for run_id in (first, second):
        state = wait_for(
            partial(client.ended_state, SELFTEST_DAG_ID, run_id),
            timeout=SELFTEST_DEFER_SECONDS + 60,
            what=f"{run_id} to end",
        )
        assert state == "success", client.task_instances(SELFTEST_DAG_ID, run_id)
    trigger_log = file_cluster.trigger_log(SELFTEST_DAG_ID, first, "wait")
    assert "DateTimeTrigger" in trigger_log and "Trigger fired event" in trigger_log, trigger_log[-2000:]
    assert client.pool(SELFTEST_POOL)["occupied_slots"] == 0


def check_run(cluster: RunningCluster, dag_id: str, seen: Observed) -> None:
    assert seen.run["state"] == "success", (
        f"{dag_id} run ended {seen.run['state']}; states seen: {sorted(seen.states)}\n{seen.failure}"
    )
    check_deferral(cluster, dag_id, seen.run_id, seen)


def check_deferral(cluster: RunningCluster, dag_id: str, run_id: str, observed: Observed) -> None:
    """The submit task deferred to our trigger, in its team's pool, holding a slot while deferred,
    and the triggerer process ran the trigger until it fired."""
    assert observed.deferred_tasks, f"no task of {dag_id} was seen deferred: {sorted(observed.states)}"
    assert observed.pools_of_deferred == {EXAMPLES[dag_id]}
    assert observed.trigger_classpaths == {TRIGGER_CLASSPATH}, observed.trigger_classpaths
    assert observed.max_deferred_slots >= 1 and observed.max_occupied_slots >= 1, observed
    for task_id in observed.deferred_tasks:
        trigger_log = cluster.trigger_log(dag_id, run_id, task_id)
        assert "Trigger fired event" in trigger_log, f"{task_id}: trigger never fired: {trigger_log[-2000:]}"


def check_store(cluster: RunningCluster, documents: dict[str, str], dag_id: str, run_id: str) -> None:
    """Every batch of the run is in the ledger, ended, with its manifest and result files beside it."""
    records = [r for r in cluster.ledger().records() if r.dag_id == dag_id and r.run_id == run_id]
    assert records, f"no ledger record for {dag_id}/{run_id} among {sorted(documents)[:50]}"
    for record in records:
        assert record.processing_status == "ended", record
        prefix = f"/{record.team}/{record.job_key}/{record.batch_id}/"
        files = {key.rsplit("/", 1)[1]: text for key, text in documents.items() if prefix in key}
        assert "manifest.json" in files, f"no manifest under {prefix}: {sorted(files)}"
        json.loads(files["manifest.json"])
        counts = (
            record.request_counts.model_dump()
            if hasattr(record.request_counts, "model_dump")
            else dict(record.request_counts)
        )
        for result_type in RESULT_TYPES:
            lines = [line for line in files.get(f"{result_type}.jsonl", "").splitlines() if line.strip()]
            assert len(lines) == counts[result_type], f"{prefix}{result_type}.jsonl: {len(lines)} != {counts}"
        assert counts["succeeded"] >= 1, counts


def read_file_store(root: str) -> dict[str, str]:
    base = Path(root.removeprefix("file://"))
    return {f"/{path.relative_to(base)}": path.read_text() for path in base.rglob("*") if path.is_file()}


def read_s3_store(cluster: RunningCluster) -> dict[str, str]:
    import boto3

    assert cluster.s3 is not None
    bucket, _, prefix = cluster.results_root.removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=cluster.s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    documents = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
            documents[f"/{item['Key'].removeprefix(prefix + '/')}"] = body
    return documents


@pytest.fixture(scope="module")
def s3_runs(clusters: ClusterManager) -> dict[str, Observed]:
    """The examples triggered with a logical date, as the scheduler starts a nightly run."""
    return run_examples(clusters.get("s3"), logical_date=datetime.now(timezone.utc))


@pytest.mark.parametrize("dag_id", EXAMPLE_PARAMS)
def test_example_dag_on_file_store(
    file_cluster: RunningCluster, file_runs: dict[str, Observed], dag_id: str
) -> None:
    check_run(file_cluster, dag_id, file_runs[dag_id])
    check_store(file_cluster, read_file_store(file_cluster.results_root), dag_id, file_runs[dag_id].run_id)


@pytest.mark.parametrize("dag_id", EXAMPLE_PARAMS)
def test_example_dag_on_s3_store(
    s3_cluster: RunningCluster, s3_runs: dict[str, Observed], dag_id: str
) -> None:
    check_run(s3_cluster, dag_id, s3_runs[dag_id])
    check_store(s3_cluster, read_s3_store(s3_cluster), dag_id, s3_runs[dag_id].run_id)
