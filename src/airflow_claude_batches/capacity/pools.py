"""
Team pools from the governance file, and the ``airflow claude-batches sync-pools`` command.

Each team gets its own Airflow pool (``teams.<name>.pool``, default ``claude_batches_<name>``) with
``slots = max_concurrent_batches`` and ``include_deferred = true``, so a submit task waiting in the
triggerer for its batches (or for account capacity) keeps its slot: the slots bound how many of the
team's jobs are in flight, not just how many are uploading. Task and DAG-parse code cannot create
pools in Airflow 3, so the platform team runs, after every change of the governance file::

    airflow claude-batches sync-pools [--policy-file PATH] [--output FILE] [--dry-run]

It writes the pools as an ``airflow pools import`` file (``{"name": {"slots", "description",
"include_deferred"}}``) and imports it with the same code as ``airflow pools import``, on the metadata
database of the Airflow installation it runs in (so run it where ``airflow pools`` works: the
scheduler's or api-server's environment). Creating and updating are idempotent; pools of teams
removed from the file are reported, not deleted (tasks may still be queued in them). With
``--dry-run`` it only writes the file, for ``airflow pools import FILE`` elsewhere or
``POST /api/v2/pools``.

The command is an Airflow CLI extension (:mod:`airflow_claude_batches.cli`).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

from airflow_claude_batches.governance.policy import Governance, load_policy

if TYPE_CHECKING:
    import argparse

__all__ = ["pools_for", "sync_pools", "write_pools_file"]

#: Ends the description of every pool this command manages; it tells our pools from the rest.
_MANAGED = "managed by airflow claude-batches sync-pools"


def pools_for(governance: Governance) -> dict[str, dict[str, Any]]:
    """The teams' pools in ``airflow pools import`` format, in team order."""
    return {
        team.pool: {
            "slots": team.max_concurrent_batches,
            "description": f"Claude batches of team {name}: at most {team.max_concurrent_batches} jobs "
            f"in flight (from {governance.source}; {_MANAGED})",
            "include_deferred": True,
        }
        for name, team in governance.teams.items()
    }


def write_pools_file(governance: Governance, path: str) -> dict[str, dict[str, Any]]:
    """Write the pools file for ``airflow pools import`` and return its content."""
    pools = pools_for(governance)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(pools, file, indent=2)
        file.write("\n")
    return pools


def sync_pools(args: argparse.Namespace) -> None:
    """``airflow claude-batches sync-pools``: create or update every team's pool."""
    governance = load_policy(args.policy_file)
    if args.output:
        _sync(governance, args.output, dry_run=args.dry_run)
    else:
        with tempfile.TemporaryDirectory(prefix="claude-batches-") as folder:
            _sync(governance, os.path.join(folder, "pools.json"), dry_run=args.dry_run)


def _sync(governance: Governance, output: str, *, dry_run: bool) -> None:
    from airflow.cli.commands.pool_command import pool_import_helper

    pools = write_pools_file(governance, output)
    print(f"Wrote {len(pools)} team pool(s) from {governance.source} to {output}")
    if dry_run:
        print(f"Dry run, no pool changed: import them with `airflow pools import {output}`.")
        return
    imported, failed = pool_import_helper(output)
    if failed:
        raise SystemExit(f"Failed to create or update pool(s): {', '.join(failed)}")
    for name, spec in pools.items():
        print(f"  {name}: {spec['slots']} slot(s), include_deferred")
    print(f"Synced {len(imported)} pool(s).")
    _report_orphans(set(pools))


def _report_orphans(current: set[str]) -> None:
    """Name pools this command made that no team has any more; deleting them is a human decision."""
    from airflow.api.client import get_current_api_client

    orphans = sorted(
        name
        for name, _, description, *_ in get_current_api_client().get_pools()
        if (description or "").endswith(f"{_MANAGED})") and name not in current
    )
    if orphans:
        print(
            f"Not in the governance file any more (left as they are): {', '.join(orphans)}. "
            f"Delete with `airflow pools delete NAME` once no task uses them."
        )
