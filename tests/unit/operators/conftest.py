"""Fixtures of the operator tests: a governance file, a store on disk, the emulator as the API."""

from __future__ import annotations

import json

import pytest

from operator_harness import POLICY


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return str(path)


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT", f"file://{root}")
    return root


@pytest.fixture
def api(emu, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT",
        json.dumps({"conn_type": "anthropic", "host": emu.base_url, "password": emu.api_key}),
    )
    return emu
