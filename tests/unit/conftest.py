"""Fixtures shared by the unit tests that talk to the emulator and write to a store."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import ObjectStoragePath

from operator_harness import POLICY


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A results store and ledger on disk, as ``[claude_batches] results_root`` points to it."""
    root = tmp_path / "store"
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT", f"file://{root}")
    return root


@pytest.fixture
def api(emu, monkeypatch):
    """The emulator as the ``anthropic_default`` connection."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT",
        json.dumps({"conn_type": "anthropic", "host": emu.base_url, "password": emu.api_key}),
    )
    return emu


@pytest.fixture(params=["file", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path) -> ObjectStoragePath:
    """An empty store root, once on disk and once on the S3 server: one code path serves both."""
    if request.param == "file":
        return ObjectStoragePath(f"file://{tmp_path}/store")
    uri, conn_id = request.getfixturevalue("s3_store")
    return ObjectStoragePath(uri, conn_id=conn_id)


@pytest.fixture
def policy_file(tmp_path, monkeypatch):
    """A small governance file (teams alpha and beta, job type enrich), set as the configured one."""
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", str(path))
    return str(path)
