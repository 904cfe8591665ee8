"""
Is ``write_results`` memory-flat? Stream N synthetic result lines into the store and compare peak RSS.

Each size runs in a fresh process (peak RSS is per process); the report gives the peak of a small run,
of the large run, their ratio (flat means close to 1.0), and throughput::

    .venv/bin/python benchmarks/results_memory.py                 # file:// store in a temp dir
    .venv/bin/python benchmarks/results_memory.py --s3            # against a local moto_server
    .venv/bin/python benchmarks/results_memory.py --large 500000  # bigger
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _workload import result_entry

REPO = Path(__file__).resolve().parents[1]
TEAM, JOB_ID = "marketing", "benchmark-job"


def synthetic_lines(count: int) -> Iterator[str]:
    """Result lines as the API sends them, about 1.3 KB for a succeeded one; made lazily."""
    text = "lorem ipsum dolor sit amet " * 40
    for index in range(count):
        yield json.dumps(result_entry(TEAM, JOB_ID, index, text))


def child(lines: int, root: str, conn_id: str | None) -> None:
    from airflow_claude_batches.governance.ids import job_key
    from airflow_claude_batches.store.paths import batch_dir, store_root
    from airflow_claude_batches.store.results import write_results

    key = job_key(JOB_ID)
    dest = batch_dir(store_root(root, conn_id), TEAM, key, f"msgbatch_bench{lines}")
    dest.parent.mkdir(parents=True, exist_ok=True)  # warm up imports and the connection first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    manifest = write_results(
        synthetic_lines(lines),
        dest,
        team=TEAM,
        job_id=JOB_ID,
        job_key=key,
        job_type="enrichment",
        batch_id=f"msgbatch_bench{lines}",
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {
        "lines": lines,
        "bytes": sum(manifest.sizes.values()),
        "seconds": round(seconds, 2),
        "rss_before_mb": round(before / 1024, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "counts": manifest.counts,
        "actual_cost_usd": manifest.actual_cost_usd,
    }
    print(json.dumps(report))


def run(lines: int, root: str, conn_id: str | None) -> dict:
    command = [sys.executable, __file__, "--child", str(lines), "--root", root]
    if conn_id:
        command += ["--conn-id", conn_id]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--s3", action="store_true", help="write to a local moto_server instead of file://")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--conn-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.root, args.conn_id)
        return

    with tempfile.TemporaryDirectory(prefix="acb-bench-") as home:
        os.environ.setdefault("AIRFLOW_HOME", home)
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        if args.s3:
            sys.path.insert(0, str(REPO))
            from tests.s3_server import run_s3_server

            with run_s3_server() as server:
                reports = [run(n, server.root_uri("bench"), server.conn_id) for n in (args.small, args.large)]
        else:
            reports = [run(n, f"file://{home}/store", None) for n in (args.small, args.large)]

    small, large = reports
    for report in reports:
        mb = report["bytes"] / 2**20
        print(
            f"{report['lines']:>9,} lines {mb:8.1f} MB  {report['seconds']:6.2f} s  "
            f"{mb / report['seconds']:6.1f} MB/s  peak RSS {report['peak_rss_mb']:7.1f} MB "
            f"(before write {report['rss_before_mb']:.1f} MB)"
        )
    print(f"peak RSS ratio large/small: {large['peak_rss_mb'] / small['peak_rss_mb']:.3f}")
    print(
        f"growth during write: small +{small['peak_rss_mb'] - small['rss_before_mb']:.1f} MB, "
        f"large +{large['peak_rss_mb'] - large['rss_before_mb']:.1f} MB"
    )


if __name__ == "__main__":
    main()
