"""The ledger at scale: a submit's checks, the dashboard's queries and concurrent writers vs history size.

For N = 1,000 / 10,000 / 100,000 synthetic records (20 teams, 30 days: most ended at their actual
cost, the last hour's in flight, some created through a spend commitment, a few jobs committed but
not created yet), filled one transaction each through the public ``Ledger`` API, it times (median
of 5):

- a submit's budget and admission checks: :func:`~airflow_claude_batches.capacity.budget.commit_spend` for one
  team, then :meth:`~airflow_claude_batches.capacity.admission.AdmissionQueue.admit` against a list of ~50
  batches (what a submit does besides the HTTP list call);
- the dashboard's summary (:meth:`Ledger.team_totals`) and first page of batches (:meth:`Ledger.page`);
- the dashboard's flagged batches (:meth:`Ledger.flagged`) and its two charts' 30 days of data
  (:func:`~airflow_claude_batches.plugins.charts.chart_data`: daily spend and the status history's
  processing changes per team, both SQL aggregates);

then runs 10 writers (threads, then forked processes) that each change their own field of one record
30 times (``WRITERS`` of tests/unit/store/test_ledger.py) and counts the changes another writer undid.

Goals at 100,000 records: submit checks <= 0.05 s, summary + first page <= 0.3 s, no lost change.
The last line is ``RESULT records=… submit_checks_s=… summary_s=… batches_page_s=… flagged_s=…
charts_s=… lost_updates=…``
(SQLite, largest N). Usage::

    python benchmarks/ledger_scale.py [--postgres] [--records 1000 10000 100000] [--explain]

``--postgres`` (or ``LEDGER_BENCH_POSTGRES=1``) also runs on a throwaway PostgreSQL cluster;
``BENCH_QUICK=1`` runs N = 1,000 only; ``--explain`` prints the query plans of the timed reads.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import event

from airflow_claude_batches.capacity.admission import AdmissionEntry, AdmissionQueue, ListedBatches
from airflow_claude_batches.capacity.budget import commit_spend, release_spend
from airflow_claude_batches.governance.policy import TeamPolicy
from airflow_claude_batches.plugins.charts import chart_data
from airflow_claude_batches.plugins.dashboard_data import NEAR_CEILING, RESULTS_WARNING
from airflow_claude_batches.store import migrations
from airflow_claude_batches.store.database import LedgerDatabase, sqlite_url
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord

TESTS = Path(__file__).resolve().parents[1] / "tests"
TEAMS = [f"team{i:02d}" for i in range(1, 21)]
JOB_TYPES = ["enrichment", "classification", "summaries", "translation"]
DAYS = 30
BATCHES_PER_JOB = 3
IN_FLIGHT_FOR = timedelta(hours=1)  # batches created in the last hour are still processing
COMMITTED_EVERY = 20  # one job in 20 went through commit_spend + record_created
CHUNK = 1000  # records per put_many
LISTED = 50  # batches in the API's list at a submit
QUEUE_LIMIT = 10_000_000  # admitted every time: the decision's cost, not its outcome, is measured
REPEATS = 5
GOALS = {"submit_checks_s": 0.05, "summary_and_page_s": 0.3}


def _tests_on_path() -> None:
    """The harness (PostgresServer, the ledger fixtures, WRITERS) lives under tests/."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


# ------------------------------------------------------------------------------------------ the fill


@dataclass
class Filled:
    """What the fill left behind for the timed operations, and what it cost."""

    seconds: float
    single_writes: int  # transactions of one record: put, commit_spend, record_created
    single_seconds: float
    in_flight: list[LedgerRecord]
    recently_ended: list[str]
    some_batch: str


