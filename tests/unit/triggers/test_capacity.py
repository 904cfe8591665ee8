"""ClaudeCapacityTrigger against the emulator: waits for room, admits, times out, leaves the line."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from datetime import datetime, timedelta, timezone

from airflow_claude_batches.capacity.admission import AdmissionEntry, AdmissionQueue
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.triggers.capacity import AdmissionEvent, ClaudeCapacityTrigger
from operator_harness import run_trigger


def entry(count: int, entry_id: str = "alpha_job") -> dict:
    now = datetime.now(timezone.utc)
    return AdmissionEntry(
        entry_id=entry_id,
        team="alpha",
        job_id="job",
        job_type="enrich",
        request_count=count,
        enqueued_at=now,
        heartbeat_at=now,
        deadline_at=now + timedelta(minutes=5),
    ).model_dump(mode="json")


def trigger(count: int, *, limit: int = 100, wait: float = 30) -> ClaudeCapacityTrigger:
    return ClaudeCapacityTrigger(
        entry=entry(count), queue_limit=limit, poll_interval=0.05, end_time=time.time() + wait
    )


def occupy(n: int) -> str:
    """A batch of ``n`` requests created outside the service (straight through the SDK)."""
    params = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    requests = [{"custom_id": f"legacy_job_{i:08d}", "params": params} for i in range(n)]
    return ClaudeBatchesHook().create_batch(requests).id


def test_serializes_to_plain_data_and_back():
    path, kwargs = trigger(5).serialize()
    module, _, name = path.rpartition(".")
    assert getattr(importlib.import_module(module), name) is ClaudeCapacityTrigger
    rebuilt = ClaudeCapacityTrigger(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (path, kwargs)


async def test_admits_at_once_when_there_is_room(api, store):
    event = AdmissionEvent.model_validate(await run_trigger(trigger(10)))
    assert event.status == "admitted"
    assert event.decision.in_flight == 0 and event.decision.request_count == 10
    assert AdmissionQueue().get("alpha_job").state == "admitted"  # the reservation, until create


async def test_waits_until_batches_created_outside_the_service_end(api, store):
    api.configure(processing_seconds=600)
    occupy(95)
    waiting = asyncio.create_task(run_trigger(trigger(10)))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert AdmissionQueue().get("alpha_job").state == "waiting"
    await asyncio.to_thread(api.advance, 600)
    event = AdmissionEvent.model_validate(await waiting)
    assert event.status == "admitted"
    assert event.decision.in_flight == 0 and event.waited_seconds >= 0.3


async def test_timeout_gives_the_numbers_and_leaves_the_line(api, store):
    api.configure(processing_seconds=3600)
    occupy(95)
    event = AdmissionEvent.model_validate(await run_trigger(trigger(10, wait=0.2)))
    assert event.status == "timeout"
    assert event.decision.summary == (
        "in flight 95 (unmanaged 95) + reserved 0 + this job 10 = 105 > queue limit 100"
    )
    assert AdmissionQueue().get("alpha_job") is None


async def test_on_kill_leaves_the_line(api, store):
    waiting = trigger(10)
    from airflow_claude_batches.capacity.admission import ListedBatches

    AdmissionQueue().admit(AdmissionEntry.model_validate(waiting.entry), ListedBatches(), limit=0)
    assert AdmissionQueue().get("alpha_job").state == "waiting"
    await waiting.on_kill()
    assert AdmissionQueue().get("alpha_job") is None


async def test_a_job_whose_window_closed_gives_up_when_its_job_type_says_fail(api, store):

    now = datetime.now(timezone.utc)
    # A one-hour window that closed an hour ago; the job asked before it opened and was never admitted.
    hours = f"{(now - timedelta(hours=2)):%H:%M}-{(now - timedelta(hours=1)):%H:%M}"
    data = entry(10) | {
        "window": {"hours": hours, "on_close": "fail"},
        "enqueued_at": (now - timedelta(hours=3)).isoformat(),
    }
    waiting = ClaudeCapacityTrigger(
        entry=data, queue_limit=100, poll_interval=0.05, end_time=time.time() + 30
    )
    event = AdmissionEvent.model_validate(await run_trigger(waiting))
    assert event.status == "window_closed"
    assert event.message.startswith(f"its window {hours} UTC closed at") and event.decision.reason == "window"
    assert AdmissionQueue().get("alpha_job") is None


async def test_each_re_check_logs_where_the_job_stands_and_why(api, store, capsys):
    api.configure(processing_seconds=600)
    occupy(95)
    said = (
        "Job job waits: position 1 of 1 in line, waiting for room under the account queue limit: not "
        "enough room yet (in flight 95 (unmanaged 95) + reserved 0 + this job 10 = 105 > queue limit 100)"
    )
    waiting = asyncio.create_task(run_trigger(trigger(10)))
    out = ""
    deadline = time.monotonic() + 30  # generous: a loaded machine re-checks late, never never
    while out.count(said) < 2 and time.monotonic() < deadline and not waiting.done():
        await asyncio.sleep(0.05)
        out += capsys.readouterr().out
    await asyncio.to_thread(api.advance, 600)
    await waiting
    assert out.count(said) >= 2  # said again at each re-check (the triggerer's log)
