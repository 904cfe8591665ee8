"""ClaudeBatchTrigger against the emulator: the async poll loop, its tolerance and its endings."""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord
from airflow_claude_batches.triggers.base import first_poll_delay
from airflow_claude_batches.triggers.batch import BatchJobEvent, ClaudeBatchTrigger
from airflow_claude_batches.triggers.sweep import StatusBoard
from operator_harness import api_requests, run_trigger


def _batch(hook: ClaudeBatchesHook, n: int = 3) -> str:
    requests = api_requests([f"alpha_job_{i:08d}" for i in range(n)])
    batch = hook.create_batch(requests)
    Ledger().put(
        LedgerRecord(
            batch_id=batch.id,
            team="alpha",
            job_type="enrich",
            job_id="job",
            job_key="job",
            request_count=n,
            first_index=0,
            processing_status=batch.processing_status,
            request_counts=batch.request_counts.model_dump(),
            created_at=batch.created_at,
            expires_at=batch.expires_at,
            estimated_cost_usd=0.01,
        )
    )
    return batch.id


def trigger(batch_ids, **kwargs) -> ClaudeBatchTrigger:
    kwargs.setdefault("end_time", time.time() + 60)
    kwargs.setdefault("poll_interval", 0.02)
    return ClaudeBatchTrigger(batch_ids=batch_ids, team="alpha", job_id="job", **kwargs)


def test_serializes_to_plain_data_and_back(api):
    original = trigger(["msgbatch_a", "msgbatch_b"], cancel_on_kill=False)
    path, kwargs = original.serialize()
    module, name = path.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (path, kwargs)
    assert api.api_key not in json.dumps(kwargs)


async def test_ends_with_counts_and_records_them(api, store):
    batch_id = _batch(ClaudeBatchesHook())
    api.advance(60)
    event = BatchJobEvent.model_validate(await run_trigger(trigger([batch_id])))
    assert event.status == "ended"
    assert event.batches[batch_id].request_counts["succeeded"] == 3
    assert Ledger().get(batch_id).processing_status == "ended"


async def test_tolerates_a_404_right_after_create(api, store):
    """Retrieve can 404 right after create, and the listing may not show the batch yet either."""
    api.set_faults(
        not_found_after_create={"calls": 3},
        http=[{"route": "list", "status": 404, "times": 3, "message": "not listed yet"}],
    )
    batch_id = _batch(ClaudeBatchesHook())
    api.advance(60)
    event = await run_trigger(trigger([batch_id]))
    assert event["status"] == "ended"


async def test_persistent_failure_ends_in_error_without_cancelling(api, store):
    batch_id = _batch(ClaudeBatchesHook())
    api.set_faults(http=[{"route": "*", "status": 500, "times": 100, "retry_after_ms": 1}])
    event = await run_trigger(trigger([batch_id]))
    assert event["status"] == "error"
    assert "5 times in a row" in event["message"]
    assert api.stats()["calls"]["cancel"] == 0


async def test_deadline_gives_timeout_and_leaves_cancelling_to_the_operator(api, store):
    batch_id = _batch(ClaudeBatchesHook())
    event = await run_trigger(trigger([batch_id], end_time=time.time()))
    assert event["status"] == "timeout"
    assert api.stats()["calls"]["cancel"] == 0


async def test_unknown_status_fails_closed(store):
    """The API answering a status this code does not model must not look like success."""

    class Hook:
        async def aiter_batches(self, limit):
            yield SimpleNamespace(
                id="msgbatch_x",
                processing_status="paused",
                request_counts=SimpleNamespace(model_dump=lambda: {"processing": 1}),
                created_at=datetime.now(timezone.utc),
                expires_at=datetime.now(timezone.utc) + timedelta(hours=24),
                ended_at=None,
            )

    event = await trigger(["msgbatch_x"])._wait(Hook())  # type: ignore[arg-type]
    assert event.status == "error" and "paused" in event.message


async def test_warns_once_near_the_24_hour_ceiling(api, store, caplog):
    """The emulator's clock can run ahead, the trigger's is the wall clock: widen the window instead."""
    api.configure(processing_seconds=30 * 3600)  # would not finish before expiry
    batch_id = _batch(ClaudeBatchesHook())
    with caplog.at_level(logging.WARNING):
        event = await run_trigger(
            trigger([batch_id], end_time=time.time() + 0.3, warn_before_expiry=25 * 3600)
        )
    assert event["status"] == "timeout"
    assert caplog.text.count("CLAUDE_BATCHES_ALERT near_expiry team=alpha") == 1


@pytest.mark.parametrize("cancel_on_kill", [True, False])
async def test_on_kill_cancels_only_when_asked(api, store, cancel_on_kill):
    batch_id = _batch(ClaudeBatchesHook())
    await trigger([batch_id], cancel_on_kill=cancel_on_kill).on_kill()
    status = ClaudeBatchesHook().get_batch(batch_id).processing_status
    assert status == ("canceling" if cancel_on_kill else "in_progress")


