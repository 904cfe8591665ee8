"""Failure injection: errored results, HTTP errors, lost/late answers, cut result streams, queue limits.

The shape accepted by ``POST /_emulator/faults`` (and ``EmulatorHandle.set_faults(**faults)``) is
documented in the package docstring. Each call to ``set_faults`` replaces the whole fault set.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

ROUTES = ("create", "retrieve", "list", "cancel", "delete", "results")
WHEN = ("before", "after")
RESULTS_ORDERS = ("fixed", "shuffled")
#: ``http[i].status`` that closes the connection without an answer.
CLOSE_CONNECTION = 0

#: Error ``type`` the API uses for each HTTP status.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_DEFAULT_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit.",
    "api_error": "Internal server error",
    "timeout_error": "Request timeout",
    "overloaded_error": "Overloaded",
}


class FaultConfigError(ValueError):
    """The fault configuration sent to the emulator is malformed."""


def default_message(error_type: str) -> str:
    return _DEFAULT_MESSAGES.get(error_type, "Error")


def unit_hash(text: str) -> float:
    """A stable value in [0, 1) for ``text``: makes ratio-based injection deterministic."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class HttpFault:
    """
    The next ``times`` calls of ``route`` (``"*"`` = any) are answered by this fault.

    ``when="before"``: the fault answers and the call never runs; ``"after"``: the call runs (a batch
    is created, cancelled, deleted) and the fault answers instead of it. ``status`` is an HTTP error,
    ``0`` (close the connection without an answer) or ``None`` (the call's own answer, late: only
    with ``delay_seconds``, real seconds the answer is held).
    """

    route: str
    status: int | None
    times: int = 1
    retry_after: float | None = None
    retry_after_ms: float | None = None
    message: str | None = None
    batch_id: str | None = None
    when: Literal["before", "after"] = "before"
    delay_seconds: float = 0.0

    def matches(self, route: str, batch_id: str | None) -> bool:
        if self.times <= 0 or self.route not in ("*", route):
            return False
        return self.batch_id is None or self.batch_id == batch_id

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.retry_after is not None:
            out["retry-after"] = _number(self.retry_after)
        if self.retry_after_ms is not None:
            out["retry-after-ms"] = _number(self.retry_after_ms)
        return out


@dataclass(frozen=True)
class ErroredRule:
    """Requests whose custom_id matches ``custom_id_regex`` and hashes under ``ratio`` end ``errored``."""

    custom_id_regex: re.Pattern[str] | None
    ratio: float
    error_type: str
    message: str

    def applies(self, custom_id: str) -> bool:
        if self.custom_id_regex is not None and not self.custom_id_regex.search(custom_id):
            return False
        return self.ratio >= 1.0 or unit_hash(custom_id) < self.ratio


@dataclass
class ResultsFault:
    """The next ``times`` downloads of results (of ``batch_id``, or any) stop after ``after_lines`` lines.

    ``drop``: the connection closes mid-stream (no closing chunk); otherwise the body ends cleanly.
    """

    after_lines: int
    drop: bool
    times: int = 1
    batch_id: str | None = None

    def matches(self, batch_id: str) -> bool:
        return self.times > 0 and self.batch_id in (None, batch_id)


@dataclass
class Faults:
    http: list[HttpFault] = field(default_factory=list)
    errored: tuple[ErroredRule, ...] = ()
    not_found_after_create_calls: int = 0
    not_found_after_create_seconds: float = 0.0
    results: list[ResultsFault] = field(default_factory=list)
    results_order: Literal["fixed", "shuffled"] = "fixed"
    list_lag_seconds: float = 0.0
    queue_limit: int | None = None
    injected: int = 0

    def take_http(self, route: str, batch_id: str | None) -> HttpFault | None:
        """Consume one use of the first matching HTTP fault (caller holds the state lock)."""
        for fault in self.http:
            if fault.matches(route, batch_id):
                fault.times -= 1
                self.injected += 1
                return fault
        return None

    def take_results(self, batch_id: str) -> ResultsFault | None:
        """Consume one use of the first results fault for ``batch_id`` (caller holds the state lock)."""
        for fault in self.results:
            if fault.matches(batch_id):
                fault.times -= 1
                self.injected += 1
                return fault
        return None

    def errored_rule_for(self, custom_id: str) -> ErroredRule | None:
        for rule in self.errored:
            if rule.applies(custom_id):
                return rule
        return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise FaultConfigError(message)


def _count(value: Any, what: str, *, minimum: int) -> int:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{what} must be an integer >= {minimum}",
    )
    return int(value)


def _seconds(value: Any, what: str) -> float:
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
        f"{what} must be a number of seconds >= 0",
    )
    return float(value)


