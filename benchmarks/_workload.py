"""The synthetic job the benchmarks share: N requests of about B bytes each (default 100,000 x 2.35 KB)."""

from __future__ import annotations

import argparse
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
