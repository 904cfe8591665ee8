"""
P2: downloading one batch's results into the store (default 100,000 lines, ~235 MB).

Three variants, each in its own process, reading the same JSONL file from the local stub API:
ours (``ClaudeBatchesHook.iter_result_lines`` into ``write_results`` on a ``file://`` store), the
SDK's raw byte stream (``with_streaming_response.results`` read and dropped) and ``curl`` to
``/dev/null``. Measures throughput (MB/s of wall time), CPU seconds per 100 MB and memory growth
while streaming (peak RSS minus RSS before; curl: its whole peak RSS). Usage::

    python benchmarks/results_path.py [--lines 100000] [--line-bytes 2350]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from _workload import (
    alternate,
    anthropic_conn,
    peak_rss_mb,
    report,
    result,
    result_entry,
    rss_mb,
    run_child,
    scaled,
    stub_api,
    table,
)

VARIANTS = ("ours", "sdk_raw", "curl")
TEAM, JOB_ID, BATCH_ID = "bench", "bench-job", "msgbatch_results"


def write_results_file(path: Path, lines: int, line_bytes: int) -> int:
    """Result lines as the API sends them, ``line_bytes`` long for a succeeded one."""
    # line_bytes is the average: succeeded lines (90%) carry the text, the others are ~250 bytes.
    succeeded_bytes = (line_bytes * 100 - 10 * 250) // 90
    text = ("lorem ipsum dolor sit amet " * (succeeded_bytes // 27 + 1))[: max(0, succeeded_bytes - 330)]
    with path.open("wb") as out:
        for index in range(lines):
            entry = result_entry(TEAM, JOB_ID, index, text)
            out.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
    return path.stat().st_size


def child(variant: str, base_url: str, store: str) -> None:
    if variant == "curl":
        url = f"{base_url}/v1/messages/batches/{BATCH_ID}/results"
        wall = time.perf_counter()
        subprocess.run(["curl", "-sSf", "-o", "/dev/null", "-H", "x-api-key: sk-bench", url], check=True)
        wall = time.perf_counter() - wall
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        report(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, rss_growth_mb=usage.ru_maxrss / 1024)
        return
    from airflow_claude_batches.governance.ids import job_key
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
    from airflow_claude_batches.store.paths import batch_dir, store_root
    from airflow_claude_batches.store.results import write_results

    hook = ClaudeBatchesHook()
    client = hook.conn  # build the client before measuring
    dest = batch_dir(store_root(store), TEAM, job_key(JOB_ID), BATCH_ID)
    # Warm up the store (its filesystem, imports) on another batch, as a worker that stored before.
    line = json.dumps({"custom_id": f"{TEAM}_{JOB_ID}_00000000", "result": {"type": "expired"}})
    write_results(
        [line],
        dest.parent / "msgbatch_warmup",
        team=TEAM,
        job_id=JOB_ID,
        job_key=job_key(JOB_ID),
        job_type="bulk",
        batch_id="msgbatch_warmup",
    )
    before = rss_mb()
    cpu, wall = time.process_time(), time.perf_counter()
    if variant == "ours":
        write_results(
            hook.iter_result_lines(BATCH_ID),
            dest,
            team=TEAM,
            job_id=JOB_ID,
            job_key=job_key(JOB_ID),
            job_type="bulk",
            batch_id=BATCH_ID,
        )
    else:
        with client.messages.batches.with_streaming_response.results(BATCH_ID) as response:
            for _ in response.iter_bytes():
                pass
    report(
        wall_s=time.perf_counter() - wall,
        cpu_s=time.process_time() - cpu,
        rss_growth_mb=peak_rss_mb() - before,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--lines", type=int, default=scaled(100_000))
    parser.add_argument("--line-bytes", type=int, default=2350)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.base_url, args.store)
        return
    with tempfile.TemporaryDirectory(prefix="acb-p2-") as home:
        os.environ.update({"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
        source = Path(home) / "results.jsonl"
        size_mb = write_results_file(source, args.lines, args.line_bytes) / 1e6
        with stub_api(results=str(source)) as base_url:
            os.environ.update(anthropic_conn(base_url))
            medians = alternate(
                VARIANTS,
                lambda v: run_child(
                    "results_path.py", v, "--base-url", base_url, "--store", f"file://{home}/store"
                ),
            )
    for values in medians.values():
        values["mb_per_s"] = size_mb / values["wall_s"]
        values["cpu_s_per_100mb"] = values["cpu_s"] * 100 / size_mb
    print(f"P2 results: {args.lines:,} lines, {size_mb:.0f} MB, file:// store")
    table(medians, ["mb_per_s", "cpu_s_per_100mb", "rss_growth_mb"], unit="sdk_raw")
    ours, raw = medians["ours"], medians["sdk_raw"]
    result(
        "results",
        mb_per_s=ours["mb_per_s"],
        cpu_vs_sdk_raw=ours["cpu_s_per_100mb"] / raw["cpu_s_per_100mb"],
        rss_growth_mb=ours["rss_growth_mb"],
        mb_per_s_vs_curl=ours["mb_per_s"] / medians["curl"]["mb_per_s"],
    )


if __name__ == "__main__":
    main()
