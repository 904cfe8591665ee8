"""
What each job did, from the ledger: counts, actual against estimated cost, where the results are,
then a few of them read back with ``read_results``. Run by scripts/demo and scripts/dev with the
environment they set (the configured ledger and results root).

    python scripts/job_report.py [--since ISO_TIME] [--show N]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import posixpath
from collections import defaultdict
from datetime import datetime

from airflow_claude_batches.store.ledger import Ledger, LedgerRecord
from airflow_claude_batches.store.paths import store_root
from airflow_claude_batches.store.results import read_results


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _job_uri(batches: list[LedgerRecord]) -> str | None:
    """The job's folder: its batches' results folders share it (read_results reads all of them)."""
    uris = [b.results_uri for b in batches if b.results_uri]
    return posixpath.dirname(uris[0].rstrip("/")) if uris else None


def report(since: datetime | None, show: int) -> None:
    jobs: dict[tuple[str, str, str], list[LedgerRecord]] = defaultdict(list)
    for record in Ledger().records(since=since):
        jobs[(record.team, record.job_type, record.job_id)].append(record)
    if not jobs:
        print("The ledger holds no batch yet.")
        return
    for (team, job_type, job_id), batches in jobs.items():
        total = sum(b.request_count for b in batches)
        counts = {
            kind: sum(getattr(b.request_counts, kind) for b in batches)
            for kind in ("succeeded", "errored", "canceled", "expired", "processing")
        }
        estimated = sum(b.estimated_cost_usd or 0 for b in batches)
        actual = (
            None
            if any(b.actual_cost_usd is None for b in batches)
            else sum(b.actual_cost_usd or 0 for b in batches)
        )
        share = f" ({actual / estimated:.0%} of the upper bound)" if actual is not None and estimated else ""
        status = ", ".join(f"{b.batch_id} {b.processing_status}" for b in batches)
        uri = _job_uri(batches)
        print(f"\n{team} / {job_type} / job {job_id!r}  (DAG {batches[0].dag_id or '-'})")
        print(f"  batches:  {status}")
        parts = ", ".join(f"{n:,} {kind}" for kind, n in counts.items() if n)
        print(f"  requests: {total:,} ({parts})")
        print(f"  cost:     actual {_usd(actual)}, estimated {_usd(estimated)}{share}")
        print(f"  results:  {uri or 'not stored yet'}")
        if uri and show:
            for record in itertools.islice(read_results(store_root(uri), types=["succeeded"]), show):
                text = record.result["message"]["content"][0].get("text", "")
                print(f"    #{record.index} key={record.key!r}: {' '.join(text.split())[:70]!r}")


def main() -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the ledger's schema check, not news here
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--since", type=datetime.fromisoformat, help="only batches created since (ISO)")
    parser.add_argument("--show", type=int, default=2, help="succeeded results to print per job")
    args = parser.parse_args()
    report(args.since, args.show)


if __name__ == "__main__":
    main()
