"""
P1: the worker's cost of submitting one job (default 100,000 requests of ~2.35 KB, a 235 MB body).

Two variants, each in its own process after building the same records: ``json.dumps`` of the job
(the unit), and ours: ``plan_job`` (read, validate against the policy, mint ids, estimate spend,
serialize each request once into the create body) plus ``create_batch_body`` to the local stub API
(which only reads the body). Measures CPU seconds and memory growth (peak RSS minus RSS once the
records exist) against the body size. Usage::

    python benchmarks/submit_path.py [--requests 100000] [--request-bytes 2350]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _workload import (
    alternate,
    anthropic_conn,
    peak_rss_mb,
    report,
    request_params,
    result,
    rss_mb,
    run_child,
    scaled,
    stub_api,
    table,
)

VARIANTS = ("json_dumps", "ours")
POLICY = """
teams:
  bench: {}
job_types:
  bulk:
    allowed_models: [claude-haiku-4-5]
    allowed_fields: []
    max_tokens_cap: 1024
    max_requests: 1000000
    max_bytes: 2000000000
    max_job_cost_usd: 100000
"""


def child(variant: str, args: argparse.Namespace) -> None:
    from airflow_claude_batches.governance.policy import load_policy
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
    from airflow_claude_batches.jobs.plan import iter_records, plan_job

    records = [{"key": f"r{i}", "params": params} for i, params in enumerate(request_params(args))]
    policy = Path(args.home) / "policy.yaml"
    policy.write_text(POLICY)
    governance = load_policy(str(policy))
    hook = ClaudeBatchesHook()
    hook.conn  # noqa: B018 (build the client before measuring)
    before = max(rss_mb(), peak_rss_mb())
    cpu, wall = time.process_time(), time.perf_counter()
    if variant == "json_dumps":
        body_mb = len(json.dumps(records)) / 1e6  # a str: ASCII here, so its length is its bytes
    else:
        plan = plan_job(
            iter_records(records), governance=governance, team="bench", job_type="bulk", job_id="bench-job"
        )
        body_mb = sum(len(b.body) for b in plan.batches) / 1e6
        for batch in plan.batches:
            hook.create_batch_body(batch.body)
    report(
        cpu_s=time.process_time() - cpu,
        wall_s=time.perf_counter() - wall,
        rss_growth_mb=peak_rss_mb() - before,
        body_mb=body_mb,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=scaled(100_000))
    parser.add_argument("--request-bytes", type=int, default=2350)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    with tempfile.TemporaryDirectory(prefix="acb-p1-") as home, stub_api() as base_url:
        os.environ.update(
            {"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **anthropic_conn(base_url)}
        )
        sizes = ["--requests", str(args.requests), "--request-bytes", str(args.request_bytes), "--home", home]
        medians = alternate(VARIANTS, lambda v: run_child("submit_path.py", v, *sizes))
    for values in medians.values():
        values["rss_growth_per_body"] = values["rss_growth_mb"] / medians["ours"]["body_mb"]
    print(f"P1 submit: {args.requests:,} requests, {medians['ours']['body_mb']:.0f} MB body")
    table(medians, ["cpu_s", "wall_s", "rss_growth_mb", "rss_growth_per_body"], unit="json_dumps")
    ours, dumps = medians["ours"], medians["json_dumps"]
    result(
        "submit",
        cpu_vs_json_dumps=ours["cpu_s"] / dumps["cpu_s"],
        wall_vs_json_dumps=ours["wall_s"] / dumps["wall_s"],
        rss_growth_per_body=ours["rss_growth_per_body"],
    )


if __name__ == "__main__":
    main()
