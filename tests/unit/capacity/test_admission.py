"""Account admission: the ranking and room rule, the waiting list in the database, what is in flight."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import ClassVar

import pytest

from airflow_claude_batches.capacity.admission import (
    PURGE_AFTER,
    RESERVATION_SECONDS,
    WAIT_METRIC,
    AdmissionEntry,
    AdmissionQueue,
    ListedBatches,
    evaluate,
    list_batches,
    new_entry,
    try_admit,
)
from airflow_claude_batches.governance.windows import SubmitWindow
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.store.database import LedgerDatabase
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def entry(entry_id: str, count: int, *, ts: bool = False, rank: int = 1, age: float = 0, **kw):
    """A live entry that asked ``age`` seconds before NOW."""
    kw.setdefault("heartbeat_at", NOW)
    kw.setdefault("deadline_at", NOW + timedelta(hours=1))
    kw.setdefault("enqueued_at", NOW - timedelta(seconds=age))
    return AdmissionEntry(
        entry_id=entry_id,
        team=entry_id.split("_")[0],
        job_id=entry_id,
        job_type="enrich",
        request_count=count,
        priority_rank=0 if ts else rank,
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


# -- scheduling: windows, team shares, exclusive job types, the reserve, and why a job waits -------

NIGHT = SubmitWindow(hours="22:00-06:00", time_zone="Europe/Berlin")  # 21:00-05:00 UTC in November


def test_a_job_outside_its_window_waits_and_says_when_it_opens():
    me = entry("alpha_nightly", 10, window=NIGHT)
    evening = NOW.replace(hour=20, minute=30)
    decision = evaluate([me], me, in_flight=0, limit=100, now=evening)
    assert not decision.admitted and decision.reason == "window" and not decision.give_up
    assert decision.detail == (
        "outside its window 22:00-06:00 Europe/Berlin, which opens 2026-11-27 22:00 CET"
    )
    assert decision.why.startswith("position 1 of 1 in line, waiting for its job type's window: outside")
    # Across midnight in Berlin: admitted at 22:00 local, at 00:30, not at 06:00.
    assert evaluate([me], me, 0, 100, NOW.replace(hour=21)).admitted
    assert evaluate([me], me, 0, 100, NOW.replace(hour=23, minute=30)).admitted
    assert evaluate([me], me, 0, 100, NOW.replace(day=28, hour=5)).reason == "window"


def test_a_job_held_by_its_window_does_not_hold_the_jobs_behind_it():
    nightly = entry("alpha_nightly", 10, window=NIGHT, age=60)
    later = entry("beta_job", 10)
    decision = evaluate([nightly, later], later, 0, 100, NOW)
    assert decision.admitted and decision.ahead == [] and decision.position == 2


def test_when_the_window_closes_a_job_keeps_its_place_or_fails_as_its_job_type_says():
    asked = NOW.replace(hour=20)  # before the window of 27/28 November
    after_close = NOW.replace(day=28, hour=6)
    keep = entry("alpha_keep", 10, window=NIGHT, enqueued_at=asked)
    decision = evaluate([keep], keep, 0, 100, after_close)
    assert decision.reason == "window" and not decision.give_up
    fail_window = NIGHT.model_copy(update={"on_close": "fail"})
    fail = entry("alpha_fail", 10, window=fail_window, enqueued_at=asked)
    assert not evaluate([fail], fail, 0, 100, NOW.replace(hour=20, minute=59)).give_up  # not open yet
    decision = evaluate([fail], fail, 0, 100, after_close)
    assert decision.give_up and decision.reason == "window"
    assert decision.detail == (
        "its window 22:00-06:00 Europe/Berlin closed at 2026-11-28 06:00 CET before it was admitted"
    )
    # A job that asked after the close has not missed a window yet.
    fresh = entry("alpha_fresh", 10, window=fail_window, enqueued_at=after_close)
    assert not evaluate([fresh], fresh, 0, 100, after_close).give_up


def test_a_team_over_its_share_waits_while_another_team_waits():
    flood = entry("flood_job", 20, max_queue_share=0.5, age=60)  # asked first
    other = entry("beta_job", 50)
    by_team = {"flood": 40}  # 40 + 20 > 50% of 100
    decision = evaluate([flood, other], flood, 40, 100, NOW, team_in_flight=by_team)
    assert not decision.admitted and decision.reason == "team_share"
    assert decision.detail == (
        "team flood holds 40 requests; with this job 60 > 50% of the queue limit, while team(s) beta wait"
    )
    # The held job does not hold the other team's job, though it asked first.
    assert evaluate([flood, other], other, 40, 100, NOW, team_in_flight=by_team).admitted
    # Under its share it is ranked as anyone.
    assert evaluate([flood, other], flood, 40, 100, NOW, team_in_flight={"flood": 20}).admitted


def test_a_team_may_go_over_its_share_when_nobody_else_waits():
    flood = entry("flood_job", 20, max_queue_share=0.5)
    decision = evaluate([flood], flood, 60, 100, NOW, team_in_flight={"flood": 60})
    assert decision.admitted and decision.reason is None
    # A job of another team held by its window, or by its own share, does not count as waiting.
    night = entry("beta_nightly", 10, window=NIGHT)
    greedy = entry("gamma_job", 10, max_queue_share=0.1)
    by_team = {"flood": 60, "gamma": 10}
    assert evaluate([flood, night, greedy], flood, 70, 100, NOW, team_in_flight=by_team).admitted


def test_reservations_count_toward_a_teams_share():
    flood = entry("flood_job", 20, max_queue_share=0.5)
    creating = entry("flood_other", 40, state="admitted", admitted_at=NOW)
    other = entry("beta_job", 90)
    decision = evaluate([flood, creating, other], flood, 0, 100, NOW)
    assert decision.reason == "team_share"


def test_an_exclusive_job_waits_for_the_previous_one_of_its_type():
    me = entry("alpha_giant", 10, exclusive=True)
    running = evaluate([me], me, 30, 100, NOW, running_job_types={"enrich"})
    assert running.reason == "exclusive"
    assert running.detail == "job type enrich runs one job at a time; waiting for its batches in flight"
    creating = entry("beta_giant", 10, state="admitted", admitted_at=NOW)
    decision = evaluate([me, creating], me, 0, 100, NOW)
    assert decision.reason == "exclusive" and "beta_giant, admitted" in decision.detail
    first = entry("beta_first", 10, exclusive=True, age=60)
    decision = evaluate([me, first], me, 0, 100, NOW)
    assert decision.reason == "exclusive"
    assert decision.detail.endswith("waiting for beta_first, ahead in line")
    assert evaluate([me, first], first, 0, 100, NOW).admitted
    # Another job type is not held, nor is a non-exclusive job of the same type.
    assert evaluate([me], me, 30, 100, NOW, running_job_types={"other"}).admitted
    plain = entry("gamma_plain", 10)
    assert evaluate([plain], plain, 30, 100, NOW, running_job_types={"enrich"}).admitted


def test_jobs_that_are_not_time_sensitive_leave_the_reserve_free():
    bulk = entry("alpha_bulk", 10, time_sensitive_reserve=20)
    urgent = entry("beta_urgent", 10, ts=True, time_sensitive_reserve=20)
    decision = evaluate([bulk], bulk, 75, 100, NOW)
    assert decision.reason == "account_limit" and decision.detail == "not enough room yet"
    assert decision.summary == (
        "in flight 75 + reserved 0 + this job 10 = 85 > queue limit 100 - 20 kept for time-sensitive jobs"
    )
    assert evaluate([urgent], urgent, 75, 100, NOW).admitted
    assert bulk.usable_limit(100) == 80 and urgent.usable_limit(100) == 100


def test_position_and_reason_of_a_job_behind_others():
    first = entry("alpha_first", 50, age=60)
    me = entry("beta_me", 10)
    decision = evaluate([first, me], me, 60, 100, NOW)
    assert (decision.position, decision.waiting, decision.reason) == (2, 2, "account_limit")
    assert decision.why == (
        "position 2 of 2 in line, waiting for room under the account queue limit: 1 job(s) ahead in line "
        "go first (in flight 60 + reserved 0 + this job 10 = 70 <= queue limit 100; 1 job(s) ahead in "
        "line: alpha_first)"
    )


def test_new_entry_carries_the_policys_scheduling_rules():
    from airflow_claude_batches.governance.policy import AccountPolicy, JobTypePolicy, TeamPolicy

    team = TeamPolicy(name="alpha", max_queue_share=0.25)
    job_type = JobTypePolicy(
        name="nightly",
        allowed_models=["claude-haiku-4-5"],
        allowed_fields=[],
        max_tokens_cap=8,
        max_requests=10,
        max_bytes=1000,
        max_job_cost_usd=1,
        window=NIGHT,
        exclusive=True,
    )
    account = AccountPolicy(admission_max_wait_seconds=60, time_sensitive_reserve=7)
    made = new_entry(team, job_type, account, job_key="k", job_id="job", request_count=3, now=NOW)
    assert (made.entry_id, made.window, made.exclusive) == ("alpha_k", NIGHT, True)
    assert (made.max_queue_share, made.time_sensitive_reserve, made.priority_rank) == (0.25, 7, 1)
    # It may wait at least until its next window has closed (06:00 Berlin next morning).
    assert made.deadline_at == datetime(2026, 11, 28, 5, tzinfo=timezone.utc)


def test_the_queue_stores_why_a_job_waits_and_the_waiting_line(queue):
    first = entry("alpha_big", 60, age=30)
    second = entry("beta_night", 5, window=NIGHT, age=20)
    third = entry("gamma_small", 50, age=10)
    listed = ListedBatches(unfinished={"msgbatch_outside": 50})
    for e in (first, second, third):
        queue.admit(e, listed, limit=100, now=NOW)
    line = queue.waiting(NOW)
    assert [(e.entry_id, e.reason) for e in line] == [
        ("alpha_big", "account_limit"),
        ("beta_night", "window"),
        ("gamma_small", "account_limit"),
    ]
    assert line[1].window == NIGHT and line[1].reason_detail.startswith("outside its window")


def test_a_keep_place_job_has_its_deadline_moved_to_the_next_window(queue):
    asked = NOW.replace(hour=20)
    me = entry("alpha_nightly", 10, window=NIGHT, enqueued_at=asked, deadline_at=asked + timedelta(hours=1))
    after_close = NOW.replace(day=28, hour=6)
    stored, decision = queue.admit(
        me.model_copy(update={"heartbeat_at": after_close}), ListedBatches(), limit=100, now=after_close
    )
    assert decision.reason == "window" and stored.enqueued_at == asked
    assert stored.deadline_at == datetime(2026, 11, 29, 5, tzinfo=timezone.utc)
    assert queue.get("alpha_nightly").live(after_close)


def test_exclusive_jobs_see_the_ledgers_batches_of_their_type(queue):
    queue.ledger.put(batch("msgbatch_giant", 40))  # job type enrich, unfinished
    me = entry("beta_giant", 10, exclusive=True)
    _, decision = queue.admit(me, ListedBatches(unfinished={"msgbatch_giant": 40}), limit=100, now=NOW)
    assert decision.reason == "exclusive"
    # Once the API lists it as ended the next one goes, though the ledger has not caught up yet.
    _, decision = queue.admit(me, ListedBatches(ended={"msgbatch_giant"}), limit=100, now=NOW)
    assert decision.admitted


def test_team_shares_count_the_ledgers_batches_per_team(queue):
    queue.ledger.put(batch("msgbatch_alpha", 50))  # team alpha
    queue.admit(entry("beta_waits", 60, age=10), ListedBatches(), limit=100, now=NOW)
    _, decision = queue.admit(entry("alpha_more", 10, max_queue_share=0.5), ListedBatches(), 100, now=NOW)
    assert decision.reason == "team_share" and "team alpha holds 50 requests" in decision.detail


class _Recorder:
    """A stats back end that keeps what it is given (Airflow's Stats accepts any logger factory)."""

    timings: ClassVar[list[tuple[str, float, dict]]] = []

    def timing(self, stat, dt, *, tags=None):
        self.timings.append((stat, dt, tags))


@pytest.fixture
def stats():
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
    from airflow.sdk.observability.stats import Stats

    _Recorder.timings.clear()
    Stats.initialize(factory=_Recorder, export_legacy_names=False)
    yield _Recorder.timings
    Stats.initialize(factory=NoStatsLogger, export_legacy_names=True)


def test_each_admission_reports_the_wait_per_team_and_job_type(queue, stats):
    me = entry("alpha_job", 60, age=10)
    queue.admit(me, ListedBatches(unfinished={"msgbatch_x": 50}), limit=100, now=NOW)
    assert stats == []  # a job that waits reports nothing yet
    queue.admit(me, ListedBatches(), limit=100, now=NOW + timedelta(seconds=30))
    assert stats == [(WAIT_METRIC, 40.0, {"team": "alpha", "job_type": "enrich"})]
    assert WAIT_METRIC == "claude_batches.admission.wait_seconds"
