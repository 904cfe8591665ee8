"""The ``run_emulator`` context manager, the control routes and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import anthropic
import pytest

from airflow_claude_batches.emulator import run_emulator

from .conftest import make_requests


def test_process_runs_for_the_block_and_stops_after():
    with run_emulator(processing_seconds=7, speed=2) as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert emu.health()
        assert emu.stats()["settings"] == {"processing_seconds": 7.0, "cancel_seconds": 0.5, "speed": 2.0}
        pid = emu.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_start_up_failure_is_reported():
    with (
        pytest.raises(RuntimeError, match=r"did not start|exited during start-up"),
        run_emulator(host="203.0.113.1"),
    ):
        pass


def test_stats_count_calls_per_route_and_reset_clears_everything(emu, client):
    emu.set_faults(http=[{"route": "list", "status": 500, "times": 1}])
    emu.configure(processing_seconds=50)
    batch = client.messages.batches.create(requests=make_requests(3))
    client.messages.batches.retrieve(batch.id)
    client.messages.batches.list()
    emu.advance(100)

    stats = emu.stats()
    assert stats["calls"] == {"create": 1, "retrieve": 1, "list": 2, "cancel": 0, "delete": 0, "results": 0}
    assert (stats["batches"], stats["requests"], stats["faults_injected"]) == (1, 3, 1)
    emu.reset()
    stats = emu.stats()
    assert stats["batches"] == 0 and sum(stats["calls"].values()) == 0
    assert stats["settings"]["processing_seconds"] == 2.0
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_speed_makes_virtual_time_run_faster(emu, client):
    emu.configure(speed=1000, processing_seconds=60)
    batch = client.messages.batches.create(requests=make_requests(1))
    time.sleep(0.1)
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"


def test_command_line_help_lists_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "airflow_claude_batches.emulator", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--host", "--port", "--api-key", "--processing-seconds", "--speed"):
        assert option in out