def synthetic(n: int, now: datetime, rng: random.Random) -> Iterator[tuple[int, LedgerRecord]]:
    """``(batch index in its job, record)`` of N batches created over the last 30 days, oldest first."""
    for k in range(n):
        job = k // BATCHES_PER_JOB
        created = now - timedelta(seconds=DAYS * 86400 * (1 - (k + rng.random()) / n))
        requests = rng.randint(100, 5000)
        estimate = round(requests * rng.uniform(0.0005, 0.004), 4)
        fields: dict[str, Any] = {
            "batch_id": f"msgbatch_bench{k:08d}",
            "team": TEAMS[job % len(TEAMS)],
            "job_type": JOB_TYPES[job % len(JOB_TYPES)],
            "job_id": f"Nightly job {job}",
            "job_key": f"nightly-job-{job:07d}",
            "dag_id": f"dag_{job % 97}",
            "task_id": "submit",
            "run_id": f"scheduled__{created:%Y-%m-%dT%H:%M:%S}",
            "try_number": 1,
            "request_count": requests,
            "first_index": (k % BATCHES_PER_JOB) * 5000,
            "created_at": created,
            "expires_at": created + timedelta(hours=24),
            "estimated_cost_usd": estimate,
        }
        if now - created < IN_FLIGHT_FOR:
            fields["request_counts"] = {"processing": requests, "succeeded": 0}
        else:
            ended = min(now, created + timedelta(hours=rng.uniform(0.2, 20)))
            fate = rng.random()
            errored = requests // 100 if fate < 0.9 else 0
            counts = (
                {"succeeded": requests - errored, "errored": errored}
                if fate < 0.98
                else {"canceled": requests}
                if fate < 0.995
                else {"expired": requests}
            )
            fields |= {
                "processing_status": "ended",
                "request_counts": counts,
                "ended_at": ended,
                "actual_cost_usd": round(estimate * rng.uniform(0.3, 0.8), 4),
                "results_uri": f"s3://results/{fields['team']}/{fields['job_key']}/{fields['batch_id']}",
                "consumed_at": ended + timedelta(minutes=5) if rng.random() < 0.8 else None,
                "archived_at": created + timedelta(days=29) if now - created > timedelta(days=29) else None,
            }
        yield k % BATCHES_PER_JOB, LedgerRecord.model_validate(fields)


def fill(ledger: Ledger, n: int, now: datetime) -> Filled:
    """
    Fill through the public API: most jobs with ``put_many`` (``CHUNK`` records a transaction), one
    job in 20 as a submit writes it (``commit_spend``, then ``record_created`` per batch), and 20 jobs
    committed but not created yet.
    """
    rng = random.Random(n)
    in_flight: list[str] = []
    ended: list[str] = []
    chunk: list[LedgerRecord] = []
    singles, single_seconds = 0, 0.0
    began = time.perf_counter()
    for index, record in synthetic(n, now, rng):
        (ended if record.processing_status == "ended" else in_flight).append(record.batch_id)
        if int(record.job_key.rsplit("-", 1)[1]) % COMMITTED_EVERY:
            chunk.append(record)
            if len(chunk) == CHUNK:
                ledger.put_many(chunk)
                chunk.clear()
            continue
        single = time.perf_counter()
        if index == 0:
            commit_spend(
                ledger,
                TeamPolicy(name=record.team),
                job_key=record.job_key,
                job_id=record.job_id,
                estimates=[(i, record.estimated_cost_usd or 0.0) for i in range(BATCHES_PER_JOB)],
                now=record.created_at,
            )
            singles += 1
        ledger.record_created(record, batch_index=index)
        singles += 1
        single_seconds += time.perf_counter() - single
    ledger.put_many(chunk)
    single = time.perf_counter()
    for team in TEAMS:
        commit_spend(
            ledger,
            TeamPolicy(name=team),
            job_key="waiting-job",
            job_id="Waiting job",
            estimates=[(0, 25.0)],
            now=now - timedelta(minutes=rng.uniform(1, 30)),
        )
    singles += len(TEAMS)
    single_seconds += time.perf_counter() - single
    seconds = time.perf_counter() - began
    recent = [ledger.get(batch_id) for batch_id in in_flight[-LISTED:]]
    return Filled(seconds, singles, single_seconds, recent, ended[-LISTED:], ended[0])


# ------------------------------------------------------------------------------------------- timings


def median_seconds(operation: Callable[[], object], cleanup: Callable[[], object] = lambda: None) -> float:
    """Median wall time of ``REPEATS`` runs; ``cleanup`` runs untimed after each."""
    times = []
    for _ in range(REPEATS):
        began = time.perf_counter()
        operation()
        times.append(time.perf_counter() - began)
        cleanup()
    return statistics.median(times)


def listed_batches(filled: Filled) -> ListedBatches:
    """~50 batches as the API lists them: the newest in flight (further on), some ended, 5 unmanaged."""
    unfinished = {r.batch_id: max(0, r.request_counts.processing - 10) for r in filled.in_flight[-40:]}
    unfinished |= {f"msgbatch_outside{i:03d}": 100 for i in range(5)}
    ended = set(filled.recently_ended[-(LISTED - len(unfinished)) :])
    return ListedBatches(unfinished=unfinished, ended=ended)


