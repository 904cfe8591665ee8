"""
A minimal local Message Batches API for the benchmarks: fast, so what is measured is the client.

Not the project's emulator (which validates everything): this stub only reads request bodies, keeps
batches in a dict and serves one results file from disk. A batch reports ``ended`` from its
``--ends-after``-th observation on (a retrieve, or a listing page that includes it), so every
trigger variant needs the same number of polls. Run as ``python _stub_api.py --port 0 [--results FILE]``;
it prints ``PORT <n>`` when ready. ``POST /_stub/reset?n=N`` makes N fresh batches.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta, timezone

from aiohttp import web

_COUNTS = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}


class Stub:
    def __init__(self, results: str | None, ends_after: int) -> None:
        self.results_file = results
        self.ends_after = ends_after
        self.batches: dict[str, dict] = {}  # insertion order = creation order
        self.seen: dict[str, int] = {}
        self.calls = {"create": 0, "retrieve": 0, "list": 0, "results": 0}
        self.origin = ""
        self.make("msgbatch_results", datetime.now(timezone.utc) - timedelta(hours=1))  # always ended

    def make(self, batch_id: str, created: datetime) -> None:
        self.batches[batch_id] = {
            "id": batch_id,
            "type": "message_batch",
            "created_at": created.isoformat().replace("+00:00", "Z"),
            "expires_at": (created + timedelta(hours=24)).isoformat().replace("+00:00", "Z"),
            "cancel_initiated_at": None,
            "archived_at": None,
        }
        self.seen[batch_id] = 0

    def view(self, batch_id: str) -> dict:
        self.seen[batch_id] += 1
        ended = self.seen[batch_id] >= self.ends_after or batch_id == "msgbatch_results"
        return {
            **self.batches[batch_id],
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {**_COUNTS, "succeeded" if ended else "processing": 1},
            "ended_at": self.batches[batch_id]["expires_at"] if ended else None,
            "results_url": f"{self.origin}/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    async def create(self, request: web.Request) -> web.Response:
        self.calls["create"] += 1
        size = 0
        async for chunk in request.content.iter_chunked(2**20):
            size += len(chunk)
        batch_id = f"msgbatch_created{len(self.batches):06d}"
        self.make(batch_id, datetime.now(timezone.utc))
        self.seen[batch_id] = -(10**9)  # stays in progress
        return web.json_response(self.view(batch_id))

    async def retrieve(self, request: web.Request) -> web.Response:
        self.calls["retrieve"] += 1
        batch_id = request.match_info["batch_id"]
        if batch_id not in self.batches:
            error = {"type": "not_found_error", "message": batch_id}
            return web.json_response({"type": "error", "error": error}, status=404)
        return web.json_response(self.view(batch_id))

    async def list(self, request: web.Request) -> web.Response:
        self.calls["list"] += 1
        limit = int(request.query.get("limit", 20))
        ids = list(reversed(self.batches))
        after = request.query.get("after_id")
        start = ids.index(after) + 1 if after in self.batches else 0
        page = ids[start : start + limit]
        data = [self.view(b) for b in page]
        return web.json_response(
            {
                "data": data,
                "has_more": start + limit < len(ids),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def results(self, request: web.Request) -> web.StreamResponse:
        self.calls["results"] += 1
        assert self.results_file is not None
        return web.FileResponse(self.results_file, headers={"Content-Type": "application/binary"})

    async def reset(self, request: web.Request) -> web.Response:
        n = int(request.query.get("n", 0))
        self.batches.clear()
        self.seen.clear()
        self.calls = dict.fromkeys(self.calls, 0)
        created = datetime.now(timezone.utc)
        self.make("msgbatch_results", created - timedelta(hours=1))
        for i in range(n):
            self.make(f"msgbatch_bench{i:06d}", created)
        return web.json_response({"batches": list(self.batches)})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": self.calls})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--results")
    parser.add_argument("--ends-after", type=int, default=3)
    args = parser.parse_args()
    stub = Stub(args.results, args.ends_after)
    app = web.Application(client_max_size=2**30)
    app.add_routes(
        [
            web.post("/v1/messages/batches", stub.create),
            web.get("/v1/messages/batches", stub.list),
            web.get("/v1/messages/batches/{batch_id}", stub.retrieve),
            web.get("/v1/messages/batches/{batch_id}/results", stub.results),
            web.post("/_stub/reset", stub.reset),
            web.get("/_stub/stats", stub.stats),
        ]
    )

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = runner.addresses[0][1]
        stub.origin = f"http://127.0.0.1:{port}"
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
