"""What the benchmarks share: the synthetic job (N requests of about B bytes, default 100,000 x 2.35 KB),
the local stub API, child processes, medians of alternating runs, the ratio table and RESULT line."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--request-bytes", type=int, default=2350)
    return parser.parse_args()


def request_params(args: argparse.Namespace, model: str = "claude-haiku-4-5") -> list[dict[str, Any]]:
    """Messages ``params`` of every request of the job, each about ``--request-bytes`` long."""
    filler = "lorem ipsum dolor sit amet " * (args.request_bytes // 27)
    return [
        {
            "model": model,
            "max_tokens": 256,
            "messages": [{"role": "user", "content": f"{i} {filler[: args.request_bytes - 160]}"}],
        }
        for i in range(args.requests)
    ]


#: Result types per 100 lines of a synthetic batch's results.
RESULT_TYPES = ["succeeded"] * 90 + ["errored"] * 6 + ["canceled"] * 2 + ["expired"] * 2


def result_entry(team: str, job_id: str, index: int, text: str) -> dict[str, Any]:
    """One result line as the API sends it (its type from :data:`RESULT_TYPES`); ``text`` is the answer."""
    from airflow_claude_batches.governance.ids import namespaced_id

    result_type = RESULT_TYPES[index % len(RESULT_TYPES)]
    body: dict[str, Any] = {"type": result_type}
    if result_type == "succeeded":
        body["message"] = {
            "id": f"msg_{index:012d}",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 900, "output_tokens": 300, "cache_read_input_tokens": 0},
        }
    elif result_type == "errored":
        body["error"] = {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
            "request_id": f"req_{index:012d}",
        }
    return {"custom_id": namespaced_id(team, job_id, index), "result": body}


# --- shared by the P1-P3 benchmarks: scale, subprocess runs, medians, the table and RESULT line ---

HERE = Path(__file__).resolve().parent
#: ``BENCH_SCALE=0.1 bash scripts/bench`` runs every benchmark on a tenth of its default size.
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def report(**values: float | str) -> None:
    """A child's last stdout line: its measurements as JSON."""
    print(json.dumps(values), flush=True)


def run_child(script: str, variant: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``script --child VARIANT ARGS`` in a fresh process; its last stdout line is its measurements."""
    command = [sys.executable, str(HERE / script), "--child", variant, *args]
    out = subprocess.run(
        command, check=False, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if out.returncode:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def alternate(variants: Sequence[str], once: Callable[[str], dict]) -> dict[str, dict[str, float]]:
    """Each variant ``ROUNDS`` times, alternating (A B C A B C ...); the median of each measure."""
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(ROUNDS):
        for variant in variants:
            runs[variant].append(once(variant))
    return {
        v: {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], int | float)}
        for v, rs in runs.items()
    }


def table(medians: dict[str, dict[str, float]], columns: Sequence[str], unit: str) -> None:
    """Print the medians and each one's ratio to ``unit``'s (the anchor the goals are stated against)."""
    print(f"median of {ROUNDS}; ratio = variant / {unit}")
    print(f"{'variant':<14}" + "".join(f"{c:>22}" for c in columns))
    for variant, values in medians.items():
        cells = []
        for c in columns:
            base = medians[unit].get(c) or float("nan")
            cells.append(f"{values[c]:>12.3f} ({values[c] / base:5.2f}x)")
        print(f"{variant:<14}" + "".join(f"{cell:>22}" for cell in cells))


def result(name: str, **values: float) -> None:
    print(f"RESULT {name} " + " ".join(f"{k}={v:.3f}" for k, v in values.items()), flush=True)


@contextmanager
def stub_api(results: str | None = None, ends_after: int = 3) -> Iterator[str]:
    """The local stub API (``_stub_api.py``) in its own process; yields its base URL."""
    command = [sys.executable, str(HERE / "_stub_api.py"), "--ends-after", str(ends_after)]
    if results:
        command += ["--results", results]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"stub API did not start: {line!r}")
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def anthropic_conn(base_url: str) -> dict[str, str]:
    """Environment that makes ``anthropic_default`` point at ``base_url``."""
    return {
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT": json.dumps(
            {"conn_type": "anthropic", "host": base_url, "password": "sk-bench"}
        )
    }
