"""A faithful local emulator of Anthropic's Message Batches API.

The unmodified ``anthropic`` SDK (``Anthropic`` / ``AsyncAnthropic`` with ``base_url=``) talks to it:
create, retrieve, list (newest first, ``after_id``/``before_id``/``limit``), cancel, delete, results
(JSONL, chunked, at an absolute ``results_url`` on the emulator's own origin), the ten-key batch
object, the error envelope with a ``request-id`` header, and the status machine
``in_progress -> [canceling ->] ended`` with expiry at ``created_at + 24 h`` and archival (results
gone, ``archived_at`` set) at ``created_at + 29 days``. A 100,000-request (~235 MB) body is parsed
incrementally and only a compact index is kept; results are generated while they are streamed.

Time is virtual: ``now = start + real elapsed * speed + advanced``; ``POST /_emulator/advance``
moves it forward, so a test takes a batch past 24 h or 29 days in milliseconds. Requests of a batch
run in index order, spread evenly over ``processing_seconds``; a cancel or the expiry splits them
into the ones already run and the rest (``canceled`` / ``expired``).

Control routes (no API key needed; JSON bodies)::

    GET  /_emulator/health    -> {"ok": true}
    GET  /_emulator/stats     -> {"calls": {"create": n, "retrieve": n, "list": n, "cancel": n,
                                  "delete": n, "results": n}, "batches": n, "requests": n,
                                  "faults_injected": n, "now": "...Z", "settings": {...}}
    POST /_emulator/reset     drop batches, faults, stats, clock offset; settings back to launch values
    POST /_emulator/advance   {"seconds": N}
    POST /_emulator/config    {"processing_seconds": S, "cancel_seconds": S, "speed": F} (any subset)
    POST /_emulator/faults    replaces the whole fault set; {} clears it:

    {
      "http": [                       # per HTTP call, consumed in order, first match wins
        {"route": "create" | "retrieve" | "list" | "cancel" | "delete" | "results" | "*",
         "status": 429,               # 429 rate_limit_error, 529 overloaded_error, 500 api_error, ...
                                      # 0: close the connection without an answer
         "when": "before",            # "before" (default): the fault answers, the call never runs;
                                      # "after": the call runs and takes effect (batch created,
                                      # cancelled, deleted), then the fault answers instead of it;
                                      # "after" with status 0 is a lost response
         "delay_seconds": 2.5,        # optional: hold the answer this long (real seconds); without
                                      # "status", the call's own answer comes late
         "times": 2,                  # the next N matching calls fail (the SDK retries 2x by default)
         "retry_after": 1,            # optional `retry-after` header (seconds)
         "retry_after_ms": 5,         # optional `retry-after-ms` header
         "message": "...",            # optional error message
         "batch_id": "msgbatch_..."}  # optional: only calls about this batch
      ],
      "results": [                    # per results download, consumed in order, first match wins
        {"batch_id": "msgbatch_...",  # optional: only downloads of this batch
         "truncate_after_lines": 300, # the body ends cleanly after N lines (a short, valid answer)
         "times": 1},
        {"drop_after_lines": 300,     # or: the connection closes mid-stream after N lines
         "times": 1}
      ],
      "results_order": "shuffled",    # every download in a new random order; "fixed" (default): one
                                      # stable order, never the request order
      "list_lag_seconds": 30,         # a new batch is listed only from created_at + S on the
                                      # virtual clock (retrieve finds it at once)
      "queue_limit": 1000,            # create answers 429 rate_limit_error when the requests of the
                                      # batches not yet ended plus the new batch's exceed N
      "errored": [                    # per request, fixed into each batch at create time
        {"custom_id_regex": "_0000000[0-4]$",   # optional (re.search); default: every request
         "ratio": 0.1,                # optional: share of matching requests, by a stable hash of custom_id
         "error_type": "invalid_request_error", "message": "..."}
      ],
      "not_found_after_create": {"calls": 2, "seconds": 1.5}   # retrieve/results 404 for the first
                                      # N calls and/or S real seconds after each later create
    }

Clocks: ``list_lag_seconds`` runs on the virtual clock, like every batch timestamp (``advance``
makes the batch listed); ``delay_seconds`` and ``not_found_after_create.seconds`` are real seconds,
since they hold a connection or mimic a propagation delay the client waits out. ``list_lag_seconds``
is fixed into each batch at create, as are ``errored`` and ``not_found_after_create``; the other
keys act on the calls that follow. Every use of a fault counts in ``stats()["faults_injected"]``.

Where the API's behaviour is not documented the emulator picks: cancel of an ended batch -> 400;
results of an archived batch -> 404 (``results_url`` stays set); a request over 256 MB -> 413
``request_too_large``; both ``after_id`` and ``before_id`` -> 400.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["EmulatorHandle", "run_emulator"]

DUMMY_API_KEY = "sk-ant-emulator-test-key"


class EmulatorHandle:
    """Talks to a running emulator's control routes; ``base_url`` and ``api_key`` go to the SDK."""

    def __init__(self, base_url: str, api_key: str, pid: int | None = None) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.pid = pid

    def _call(self, method: str, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body or {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            f"{self.base_url}/_emulator/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", {}).get("message", str(exc))
            raise ValueError(f"emulator rejected {name}: {detail}") from None

    def health(self) -> bool:
        return bool(self._call("GET", "health").get("ok"))

    def reset(self) -> None:
        self._call("POST", "reset")

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (e.g. ``advance(24 * 3600)`` to expire a batch)."""
        self._call("POST", "advance", {"seconds": seconds})

    def configure(self, **options: float) -> dict[str, Any]:
        """``processing_seconds``, ``cancel_seconds``, ``speed``; returns the settings now in force."""
        return self._call("POST", "config", options)["settings"]

    def set_faults(self, **faults: Any) -> None:
        """Replace the fault set (shape in the module docstring); no arguments clears it."""
        self._call("POST", "faults", faults)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")


@contextmanager
def run_emulator(
    *,
    api_key: str | None = None,
    processing_seconds: float = 2.0,
    cancel_seconds: float = 0.5,
    speed: float = 1.0,
    host: str = "127.0.0.1",
    verbose: bool = False,
    startup_timeout: float = 30.0,
) -> Iterator[EmulatorHandle]:
    """Run the emulator in a subprocess on a free port for the ``with`` block.

    With ``api_key`` the emulator accepts only that key; otherwise any non-empty key (the handle's
    ``api_key`` is then a dummy). The process is terminated on exit, killed if it does not stop.
    """
    cmd = [
        sys.executable,
        "-m",
        "airflow_claude_batches.emulator",
        "--host",
        host,
        "--port",
        "0",
        "--processing-seconds",
        str(processing_seconds),
        "--cancel-seconds",
        str(cancel_seconds),
        "--speed",
        str(speed),
    ]
    if verbose:
        cmd.append("--verbose")
    if api_key is not None:
        cmd += ["--api-key", api_key]  # a test key: argv is visible to `ps`, never pass a real one
    # The child must import this very package even when it is only on the parent's sys.path.
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    try:
        base_url = _wait_ready(proc, startup_timeout)
        handle = EmulatorHandle(base_url, api_key or DUMMY_API_KEY, pid=proc.pid)
        yield handle
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            raise RuntimeError(f"emulator did not start within {timeout}s (exit code {proc.poll()})")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            data = os.read(proc.stdout.fileno(), 4096)  # unbuffered: select() sees the fd only
            if not data:
                raise RuntimeError(f"emulator exited during start-up (exit code {proc.wait()})")
            line += data
    base_url = line.decode().strip().rsplit(" ", 1)[-1]
    handle = EmulatorHandle(base_url, DUMMY_API_KEY)
    while True:
        try:
            if handle.health():
                return base_url
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"emulator at {base_url} did not become healthy within {timeout}s")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
