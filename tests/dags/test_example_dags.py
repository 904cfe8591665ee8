"""The example team DAGs: they parse, and each runs to success with `airflow dags test` on SQLite.

`airflow dags test` runs the trigger inline in one process; the multi-process path (scheduler,
triggerer, pools) is covered by tests/integration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_claude_batches.governance.ids import parse_custom_id
from airflow_claude_batches.store.database import LedgerDatabase, sqlite_url
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ["marketing_nightly_enrichment", "support_ticket_classification"]
RETENTION_DAG = "claude_batches_retention"
RECONCILE_DAG = "claude_batches_reconcile"


def test_dags_folder_parses_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert {*EXAMPLE_DAGS, RETENTION_DAG, RECONCILE_DAG} <= set(bag.dag_ids)


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, emulator):
    home = tmp_path_factory.mktemp("dags-test-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CLAUDE_BATCHES__POLICY_FILE": str(REPO / "dags" / "claude_batches_policy.yaml"),
        "AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT": f"file://{home}/claude_batches",
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT": json.dumps(
            {"conn_type": "anthropic", "host": emulator.base_url, "password": emulator.api_key}
        ),
    }
    env.pop("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", None)
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    ledger_migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "claude-batches", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ledger_migrate.returncode == 0, ledger_migrate.stderr[-3000:]
    assert "ledger database" in ledger_migrate.stdout
    return env, home / "claude_batches"


def ledger_records(root) -> list[LedgerRecord]:
    """The embedded ledger the DAG runs wrote (``ledger.db`` in the local results root)."""
    return list(Ledger(LedgerDatabase(sqlite_url(root / "ledger.db"))).records())


def dags_test(env: dict[str, str], dag_id: str) -> str:
    """``airflow dags test DAG_ID``, which must succeed; its output."""
    run = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success" in output, output[-5000:]
    return output


@pytest.mark.parametrize("dag_id", EXAMPLE_DAGS)
def test_example_dag_runs_end_to_end(airflow_env, dag_id):
    env, root = airflow_env
    output = dags_test(env, dag_id)
    assert "ClaudeBatchTrigger" in output  # the task deferred and the trigger ran

    (record,) = [r for r in ledger_records(root) if r.dag_id == dag_id]
    assert record.processing_status == "ended"
    batch_dir = root / record.team / record.job_key / record.batch_id
    lines = (batch_dir / "succeeded.jsonl").read_text().splitlines()
    assert len(lines) == record.request_count > 0
    refs = [parse_custom_id(json.loads(line)["custom_id"]) for line in lines]
    assert sorted(r.index for r in refs) == list(range(record.request_count))
    assert {(r.team, r.job_key) for r in refs} == {(record.team, record.job_key)}
    manifest = json.loads((batch_dir / "manifest.json").read_text())
    assert manifest["counts"]["succeeded"] == record.request_count


def test_retention_dag_runs_over_the_ledger(airflow_env):
    """After the team DAGs ran (or on an empty ledger): nothing is due yet, and the run succeeds."""
    env, root = airflow_env
    records = len(ledger_records(root))
    output = dags_test(env, RETENTION_DAG)
    summary = {"counts": {"kept": records} if records else {}, "failed": []}
    assert f"Retention done: {summary}" in output, output[-5000:]


def test_reconcile_dag_sweeps_the_api_against_the_ledger(airflow_env):
    """The team DAGs' batches are in the ledger: the sweep records none of them as unmanaged."""
    env, root = airflow_env
    output = dags_test(env, RECONCILE_DAG)
    assert "Reconcile done" in output, output[-5000:]
    managed = {r.batch_id for r in ledger_records(root) if r.origin == "managed"}
    unmanaged = {r.batch_id for r in ledger_records(root) if r.origin == "unmanaged"}
    assert not managed & unmanaged
