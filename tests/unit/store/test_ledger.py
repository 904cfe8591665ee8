from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from airflow_claude_batches.store.ledger import (
    Ledger,
    LedgerError,
    LedgerRecord,
    LedgerRecordNotFound,
    RequestCounts,
)
from airflow_claude_batches.store.results import ResultsError

CREATED = datetime(2026, 6, 6, 1, 2, 3, 100435, tzinfo=timezone.utc)


@pytest.fixture
def ledger(ledger_db) -> Ledger:
    return Ledger(ledger_db)


def record(batch_id: str = "msgbatch_01", **overrides) -> LedgerRecord:
    fields = {
        "batch_id": batch_id,
        "team": "marketing",
        "job_type": "enrichment",
        "job_id": "Nightly enrichment 2026-06-06",
        "job_key": "nightly-enrichment--abcdefghijkl",
        "dag_id": "marketing_nightly_enrichment",
        "task_id": "enrich",
        "run_id": "scheduled__2026-06-06T00:00:00+00:00",
        "try_number": 1,
        "request_count": 500,
        "first_index": 0,
        "request_counts": {"processing": 500},
        "created_at": CREATED,
        "expires_at": CREATED + timedelta(hours=24),
        "estimated_cost_usd": 3.25,
        **overrides,
    }
    return LedgerRecord.model_validate(fields)


def test_put_get_round_trip(ledger):
    stored = ledger.put(record())
    assert stored.updated_at is not None
    loaded = ledger.get("msgbatch_01")
    assert loaded == stored
    assert loaded.results_expire_at == CREATED + timedelta(days=29)
    assert loaded.processing_status == "in_progress"
    assert loaded.request_counts == RequestCounts(processing=500)
    assert loaded.created_at == CREATED and loaded.created_at.tzinfo == timezone.utc
    assert json.loads(loaded.model_dump_json())["created_at"] == "2026-06-06T01:02:03.100435Z"


def test_timestamps_are_normalised_to_utc():
    paris = timezone(timedelta(hours=2))
    rec = record(created_at=CREATED.astimezone(paris), ended_at="2026-06-06T05:00:00+02:00")
    assert rec.created_at == CREATED and rec.created_at.tzinfo == timezone.utc
    assert rec.ended_at == datetime(2026, 6, 6, 3, tzinfo=timezone.utc)


def test_naive_timestamp_and_unknown_field_are_rejected():
    with pytest.raises(ValidationError, match="timezone"):
        record(created_at=datetime(2026, 6, 6))
    with pytest.raises(ValidationError, match="api_key"):
        record(api_key="sk-ant-secret")
    with pytest.raises(ValidationError, match="batch id"):
        record(batch_id="../../etc/passwd")


def test_get_missing_names_the_batch(ledger):
    with pytest.raises(KeyError) as err:
        ledger.get("msgbatch_missing")
    assert isinstance(err.value, LedgerRecordNotFound)
    assert "msgbatch_missing" in str(err.value)
    with pytest.raises(LedgerRecordNotFound, match="msgbatch_nope"):
        ledger.update("msgbatch_nope", processing_status="ended")


def test_update_validates_and_persists(ledger):
    ledger.put(record())
    ended = CREATED + timedelta(hours=1)
    updated = ledger.update(
        "msgbatch_01",
        processing_status="ended",
        request_counts={"succeeded": 498, "errored": 2},
        ended_at=ended,
        actual_cost_usd=1.125,
        results_uri="s3://bucket/marketing/nightly/msgbatch_01",
    )
    assert updated.request_counts == RequestCounts(succeeded=498, errored=2)
    assert ledger.get("msgbatch_01") == updated
    assert updated.ended_at == ended
    assert updated.updated_at is not None and updated.updated_at >= updated.created_at


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"status": "ended"}, r"unknown ledger field\(s\) \['status'\]"),
        ({"processing_status": "done"}, "processing_status"),
        ({"request_counts": {"processing": -1}}, "greater than or equal to 0"),
        ({"consumed_at": datetime(2026, 6, 7)}, "timezone"),
        ({"batch_id": "msgbatch_02"}, "batch_id is the record's identity"),
    ],
)
def test_bad_update_is_refused_and_changes_nothing(ledger, changes, message):
    before = ledger.put(record())
    with pytest.raises(LedgerError, match=message) as err:
        ledger.update("msgbatch_01", **changes)
    assert "msgbatch_01" in str(err.value)
    assert ledger.get("msgbatch_01") == before


