"""The cluster policy: misgoverned submit tasks are refused when their DAG is parsed.

The bypasses a DAG author tries (subclass, another team, the official operator) are in
tests/unit/operators/test_governance.py; here, the policy's own rules and when it is active.
"""

from __future__ import annotations

import textwrap

import pytest
from airflow.exceptions import AirflowClusterPolicyViolation

from airflow_claude_batches.governance.cluster_policy import dag_policy, task_policy
from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from operator_harness import team_dag

REQUESTS = [{"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}]


def submit(folder: str = "alpha", **kwargs) -> ClaudeBatchSubmitOperator:
    kwargs.setdefault("job_type", "enrich")
    with team_dag(folder):
        return ClaudeBatchSubmitOperator(task_id="enrich", requests=REQUESTS, **kwargs)


def test_a_well_governed_task_passes(policy_file):
    task = submit(team="alpha")
    task_policy(task)
    assert task.pool == "claude_batches_alpha"


def test_other_operators_are_left_alone(policy_file):
    from airflow.providers.standard.operators.empty import EmptyOperator

    task_policy(EmptyOperator(task_id="anything", pool="whatever"))


@pytest.mark.parametrize(
    ("folder", "kwargs", "expected"),
    [
        ("alpha", {"team": "gamma"}, "declares team 'gamma'"),
        ("gamma", {}, "'gamma/dag.py in bundle dags-folder' belongs to no team"),
        ("alpha", {"pool": "claude_batches_beta"}, "runs in pool 'claude_batches_beta', but team alpha's"),
        ("alpha", {"pool": "default_pool"}, "runs in pool 'default_pool'"),
        ("alpha", {"job_type": "translate"}, "unknown job type 'translate'"),
        ("beta", {}, "job type 'enrich' is not open to team 'beta'"),
    ],
)
def test_a_misgoverned_task_is_refused_by_name(policy_file, folder, kwargs, expected):
    with pytest.raises(AirflowClusterPolicyViolation, match=expected) as error:
        task_policy(submit(folder, **kwargs))
    assert "Task 'enrich' of DAG 'dag'" in str(error.value)


def test_a_missing_governance_file_is_a_violation(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(AirflowClusterPolicyViolation, match="governance file not found"):
        task_policy(submit(team="alpha"))


def test_without_a_governance_file_or_when_opted_out_it_does_nothing(policy_file, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__CLUSTER_POLICY", "False")
    task_policy(submit(team="gamma"))
    monkeypatch.delenv("AIRFLOW__CLAUDE_BATCHES__CLUSTER_POLICY")
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", "")
    task_policy(submit(team="gamma"))


def test_a_dag_file_calling_the_api_is_refused_with_its_lines(policy_file, tmp_path):
    path = tmp_path / "direct.py"
    path.write_text("import anthropic\nanthropic.Anthropic().messages.batches.create(requests=[])\n")
    dag = team_dag("alpha")
    dag.fileloc = str(path)
    with pytest.raises(AirflowClusterPolicyViolation, match=r"direct\.py:2:1: CB001"):
        dag_policy(dag)


DAG_FILE = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator

REQUESTS = [
    {{"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{{"role": "user", "content": "x"}}]}}
]

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1)):
    ClaudeBatchSubmitOperator(task_id="good_enrich", job_type="enrich", requests=REQUESTS)
    ClaudeBatchSubmitOperator(task_id="{bad_task}", job_type="enrich", requests=REQUESTS, pool="{pool}")
"""


def test_dagbag_reports_the_bad_task_through_the_installed_plugin(policy_file, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    (dags / "alpha").mkdir(parents=True)
    for dag_id, bad_task, pool in [
        ("stealing_pool", "steal_beta_slots", "claude_batches_beta"),
        ("fine_dag", "also_fine", "claude_batches_alpha"),
    ]:
        text = DAG_FILE.format(dag_id=dag_id, bad_task=bad_task, pool=pool)
        (dags / "alpha" / f"{dag_id}.py").write_text(textwrap.dedent(text))

    bag = DagBag(dag_folder=str(dags), bundle_path=dags, bundle_name="teams")

    assert sorted(bag.dag_ids) == ["fine_dag"]
    ((path, error),) = bag.import_errors.items()
    assert path.endswith("stealing_pool.py")
    assert "Task 'steal_beta_slots' of DAG 'stealing_pool'" in error
    assert "team alpha's pool is 'claude_batches_alpha'" in error
