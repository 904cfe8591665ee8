"""One synthetic day of the shared queue: 10 teams, one flooding, through the real admission code.

Every admission decision is :meth:`AdmissionQueue.admit` on a SQLite ledger; every batch is created
by :class:`ClaudeBatchesHook` in the emulator, which refuses (429) a create that would take its
processing queue over ``queue_limit`` (its fault of that name): an admission that overshoots would
show up as a refused create. The emulator's clock stands still (speed 0) and is advanced to each
arrival and each admission poll, so the day takes minutes. A job asks once when it arrives (the
operator), then at every poll (its capacity trigger), in line order and against one list of the API
per poll (creates go through the hook's SDK client, body encoded once); a batch runs for
``240 s + 0.08 s per request`` and its end is written to the ledger at the first poll after it.

The day (06:00 to 06:00 UTC, January), limit 150,000: time-sensitive ``alerts`` jobs from three
teams every 15-30 minutes (100-1,000 requests); one ``hourly`` job per team and hour (300-2,000);
team ``growth`` floods 30 ``backfill`` jobs of 8,000 within 5 minutes from 09:00; three teams
submit a ``nightly`` 100,000-request job at 18:00-19:00. It runs twice: ``plain`` (time-sensitive
first, then first come) and ``scheduled`` (nightly window 22:00-06:00 Europe/Berlin and exclusive, growth's
``max_queue_share`` 0.3, 10,000 requests kept for time-sensitive jobs).

Numbers: waits per team and job type (p50, p95, max; a job still waiting at the end counts its
wait so far), peak in flight against the limit, each team's largest share of the limit; the
flooding team's largest share through a job admitted while another team's job waited for room;
``idle_share_s``: seconds in which a job held only by its team's share would have fit, while no job
of another team waited for room. Writes a table, the RESULT line and a picture (in flight stacked by
team over the day) to ``benchmarks/output/``. Usage::

    python benchmarks/scheduling_sim.py [--poll 60] [--output benchmarks/output]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from anthropic.types.messages import MessageBatch

from airflow_claude_batches.capacity.admission import (
    AdmissionDecision,
    AdmissionEntry,
    AdmissionQueue,
    list_batches,
    new_entry,
)
from airflow_claude_batches.emulator import EmulatorHandle, run_emulator
from airflow_claude_batches.governance.ids import job_key
from airflow_claude_batches.governance.policy import Governance
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.store import migrations
from airflow_claude_batches.store.database import LedgerDatabase, sqlite_url
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord

TEAMS = ["ads", "billing", "crm", "data", "eng", "fin", "growth", "legal", "ops", "support"]
FLOOD = "growth"
URGENT_TEAMS = ["billing", "ops", "support"]
NIGHTLY_TEAMS = ["data", "fin", "legal"]
LIMIT = 150_000
SHARE = 0.3
RESERVE = 10_000
DAY = timedelta(hours=24)
REPO = Path(__file__).resolve().parents[1]
PARAMS = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def policy(scheduled: bool) -> Governance:
    job_type = {
        "allowed_models": ["claude-haiku-4-5"],
        "allowed_fields": [],
        "max_tokens_cap": 16,
        "max_requests": 100_000,
        "max_bytes": 10**9,
        "max_job_cost_usd": 10**6,
    }
    nightly: dict[str, Any] = {**job_type, "teams": NIGHTLY_TEAMS}
    teams: dict[str, Any] = {team: {} for team in TEAMS}
    account: dict[str, Any] = {"queue_limit": LIMIT, "admission_poll_seconds": 60}
    if scheduled:
        nightly |= {"window": {"hours": "22:00-06:00", "time_zone": "Europe/Berlin"}, "exclusive": True}
        teams[FLOOD] = {"max_queue_share": SHARE}
        account["time_sensitive_reserve"] = RESERVE
    return Governance.model_validate(
        {
            "teams": teams,
            "job_types": {
                "alerts": {**job_type, "teams": URGENT_TEAMS, "time_sensitive": True},
                "hourly": job_type,
                "backfill": {**job_type, "teams": [FLOOD]},
                "nightly": nightly,
            },
            "account": account,
        }
    )


@dataclass(order=True)
class Job:
    at: float  # seconds into the day
    team: str = field(compare=False)
    job_type: str = field(compare=False)
    requests: int = field(compare=False)
    job_id: str = field(compare=False)
    entry: AdmissionEntry | None = field(default=None, compare=False)
    reason: str | None = field(default=None, compare=False)
    admitted_at: float | None = field(default=None, compare=False)
    failed: bool = field(default=False, compare=False)


def workload(seed: int = 13) -> list[Job]:
    rng = random.Random(seed)
    jobs: list[Job] = []

    def add(at: float, team: str, job_type: str, n: int) -> None:
        jobs.append(Job(at, team, job_type, n, f"{team}.{job_type}.{len(jobs)}"))

    for team in URGENT_TEAMS:
        at = rng.uniform(0, 600)
        while at < DAY.total_seconds():
            add(at, team, "alerts", rng.randint(100, 1000))
            at += rng.uniform(900, 1800)
    for team in TEAMS:
        minute = rng.uniform(0, 3600)
        for hour in range(24):
            add(hour * 3600 + minute, team, "hourly", rng.randint(300, 2000))
    for i in range(30):
        add(3 * 3600 + i * 10, FLOOD, "backfill", 8_000)
    for i, team in enumerate(NIGHTLY_TEAMS):
        add(12 * 3600 + i * 1800, team, "nightly", 100_000)
    return sorted(jobs)


def duration(requests: int) -> float:
    return 240 + 0.08 * requests


@dataclass
class Running:
    team: str
    requests: int
    ends: float


@dataclass
class Outcome:
    name: str
    jobs: list[Job]
    poll: float
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    peak: int = 0
    refused: int = 0
    largest_share: dict[str, float] = field(default_factory=dict)
    flood_share_while_others_wait: float = 0.0
    idle_share_s: float = 0.0


async def simulate(name: str, governance: Governance, emu: EmulatorHandle, poll: float, tmp: Path) -> Outcome:
    emu.reset()
    emu.configure(speed=0)
    emu.set_faults(queue_limit=LIMIT)
    emulator_now = datetime.fromisoformat(emu.stats()["now"].replace("Z", "+00:00"))
    start = datetime(emulator_now.year + 1, 1, 13, 6, tzinfo=timezone.utc)
    emu.advance((start - emulator_now).total_seconds())
    database = LedgerDatabase(sqlite_url(tmp / f"{name}.db"))  # tmp is on tmpfs where there is one
    migrations.upgrade(database)
    ledger = Ledger(database)
    queue = AdmissionQueue(ledger)
    hook = ClaudeBatchesHook()
    params = json.dumps(PARAMS)
    encoded = [f'{{"custom_id":"sim_job_{i:08d}","params":{params}}}' for i in range(100_000)]
    pending = workload()
    pending = [job for job in pending if job.at <= DAY.total_seconds()]
    outcome = Outcome(name, list(pending), poll)
    waiting: list[Job] = []
    running: dict[str, Running] = {}
    account = governance.account

    def holding(team: str) -> int:
        return sum(r.requests for r in running.values() if r.team == team)

    async def check(jobs: list[Job], t: float) -> None:
        """One poll of these jobs' admission, in line order, against one list of the API."""
        now = start + timedelta(seconds=t)
        listed = await list_batches(async_hook, now)
        for job in sorted(jobs, key=lambda j: j.entry.rank()):  # type: ignore[union-attr]
            assert job.entry is not None
            others = any(o.team != job.team and o.reason == "account_limit" for o in waiting)
            job.entry, decision = queue.admit(job.entry, listed, LIMIT, now)
            job.reason = decision.reason
            if decision.give_up:
                job.failed = True
            elif decision.admitted:
                if job.team == FLOOD and others:
                    share = (holding(FLOOD) + job.requests) / LIMIT
                    outcome.flood_share_while_others_wait = max(outcome.flood_share_while_others_wait, share)
                job.admitted_at = t
                batch_id = create(emu, hook, ledger, queue, job, decision, encoded)
                if batch_id is None:
                    outcome.refused += 1
                else:
                    running[batch_id] = Running(job.team, job.requests, t + duration(job.requests))

    grid = [i * poll for i in range(int(DAY.total_seconds() // poll) + 1)]
    moments = sorted([(t, None) for t in grid] + [(job.at, job) for job in pending], key=lambda m: m[0])
    clock = 0.0
    async with ClaudeBatchesHook() as async_hook:
        waited_for_room: set[str] = set()
        for t, arrival in moments:
            emu.advance(t - clock)
            clock = t
            now = start + timedelta(seconds=t)
            for batch_id in [b for b, r in running.items() if r.ends <= t]:
                ledger.update(batch_id, processing_status="ended", ended_at=now)
                del running[batch_id]
            if arrival is not None:  # the operator asks once at once, then defers
                team_policy, job_policy = governance.resolve(arrival.team, arrival.job_type)
                arrival.entry = new_entry(
                    team_policy,
                    job_policy,
                    account,
                    job_key=job_key(arrival.job_id),
                    job_id=arrival.job_id,
                    request_count=arrival.requests,
                    now=now,
                )
                waited_for_room.add(arrival.team)
                await check([arrival], t)
                if arrival.admitted_at is None and not arrival.failed:
                    waiting.append(arrival)
                continue
            waited_for_room |= {j.team for j in waiting if j.reason == "account_limit"}
            if waiting:  # every capacity trigger polls
                await check(waiting, t)
                waiting[:] = [j for j in waiting if j.admitted_at is None and not j.failed]
            by_team = {team: holding(team) for team in TEAMS}
            total = sum(by_team.values())
            outcome.samples.append((t, by_team))
            outcome.peak = max(outcome.peak, total)
            for team, n in by_team.items():
                outcome.largest_share[team] = max(outcome.largest_share.get(team, 0.0), n / LIMIT)
            for job in waiting:
                room = job.entry.usable_limit(LIMIT) - total  # type: ignore[union-attr]
                if job.reason == "team_share" and room >= job.requests and not waited_for_room - {job.team}:
                    outcome.idle_share_s += poll
                    break
            waited_for_room = set()
    return outcome


def create(
    emu: EmulatorHandle,
    hook: ClaudeBatchesHook,
    ledger: Ledger,
    queue: AdmissionQueue,
    job: Job,
    decision: AdmissionDecision,
    encoded: list[str],
) -> str | None:
    """Create the admitted job's batch as the operator does; None if the emulator refused it."""
    assert job.entry is not None
    emu.configure(processing_seconds=duration(job.requests))
    try:
        # The SDK's create with the body encoded once (its deep copy of 2 million requests takes minutes).
        body = '{"requests":[' + ",".join(encoded[: job.requests]) + "]}"
        batch = hook._client.post(
            "/v1/messages/batches",
            content=body.encode(),
            cast_to=MessageBatch,
            options={"headers": {"content-type": "application/json"}},
        )
    except Exception as e:  # the emulator's queue_limit: admission overshot
        print(f"REFUSED {job.job_id} ({decision.summary}): {e}")
        queue.remove(job.entry.entry_id)
        return None
    ledger.record_created(
        LedgerRecord(
            batch_id=batch.id,
            team=job.team,
            job_type=job.job_type,
            job_id=job.job_id,
            job_key=job_key(job.job_id),
            request_count=job.requests,
            processing_status=batch.processing_status,
            request_counts=batch.request_counts.model_dump(),
            created_at=batch.created_at,
            expires_at=batch.expires_at,
        ),
        batch_index=0,
        admission_entry=job.entry.entry_id,
    )
    queue.remove(job.entry.entry_id)
    return batch.id


def waits(jobs: list[Job], end: float) -> list[float]:
    return [(j.admitted_at if j.admitted_at is not None else end) - j.at for j in jobs]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def table(outcome: Outcome) -> list[str]:
    end = DAY.total_seconds()
    lines = [
        f"### {outcome.name}",
        "",
        "| team | job type | jobs | wait p50 | wait p95 | wait max | not admitted | largest share |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in outcome.jobs:
        groups.setdefault((job.team, job.job_type), []).append(job)
    for (team, job_type), jobs in sorted(groups.items()):
        w = waits(jobs, end)
        left = sum(1 for j in jobs if j.admitted_at is None)
        lines.append(
            f"| {team} | {job_type} | {len(jobs)} | {_min(statistics.median(w))} | {_min(p95(w))} | "
            f"{_min(max(w))} | {left} | {outcome.largest_share.get(team, 0):.0%} |"
        )
    lines += [
        "",
        f"peak in flight {outcome.peak:,} / limit {LIMIT:,}; creates refused by the API: {outcome.refused}; "
        f"growth's largest share through a job admitted while another team waited: "
        f"{outcome.flood_share_while_others_wait:.0%}; idle because of a share: {outcome.idle_share_s:.0f} s",
        "",
    ]
    return lines


def _min(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def draw(outcomes: list[Outcome], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(outcomes), 1, figsize=(12, 4.2 * len(outcomes)), sharex=True)
    colors = plt.get_cmap("tab10").colors
    for ax, outcome in zip(axes, outcomes, strict=True):
        hours = [6 + t / 3600 for t, _ in outcome.samples]
        stacks = [[by_team[team] / 1000 for _, by_team in outcome.samples] for team in TEAMS]
        ax.stackplot(hours, stacks, labels=TEAMS, colors=colors, step="post")
        ax.axhline(LIMIT / 1000, color="black", linewidth=1.5, label="queue limit")
        if outcome.name == "scheduled":
            usable = (LIMIT - RESERVE) / 1000
            ax.axhline(usable, color="black", linestyle="--", linewidth=1, label="less reserve")
            ax.axvspan(21, 29, color="grey", alpha=0.12, label="nightly window")
        ax.set_title(f"{outcome.name}: requests in flight by team (thousands)")
        ax.set_ylim(0, LIMIT / 1000 * 1.08)
        ax.set_ylabel("k requests")
        ax.legend(loc="upper left", ncol=7, fontsize=8)
    axes[-1].set_xlabel("hour of the day (UTC; 24-30 = next morning)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per API call otherwise
    logging.getLogger("alembic").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll", type=float, default=60.0, help="admission poll interval, seconds")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "output")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    outcomes = []
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # SQLite's fsync is not what is measured
    with tempfile.TemporaryDirectory(dir=shm) as tmp, run_emulator(speed=0) as emu:
        os.environ["AIRFLOW_CONN_ANTHROPIC_DEFAULT"] = json.dumps(
            {"conn_type": "anthropic", "host": emu.base_url, "password": emu.api_key}
        )
        for name, scheduled in (("plain", False), ("scheduled", True)):
            outcomes.append(asyncio.run(simulate(name, policy(scheduled), emu, args.poll, Path(tmp))))
    lines = [line for outcome in outcomes for line in table(outcome)]
    scheduled = outcomes[-1]
    urgent = waits([j for j in scheduled.jobs if j.job_type == "alerts"], DAY.total_seconds())
    result = (
        f"RESULT sim ts_wait_p95_s={p95(urgent):.0f} poll_s={args.poll:.0f} peak_in_flight={scheduled.peak} "
        f"limit={LIMIT} flood_share_while_others_wait={scheduled.flood_share_while_others_wait:.2f} "
        f"share_cap={SHARE} idle_share_s={scheduled.idle_share_s:.0f}"
    )
    text = "\n".join([*lines, result])
    print(text)
    (args.output / "scheduling_sim.md").write_text(text + "\n")
    picture = args.output / "scheduling_sim.png"
    draw(outcomes, picture)
    (REPO / "docs").mkdir(exist_ok=True)
    shutil.copy(picture, REPO / "docs" / "scheduling_sim.png")
    print(f"({time.perf_counter() - began:.0f} s; written to {args.output}, picture copied to docs/)")


if __name__ == "__main__":
    main()
