"""Parsing a DAG that uses the provider does not load the ``anthropic`` SDK (~2.5 CPU-s a process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p.name for p in (REPO / "dags").glob("*.py"))

PROBE = """
import runpy, sys
runpy.run_path(sys.argv[1])
print("sdk loaded:", "anthropic" in sys.modules)
"""


@pytest.mark.parametrize("dag_file", DAG_FILES)
def test_parsing_the_dag_file_leaves_the_sdk_unloaded(dag_file: str) -> None:
    # Every DAG parse and every task process pays for what a DAG file imports; the SDK is needed
    # only when a task talks to the API, so the operators, sensor and jobs import it then.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "dags" / dag_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "sdk loaded: False"


def test_the_default_connection_is_the_anthropic_providers():
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    from airflow_claude_batches.hooks import DEFAULT_CONN_ID

    assert AnthropicHook.default_conn_name == DEFAULT_CONN_ID
