"""ClaudeBatchSensor: waiting for a batch created outside the service."""

from __future__ import annotations

import asyncio

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.sensors.batch import ClaudeBatchSensor
from operator_harness import api_requests, make_context, run_trigger


def _foreign_batch(n: int = 2) -> str:
    """A batch as a team's old script would create it: the service never saw it."""
    requests = api_requests([f"legacy-{i}" for i in range(n)])
    return ClaudeBatchesHook().create_batch(requests).id


def test_defers_and_returns_the_final_counts(api, store):
    batch_id = _foreign_batch()
    sensor = ClaudeBatchSensor(task_id="wait", batch_id=batch_id, poll_interval=0.02, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context())
    trigger = deferred.value.trigger
    assert trigger.cancel_on_kill is False  # someone else owns the batch
    api.advance(60)
    counts = sensor.execute_complete(make_context(), asyncio.run(run_trigger(trigger)))
    assert counts["succeeded"] == 2


def test_timeout_fails_the_sensor(api, store):
    sensor = ClaudeBatchSensor(task_id="wait", batch_id=_foreign_batch(), poll_interval=0.02, timeout=0)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context())
    with pytest.raises(AirflowException, match="deadline passed"):
        sensor.execute_complete(make_context(), asyncio.run(run_trigger(deferred.value.trigger)))


def test_poke_mode(api, store):
    batch_id = _foreign_batch()
    sensor = ClaudeBatchSensor(task_id="wait", batch_id=batch_id, deferrable=False)
    assert sensor.poke(make_context()) is False
    api.advance(60)
    assert sensor.poke(make_context()) is True


def test_unknown_event_fails_closed():
    sensor = ClaudeBatchSensor(task_id="wait", batch_id="msgbatch_x")
    with pytest.raises(AirflowException, match="Unexpected event"):
        sensor.execute_complete(make_context(), {"status": "done"})