def submit_checks(ledger: Ledger, filled: Filled) -> tuple[Callable[[], object], Callable[[], object]]:
    """One submit's budget commit and admission attempt, and the cleanup that undoes both."""
    team = TeamPolicy(name="team07", daily_budget_usd=1e9, monthly_budget_usd=1e9)
    queue = AdmissionQueue(ledger)
    listed = listed_batches(filled)
    job_key = "bench-submit"

    def check() -> None:
        now = datetime.now(timezone.utc)
        commit_spend(ledger, team, job_key=job_key, job_id="Bench submit", estimates=[(0, 12.5)], now=now)
        entry = AdmissionEntry(
            entry_id=f"{team.name}_{job_key}",
            team=team.name,
            job_id="Bench submit",
            job_type="enrichment",
            request_count=2000,
            enqueued_at=now,
            heartbeat_at=now,
            deadline_at=now + timedelta(hours=1),
        )
        _, decision = queue.admit(entry, listed, QUEUE_LIMIT, now)
        assert decision.admitted, decision.summary

    def undo() -> None:
        release_spend(ledger, team.name, job_key)
        queue.remove(f"{team.name}_{job_key}")

    return check, undo


# ------------------------------------------------------------------------------- concurrent writers


def _writer(database: LedgerDatabase, batch_id: str, field: str) -> int:
    """Write ``field`` ROUNDS times; before each write and at the end, count whether the last one survived."""
    from unit.store.test_ledger import ROUNDS, WRITERS

    ledger, lost = Ledger(database), 0
    for i in range(1, ROUNDS + 2):
        if i > 1 and getattr(ledger.get(batch_id), field) != WRITERS[field](i - 1):
            lost += 1  # only this writer writes this field: someone else's write undid ours
        if i <= ROUNDS:
            ledger.update(batch_id, **{field: WRITERS[field](i)})
    return lost


def _process_writer(database: LedgerDatabase, batch_id: str, field: str, results: Any) -> None:
    results.put(_writer(database, batch_id, field))


