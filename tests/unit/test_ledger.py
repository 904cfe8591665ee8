from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk import ObjectStoragePath
from pydantic import ValidationError

from airflow_claude_batches.ledger import (
    LEDGER_DIR,
    Ledger,
    LedgerError,
    LedgerRecord,
    LedgerRecordNotFound,
    RequestCounts,
)
from airflow_claude_batches.results import ResultsError

CREATED = datetime(2026, 6, 6, 1, 2, 3, 100435, tzinfo=timezone.utc)


@pytest.fixture
def ledger(any_store) -> Ledger:
    return Ledger(any_store)


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

    raw = json.loads((ledger.path / "msgbatch_01.json").read_bytes())
    assert raw["created_at"] == "2026-06-06T01:02:03.100435Z"
    assert raw["results_expire_at"] == "2026-07-05T01:02:03.100435Z"


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
def test_bad_update_is_refused_and_changes_nothing(tmp_path, changes, message):
    ledger = Ledger(f"file://{tmp_path}")
    before = ledger.put(record())
    with pytest.raises(LedgerError, match=message) as err:
        ledger.update("msgbatch_01", **changes)
    assert "msgbatch_01" in str(err.value)
    assert ledger.get("msgbatch_01") == before


def test_records_lists_every_batch_and_ignores_temporaries(ledger):
    assert list(ledger.records()) == []
    for batch_id in ("msgbatch_03", "msgbatch_01", "msgbatch_02"):
        ledger.put(record(batch_id))
    (ledger.path / ".msgbatch_04.json.tmp-0123").write_bytes(b'{"half')
    assert [r.batch_id for r in ledger.records()] == ["msgbatch_01", "msgbatch_02", "msgbatch_03"]


def test_put_replaces_whole_record(ledger):
    ledger.put(record(request_count=10))
    ledger.put(record(request_count=20))
    assert ledger.get("msgbatch_01").request_count == 20
    assert [p.name for p in ledger.path.iterdir()] == ["msgbatch_01.json"]


def test_unsafe_batch_id_in_lookup(tmp_path):
    with pytest.raises(ResultsError, match="batch id"):
        Ledger(f"file://{tmp_path}").get("../secrets")


def test_default_root_is_the_store_root(monkeypatch, airflow_home):
    monkeypatch.delenv("AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT", raising=False)
    ledger = Ledger()
    assert ledger.path.path.rstrip("/") == f"{airflow_home}/claude_batches/{LEDGER_DIR}"
    explicit = Ledger(ObjectStoragePath(f"file://{airflow_home}/other"))
    assert explicit.path.path.endswith(f"/other/{LEDGER_DIR}")
