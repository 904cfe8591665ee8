"""Team pools from the governance file and the ``airflow claude-batches sync-pools`` command."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from airflow_claude_batches.capacity.pools import pools_for
from airflow_claude_batches.governance.policy import load_policy

POLICY = """
teams:
  alpha: {max_concurrent_batches: 3}
  beta: {pool: beta_batches}
job_types: {}
"""
#: alpha grows to 5 slots, beta leaves, gamma arrives.
POLICY_V2 = """
teams:
  alpha: {max_concurrent_batches: 5}
  gamma: {}
job_types: {}
"""


def test_every_team_gets_its_pool_with_its_quota_and_deferred_tasks_counted(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    pools = pools_for(load_policy(path))
    assert list(pools) == ["claude_batches_alpha", "beta_batches"]
    assert pools["claude_batches_alpha"]["slots"] == 3
    assert pools["beta_batches"]["slots"] == 2  # the default max_concurrent_batches
    assert all(spec["include_deferred"] is True for spec in pools.values())
    assert "team alpha" in pools["claude_batches_alpha"]["description"]


def test_dry_run_writes_the_pools_import_file_only(tmp_path, capsys):
    from airflow.cli import cli_parser

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "pools.json"
    args = cli_parser.get_parser().parse_args(
        ["claude-batches", "sync-pools", "--policy-file", str(policy), "--output", str(out), "--dry-run"]
    )
    args.func(args)
    assert json.loads(out.read_text()) == pools_for(load_policy(policy))
    assert f"airflow pools import {out}" in capsys.readouterr().out


def airflow(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    env.pop("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", None)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_sync_pools_creates_and_updates_idempotently_in_the_metadata_db(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    airflow(home, "db", "migrate")
    airflow(home, "claude-batches", "sync-pools", "--policy-file", str(policy))
    airflow(home, "pools", "set", "team_adhoc", "1", "made by hand")
    policy.write_text(POLICY_V2)
    second = airflow(home, "claude-batches", "sync-pools", "--policy-file", str(policy))
    with sqlite3.connect(home / "airflow.db") as db:
        query = "select pool, slots, include_deferred from slot_pool"
        rows = {name: (slots, include_deferred) for name, slots, include_deferred in db.execute(query)}
    assert rows["claude_batches_alpha"] == (5, 1)  # updated in place
    assert rows["claude_batches_gamma"] == (2, 1)
    assert rows["beta_batches"] == (2, 1)  # a removed team's pool is reported, not deleted
    assert len(rows) == 5  # default_pool, alpha, beta, gamma, team_adhoc: nothing duplicated
    assert "Synced 2 pool(s)." in second.stdout
    assert "Not in the governance file any more (left as they are): beta_batches." in second.stdout