def lost_changes(database: LedgerDatabase, batch_id: str) -> tuple[int, int]:
    """Changes lost by 10 concurrent writers of one record: (threads, forked processes)."""
    from unit.store.test_ledger import WRITERS

    counts: list[int] = []
    threads = [
        threading.Thread(target=lambda f=f: counts.append(_writer(database, batch_id, f))) for f in WRITERS
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(counts) != len(WRITERS):
        raise RuntimeError(f"{len(WRITERS) - len(counts)} writer thread(s) failed")

    context = multiprocessing.get_context("fork")  # a forked child gets fresh connections
    results = context.Queue()
    processes = [
        context.Process(target=_process_writer, args=(database, batch_id, f, results)) for f in WRITERS
    ]
    for process in processes:
        process.start()
    lost = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(60)
    if [p.exitcode for p in processes] != [0] * len(processes):
        raise RuntimeError(f"writer processes exited with {[p.exitcode for p in processes]}")
    return sum(counts), sum(lost)


# ------------------------------------------------------------------------------------ query plans


@contextmanager
def captured_selects(database: LedgerDatabase) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT statements (with their parameters) the database runs meanwhile."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "cb_" in statement:
            statements.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(database.engine, "before_cursor_execute", capture)


def explain(database: LedgerDatabase, label: str, operation: Callable[[], object]) -> None:
    """Print the plan of each SELECT that ``operation`` runs (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE)."""
    with captured_selects(database) as statements:
        operation()
    prefix = "EXPLAIN QUERY PLAN " if database.is_sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
    print(f"--- plans: {label}")
    seen = set()
    with database.engine.connect() as conn:
        for statement, parameters in statements:
            if statement in seen:
                continue
            seen.add(statement)
            print("  " + " ".join(statement.split())[:200])
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
            for row in rows:
                print("      " + (str(row[-1])))
        conn.rollback()


# ---------------------------------------------------------------------------------------- one run


@dataclass
class Row:
    backend: str
    records: int
    fill_s: float
    single_writes_per_s: float
    submit_checks_s: float
    summary_s: float
    batches_page_s: float
    flagged_s: float
    charts_s: float
    lost_threads: int
    lost_processes: int

    @property
    def lost_updates(self) -> int:
        return self.lost_threads + self.lost_processes


def run(backend: str, database: LedgerDatabase, n: int, *, show_plans: bool) -> Row:
    ledger = Ledger(database)
    now = datetime.now(timezone.utc)
    filled = fill(ledger, n, now)
    check, undo = submit_checks(ledger, filled)
    operations: dict[str, Callable[[], object]] = {
        "submit checks": check,
        "summary": lambda: ledger.team_totals(datetime.now(timezone.utc)),
        "first page": lambda: ledger.page(1),
        "flagged": lambda: ledger.flagged(
            running_before=now - NEAR_CEILING, results_expire_before=now + RESULTS_WARNING
        ),
        "charts": lambda: chart_data(ledger, None, datetime.now(timezone.utc), None),
    }
    if show_plans:
        for label, operation in operations.items():
            explain(database, f"{backend}, {n:,} records, {label}", operation)
            undo()
    submit = median_seconds(check, undo)
    summary = median_seconds(operations["summary"])
    page = median_seconds(operations["first page"])
    flagged = median_seconds(operations["flagged"])
    charts = median_seconds(operations["charts"])
    threads, processes = lost_changes(database, filled.some_batch)
    single_rate = filled.single_writes / filled.single_seconds
    row = Row(
        backend, n, filled.seconds, single_rate, submit, summary, page, flagged, charts, threads, processes
    )
    print_row(row)
    return row


HEADER = (
    f"{'backend':<10} {'records':>9} {'fill s':>8} {'fill/s':>7} {'1-tx/s':>7} {'submit s':>9} "
    f"{'summary s':>10} {'page s':>8} {'flagged s':>10} {'charts s':>9} {'lost thr':>9} {'lost proc':>10}"
)


def print_row(row: Row) -> None:
    print(
        f"{row.backend:<10} {row.records:>9,} {row.fill_s:>8.1f} {row.records / row.fill_s:>7.0f} "
        f"{row.single_writes_per_s:>7.0f} "
        f"{row.submit_checks_s:>9.4f} {row.summary_s:>10.4f} {row.batches_page_s:>8.4f} "
        f"{row.flagged_s:>10.4f} {row.charts_s:>9.4f} "
        f"{row.lost_threads:>9} {row.lost_processes:>10}",
        flush=True,
    )


@contextmanager
def sqlite_databases() -> Iterator[Callable[[], LedgerDatabase]]:
    with tempfile.TemporaryDirectory(prefix="acb-ledger-bench-") as folder:
        count = iter(range(1_000))

        def new() -> LedgerDatabase:
            database = LedgerDatabase(sqlite_url(Path(folder) / f"ledger-{next(count)}.db"))
            migrations.upgrade(database)
            return database

        yield new


@contextmanager
def postgres_databases() -> Iterator[Callable[[], LedgerDatabase]]:
    _tests_on_path()
    from integration.airflow_cluster import PostgresServer
    from ledger_databases import postgres_database

    server = PostgresServer(Path(tempfile.mkdtemp(prefix="acb-ledger-bench-pg-")))
    server.start()
    try:
        yield lambda: postgres_database(server)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument(
        "--postgres", action="store_true", default=os.environ.get("LEDGER_BENCH_POSTGRES") == "1"
    )
    parser.add_argument("--explain", action="store_true", help="print the timed reads' query plans")
    args = parser.parse_args()
    sizes = [1_000] if os.environ.get("BENCH_QUICK") == "1" else sorted(args.records)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one "Running upgrade" per database
    _tests_on_path()

    backends: list[tuple[str, Callable[[], Any]]] = [("sqlite", sqlite_databases)]
    if args.postgres:
        backends.append(("postgresql", postgres_databases))
    rows: list[Row] = []
    print(HEADER, flush=True)
    for backend, databases in backends:
        with databases() as new_database:
            for n in sizes:
                rows.append(run(backend, new_database(), n, show_plans=args.explain and n == sizes[-1]))

    print("\n" + HEADER)
    for row in rows:
        print_row(row)
    for row in rows:
        if row.records != sizes[-1]:
            continue
        misses = [
            f"{name} {value:.3f} s > {GOALS[name]} s"
            for name, value in (
                ("submit_checks_s", row.submit_checks_s),
                ("summary_and_page_s", row.summary_s + row.batches_page_s),
            )
            if value > GOALS[name]
        ] + ([f"{row.lost_updates} lost update(s)"] if row.lost_updates else [])
        print(f"goals at {row.records:,} records on {row.backend}: {'; '.join(misses) or 'all met'}")
    result = next(r for r in rows if r.backend == "sqlite" and r.records == sizes[-1])
    print(
        f"RESULT records={result.records} submit_checks_s={result.submit_checks_s:.4f} "
        f"summary_s={result.summary_s:.4f} batches_page_s={result.batches_page_s:.4f} "
        f"flagged_s={result.flagged_s:.4f} charts_s={result.charts_s:.4f} lost_updates={result.lost_updates}"
    )


if __name__ == "__main__":
    main()
