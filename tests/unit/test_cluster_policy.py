"""The cluster policy: misgoverned submit tasks are refused when their DAG is parsed."""

from __future__ import annotations

import textwrap

import pytest
from airflow.exceptions import AirflowClusterPolicyViolation

from airflow_claude_batches.cluster_policy import task_policy
from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator

REQUESTS = [{"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}]


def submit(policy_file: str, **kwargs) -> ClaudeBatchSubmitOperator:
    kwargs.setdefault("team", "alpha")
    kwargs.setdefault("job_type", "enrich")
    return ClaudeBatchSubmitOperator(task_id="enrich", requests=REQUESTS, policy_file=policy_file, **kwargs)


def test_a_well_governed_task_passes(policy_file):
    task_policy(submit(policy_file))


def test_other_operators_are_left_alone():
    from airflow.providers.standard.operators.empty import EmptyOperator

    task_policy(EmptyOperator(task_id="anything", pool="whatever"))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"team": "gamma"}, "team 'gamma' is not registered"),
        ({"pool": "claude_batches_beta"}, "runs in pool 'claude_batches_beta', but team 'alpha'"),
        ({"pool": "default_pool"}, "runs in pool 'default_pool'"),
        ({"job_type": "translate"}, "unknown job type 'translate'"),
        ({"team": "beta"}, "job type 'enrich' is not open to team 'beta'"),
    ],
)
def test_a_misgoverned_task_is_refused_by_name(policy_file, kwargs, expected):
    with pytest.raises(AirflowClusterPolicyViolation, match=expected) as error:
        task_policy(submit(policy_file, **kwargs))
    assert "Task 'enrich'" in str(error.value)


def test_no_governance_file_is_a_violation_too(tmp_path):
    with pytest.raises(AirflowClusterPolicyViolation, match="governance file not found"):
        task_policy(submit(str(tmp_path / "missing.yaml")))


DAG_FILE = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator

REQUESTS = [
    {{"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{{"role": "user", "content": "x"}}]}}
]

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1)):
    ClaudeBatchSubmitOperator(
        task_id="good_enrich", team="alpha", job_type="enrich", requests=REQUESTS, policy_file={policy!r}
    )
    ClaudeBatchSubmitOperator(
        task_id="{bad_task}", team="alpha", job_type="enrich", requests=REQUESTS, policy_file={policy!r},
        pool="{pool}",
    )
"""


def test_dagbag_with_the_policy_installed_reports_the_bad_task(policy_file, tmp_path, monkeypatch):
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    dags.mkdir()
    for dag_id, bad_task, pool in [
        ("stealing_pool", "steal_beta_slots", "claude_batches_beta"),
        ("fine_dag", "also_fine", "claude_batches_alpha"),
    ]:
        text = DAG_FILE.format(dag_id=dag_id, bad_task=bad_task, pool=pool, policy=policy_file)
        (dags / f"{dag_id}.py").write_text(textwrap.dedent(text))
    monkeypatch.setattr(settings, "task_policy", task_policy)

    bag = DagBag(dag_folder=str(dags))

    assert sorted(bag.dag_ids) == ["fine_dag"]
    ((path, error),) = bag.import_errors.items()
    assert path.endswith("stealing_pool.py")
    assert "Task 'steal_beta_slots' of DAG 'stealing_pool'" in error
    assert "team 'alpha''s pool is 'claude_batches_alpha'" in error
