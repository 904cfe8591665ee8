"""Run the submit operator's real code path without a scheduler: execute, the trigger, execute_complete.

The task instance is a small in-memory stand-in for what the Task SDK
hands an operator; everything else (policy file, emulator over HTTP, store on disk) is real.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import conf
from airflow.sdk import DAG
from airflow.sdk.exceptions import TaskDeferred

POLICY = """
teams:
  alpha: {max_concurrent_batches: 2, daily_budget_usd: 50, dags: ["alpha/**"]}
  beta: {dags: ["beta/**"]}
job_types:
  enrich:
    teams: [alpha]
    allowed_models: [claude-haiku-4-5]
    allowed_fields: [system, temperature]
    max_tokens_cap: 100
    max_requests: 1000
    max_bytes: 10000000
    max_job_cost_usd: 1.0
    error_ratio_alert: 0.2
"""


@dataclass
class FakeTI:
    dag_id: str = "dag"
    task_id: str = "submit"
    run_id: str = "manual__2026-11-27"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = json.loads(json.dumps(value))  # XCom values must be JSON


def api_requests(custom_ids: list[str]) -> list[dict[str, Any]]:
    """Ready-to-send API requests, as a script that bypasses the operator would build them."""
    return [
        {
            "custom_id": custom_id,
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"hello {custom_id}"}],
            },
        }
        for custom_id in custom_ids
    ]


def team_dag(folder: str, dag_id: str = "dag") -> DAG:
    """
    A DAG as the DAG processor loads it from ``{dags_folder}/{folder}/{dag_id}.py``.

    The governance file's ``dags`` patterns (``alpha/**``) give it to the team of that folder;
    create submit operators inside ``with team_dag("alpha"):``.
    """
    dag = DAG(dag_id, schedule=None)
    dag.fileloc = str(Path(conf.get("core", "dags_folder")).resolve() / folder / f"{dag_id}.py")
    dag.relative_fileloc = f"{folder}/{dag_id}.py"
    return dag


def make_context(ti: FakeTI | None = None) -> dict[str, Any]:
    return {"ti": ti or FakeTI()}


def execute(operator, context) -> Any:
    """What the task runner does: render the templated fields, then execute."""
    operator.render_template_fields(context)
    return operator.execute(context)


def run_to_completion(operator, context, emu, advance: float = 3600) -> Any:
    """execute -> defer -> the trigger's run (after the emulator's clock moves) -> execute_complete."""
    with pytest.raises(TaskDeferred) as deferred:
        execute(operator, context)
    trigger = deferred.value.trigger
    _, kwargs = trigger.serialize()
    json.dumps(kwargs)  # the trigger row must be plain JSON
    emu.advance(advance)
    event = asyncio.run(run_trigger(type(trigger)(**kwargs)))
    return getattr(operator, deferred.value.method_name)(context, event)


async def run_trigger(trigger) -> dict[str, Any]:
    """The payload of the first event the trigger yields, as the triggerer would hand it on."""
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")
