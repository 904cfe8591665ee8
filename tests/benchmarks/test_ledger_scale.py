"""The ledger benchmark still runs: its quick mode (1,000 records, SQLite) ends with a parsable RESULT line.

The numbers are the benchmark's business (no timing assertions here); what must hold at any size is
that no concurrent change was lost.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "ledger_scale.py"
RESULT = re.compile(
    r"RESULT records=(?P<records>\d+) submit_checks_s=(?P<submit>[0-9.]+) summary_s=(?P<summary>[0-9.]+) "
    r"batches_page_s=(?P<page>[0-9.]+) flagged_s=(?P<flagged>[0-9.]+) charts_s=(?P<charts>[0-9.]+) "
    r"lost_updates=(?P<lost>\d+)"
)


def test_quick_mode_ends_with_a_result_line_and_loses_no_update():
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_BENCH_POSTGRES"} | {"BENCH_QUICK": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARK)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = RESULT.fullmatch(lines[-1])
    assert result, f"last line is not a RESULT line: {lines[-1]!r}"
    assert [line for line in lines if line.startswith("RESULT")] == [lines[-1]]
    assert int(result["records"]) == 1000
    assert int(result["lost"]) == 0
    assert all(float(result[name]) > 0 for name in ("submit", "summary", "page", "flagged", "charts"))
    table = [line.split() for line in lines if line.startswith("sqlite")]
    assert table and all(row[1] == "1,000" for row in table)
    assert not any(line.startswith("postgresql") for line in lines)
