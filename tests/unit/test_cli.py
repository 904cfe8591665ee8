"""``airflow claude-batches``: the commands parse as Airflow parses them and do what they say."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from airflow_claude_batches import get_provider_info
from airflow_claude_batches.cli import get_cli_commands
from airflow_claude_batches.store.ledger import LEDGER_DIR, Ledger, LedgerRecord
from operator_harness import POLICY

CREATED = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def run(*argv: str) -> None:
    from airflow.cli import cli_parser

    args = cli_parser.get_parser().parse_args(["claude-batches", *argv])
    args.func(args)


def record(n: int, team: str = "alpha", **fields) -> LedgerRecord:
    return LedgerRecord(
        batch_id=f"msgbatch_{n:03d}",
        team=team,
        job_type="enrich",
        job_id=f"job {n}",
        job_key=f"job-{n}",
        request_count=1000 + n,
        created_at=CREATED + timedelta(hours=n),
        estimated_cost_usd=1.5,
        **fields,
    )


def test_the_commands_are_registered_as_an_airflow_cli_extension():
    assert get_provider_info()["cli"] == ["airflow_claude_batches.cli.get_cli_commands"]
    (group,) = get_cli_commands()
    assert group.name == "claude-batches"
    names = {c.name: [s.name for s in getattr(c, "subcommands", ())] for c in group.subcommands}
    assert names == {
        "sync-pools": [],
        "db": ["migrate", "import-files"],
        "adopt": [],
        "prices": [],
        "batches": ["list"],
    }


def test_prices_lists_built_in_and_governance_prices_at_both_rates(tmp_path, monkeypatch, capsys):
    from airflow_claude_batches.governance.cost import DEFAULT_PRICES

    monkeypatch.delenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", raising=False)
    run("prices")
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == set(DEFAULT_PRICES)
    assert rows["claude-haiku-4-5"][1:] == ["1.00", "5.00", "0.500", "2.500", "built", "in"]

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        POLICY
        + "\nprices:\n  claude-haiku-4-5: {input: 2.0, output: 8.0}\n  my-model: {input: 1.0, output: 1.0}\n"
    )
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", str(policy))
    run("prices")
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["claude-haiku-4-5"][1:] == ["2.00", "8.00", "1.000", "4.000", "governance", "file"]
    assert rows["my-model"][-2:] == ["governance", "file"]


def test_db_migrate_on_a_postgres_connection_is_idempotent(postgres_server, monkeypatch, capsys):
    postgres_server.sql("CREATE DATABASE cli_ledger")
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_LEDGER",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": postgres_server.port,
                "login": "postgres",
                "schema": "cli_ledger",
            }
        ),
    )
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__LEDGER_CONN_ID", "claude_ledger")
    run("db", "migrate")
    first = capsys.readouterr().out
    assert "migrated from an empty database to revision" in first and "cli_ledger" in first
    run("db", "migrate")
    assert "is already at revision" in capsys.readouterr().out
    Ledger().put(record(1))
    assert Ledger().get("msgbatch_001").request_count == 1001


def test_import_files_moves_a_file_ledger_once_and_reports_junk(store, capsys):
    folder = store / LEDGER_DIR
    folder.mkdir(parents=True)
    for n in range(3):
        (folder / f"msgbatch_{n:03d}.json").write_text(record(n).model_dump_json())
    (folder / ".msgbatch_009.json.tmp-1").write_text('{"half')  # an interrupted write: not a record
    (folder / "msgbatch_bad.json").write_text('{"batch_id": "msgbatch_bad"}')
    with pytest.raises(SystemExit, match=r"1 file\(s\) are not ledger records: msgbatch_bad.json"):
        run("db", "import-files")
    assert "Imported 3 ledger record(s)" in capsys.readouterr().out
    Ledger().update("msgbatch_001", consumed_at=CREATED)  # changed after the import
    (folder / "msgbatch_bad.json").unlink()
    run("db", "import-files")
    second = capsys.readouterr().out
    assert "Imported 0 ledger record(s)" in second and "3 already in the database" in second
    assert [r.batch_id for r in Ledger().records()] == ["msgbatch_000", "msgbatch_001", "msgbatch_002"]
    assert Ledger().get("msgbatch_001").consumed_at == CREATED  # the import did not overwrite it


def test_batches_list_prints_a_filtered_table_newest_first(store, capsys):
    ledger = Ledger()
    for n in range(4):
        ledger.put(record(n, team="alpha" if n % 2 else "beta"))
    ledger.update("msgbatch_003", processing_status="ended", request_counts={"succeeded": 1003})
    run("batches", "list", "--team", "alpha")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["batch", "team", "job"]
    assert [line.split()[0] for line in lines[1:-1]] == ["msgbatch_003", "msgbatch_001"]
    assert "1,003" in lines[1] and lines[-1] == "2 of 2 batch(es)."
    run("batches", "list", "--status", "in_progress", "--since", "2026-11-20T09:00")
    out = capsys.readouterr().out
    assert "msgbatch_002" in out and "msgbatch_001" in out and "msgbatch_000" not in out
    assert "msgbatch_003" not in out


def test_batches_list_refuses_a_bad_date_clearly(store, capsys):
    with pytest.raises(SystemExit):
        run("batches", "list", "--since", "yesterday-ish")
    assert "--since takes an ISO date or time, not 'yesterday-ish'" in capsys.readouterr().err
