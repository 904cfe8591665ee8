"""The worker's cost of submitting one 100,000-request job, as ratios to plain ``json.dumps``.

Planning (read, validate against the policy, mint ids, estimate spend, size and split) and the
SDK's create against the local emulator, each timed in the same run as the ``json.dumps`` of the
same requests, with this process's peak RSS (``VmHWM``) after each step. Linux only. Usage::

    python benchmarks/submit_path.py [--requests 100000] [--request-bytes 2350]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from _workload import parse_args, request_params

from airflow_claude_batches.emulator import run_emulator
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.job import iter_records, plan_job
from airflow_claude_batches.policy import load_policy

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


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmHWM")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    records = [{"key": f"r{i}", "params": params} for i, params in enumerate(request_params(args))]
    print(f"{args.requests} requests built; peak RSS {_peak_mb():.0f} MB")

    began = time.perf_counter()
    body = json.dumps(records)
    dumps = time.perf_counter() - began
    print(
        f"json.dumps: {dumps:.2f} s for {len(body) / 1e6:.0f} MB (the unit below); "
        f"peak RSS {_peak_mb():.0f} MB"
    )
    del body

    with tempfile.TemporaryDirectory() as tmp:
        policy_path = Path(tmp) / "policy.yaml"
        policy_path.write_text(POLICY)
        governance = load_policy(str(policy_path))
        began = time.perf_counter()
        plan = plan_job(
            iter_records(records), governance=governance, team="bench", job_type="bulk", job_id="bench-job"
        )
        planning = time.perf_counter() - began
        print(
            f"plan_job: {planning:.2f} s = {planning / dumps:.1f}x json.dumps; "
            f"{len(plan.batches)} batch(es), estimate ${plan.estimated_cost_usd:.2f}; "
            f"peak RSS {_peak_mb():.0f} MB"
        )

        with run_emulator() as emu:
            os.environ["AIRFLOW_CONN_ANTHROPIC_DEFAULT"] = json.dumps(
                {"conn_type": "anthropic", "host": emu.base_url, "password": emu.api_key}
            )
            hook = ClaudeBatchesHook()
            began = time.perf_counter()
            for batch in plan.batches:
                hook.create_batch(batch.requests)
            create = time.perf_counter() - began
            print(
                f"create (SDK -> emulator): {create:.2f} s = {create / dumps:.1f}x json.dumps; "
                f"peak RSS {_peak_mb():.0f} MB"
            )


if __name__ == "__main__":
    main()
