"""Shared test setup.

Airflow reads its configuration at import time, so the environment is set here, before any test
module imports airflow: a throwaway AIRFLOW_HOME per test session, no example DAGs, this repo's
``dags/`` folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The S3 fixtures (`s3_server`, `s3_store`): a real moto_server, one per test session.
pytest_plugins = ["tests.s3_server", "tests.ledger_databases"]

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="acb-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://localhost:8080/execution/")
# As the shipped deployments (docker/airflow.env): operators defer unless a test says otherwise.
os.environ["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = "True"
# Unit tests drive triggers inline, where Airflow's defer/resume race cannot happen.
os.environ["AIRFLOW__CLAUDE_BATCHES__TRIGGER_MIN_SECONDS"] = "0"
os.environ.pop("ANTHROPIC_API_KEY", None)
os.environ.pop("ANTHROPIC_BASE_URL", None)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def emulator() -> Iterator:
    """One emulator process for the session; tests call ``emulator.reset()`` when they need a clean slate."""
    from airflow_claude_batches.emulator import run_emulator

    with run_emulator() as emu:
        yield emu


@pytest.fixture
def emu(emulator):
    """The session emulator, reset to an empty state with no faults for this test."""
    emulator.reset()
    yield emulator
    emulator.reset()
