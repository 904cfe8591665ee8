"""
An Airflow cluster policy that refuses ungoverned batch tasks when their DAG is parsed.

It is a policy plugin, registered through Airflow's ``airflow.policy`` entry point: wherever this
provider is installed and ``[claude_batches] policy_file`` is set, the DAG processor applies it, with
nothing to add to ``airflow_local_settings.py``. It refuses, as an import error shown in the UI that
names the DAG and the task:

- a :class:`~airflow_claude_batches.operators.submit.ClaudeBatchSubmitOperator` that
  :func:`~airflow_claude_batches.operators.submit.govern` refuses: a DAG that belongs to no team or
  to two (:mod:`airflow_claude_batches.governance.teams`), a declared ``team`` other than the
  DAG's, a job type that is unknown or not open to the team, a pool other than the team's, a
  subclass that overrides the submit path. A task built without ``team`` or ``pool`` gets its
  team's pool and results asset here, so the scheduler runs it in that pool;
- an operator of another provider that creates Message Batches (the official
  ``AnthropicBatchOperator`` and its subclasses);
- a DAG file that calls the Message Batches API directly, through any hook or client, as
  :mod:`airflow_claude_batches.governance.lint` reads it (with the helper modules it imports from its bundle).

The operator makes the same checks when it runs; this policy makes a mistake visible before
anything is scheduled, and it is the check a subclass cannot skip by replacing ``execute``.

Opt out (for example while migrating teams' DAGs) with ``[claude_batches] cluster_policy = False``
(``AIRFLOW__CLAUDE_BATCHES__CLUSTER_POLICY=False``); without ``policy_file`` it does nothing.

Every Airflow process loads policy plugins while ``import airflow`` runs, so this module imports
nothing heavy at the top: the operator's module is looked at only when a DAG has imported it.
"""

from __future__ import annotations

import sys
from typing import Any

from airflow.policies import hookimpl

__all__ = ["FOREIGN_BATCH_OPERATORS", "dag_policy", "task_policy"]

#: Operators of other providers that create Message Batches outside the governed path.
FOREIGN_BATCH_OPERATORS = frozenset({"airflow.providers.anthropic.operators.batch.AnthropicBatchOperator"})
#: How many lint findings the refusal of a DAG file lists.
_SHOWN_FINDINGS = 5
_SUBMIT_MODULE = "airflow_claude_batches.operators.submit"


def _active() -> bool:
    from airflow.providers.common.compat.sdk import conf

    return bool(conf.get("claude_batches", "policy_file", fallback="")) and conf.getboolean(
        "claude_batches", "cluster_policy", fallback=True
    )


def _violation(message: str) -> Exception:
    from airflow.exceptions import AirflowClusterPolicyViolation

    return AirflowClusterPolicyViolation(message)


@hookimpl
def task_policy(task: Any) -> None:
    """
    Refuse an ungoverned submit task or another provider's batch operator; leave every other task alone.

    :raises AirflowClusterPolicyViolation: naming the DAG, the task and what is wrong.
    """
    foreign = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in type(task).__mro__
        if f"{cls.__module__}.{cls.__qualname__}" in FOREIGN_BATCH_OPERATORS
    ]
    submit = sys.modules.get(_SUBMIT_MODULE)
    ours = submit is not None and isinstance(task, submit.ClaudeBatchSubmitOperator)
    if not (foreign or ours) or not _active():
        return
    dag_id = task.dag_id if task.has_dag() else "<no DAG>"
    where = f"Task {task.task_id!r} of DAG {dag_id!r} ({type(task).__name__})"
    if foreign:
        raise _violation(
            f"{where}: {foreign[0]} creates Message Batches outside the governed service (no policy, "
            f"budget, admission or ledger); submit with ClaudeBatchSubmitOperator."
        )
    from airflow_claude_batches.governance.policy import PolicyError

    try:
        submit.govern(task, bind=True)  # type: ignore[union-attr]
    except PolicyError as e:
        raise _violation(f"{where}: {e}") from None


@hookimpl
def dag_policy(dag: Any) -> None:
    """
    Refuse a DAG whose file (or a helper module it imports from its bundle) calls the API directly.

    :raises AirflowClusterPolicyViolation: listing the first findings with file and line.
    """
    fileloc = getattr(dag, "fileloc", None)
    if not fileloc or not _active():
        return
    from airflow_claude_batches.governance.lint import lint_dag_file

    findings = lint_dag_file(fileloc)
    if findings:
        shown = "; ".join(str(f) for f in findings[:_SHOWN_FINDINGS])
        more = f" (and {len(findings) - _SHOWN_FINDINGS} more)" if len(findings) > _SHOWN_FINDINGS else ""
        raise _violation(
            f"DAG {dag.dag_id!r} calls the Message Batches API around the governed service: {shown}{more}. "
            f"Submit with ClaudeBatchSubmitOperator."
        )