def test_records_lists_every_batch_oldest_first_and_filters(ledger):
    assert list(ledger.records()) == []
    for n, (batch_id, team) in enumerate([("msgbatch_03", "a"), ("msgbatch_01", "b"), ("msgbatch_02", "a")]):
        ledger.put(record(batch_id, team=team, created_at=CREATED + timedelta(hours=n)))
    assert [r.batch_id for r in ledger.records()] == ["msgbatch_03", "msgbatch_01", "msgbatch_02"]
    assert [r.batch_id for r in ledger.records(team="a")] == ["msgbatch_03", "msgbatch_02"]
    assert [r.batch_id for r in ledger.records(since=CREATED + timedelta(hours=1))] == [
        "msgbatch_01",
        "msgbatch_02",
    ]
    assert [r.batch_id for r in ledger.records(until=CREATED + timedelta(hours=1))] == ["msgbatch_03"]
    assert [r.batch_id for r in ledger.records(chunk=1)] == ["msgbatch_03", "msgbatch_01", "msgbatch_02"]
    ledger.update("msgbatch_01", processing_status="ended")
    assert [r.batch_id for r in ledger.records(status="ended")] == ["msgbatch_01"]


def test_put_replaces_whole_record(ledger):
    ledger.put(record(request_count=10))
    ledger.put(record(request_count=20))
    assert ledger.get("msgbatch_01").request_count == 20
    assert len(list(ledger.records())) == 1


def test_put_many_writes_each_record_as_put_does(ledger):
    ledger.put(record("msgbatch_01", request_count=10))
    stored = ledger.put_many(
        [
            record("msgbatch_01", request_count=20),
            record("msgbatch_02", processing_status="ended", request_counts={"succeeded": 500}),
        ]
    )
    assert [ledger.get(r.batch_id) for r in stored] == stored
    assert ledger.get("msgbatch_01").request_count == 20 and stored[0].updated_at is not None
    assert len(ledger.history("msgbatch_01")) == 1  # same status and counts: no new point, as with put
    assert [p.processing_status for p in ledger.history("msgbatch_02")] == ["ended"]
    assert ledger.put_many([]) == []


