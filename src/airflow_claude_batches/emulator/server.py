"""The HTTP layer: the Message Batches routes, the control routes, errors and streaming.

Built on the stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 (keep-alive, as ``httpx`` expects):
it lets the create body be parsed straight off the socket and the results be written as chunked
transfer encoding while they are generated, so no handler ever holds a whole body in memory.
"""

from __future__ import annotations

import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow_claude_batches.emulator.faults import (
    CLOSE_CONNECTION,
    ERROR_TYPES,
    FaultConfigError,
    HttpFault,
    default_message,
    parse_faults,
)
from airflow_claude_batches.emulator.parsing import MAX_BODY_BYTES, BatchValidationError, parse_batch_body
from airflow_claude_batches.emulator.state import Batch, Emulator, QueueFull, random_id

_BATCHES = "/v1/messages/batches"
_BATCH_PATH = re.compile(r"^/v1/messages/batches/([^/]+)(/cancel|/results)?$")
_CONTROL_BODY_LIMIT = 1024 * 1024


class _ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


#: What a route answers before it is sent: a JSON body (200), results to stream, or an error.
_Reply = dict[str, Any] | Batch | _ApiError


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: Emulator, *, verbose: bool = False) -> None:
        super().__init__(address, Handler)
        self.emulator = emulator
        self.verbose = verbose


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms stalls
    server: EmulatorServer
    server_version = "claude-batches-emulator"

    # -- plumbing -------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _drain(self, left: int) -> None:
        while left > 0:
            data = self.rfile.read(min(left, 1 << 20))
            if not data:
                break
            left -= len(data)

    def _read_json(self) -> Any:
        length = self._content_length()
        if length > _CONTROL_BODY_LIMIT:
            self._drain(length)
            raise _ApiError(413, "control request too large")
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise _ApiError(400, "body is not valid JSON") from None

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", random_id("req_"))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: _ApiError) -> None:
        request_id = random_id("req_")
        error_type = ERROR_TYPES.get(error.status, "api_error")
        body = {
            "type": "error",
            "error": {"type": error_type, "message": error.message},
            "request_id": request_id,
        }
        data = json.dumps(body).encode()
        self.send_response(error.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", request_id)
        for key, value in error.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _origin(self) -> str:
        host = self.headers.get("Host")
        if not host:
            address = self.server.server_address
            host = f"{address[0]!s}:{address[1]}"
        return f"http://{host}"

    # -- routing --------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body_pending = method in ("POST", "DELETE")
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                # Never sent by the SDK; an unread chunked body would corrupt the connection.
                self.close_connection = True
                body_pending = False
                raise _ApiError(400, "chunked request bodies are not supported: send Content-Length")
            if url.path.startswith("/_emulator/"):
                body_pending = False  # _control reads its own body
                self._control(method, url.path)
                return
            route, batch_id = self._route(method, url.path)
            if route is None:
                raise _ApiError(404, f"Not found: {method} {url.path}")
            emulator = self.server.emulator
            with emulator.lock:
                emulator.calls[route] += 1
            self._authenticate()
            with emulator.lock:
                fault = emulator.faults.take_http(route, batch_id)
            if fault is not None and fault.when == "before":
                time.sleep(fault.delay_seconds)
                if fault.status is not None:
                    if body_pending:
                        self._drain(self._content_length())
                    self._answer_fault(fault)
                    return
            body_pending = False  # _run reads or drains it
            try:
                reply = self._run(route, batch_id, query)
            except _ApiError as error:
                if fault is None or fault.when != "after":
                    raise
                reply = error  # the call ran and failed; the fault answers instead all the same
            if fault is not None and fault.when == "after":
                time.sleep(fault.delay_seconds)
                if fault.status is not None:
                    self._answer_fault(fault)
                    return
            self._reply(reply)
        except _ApiError as error:
            if body_pending:
                self._drain(self._content_length())
            self._send_error(error)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _run(self, route: str, batch_id: str | None, query: dict[str, str]) -> _Reply:
        """Run one API call (its effect happens here) and return its answer, unsent."""
        if route == "create":
            return self._create(query.get("beta") == "true")
        self._drain(self._content_length())
        handler = getattr(self, f"_{route}")
        return handler(batch_id, query) if batch_id is not None else handler(query)

    def _answer_fault(self, fault: HttpFault) -> None:
        if fault.status == CLOSE_CONNECTION:
            self.close_connection = True  # no status line at all: the client sees the socket close
            return
        assert fault.status is not None
        message = fault.message or default_message(ERROR_TYPES.get(fault.status, "api_error"))
        self._send_error(_ApiError(fault.status, message, fault.headers()))

    def _reply(self, reply: _Reply) -> None:
        if isinstance(reply, _ApiError):
            self._send_error(reply)
        elif isinstance(reply, Batch):
            self._send_results(reply)
        else:
            self._send_json(200, reply)

    @staticmethod
    def _route(method: str, path: str) -> tuple[str | None, str | None]:
        if path == _BATCHES:
            return {"POST": "create", "GET": "list"}.get(method), None
        match = _BATCH_PATH.match(path)
        if not match:
            return None, None
        batch_id, suffix = match.group(1), match.group(2)
        if suffix == "/cancel":
            return ("cancel" if method == "POST" else None), batch_id
        if suffix == "/results":
            return ("results" if method == "GET" else None), batch_id
        return {"GET": "retrieve", "DELETE": "delete"}.get(method), batch_id

    def _authenticate(self) -> None:
        key = self.headers.get("x-api-key")
        if not key:
            auth = self.headers.get("Authorization", "")
            key = auth[7:] if auth.startswith("Bearer ") else ""
        if not key:
            raise _ApiError(401, "x-api-key header is required")
        expected = self.server.emulator.api_key
        if expected is not None and key != expected:
            raise _ApiError(401, "invalid x-api-key")

    # -- control routes -------------------------------------------------------------------------

    def _control(self, method: str, path: str) -> None:
        emulator = self.server.emulator
        name = path[len("/_emulator/") :]
        if method == "GET" and name == "health":
            self._send_json(200, {"ok": True})
        elif method == "GET" and name == "stats":
            self._send_json(200, emulator.stats())
        elif method == "POST" and name in ("reset", "advance", "config", "faults"):
            body = self._read_json()
            try:
                if name == "reset":
                    emulator.reset()
                    self._send_json(200, {"ok": True})
                elif name == "advance":
                    now = emulator.advance(float(body.get("seconds", 0)))
                    self._send_json(200, {"ok": True, "now": now})
                elif name == "config":
                    self._send_json(200, {"ok": True, "settings": emulator.configure(body)})
                else:
                    faults = parse_faults(body)
                    with emulator.lock:
                        faults.injected = emulator.faults.injected
                        emulator.faults = faults
                    self._send_json(200, {"ok": True})
            except (ValueError, TypeError, AttributeError, FaultConfigError) as exc:
                raise _ApiError(400, str(exc)) from None
        else:
            if method == "POST":
                self._drain(self._content_length())
            raise _ApiError(404, f"Not found: {method} {path}")

    # -- Message Batches routes -----------------------------------------------------------------

    def _create(self, beta: bool) -> dict[str, Any]:
        length = self._content_length()
        if length > MAX_BODY_BYTES:
            self._drain(length)
            raise _ApiError(413, "Request exceeds the maximum allowed number of bytes.")
        if length == 0:
            raise _ApiError(400, "requests: Field required")
        try:
            index = parse_batch_body(self.rfile, length, beta=beta)
        except BatchValidationError as exc:
            raise _ApiError(400, str(exc)) from None
        emulator = self.server.emulator
        try:
            batch = emulator.create(index, self._origin())
        except QueueFull as exc:
            raise _ApiError(429, str(exc)) from None
        with emulator.lock:
            return batch.to_json(emulator.clock.now())

    def _batch(self, batch_id: str, *, transient_404: bool = False) -> Any:
        batch = self.server.emulator.get(batch_id, transient_404=transient_404)
        if batch is None:
            raise _ApiError(404, f"Message batch {batch_id} not found")
        return batch

    def _retrieve(self, batch_id: str, query: dict[str, str]) -> dict[str, Any]:
        batch = self._batch(batch_id, transient_404=True)
        emulator = self.server.emulator
        with emulator.lock:
            return batch.to_json(emulator.clock.now())

    def _cancel(self, batch_id: str, query: dict[str, str]) -> dict[str, Any]:
        batch = self._batch(batch_id)
        emulator = self.server.emulator
        with emulator.lock:
            if batch.ended_at is not None:
                raise _ApiError(400, f"Message batch {batch_id} has already ended and cannot be canceled")
            emulator.cancel(batch)
            return batch.to_json(emulator.clock.now())

    def _delete(self, batch_id: str, query: dict[str, str]) -> dict[str, Any]:
        batch = self._batch(batch_id)
        emulator = self.server.emulator
        with emulator.lock:
            if batch.ended_at is None:
                raise _ApiError(
                    400,
                    f"Message batch {batch_id} cannot be deleted while it is {batch.status()}: "
                    "cancel it and wait for it to end first",
                )
            emulator.delete(batch_id)
        return {"id": batch_id, "type": "message_batch_deleted"}

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        raw_limit = query.get("limit", "20")
        try:
            limit = int(raw_limit)
        except ValueError:
            raise _ApiError(
                400, "limit: Input should be a valid integer, unable to parse string as an integer"
            ) from None
        if limit < 1:
            raise _ApiError(400, "limit: Input should be greater than or equal to 1")
        if limit > 1000:
            raise _ApiError(400, "limit: Input should be less than or equal to 1000")
        after_id, before_id = query.get("after_id"), query.get("before_id")
        if after_id and before_id:
            raise _ApiError(400, "Cannot specify both after_id and before_id")
        return self.server.emulator.page(after_id or None, before_id or None, limit)

    def _results(self, batch_id: str, query: dict[str, str]) -> Batch:
        """Check that results can be read; they are streamed by :meth:`_send_results`."""
        batch = self._batch(batch_id, transient_404=True)
        emulator = self.server.emulator
        with emulator.lock:
            now = emulator.clock.now()
            if batch.ended_at is None:
                raise _ApiError(
                    400, f"Results for message batch {batch_id} are not available: it is {batch.status()}"
                )
            if now >= batch.archived_at_due:
                raise _ApiError(404, f"Results for message batch {batch_id} have been archived and are gone")
        return batch

    def _send_results(self, batch: Batch) -> None:
        """Stream the JSONL results as chunks; an injected results fault cuts them short."""
        emulator = self.server.emulator
        with emulator.lock:
            cut = emulator.faults.take_results(batch.id)
            shuffled = emulator.faults.results_order == "shuffled"
        self.send_response(200)
        self.send_header("Content-Type", "application/binary")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", random_id("req_"))
        self.end_headers()
        limit = cut.after_lines if cut is not None else None
        for chunk in batch.result_lines(shuffled=shuffled, limit=limit):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if cut is not None and cut.drop:
            self.close_connection = True  # no closing chunk: the client sees an incomplete body
            return
        self.wfile.write(b"0\r\n\r\n")
