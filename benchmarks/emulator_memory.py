"""Peak memory of the emulator holding a 100,000-request batch (~2.35 KB a request, ~235 MB body).

Starts the emulator, creates the batch through the official SDK, ends it with the virtual clock,
streams the results through the SDK and prints the emulator process's peak RSS (``VmHWM`` from
``/proc/PID/status``) after each step, plus timings. Linux only. Usage::

    python benchmarks/emulator_memory.py [--requests 100000] [--request-bytes 2350]
"""

from __future__ import annotations

import time
from pathlib import Path

import anthropic
from _workload import parse_args, request_params

from airflow_claude_batches.emulator import run_emulator


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def _memory(pid: int) -> str:
    return f"emulator VmRSS {_mb(_status_kb(pid, 'VmRSS'))}, peak VmHWM {_mb(_status_kb(pid, 'VmHWM'))}"


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    requests = [
        {"custom_id": f"bench_job-2026-06-06_{i:08d}", "params": params}
        for i, params in enumerate(request_params(args, model="claude-sonnet-4-5"))
    ]
    with run_emulator(processing_seconds=1.0) as emu:
        assert emu.pid is not None
        pid = emu.pid
        print(f"idle (pid {pid}): {_memory(pid)}")
        client = anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key, timeout=600, max_retries=0)

        started = time.perf_counter()
        raw = client.messages.batches.with_raw_response.create(requests=requests)
        batch = raw.parse()
        body_mb = int(raw.http_request.headers["content-length"]) / 1e6
        print(
            f"create: {args.requests} requests, body {body_mb:.0f} MB, "
            f"{time.perf_counter() - started:.1f} s; {_memory(pid)}"
        )
        del requests, raw
        emu.advance(2)
        assert client.messages.batches.retrieve(batch.id).processing_status == "ended"

        started = time.perf_counter()
        lines = out_tokens = 0
        for line in client.messages.batches.results(batch.id):
            lines += 1
            if line.result.type == "succeeded":
                out_tokens += line.result.message.usage.output_tokens
        assert lines == args.requests, lines
        print(
            f"results: {lines} lines ({out_tokens} output tokens) streamed in "
            f"{time.perf_counter() - started:.1f} s; {_memory(pid)}"
        )


if __name__ == "__main__":
    main()
