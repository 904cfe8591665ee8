"""
``airflow claude-batches …``: the provider's commands, an Airflow CLI extension registered through
the ``cli`` entry of ``get_provider_info()`` (they appear in ``airflow --help`` once installed).

- ``sync-pools``: every team's pool from the governance file (:mod:`airflow_claude_batches.capacity.pools`).
- ``db migrate``: create or upgrade the ledger database's schema (idempotent).
- ``db import-files``: move a first-version ledger (``{results root}/_ledger/*.json``) into the database.
- ``batches list``: the ledger as a table, for an operator at a shell.
- ``adopt BATCH_ID --team T --job-type J``: bring a batch created around the service under management.
- ``prices``: the price of each model the estimates know, built in or from the governance file.

Each command imports what it needs when it runs: Airflow builds this list for every ``airflow`` call.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.cli.cli_config import CLICommand

    from airflow_claude_batches.store.ledger import LedgerRecord

__all__ = ["adopt", "batches_list", "db_import_files", "db_migrate", "get_cli_commands", "prices"]


def db_migrate(args: argparse.Namespace) -> None:
    """Bring the configured ledger database to the schema this version needs."""
    from airflow_claude_batches.store import migrations
    from airflow_claude_batches.store.database import ledger_database

    database = ledger_database()
    before, after = migrations.upgrade(database)
    state = "already at" if before == after else f"migrated from {before or 'an empty database'} to"
    print(f"The ledger database {database.display_url} is {state} revision {after}.")


def db_import_files(args: argparse.Namespace) -> None:
    """Import ``_ledger/*.json`` records; records already in the database are left as they are."""
    from airflow_claude_batches.store.ledger import Ledger, import_files
    from airflow_claude_batches.store.paths import store_root

    root = store_root(args.root, args.conn_id)
    outcome = import_files(Ledger(), root)
    print(
        f"Imported {outcome.imported} ledger record(s) from {root}/_ledger; {outcome.skipped} already in "
        f"the database were left as they are."
    )
    if outcome.invalid:
        raise SystemExit(
            f"{len(outcome.invalid)} file(s) are not ledger records: {'; '.join(outcome.invalid)}"
        )


def _since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since takes an ISO date or time, not {value[:40]!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


_COLUMNS = ("batch", "team", "job type", "status", "requests", "ok", "err", "created (UTC)", "est $", "act $")


def _cells(record: LedgerRecord) -> tuple[str, ...]:
    counts = record.request_counts
    return (
        record.batch_id,
        record.team,
        record.job_type,
        record.processing_status,
        f"{record.request_count:,}",
        f"{counts.succeeded:,}",
        f"{counts.errored + counts.expired:,}",
        record.created_at.strftime("%Y-%m-%d %H:%M"),
        "" if record.estimated_cost_usd is None else f"{record.estimated_cost_usd:.4f}",
        "" if record.actual_cost_usd is None else f"{record.actual_cost_usd:.4f}",
    )


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def batches_list(args: argparse.Namespace) -> None:
    """Print the ledger's batches that match the filters, newest first, as a table."""
    from airflow_claude_batches.store.ledger import Ledger

    found = Ledger().page(1, args.limit, team=args.team or None, status=args.status, since=args.since)
    rows = [_cells(r) for r in found.records]
    _print_table(_COLUMNS, rows)
    print(f"{len(rows)} of {found.total} batch(es).")


def adopt(args: argparse.Namespace) -> None:
    """Record the batch as the team's (and store its results if it has ended)."""
    from airflow_claude_batches.jobs.reconcile import adopt_batch

    record, manifest = adopt_batch(args.batch_id, team=args.team, job_type=args.job_type, job_id=args.job_id)
    print(f"Adopted {record.batch_id} as job {record.job_id!r} of team {record.team} ({record.job_type}).")
    if manifest is None:
        print(f"It is {record.processing_status}: its results are stored once it ends (retention DAG).")
    else:
        print(
            f"Stored {manifest.counts} at {record.results_uri} (actual cost ${manifest.actual_cost_usd:.4f})."
        )


def prices(args: argparse.Namespace) -> None:
    """Print each model's prices per million tokens, standard and batch (what spend is checked at)."""
    from airflow.providers.common.compat.sdk import conf

    from airflow_claude_batches.governance.cost import BATCH_DISCOUNT, DEFAULT_PRICES
    from airflow_claude_batches.governance.policy import load_policy

    policy_file = args.policy_file or conf.get("claude_batches", "policy_file", fallback="")
    overrides = load_policy(policy_file).prices if policy_file else {}
    header = ("model", "input $/MTok", "output $/MTok", "batch input", "batch output", "from")
    rows = [
        (
            model,
            f"{price.input:.2f}",
            f"{price.output:.2f}",
            f"{price.input * BATCH_DISCOUNT:.3f}",
            f"{price.output * BATCH_DISCOUNT:.3f}",
            "governance file" if model in overrides else "built in",
        )
        for model, price in sorted({**DEFAULT_PRICES, **overrides}.items())
    ]
    _print_table(header, rows)


def get_cli_commands() -> list[CLICommand]:
    """The provider's CLI commands (``cli`` in ``get_provider_info()``): ``airflow claude-batches``."""
    from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand, lazy_load_command

    def command(name: str, func: str, help_: str, args: tuple[Arg, ...] = ()) -> ActionCommand:
        return ActionCommand(name=name, help=help_, func=lazy_load_command(func), args=args)

    policy_arg = Arg(
        ("--policy-file",), help="Governance YAML file (default: [claude_batches] policy_file)", default=None
    )
    pools_args = (
        policy_arg,
        Arg(("--output",), help="Also keep the pools file here (default: a temporary file)", default=None),
        Arg(("--dry-run",), help="Only write the pools file; change no pool", action="store_true"),
    )
    import_args = (
        Arg(("--root",), help="Store root holding _ledger/ (default: [claude_batches] results_root)"),
        Arg(("--conn-id",), help="Connection for the root (default: [claude_batches] results_conn_id)"),
    )
    list_args = (
        Arg(("--team",), help="Only this team (repeatable)", action="append"),
        Arg(
            ("--status",),
            help="Only batches in this processing status",
            choices=("in_progress", "canceling", "ended"),
        ),
        Arg(("--since",), help="Only batches created since (ISO date or time, UTC)", type=_since),
        Arg(("--limit",), help="At most this many rows, newest first (default 100)", type=int, default=100),
    )
    adopt_args = (
        Arg(("batch_id",), help="The batch (msgbatch_...)"),
        Arg(("--team",), help="The team that takes it over (a team of the governance file)", required=True),
        Arg(("--job-type",), help="Its job type (one the team may run)", required=True),
        Arg(("--job-id",), help="A job id for it (default: 'adopted BATCH_ID')"),
    )
    module = "airflow_claude_batches"
    return [
        GroupCommand(
            name="claude-batches",
            help="Manage the Claude Message Batches service (airflow-claude-batches)",
            subcommands=(
                command(
                    "sync-pools",
                    f"{module}.capacity.pools.sync_pools",
                    "Create or update every team's pool from the governance file",
                    pools_args,
                ),
                GroupCommand(
                    name="db",
                    help="The ledger database",
                    subcommands=(
                        command("migrate", f"{module}.cli.db_migrate", "Create or upgrade the ledger schema"),
                        command(
                            "import-files",
                            f"{module}.cli.db_import_files",
                            "Import a file ledger ({root}/_ledger/*.json) into the database",
                            import_args,
                        ),
                    ),
                ),
                command(
                    "adopt",
                    f"{module}.cli.adopt",
                    "Bring a batch the ledger lists as unmanaged (or does not know) under management",
                    adopt_args,
                ),
                command(
                    "prices",
                    f"{module}.cli.prices",
                    "Print the price of each model the spend estimates know",
                    (policy_arg,),
                ),
                GroupCommand(
                    name="batches",
                    help="Batches in the ledger",
                    subcommands=(
                        command(
                            "list", f"{module}.cli.batches_list", "Print the ledger as a table", list_args
                        ),
                    ),
                ),
            ),
        )
    ]
