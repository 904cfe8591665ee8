"""``deferrable`` follows Airflow's ``[operators] default_deferrable``, as every provider's operators."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from airflow_claude_batches.sensors.batch import ClaudeBatchSensor
op = ClaudeBatchSubmitOperator(task_id="t", job_type="enrich", requests=[], team="alpha")
sensor = ClaudeBatchSensor(task_id="s", batch_id="msgbatch_x")
explicit = ClaudeBatchSubmitOperator(task_id="e", job_type="enrich", requests=[], deferrable=True)
print(op.deferrable, sensor.deferrable, explicit.deferrable)
"""


@pytest.mark.parametrize(("setting", "expected"), [("True", "True True True"), ("False", "False False True")])
def test_default_is_airflows_default_deferrable(setting: str, expected: str) -> None:
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == expected
