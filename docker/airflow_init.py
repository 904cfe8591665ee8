"""Prepare an Airflow metadata database for airflow-claude-batches: migrate it, then create the pools.

Run once per deployment before the Airflow services start: by the ``airflow-init`` service of
docker-compose.yaml and by the integration test harness, so both deploy the same way.

Pools come from the governance file (``[claude_batches] policy_file``): one pool per team, named by
``TeamPolicy.pool`` with ``max_concurrent_batches`` slots and ``include_deferred`` on, because a
submitted batch waits deferred in the triggerer and must keep holding its team's slot while it does.
Pools cannot be created from task or DAG-parsing code in Airflow 3, hence this step.

Connections need no step here: every deployment defines them as ``AIRFLOW_CONN_*`` variables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolSpec:
    """One Airflow pool; deferred tasks always count against it."""

    name: str
    slots: int
    description: str


def policy_pools() -> list[PoolSpec]:
    """One pool per team of the configured governance file; none when no file is configured."""
    from airflow.configuration import conf

    if not conf.get("claude_batches", "policy_file", fallback=None):
        return []
    from airflow_claude_batches.policy import load_policy

    governance = load_policy()
    return [
        PoolSpec(team.pool, team.max_concurrent_batches, f"Claude batches of team {team.name}")
        for team in governance.teams.values()
    ]


def parse_pool(text: str) -> PoolSpec:
    """``NAME=SLOTS`` from the command line."""
    name, sep, slots = text.partition("=")
    if not sep or not name or not slots.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=SLOTS, got {text!r}")
    return PoolSpec(name, int(slots), "")


def import_pools(pools: Sequence[PoolSpec]) -> None:
    """Create or update ``pools`` with one ``airflow pools import`` (one CLI start instead of N)."""
    document = {
        pool.name: {"slots": pool.slots, "description": pool.description, "include_deferred": True}
        for pool in pools
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(document, file)
        file.flush()
        _airflow("pools", "import", file.name)


def _airflow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "airflow", *args], check=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pool",
        action="append",
        type=parse_pool,
        default=[],
        metavar="NAME=SLOTS",
        help="an extra pool (include_deferred) besides the teams' pools; repeatable",
    )
    parser.add_argument("--skip-migrate", action="store_true", help="the database is already migrated")
    args = parser.parse_args(argv)

    if not args.skip_migrate:
        _airflow("db", "migrate")
    pools = [*policy_pools(), *args.pool]
    if pools:
        import_pools(pools)
    print("pools:", ", ".join(f"{pool.name}={pool.slots}" for pool in pools) or "none", flush=True)


if __name__ == "__main__":
    main()
