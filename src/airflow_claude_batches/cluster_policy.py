"""
An Airflow cluster policy that stops badly governed batch tasks when their DAG is parsed.

Install it in the deployment's ``airflow_local_settings.py`` (on ``PYTHONPATH``, e.g.
``$AIRFLOW_HOME/config/``), next to any policy of your own::

    from airflow_claude_batches.cluster_policy import task_policy

or, if you already have a ``task_policy``, call ours from it::

    from airflow_claude_batches.cluster_policy import task_policy as claude_batches_task_policy

    def task_policy(task):
        claude_batches_task_policy(task)
        ...

The DAG processor then refuses, as an import error shown in the UI that names the DAG and the task,
a :class:`~airflow_claude_batches.operators.submit.ClaudeBatchSubmitOperator` whose team is not in the
governance file, whose job type is unknown or not open to the team, or that runs in a pool other than
its team's (another team's pool would spend that team's concurrency quota). The operator checks
the same at run time; the policy makes the mistake visible before anything is scheduled.
Direct calls to the API from DAG code are a different hole: see :mod:`airflow_claude_batches.lint`.
"""

from __future__ import annotations

from typing import Any

from airflow.exceptions import AirflowClusterPolicyViolation

from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from airflow_claude_batches.policy import PolicyError, load_policy

__all__ = ["task_policy"]


def task_policy(task: Any) -> None:
    """
    Reject a misgoverned :class:`ClaudeBatchSubmitOperator`; leave every other task alone.

    :raises AirflowClusterPolicyViolation: naming the DAG, the task and what is wrong.
    """
    if not isinstance(task, ClaudeBatchSubmitOperator):
        return
    dag_id = task.dag_id if task.has_dag() else "<no DAG>"
    where = f"Task {task.task_id!r} of DAG {dag_id!r} (ClaudeBatchSubmitOperator)"
    try:
        governance = load_policy(task.policy_file)
        team, _ = governance.resolve(task.team, task.job_type)
    except PolicyError as e:
        raise AirflowClusterPolicyViolation(f"{where}: {e}") from None
    if task.pool != team.pool:
        raise AirflowClusterPolicyViolation(
            f"{where}: runs in pool {task.pool!r}, but team {task.team!r}'s pool is {team.pool!r} "
            f"({governance.source}); leave pool unset to use it."
        )