def _parse_http(i: int, raw: Any) -> HttpFault:
    _require(isinstance(raw, dict), f"http.{i} must be an object")
    extra = set(raw) - {
        "route",
        "status",
        "times",
        "retry_after",
        "retry_after_ms",
        "message",
        "batch_id",
        "when",
        "delay_seconds",
    }
    _require(not extra, f"http.{i}: unknown keys {sorted(extra)}")
    route = raw.get("route", "*")
    _require(route == "*" or route in ROUTES, f"http.{i}.route must be '*' or one of {ROUTES}")
    when = raw.get("when", "before")
    _require(when in WHEN, f"http.{i}.when must be one of {WHEN}")
    delay = _seconds(raw.get("delay_seconds", 0), f"http.{i}.delay_seconds")
    status = raw.get("status")
    _require(
        (status is None and delay > 0)
        or status == CLOSE_CONNECTION
        or (isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599),
        f"http.{i}.status must be an HTTP error code or 0 (close the connection); "
        "it may be left out only with delay_seconds",
    )
    return HttpFault(
        route=route,
        status=status,
        times=_count(raw.get("times", 1), f"http.{i}.times", minimum=1),
        retry_after=raw.get("retry_after"),
        retry_after_ms=raw.get("retry_after_ms"),
        message=raw.get("message"),
        batch_id=raw.get("batch_id"),
        when=when,
        delay_seconds=delay,
    )


def _parse_results(i: int, raw: Any) -> ResultsFault:
    _require(isinstance(raw, dict), f"results.{i} must be an object")
    extra = set(raw) - {"batch_id", "truncate_after_lines", "drop_after_lines", "times"}
    _require(not extra, f"results.{i}: unknown keys {sorted(extra)}")
    kinds = [k for k in ("truncate_after_lines", "drop_after_lines") if k in raw]
    _require(len(kinds) == 1, f"results.{i} needs exactly one of truncate_after_lines, drop_after_lines")
    return ResultsFault(
        after_lines=_count(raw[kinds[0]], f"results.{i}.{kinds[0]}", minimum=0),
        drop=kinds[0] == "drop_after_lines",
        times=_count(raw.get("times", 1), f"results.{i}.times", minimum=1),
        batch_id=raw.get("batch_id"),
    )


def parse_faults(data: dict[str, Any]) -> Faults:
    """Build a :class:`Faults` from the JSON shape documented in the package docstring."""
    _require(isinstance(data, dict), "faults must be a JSON object")
    known = {
        "http",
        "errored",
        "not_found_after_create",
        "results",
        "results_order",
        "list_lag_seconds",
        "queue_limit",
    }
    unknown = set(data) - known
    _require(not unknown, f"unknown fault keys: {sorted(unknown)}")
    faults = Faults()
    faults.http = [_parse_http(i, raw) for i, raw in enumerate(data.get("http") or [])]
    faults.results = [_parse_results(i, raw) for i, raw in enumerate(data.get("results") or [])]
    order = data.get("results_order", "fixed")
    _require(order in RESULTS_ORDERS, f"results_order must be one of {RESULTS_ORDERS}")
    faults.results_order = order
    faults.list_lag_seconds = _seconds(data.get("list_lag_seconds", 0), "list_lag_seconds")
    if data.get("queue_limit") is not None:
        faults.queue_limit = _count(data["queue_limit"], "queue_limit", minimum=0)
    rules = []
    for i, raw in enumerate(data.get("errored") or []):
        _require(isinstance(raw, dict), f"errored.{i} must be an object")
        extra = set(raw) - {"custom_id_regex", "ratio", "error_type", "message"}
        _require(not extra, f"errored.{i}: unknown keys {sorted(extra)}")
        ratio = float(raw.get("ratio", 1.0))
        _require(0.0 <= ratio <= 1.0, f"errored.{i}.ratio must be within [0, 1]")
        regex = raw.get("custom_id_regex")
        try:
            pattern = re.compile(regex) if regex is not None else None
        except re.error as exc:
            raise FaultConfigError(f"errored.{i}.custom_id_regex: {exc}") from None
        error_type = raw.get("error_type", "invalid_request_error")
        rules.append(
            ErroredRule(pattern, ratio, error_type, raw.get("message") or default_message(error_type))
        )
    faults.errored = tuple(rules)
    nf = data.get("not_found_after_create") or {}
    _require(
        isinstance(nf, dict) and not set(nf) - {"calls", "seconds"},
        "not_found_after_create must be {'calls': N} and/or {'seconds': S}",
    )
    faults.not_found_after_create_calls = int(nf.get("calls", 0))
    faults.not_found_after_create_seconds = float(nf.get("seconds", 0.0))
    return faults
