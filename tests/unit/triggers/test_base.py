"""The triggers' shared base: the hook is imported off the triggerer's event loop, once, by all."""

from __future__ import annotations

import subprocess
import sys

# Airflow's triggerer imports a trigger's module inside its event loop: nothing slow may load there.
PROBE = """
import asyncio, sys
import airflow_claude_batches.triggers.batch, airflow_claude_batches.triggers.capacity
from airflow_claude_batches.triggers.base import batches_hook
print("sdk at import:", "anthropic" in sys.modules)

async def main():
    ticks = 0
    async def tick():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)
    ticker = asyncio.create_task(tick())

    async def start(delay):  # triggers starting while the first one still imports the SDK
        await asyncio.sleep(delay)
        return await batches_hook("anthropic_default")

    hooks = await asyncio.gather(*(start(i * 0.01) for i in range(100)))
    hook = hooks[0]
    assert len({type(h) for h in hooks}) == 1
    ticker.cancel()
    sdk = "anthropic" in sys.modules
    print("hook:", type(hook).__name__, hook.conn_id, "sdk:", sdk, "loop ran:", ticks > 1)

asyncio.run(main())
"""


def test_trigger_modules_import_the_sdk_only_when_a_trigger_runs_and_off_the_loop():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "sdk at import: False"
    # The loop kept running other coroutines while the SDK was imported in a thread.
    assert lines[-1] == "hook: ClaudeBatchesHook anthropic_default sdk: True loop ran: True"