async def test_event_is_held_for_min_seconds(api, store):
    """Airflow 3.3 can fail a task resumed within seconds of its deferral: the event waits."""
    batch_id = _batch(ClaudeBatchesHook())
    api.advance(60)  # ended before the first poll
    started = time.monotonic()
    event = await run_trigger(trigger([batch_id], min_seconds=0.6))
    assert event["status"] == "ended"
    assert time.monotonic() - started >= 0.6


def test_first_polls_spread_over_the_interval_and_keep_their_phase():
    delays = [first_poll_delay(f"msgbatch_{i:06d}", 60) for i in range(1000)]
    assert all(0 <= d < 60 for d in delays)
    per_tenth = [sum(6 * k <= d < 6 * (k + 1) for d in delays) for k in range(10)]
    assert min(per_tenth) > 60, per_tenth  # about 100 in each tenth of the interval, none empty
    assert first_poll_delay("msgbatch_000007", 60) == delays[7]  # the same trigger, the same phase


async def _run_many(api, count: int, interval: float = 0.2) -> list[dict]:
    """``count`` triggers on ``count`` batches: let them poll until two sweeps ran, then end the batches."""
    hook = ClaudeBatchesHook()
    batch_ids = [hook.create_batch(api_requests([f"alpha_job_{i:08d}"])).id for i in range(count)]
    tasks = [
        asyncio.ensure_future(run_trigger(trigger([b], poll_interval=interval, end_time=time.time() + 120)))
        for b in batch_ids
    ]
    while (await asyncio.to_thread(api.stats))["calls"]["list"] < 2:
        await asyncio.sleep(interval / 2)
    await asyncio.to_thread(api.advance, 3600)
    return await asyncio.gather(*tasks)


async def test_one_sweep_an_interval_serves_every_trigger(api, store):
    events = await _run_many(api, 40)
    assert {e["status"] for e in events} == {"ended"}
    calls = api.stats()["calls"]
    assert calls["retrieve"] == 0  # the listing showed every batch, from the first poll on
    # every trigger polled at least twice more (once before the batches ended, once after), from
    # the shared listing: 80+ polls served by a handful of list calls.
    assert 2 <= calls["list"] <= 6, calls


async def test_a_batch_the_sweep_does_not_show_is_retrieved(api, store):
    """A listing that misses a watched batch (e.g. one listed late) must not stall its trigger."""
    hook = ClaudeBatchesHook()
    old = hook.create_batch(api_requests(["alpha_job_00000000"])).id
    new = hook.create_batch(api_requests(["alpha_job_00000001"])).id
    async with ClaudeBatchesHook() as ahook:
        board = StatusBoard.of("anthropic_default")
        board.watch([old, new])
        await board.states(ahook, [old, new], max_age=60)  # first poll: learns when each was made
        api.set_faults(http=[{"route": "list", "status": 500, "times": 1, "retry_after_ms": 1}])
        states = await board.states(ahook, [old, new], max_age=0)  # the SDK retries the list
        assert set(states) == {old, new}
        before = api.stats()["calls"]
        board.unwatch([new])  # only `old` is watched now: a sweep stops at it
        states = await board.states(ahook, [old], max_age=0)
        after = api.stats()["calls"]
        assert after["list"] == before["list"] + 1 and after["retrieve"] == before["retrieve"]
        board.unwatch([old])


async def test_triggers_never_block_the_loop(api, store, caplog):
    """Under asyncio debug mode a callback over 0.1 s is logged: starting many triggers must log none."""
    loop = asyncio.get_running_loop()
    # A full collection of the whole test session's heap (~0.3 s) would land in whichever callback
    # runs then: freeze what exists, so only what the triggers allocate is collected.
    gc.collect()
    gc.freeze()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.1
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            events = await _run_many(api, 30, interval=0.1)
    finally:
        loop.set_debug(False)
        gc.unfreeze()
    assert {e["status"] for e in events} == {"ended"}
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert not slow, slow


async def test_ledger_is_written_only_when_a_batch_changes(api, store):
    batch_id = _batch(ClaudeBatchesHook())
    writes: list[dict] = []
    update = Ledger.update

    def counting_update(self, batch_id, **changes):
        writes.append(changes)
        return update(self, batch_id, **changes)

    Ledger.update = counting_update  # type: ignore[method-assign]
    try:
        task = asyncio.ensure_future(run_trigger(trigger([batch_id])))
        while (await asyncio.to_thread(api.stats))["calls"]["list"] < 2:
            await asyncio.sleep(0.01)  # polled several times while nothing changed
        api.advance(60)
        assert (await task)["status"] == "ended"
    finally:
        Ledger.update = update  # type: ignore[method-assign]
    assert [w["processing_status"] for w in writes] == ["ended"]
    assert Ledger().get(batch_id).request_counts.succeeded == 3
