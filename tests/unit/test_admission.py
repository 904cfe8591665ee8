"""Account admission: the ranking and room rule, the waiting list in the database, what is in flight."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_claude_batches.admission import (
    PURGE_AFTER,
    RESERVATION_SECONDS,
    AdmissionEntry,
    AdmissionQueue,
    ListedBatches,
    evaluate,
    list_batches,
    try_admit,
)
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.ledger import Ledger, LedgerRecord
from airflow_claude_batches.store.database import LedgerDatabase

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def entry(entry_id: str, count: int, *, ts: bool = False, rank: int = 1, age: float = 0, **kw):
    """A live entry that asked ``age`` seconds before NOW."""
    kw.setdefault("heartbeat_at", NOW)
    kw.setdefault("deadline_at", NOW + timedelta(hours=1))
    return AdmissionEntry(
        entry_id=entry_id,
        team=entry_id.split("_")[0],
        job_id=entry_id,
        job_type="enrich",
        request_count=count,
        priority_rank=0 if ts else rank,
        enqueued_at=NOW - timedelta(seconds=age),
        **kw,
    )


def requests(n: int) -> list[dict]:
    params = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    return [{"custom_id": f"outside_job_{i:08d}", "params": params} for i in range(n)]


def test_a_job_that_fits_with_nobody_ahead_is_admitted():
    me = entry("alpha_job", 30)
    decision = evaluate([me], me, in_flight=70, limit=100, now=NOW)
    assert decision.admitted
    assert decision.summary == "in flight 70 + reserved 0 + this job 30 = 100 <= queue limit 100"


def test_a_job_that_does_not_fit_waits_with_the_numbers():
    me = entry("alpha_job", 31)
    decision = evaluate([me], me, in_flight=70, limit=100, now=NOW)
    assert not decision.admitted
    assert decision.summary == "in flight 70 + reserved 0 + this job 31 = 101 > queue limit 100"


def test_a_waiting_time_sensitive_job_keeps_bulk_jobs_from_taking_the_room():
    bulk = entry("alpha_bulk", 10, age=60)  # asked first, and would fit
    urgent = entry("beta_urgent", 50, ts=True)  # asked later, does not fit yet
    entries = [bulk, urgent]
    held = evaluate(entries, bulk, in_flight=60, limit=100, now=NOW)
    assert not held.admitted and held.ahead == ["beta_urgent"]
    assert not evaluate(entries, urgent, in_flight=60, limit=100, now=NOW).admitted
    # Once the room is there, the time-sensitive job goes first; the bulk job then counts its reservation.
    assert evaluate(entries, urgent, in_flight=50, limit=100, now=NOW).admitted
    admitted = urgent.model_copy(update={"state": "admitted", "admitted_at": NOW})
    after = evaluate([bulk, admitted], bulk, in_flight=50, limit=100, now=NOW)
    assert not after.admitted and after.reserved == 50 and after.ahead == []
    assert evaluate([bulk, admitted], bulk, in_flight=40, limit=100, now=NOW).admitted


def test_rank_is_the_priority_class_then_first_come():
    entries = [
        entry("a_late_normal", 1, age=1),
        entry("b_early_normal", 1, age=5),
        entry("c_bulk_earliest", 1, rank=2, age=100),
        entry("d_urgent", 1, ts=True),
        entry("e_urgent_early", 1, ts=True, age=3),
    ]
    order = [e.entry_id for e in sorted(entries, key=AdmissionEntry.rank)]
    assert order == ["e_urgent_early", "d_urgent", "b_early_normal", "a_late_normal", "c_bulk_earliest"]
    me = entries[2]
    assert evaluate(entries, me, 0, 100, NOW).ahead == order[:-1]


def test_dead_entries_neither_block_nor_reserve():
    me = entry("alpha_job", 10)
    stale = entry("beta_crashed", 1, ts=True, heartbeat_at=NOW - timedelta(seconds=301))
    late = entry("beta_late", 1, ts=True, deadline_at=NOW - timedelta(seconds=1))
    old_reservation = entry(
        "gamma_old",
        90,
        state="admitted",
        admitted_at=NOW - timedelta(seconds=RESERVATION_SECONDS + 1),
    )
    decision = evaluate([me, stale, late, old_reservation], me, in_flight=90, limit=100, now=NOW)
    assert decision.admitted and decision.reserved == 0 and decision.ahead == []


def test_only_the_uncreated_part_of_a_reservation_counts():
    me = entry("alpha_job", 10)
    half_done = entry("beta_big", 80, state="admitted", admitted_at=NOW, created_requests=50)
    decision = evaluate([me, half_done], me, in_flight=50, limit=100, now=NOW)
    assert decision.reserved == 30 and decision.admitted


@pytest.fixture
def queue(ledger_db) -> AdmissionQueue:
    return AdmissionQueue(Ledger(ledger_db))


def test_the_queue_keeps_entries_in_the_database(queue):
    first = entry("alpha_one", 5, heartbeat_at=datetime.now(timezone.utc))
    stored, decision = queue.admit(first, ListedBatches(), limit=100)
    assert decision.admitted and queue.get("alpha_one") == stored
    assert [e.entry_id for e in queue.entries()] == ["alpha_one"]
    queue.remove("alpha_one")
    queue.remove("alpha_one")  # removing twice is fine
    assert queue.get("alpha_one") is None


def test_a_waiting_job_keeps_its_place_when_it_asks_again(queue):
    first = entry("alpha_job", 60, age=10)
    stored, decision = queue.admit(first, ListedBatches(unfinished={"msgbatch_x": 50}), limit=100, now=NOW)
    assert not decision.admitted and stored.state == "waiting"
    again = entry("alpha_job", 60)  # a retry, or the trigger's next poll, built anew
    stored, decision = queue.admit(again, ListedBatches(), limit=100, now=NOW + timedelta(seconds=5))
    assert decision.admitted and stored.enqueued_at == NOW - timedelta(seconds=10)


def test_entries_dead_for_a_day_are_purged(queue):
    later = NOW + PURGE_AFTER + timedelta(hours=1)
    queue.admit(entry("alpha_dead", 5), ListedBatches(), limit=0, now=NOW)
    queue.admit(entry("beta_live", 5, heartbeat_at=later), ListedBatches(), limit=0, now=later)
    assert [e.entry_id for e in queue.entries()] == ["beta_live"]


def batch(batch_id: str, processing: int, status: str = "in_progress") -> LedgerRecord:
    return LedgerRecord(
        batch_id=batch_id,
        team="alpha",
        job_type="enrich",
        job_id="job",
        job_key="job",
        request_count=processing or 1,
        processing_status=status,
        request_counts={"processing": processing},
        created_at=NOW - timedelta(minutes=5),
    )


def test_in_flight_is_managed_batches_plus_unmanaged_ones_and_the_list_is_fresher(queue):
    ledger = queue.ledger
    ledger.put(batch("msgbatch_managed", 30))  # not listed yet (the list lags): counts from the ledger
    ledger.put(batch("msgbatch_ended_at_api", 20))  # the list knows it ended: 0
    ledger.put(batch("msgbatch_done", 0, status="ended"))
    listed = ListedBatches(unfinished={"msgbatch_outside": 15}, ended={"msgbatch_ended_at_api"})
    _, decision = queue.admit(entry("beta_job", 10), listed, limit=100, now=NOW)
    assert (decision.in_flight, decision.unmanaged) == (45, 15)
    assert (
        decision.summary == "in flight 45 (unmanaged 15) + reserved 0 + this job 10 = 55 <= queue limit 100"
    )


async def test_list_batches_counts_processing_requests_of_unfinished_batches(api):
    api.configure(processing_seconds=3600)
    hook = ClaudeBatchesHook()
    first = hook.create_batch(requests(3))
    hook.create_batch(requests(4))
    ended = hook.create_batch(requests(5))
    hook.cancel_batch(ended.id)
    api.advance(60)  # the cancel completes; the other two are still running
    async with ClaudeBatchesHook() as async_hook:
        listed = await list_batches(async_hook)
        assert sum(listed.unfinished.values()) == 7 and listed.unfinished[first.id] == 3
        assert listed.ended == {ended.id}
        # Listing stops at batches older than the 25 h horizon: seen from 26 h later, none count.
        later = await list_batches(async_hook, datetime.now(timezone.utc) + timedelta(hours=26))
        assert later.unfinished == {} and later.ended == set()


def _admit_then_create(url: str, n: int, limit: int) -> int:
    """One job of 30 requests: ask for room against a list that shows nothing yet, create if admitted."""
    queue = AdmissionQueue(Ledger(LedgerDatabase(url)))
    now = datetime.now(timezone.utc)
    me = entry(f"team{n}_job", 30, heartbeat_at=now, deadline_at=now + timedelta(hours=1))
    stored, decision = queue.admit(me, ListedBatches(), limit)
    if not decision.admitted:
        return 0
    record = batch(f"msgbatch_{n}", 30).model_copy(update={"created_at": now, "job_key": f"job{n}"})
    queue.ledger.record_created(record, batch_index=0, admission_entry=stored.entry_id)
    return 30


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_concurrent_admissions_with_a_lagging_list_never_exceed_the_limit(queue, workers):
    """20 jobs of 30 at once, limit 100, and the API's list shows none of their batches: 3 get in."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    if workers == "threads":
        pool = ThreadPoolExecutor(20)
    else:
        import multiprocessing

        pool = ProcessPoolExecutor(8, mp_context=multiprocessing.get_context("fork"))
    url = queue.ledger.db.url.render_as_string(hide_password=False)
    with pool:
        created = list(pool.map(_admit_then_create, [url] * 20, range(20), [100] * 20))
    assert sum(created) == 90
    assert sum(r.request_counts.processing for r in queue.ledger.records()) == 90


async def test_an_admitted_job_is_stored_as_a_reservation(api, store):
    queue = AdmissionQueue()
    now = datetime.now(timezone.utc)
    async with ClaudeBatchesHook() as hook:
        stored, decision = await try_admit(queue, entry("alpha_job", 10, heartbeat_at=now), 100, hook)
    assert decision.admitted and stored.state == "admitted"
    assert queue.get("alpha_job").state == "admitted"
    other = entry("beta_job", 95, heartbeat_at=now)
    assert evaluate(queue.entries(), other, 0, 100, now).reserved == 10


def test_entry_ids_are_safe_names():
    with pytest.raises(ValueError, match="entry_id"):
        entry("../etc", 1)