def test_put_many_writes_all_or_none(ledger):
    from sqlalchemy import event

    before = ledger.put(record("msgbatch_01", request_count=10))
    inserts = []

    def fail_on_third_insert(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO cb_batches"):
            inserts.append(statement)
            if len(inserts) == 3:
                raise RuntimeError("the disk is full")

    event.listen(ledger.db.engine, "before_cursor_execute", fail_on_third_insert)
    try:
        with pytest.raises(RuntimeError, match="disk is full"):
            ledger.put_many([record(f"msgbatch_0{n}", request_count=20) for n in (1, 2, 3)])
    finally:
        event.remove(ledger.db.engine, "before_cursor_execute", fail_on_third_insert)
    assert list(ledger.records()) == [before]


def test_unsafe_batch_id_in_lookup(ledger):
    with pytest.raises(ResultsError, match="batch id"):
        ledger.get("../secrets")


def test_status_history_keeps_every_change_of_counts(ledger):
    ledger.put(record())
    ledger.update("msgbatch_01", request_counts={"processing": 500})  # no change: no new point
    ledger.update("msgbatch_01", consumed_at=CREATED)  # not a status change
    ledger.update("msgbatch_01", processing_status="ended", request_counts={"succeeded": 499, "errored": 1})
    history = ledger.history("msgbatch_01")
    assert [(p.processing_status, p.request_counts) for p in history] == [
        ("in_progress", RequestCounts(processing=500)),
        ("ended", RequestCounts(succeeded=499, errored=1)),
    ]


def test_page_is_newest_first_with_a_total(ledger):
    for n in range(5):
        ledger.put(
            record(f"msgbatch_{n}", team="a" if n % 2 else "b", created_at=CREATED + timedelta(minutes=n))
        )
    first = ledger.page(1, per_page=2)
    assert [r.batch_id for r in first.records] == ["msgbatch_4", "msgbatch_3"]
    assert first.total == 5
    assert [r.batch_id for r in ledger.page(3, per_page=2).records] == ["msgbatch_0"]
    assert ledger.page(1, team=["a"]).total == 2


def test_team_totals_sum_counts_in_flight_and_spend(ledger):
    now = CREATED + timedelta(hours=2)
    ledger.put(record("msgbatch_1", estimated_cost_usd=2.0))  # running: estimate counts
    ledger.put(
        record(
            "msgbatch_2",
            estimated_cost_usd=2.0,
            actual_cost_usd=0.5,
            processing_status="ended",
            request_counts={"succeeded": 400, "errored": 100},
        )
    )
    ledger.put(record("msgbatch_3", estimated_cost_usd=7.0, created_at=CREATED - timedelta(days=1)))
    ledger.put(record("msgbatch_4", team="other", estimated_cost_usd=1.0))
    (marketing, other) = ledger.team_totals(now)
    assert (marketing.team, marketing.batches, marketing.batches_in_flight) == ("marketing", 3, 2)
    assert marketing.requests_processing == 1000
    assert marketing.request_counts["errored"] == 100
    assert marketing.spend_today_usd == pytest.approx(2.5)
    assert marketing.spend_month_usd == pytest.approx(9.5)
    assert other.spend_today_usd == pytest.approx(1.0)
    assert [t.team for t in ledger.team_totals(now, ["other"])] == ["other"]


def test_team_totals_keep_each_job_types_counts_apart(ledger):
    """Each job type has its own error threshold, so the dashboard needs its counts on their own."""
    ended = {"processing_status": "ended"}
    ledger.put(record("msgbatch_1", job_type="a", request_counts={"succeeded": 9, "errored": 1}, **ended))
    ledger.put(record("msgbatch_2", job_type="b", request_counts={"expired": 5}, **ended))
    ledger.put(record("msgbatch_3", job_type="b", request_counts={"succeeded": 5}, **ended))
    (marketing,) = ledger.team_totals(CREATED)
    assert marketing.counts_by_job_type == {
        "a": {"processing": 0, "succeeded": 9, "errored": 1, "canceled": 0, "expired": 0},
        "b": {"processing": 0, "succeeded": 5, "errored": 0, "canceled": 0, "expired": 5},
    }
    assert marketing.request_counts == {
        "processing": 0,
        "succeeded": 14,
        "errored": 1,
        "canceled": 0,
        "expired": 5,
    }


#: Ten writers, each owning one field of the same record, as the trigger, a consumer and retention do.
WRITERS = {
    "try_number": lambda i: i,
    "estimated_cost_usd": lambda i: float(i),
    "actual_cost_usd": lambda i: i / 4,
    "dag_id": lambda i: f"dag-{i}",
    "task_id": lambda i: f"task-{i}",
    "run_id": lambda i: f"run-{i}",
    "results_uri": lambda i: f"file:///results/{i}",
    "consumed_at": lambda i: CREATED + timedelta(seconds=i),
    "archived_at": lambda i: CREATED + timedelta(minutes=i),
    "deleted_at": lambda i: CREATED + timedelta(hours=i),
}
ROUNDS = 30


def _write_field(database, field: str) -> None:
    ledger = Ledger(database)
    for i in range(1, ROUNDS + 1):
        ledger.update("msgbatch_01", **{field: WRITERS[field](i)})


def _lost_changes(ledger: Ledger) -> list[str]:
    final = ledger.get("msgbatch_01")
    return [f for f, value in WRITERS.items() if getattr(final, f) != value(ROUNDS)]


def test_concurrent_threads_lose_no_update(ledger):
    import threading

    ledger.put(record())
    threads = [threading.Thread(target=_write_field, args=(ledger.db, f)) for f in WRITERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _lost_changes(ledger) == []


def test_concurrent_processes_lose_no_update(ledger):
    import multiprocessing

    ledger.put(record())
    context = multiprocessing.get_context("fork")  # a forked child gets fresh connections
    processes = [context.Process(target=_write_field, args=(ledger.db, f)) for f in WRITERS]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * len(WRITERS)
    assert _lost_changes(ledger) == []


def test_a_configured_database_without_the_schema_says_to_migrate(tmp_path):
    from airflow_claude_batches.store.database import LedgerDatabase, LedgerSchemaError, sqlite_url

    database = LedgerDatabase(sqlite_url(tmp_path / "empty.db"))
    with pytest.raises(LedgerSchemaError, match="run `airflow claude-batches db migrate`"):
        Ledger(database).get("msgbatch_01")


def test_an_older_schema_says_to_migrate_and_migrate_is_idempotent(ledger_db):
    from sqlalchemy import text

    from airflow_claude_batches.store import migrations
    from airflow_claude_batches.store.database import LedgerDatabase, LedgerSchemaError

    with ledger_db.engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0000'"))
    stale = LedgerDatabase(ledger_db.url)
    with pytest.raises(LedgerSchemaError, match=r"at schema revision 0000.*db migrate"):
        Ledger(stale).records().__next__()
    with ledger_db.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = :head"), {"head": migrations.head()}
        )
    assert migrations.upgrade(ledger_db) == (migrations.head(), migrations.head())
    assert list(Ledger(LedgerDatabase(ledger_db.url)).records()) == []


def test_the_embedded_default_is_a_sqlite_file_in_the_local_store(store):
    ledger = Ledger()
    assert ledger.db.is_sqlite and ledger.db.url.database == str(store / "ledger.db")
    ledger.put(record())
    assert Ledger().get("msgbatch_01").team == "marketing"


def test_the_migrations_build_exactly_the_schema_the_code_declares(ledger_db):
    """schema.py and the Alembic scripts cannot drift apart: autogenerate finds nothing to change."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from airflow_claude_batches.store.migrations import VERSION_TABLE
    from airflow_claude_batches.store.schema import metadata

    with ledger_db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_a_postgres_ledger_without_its_driver_names_the_extra(monkeypatch):
    import importlib.util

    from airflow_claude_batches.exceptions import MissingExtraError
    from airflow_claude_batches.store.database import LedgerDatabase

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg2" else real_find_spec(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r"airflow-claude-batches\[postgres\]"):
        LedgerDatabase("postgresql+psycopg2://nobody@127.0.0.1:1/absent")
