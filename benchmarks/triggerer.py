"""
P3: one triggerer holding N concurrent batch waits (default 1,000), polling every second.

Three variants, each in its own process against the local stub API, where every batch ends at its
third observation (so each wait takes three polls): ours (``ClaudeBatchTrigger``), the official
provider's ``AnthropicBatchTrigger``, and a bare loop of retrieves on one shared ``AsyncAnthropic``.
Measures CPU per poll (process CPU / (N x 3)), peak RSS, wall time and the event loop's largest
stall (a 10 ms ticker's worst lateness). Every variant's process freezes its start-up heap
(``gc.freeze()``) before the waits begin, as a long-running triggerer would want. Usage::

    python benchmarks/triggerer.py [--triggers 1000] [--interval 1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from _workload import (
    alternate,
    anthropic_conn,
    peak_rss_mb,
    report,
    result,
    run_child,
    scaled,
    stub_api,
    table,
)

POLLS = 3
VARIANTS = ("ours", "official", "bare")


async def _ticker(done: asyncio.Event, worst: list[float]) -> None:
    last = time.perf_counter()
    while not done.is_set():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last - 0.01)
        last = now


async def _first_event(trigger: Any) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def _waits(
    variant: str, batch_ids: list[str], interval: float, base_url: str
) -> Callable[[], Awaitable[list]]:
    end_time = time.time() + 3600
    if variant == "ours":
        # The SDK: our first trigger imports it in a thread (the other variants with their modules).
        # Steady state is measured here; with that import inside the run, the largest stall was 0.19 s.
        import airflow_claude_batches.hooks.batches  # noqa: F401
        from airflow_claude_batches.triggers.batch import ClaudeBatchTrigger

        triggers = [
            ClaudeBatchTrigger(batch_ids=[b], poll_interval=interval, end_time=end_time) for b in batch_ids
        ]
        return lambda: asyncio.gather(*(_first_event(t) for t in triggers))
    if variant == "official":
        from airflow.providers.anthropic.triggers.batch import AnthropicBatchTrigger

        official = [AnthropicBatchTrigger("anthropic_default", b, interval, end_time) for b in batch_ids]
        return lambda: asyncio.gather(*(_first_event(t) for t in official))

    from anthropic import AsyncAnthropic

    async def bare() -> list:
        async with AsyncAnthropic(base_url=base_url, api_key="sk-bench") as client:

            async def wait(batch_id: str) -> dict:
                while True:
                    batch = await client.messages.batches.retrieve(batch_id)
                    if batch.processing_status == "ended":
                        return {"status": "ended"}
                    await asyncio.sleep(interval)

            return await asyncio.gather(*(wait(b) for b in batch_ids))

    return bare


def _seed_ledger(batch_ids: list[str]) -> None:
    """Ours records counts in the ledger: give it the records the operator writes at create."""
    from datetime import datetime, timedelta, timezone

    from airflow_claude_batches.store.ledger import Ledger, LedgerRecord

    ledger = Ledger()
    now = datetime.now(timezone.utc)
    for batch_id in batch_ids:
        ledger.put(
            LedgerRecord(
                batch_id=batch_id,
                team="bench",
                job_type="bulk",
                job_id=batch_id,
                job_key="bench-job",
                request_count=1,
                first_index=0,
                processing_status="in_progress",
                request_counts={"processing": 1},
                created_at=now,
                expires_at=now + timedelta(hours=24),
                estimated_cost_usd=0.0,
            )
        )


def child(variant: str, base_url: str, triggers: int, interval: float) -> None:
    request = urllib.request.Request(f"{base_url}/_stub/reset?n={triggers}", method="POST")
    batch_ids = [b for b in json.load(urllib.request.urlopen(request))["batches"] if b != "msgbatch_results"]
    if variant == "ours":
        _seed_ledger(batch_ids)
    waits = _waits(variant, batch_ids, interval, base_url)
    # As a long-running triggerer would after start-up: what was imported and set up stays out of
    # the garbage collector's full passes (0.5 s each over Airflow's import-time heap otherwise).
    gc.collect()
    gc.freeze()

    async def main() -> tuple[list, float]:
        done, worst = asyncio.Event(), [0.0]
        ticker = asyncio.ensure_future(_ticker(done, worst))
        events = await waits()
        done.set()
        await ticker
        return events, worst[0]

    cpu, wall = time.process_time(), time.perf_counter()
    events, stall = asyncio.run(main())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    statuses = {e["status"] for e in events}
    assert statuses <= {"ended", "success"}, statuses
    calls = json.load(urllib.request.urlopen(f"{base_url}/_stub/stats"))["calls"]
    report(
        cpu_ms_per_poll=cpu * 1000 / (triggers * POLLS),
        peak_rss_mb=peak_rss_mb(),
        wall_s=wall,
        stall_s=stall,
        api_calls=calls["retrieve"] + calls["list"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--triggers", type=int, default=scaled(1000))
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.base_url, args.triggers, args.interval)
        return
    with tempfile.TemporaryDirectory(prefix="acb-p3-") as home, stub_api(ends_after=POLLS) as base_url:
        env = {
            **anthropic_conn(base_url),
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT": f"file://{home}/store",
        }
        os.environ.update(env)
        medians = alternate(
            VARIANTS,
            lambda v: run_child(
                "triggerer.py",
                v,
                "--base-url",
                base_url,
                "--triggers",
                str(args.triggers),
                "--interval",
                str(args.interval),
            ),
        )
    print(f"P3 triggerer: {args.triggers} concurrent waits, {args.interval:g} s poll, {POLLS} polls each")
    table(medians, ["cpu_ms_per_poll", "peak_rss_mb", "wall_s", "stall_s", "api_calls"], unit="official")
    ours, official, bare = (medians[v] for v in VARIANTS)
    result(
        "triggerer",
        cpu_vs_official=ours["cpu_ms_per_poll"] / official["cpu_ms_per_poll"],
        rss_vs_official=ours["peak_rss_mb"] / official["peak_rss_mb"],
        stall_s=ours["stall_s"],
        wall_vs_bare=ours["wall_s"] / bare["wall_s"],
    )


if __name__ == "__main__":
    main()
