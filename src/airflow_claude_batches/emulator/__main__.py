"""``python -m airflow_claude_batches.emulator`` / ``claude-batches-emulator``: run the emulator."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from airflow_claude_batches.emulator.server import EmulatorServer
from airflow_claude_batches.emulator.state import Emulator, Settings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="claude-batches-emulator", description="Local emulator of Anthropic's Message Batches API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed on start)")
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    parser.add_argument("--processing-seconds", type=float, default=2.0, help="virtual seconds a batch runs")
    parser.add_argument("--cancel-seconds", type=float, default=0.5, help="virtual seconds canceling lasts")
    parser.add_argument("--speed", type=float, default=1.0, help="virtual seconds per real second")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    settings = Settings(
        processing_seconds=args.processing_seconds, cancel_seconds=args.cancel_seconds, speed=args.speed
    )
    server = EmulatorServer(
        (args.host, args.port), Emulator(settings, api_key=args.api_key), verbose=args.verbose
    )
    host, port = server.server_address[0], server.server_address[1]
    # run_emulator() reads this line to learn the port; keep its format.
    print(f"claude-batches-emulator listening on http://{host!s}:{port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
