"""Account admission: the ranking and room rule, the waiting list in the store, in-flight from the API."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from airflow_claude_batches.admission import (
    PURGE_AFTER,
    RESERVATION_SECONDS,
    AdmissionEntry,
    AdmissionQueue,
    evaluate,
    in_flight,
    try_admit,
)
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def entry(entry_id: str, count: int, *, ts: bool = False, weight: int = 1, age: float = 0, **kw):
    """A live entry that asked ``age`` seconds before NOW."""
    kw.setdefault("heartbeat_at", NOW)
    kw.setdefault("deadline_at", NOW + timedelta(hours=1))
    return AdmissionEntry(
        entry_id=entry_id,
        team=entry_id.split("_")[0],
        job_id=entry_id,
        job_type="enrich",
        request_count=count,
        time_sensitive=ts,
        priority_weight=weight,
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


def test_rank_is_time_sensitive_then_priority_weight_then_first_come():
    entries = [
        entry("a_late_low", 1, age=1),
        entry("b_early_low", 1, age=5),
        entry("c_heavy", 1, weight=10),
        entry("d_urgent", 1, ts=True),
        entry("e_urgent_early", 1, ts=True, age=3),
    ]
    order = [e.entry_id for e in sorted(entries, key=AdmissionEntry.rank)]
    assert order == ["e_urgent_early", "d_urgent", "c_heavy", "b_early_low", "a_late_low"]
    me = entries[0]
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


def test_the_queue_keeps_entries_in_the_store(store):
    queue = AdmissionQueue()
    first, second = entry("alpha_one", 5), entry("beta_two", 7)
    queue.put(first)
    queue.put(second)
    assert queue.get("alpha_one") == first
    assert sorted(e.entry_id for e in queue.entries(NOW)) == ["alpha_one", "beta_two"]
    assert (store / "_admission" / "alpha_one.json").exists()
    queue.remove("alpha_one")
    queue.remove("alpha_one")  # removing twice is fine
    assert queue.get("alpha_one") is None
    (store / "_admission" / "junk.json").write_text("{not an entry")
    assert [e.entry_id for e in queue.entries(NOW)] == ["beta_two"]


def test_entries_dead_for_a_day_are_purged(store):
    queue = AdmissionQueue()
    queue.put(entry("alpha_dead", 5, heartbeat_at=NOW - PURGE_AFTER - timedelta(hours=1)))
    queue.put(entry("beta_live", 5))
    assert [e.entry_id for e in queue.entries(NOW)] == ["beta_live"]
    assert not (store / "_admission" / "alpha_dead.json").exists()


async def test_in_flight_counts_processing_requests_of_unfinished_batches(api):
    api.configure(processing_seconds=3600)
    hook = ClaudeBatchesHook()
    hook.create_batch(requests(3))
    hook.create_batch(requests(4))
    ended = hook.create_batch(requests(5))
    hook.cancel_batch(ended.id)
    api.advance(60)  # the cancel completes; the other two are still running
    async with ClaudeBatchesHook() as async_hook:
        assert await in_flight(async_hook) == 7
        # Listing stops at batches older than the 25 h horizon: seen from 26 h later, none count.
        assert await in_flight(async_hook, datetime.now(timezone.utc) + timedelta(hours=26)) == 0


async def test_a_batch_counts_in_full_until_it_ends(api):
    """The API reports every request of an unfinished batch as ``processing``."""
    api.configure(processing_seconds=100)
    ClaudeBatchesHook().create_batch(requests(10))
    async with ClaudeBatchesHook() as hook:
        assert await in_flight(hook) == 10
        api.advance(50)
        assert await in_flight(hook) == 10
        api.advance(51)
        assert await in_flight(hook) == 0


async def test_concurrent_admissions_never_overshoot_the_limit(api, store):
    """Two jobs that fit alone but not together ask at the same instant: at most one gets in."""
    api.configure(processing_seconds=3600)
    queue = AdmissionQueue()
    for round_ in range(5):
        jobs = [entry(f"alpha_r{round_}", 60), entry(f"beta_r{round_}", 60)]
        async with ClaudeBatchesHook() as one, ClaudeBatchesHook() as two:
            outcomes = await asyncio.gather(
                try_admit(queue, jobs[0], 100, one), try_admit(queue, jobs[1], 100, two)
            )
        admitted = [stored for stored, decision in outcomes if decision.admitted]
        assert len(admitted) <= 1
        assert all(queue.get(s.entry_id).state == s.state for s, _ in outcomes)
        for job in jobs:
            queue.remove(job.entry_id)


class RacingQueue(AdmissionQueue):
    """A waiting list where another job's admission lands right after our first read of it."""

    def __init__(self, rival: AdmissionEntry) -> None:
        super().__init__()
        self.rival: AdmissionEntry | None = rival

    def entries(self, now=None):
        found = super().entries(now)
        if self.rival is not None:
            self.put(self.rival)
            self.rival = None
        return found


async def test_a_job_admitted_meanwhile_makes_the_double_check_back_off(api, store):
    rival = entry("beta_rival", 60, state="admitted", admitted_at=datetime.now(timezone.utc))
    queue = RacingQueue(rival)
    async with ClaudeBatchesHook() as hook:
        stored, decision = await try_admit(queue, entry("alpha_job", 60, age=10), 100, hook)
    assert not decision.admitted and decision.reserved == 60
    assert stored.state == "waiting" and queue.get("alpha_job").state == "waiting"
    assert queue.get("alpha_job").enqueued_at == NOW - timedelta(seconds=10)  # keeps its place


async def test_an_admitted_job_is_stored_as_a_reservation(api, store):
    queue = AdmissionQueue()
    async with ClaudeBatchesHook() as hook:
        stored, decision = await try_admit(queue, entry("alpha_job", 10), 100, hook)
    assert decision.admitted and stored.state == "admitted"
    assert queue.get("alpha_job").state == "admitted"
    other = entry("beta_job", 95)
    assert evaluate(queue.entries(), other, 0, 100, datetime.now(timezone.utc)).reserved == 10


def test_entry_ids_are_safe_file_names():
    with pytest.raises(ValueError, match="entry_id"):
        entry("../etc", 1)
