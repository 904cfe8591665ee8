"""Batches, the virtual clock, the status machine and deterministic results.

Status is computed lazily from the virtual clock whenever a batch is looked at, so advancing the
clock by 29 days takes no work until the next request. Requests of a batch are "run" in index order
spread evenly over ``processing_seconds``: a cancel or the 24 h expiry splits them into those already
run (``succeeded``/``errored``) and the rest (``canceled``/``expired``).

Fault settings that concern time use the same virtual clock (``list_lag_seconds``: a batch is listed
from ``created_at + lag``), except those that hold an HTTP answer, which are real seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import secrets
import string
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_claude_batches.emulator.faults import Faults, unit_hash
from airflow_claude_batches.emulator.parsing import RequestIndex

DAY = 86_400.0
EXPIRY_SECONDS = DAY
ARCHIVE_SECONDS = 29 * DAY
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
_OUTCOME_CODE = {name: code for code, name in enumerate(RESULT_TYPES)}
_ALPHABET = string.digits + string.ascii_letters
_WORDS = (
    "the", "batch", "result", "is", "ready", "and", "the", "answer", "follows", "from", "the", "input",
    "text", "with", "care", "about", "every", "detail", "that", "matters", "to", "the", "team", "reading",
)  # fmt: skip


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def rfc3339(ts: float | None) -> str | None:
    """``2024-09-24T18:37:24.100435Z``: UTC, always six fractional digits, ``Z`` suffix."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Settings:
    processing_seconds: float = 2.0
    cancel_seconds: float = 0.5
    speed: float = 1.0


class Clock:
    """Virtual time = start + (real elapsed) * speed + advanced offset; never goes backwards."""

    def __init__(self, speed: float = 1.0) -> None:
        self._real_start = time.time()
        self._virtual_start = self._real_start
        self.speed = speed
        self.offset = 0.0

    def now(self) -> float:
        return self._virtual_start + (time.time() - self._real_start) * self.speed + self.offset

    def set_speed(self, speed: float) -> None:
        current = self.now()
        self._real_start, self._virtual_start, self.offset = time.time(), current, 0.0
        self.speed = speed

    def reset(self, speed: float) -> None:
        self.__init__(speed)  # type: ignore[misc]


@dataclass
class Batch:
    id: str
    seq: int
    index: RequestIndex
    created_at: float
    processing_seconds: float
    cancel_seconds: float
    errored_rules: Faults
    origin: str
    created_real: float
    not_found_calls: int = 0
    not_found_until_real: float = 0.0
    listed_from: float = 0.0
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    outcomes: bytearray | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def expires_at(self) -> float:
        return self.created_at + EXPIRY_SECONDS

    @property
    def archived_at_due(self) -> float:
        return self.created_at + ARCHIVE_SECONDS

    def _run_count(self, at: float) -> int:
        """How many requests (in index order) have run by virtual time ``at``."""
        if self.processing_seconds <= 0:
            return len(self.index)
        done = (at - self.created_at) / self.processing_seconds
        return min(len(self.index), max(0, int(len(self.index) * done)))

    def refresh(self, now: float) -> None:
        """Apply every transition due by ``now`` (idempotent)."""
        if self.ended_at is not None:
            return
        n = len(self.index)
        finish = self.created_at + self.processing_seconds
        if self.cancel_initiated_at is not None:
            cancel_end = min(self.cancel_initiated_at + self.cancel_seconds, self.expires_at)
            if finish <= cancel_end and now >= finish:
                self._end(finish, n, "canceled")
            elif now >= cancel_end:
                self._end(cancel_end, self._run_count(self.cancel_initiated_at), "canceled")
            return
        if now >= finish and finish <= self.expires_at:
            self._end(finish, n, "expired")
        elif now >= self.expires_at:
            self._end(self.expires_at, self._run_count(self.expires_at), "expired")

    def _end(self, at: float, ran: int, rest: str) -> None:
        outcomes = bytearray(len(self.index))
        counts = dict.fromkeys(RESULT_TYPES, 0)
        rest_code = _OUTCOME_CODE[rest]
        for i, custom_id in enumerate(self.index.custom_ids):
            if i >= ran:
                outcomes[i] = rest_code
                counts[rest] += 1
            elif self.errored_rules.errored_rule_for(custom_id) is not None:
                outcomes[i] = _OUTCOME_CODE["errored"]
                counts["errored"] += 1
            else:
                counts["succeeded"] += 1
        self.outcomes, self.counts, self.ended_at = outcomes, counts, at

    def status(self) -> str:
        if self.ended_at is not None:
            return "ended"
        return "canceling" if self.cancel_initiated_at is not None else "in_progress"

    def to_json(self, now: float) -> dict[str, Any]:
        ended = self.ended_at is not None
        archived = ended and now >= self.archived_at_due
        counts = self.counts if ended else {"processing": len(self.index)}
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status(),
            "request_counts": {
                "processing": counts.get("processing", 0),
                "succeeded": counts.get("succeeded", 0),
                "errored": counts.get("errored", 0),
                "canceled": counts.get("canceled", 0),
                "expired": counts.get("expired", 0),
            },
            "ended_at": rfc3339(self.ended_at),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "archived_at": rfc3339(self.archived_at_due) if archived else None,
            "cancel_initiated_at": rfc3339(self.cancel_initiated_at),
            "results_url": f"{self.origin}/v1/messages/batches/{self.id}/results" if ended else None,
        }

    def result_lines(
        self, chunk_bytes: int = 64 * 1024, *, shuffled: bool = False, limit: int | None = None
    ) -> Iterator[bytes]:
        """
        JSONL results, generated on the fly, in ~64 KB slices (the last one ends at ``limit`` lines).

        The order is never the index order: a fixed stride by default, or with ``shuffled`` a new
        random permutation on every call (the API promises no order at all).
        """
        assert self.outcomes is not None
        n = len(self.index)
        order: Iterable[int]
        if shuffled:
            order = random.sample(range(n), n)
        else:
            step = _coprime_step(n)
            order = ((k * step) % n for k in range(n))
        if limit is not None:
            order = itertools.islice(order, limit)
        parts: list[str] = []
        size = 0
        for i in order:
            line = json.dumps(self._result(i), separators=(",", ":"))
            parts.append(line)
            size += len(line) + 1
            if size >= chunk_bytes:
                yield ("\n".join(parts) + "\n").encode()
                parts, size = [], 0
        if parts:
            yield ("\n".join(parts) + "\n").encode()

    def _result(self, i: int) -> dict[str, Any]:
        assert self.outcomes is not None
        custom_id = self.index.custom_ids[i]
        kind = RESULT_TYPES[self.outcomes[i]]
        if kind == "succeeded":
            return {"custom_id": custom_id, "result": {"type": "succeeded", "message": self._message(i)}}
        if kind == "errored":
            rule = self.errored_rules.errored_rule_for(custom_id)
            error_type, message = (
                (rule.error_type, rule.message) if rule else ("api_error", "Internal server error")
            )
            return {
                "custom_id": custom_id,
                "result": {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": error_type, "message": message},
                        "request_id": _stable_id("req_", self.id, custom_id),
                    },
                },
            }
        return {"custom_id": custom_id, "result": {"type": kind}}

    def _message(self, i: int) -> dict[str, Any]:
        custom_id = self.index.custom_ids[i]
        max_tokens = self.index.max_tokens[i]
        h = unit_hash(f"{self.id}/{custom_id}")
        output_tokens = min(max_tokens, 1 + int(h * 1.25 * min(max_tokens, 400)))
        words = [_WORDS[(int(h * 1e6) + j) % len(_WORDS)] for j in range(max(1, output_tokens * 3 // 4))]
        return {
            "id": _stable_id("msg_", self.id, custom_id),
            "type": "message",
            "role": "assistant",
            "model": self.index.models[self.index.model_ids[i]],
            "content": [{"type": "text", "text": " ".join(words).capitalize() + ".", "citations": None}],
            "stop_reason": "max_tokens" if output_tokens == max_tokens else "end_turn",
            "stop_sequence": None,
            "stop_details": None,
            "container": None,
            "context_management": None,  # beta shape; the GA schema allows the extra keys
            "usage": {
                "input_tokens": self.index.input_tokens[i],
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "server_tool_use": None,
                "service_tier": "batch",
                "inference_geo": None,
                "iterations": None,
                "speed": None,
            },
        }


def _stable_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    num = int.from_bytes(digest[:18], "big")
    chars = []
    for _ in range(24):
        num, r = divmod(num, 62)
        chars.append(_ALPHABET[r])
    return prefix + "01" + "".join(chars)


def _coprime_step(n: int) -> int:
    """A stride that visits every index of ``range(n)`` once: results come back out of request order."""
    for step in (7919, 104729, 1299709, 15485863):
        if n % step:
            return step % n or 1
    return 1


class QueueFull(Exception):
    """A create refused by the injected account ``queue_limit`` (answered 429 ``rate_limit_error``)."""


class Emulator:
    """All mutable state, behind one lock; the HTTP layer calls these methods from many threads."""

    def __init__(self, settings: Settings, api_key: str | None = None) -> None:
        self.lock = threading.RLock()
        self.defaults = settings
        self.api_key = api_key
        self.settings = Settings(**vars(settings))
        self.clock = Clock(settings.speed)
        self.faults = Faults()
        self.batches: dict[str, Batch] = {}
        self.seq_of: dict[str, int] = {}
        self.calls = dict.fromkeys(("create", "retrieve", "list", "cancel", "delete", "results"), 0)
        self._seq = 0

    def reset(self) -> None:
        with self.lock:
            self.settings = Settings(**vars(self.defaults))
            self.clock.reset(self.settings.speed)
            self.faults = Faults()
            self.batches.clear()
            self.seq_of.clear()
            self.calls = dict.fromkeys(self.calls, 0)

    def configure(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = set(options) - set(vars(self.settings))
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}; known: {sorted(vars(self.settings))}")
        with self.lock:
            for key, value in options.items():
                if not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{key} must be a non-negative number")
                setattr(self.settings, key, float(value))
            if "speed" in options:
                self.clock.set_speed(self.settings.speed)
            return dict(vars(self.settings))

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("seconds must be >= 0: the clock does not go backwards")
        with self.lock:
            self.clock.offset += seconds
            return self.clock.now()

    def processing_requests(self, now: float) -> int:
        """Requests of every batch not yet ended: what the account's processing queue holds."""
        with self.lock:
            total = 0
            for batch in self.batches.values():
                batch.refresh(now)
                if batch.ended_at is None:
                    total += len(batch.index)
            return total

    def create(self, index: RequestIndex, origin: str) -> Batch:
        """Store a new batch; :class:`QueueFull` if it would take the queue over ``queue_limit``."""
        with self.lock:
            now = self.clock.now()
            limit = self.faults.queue_limit
            if limit is not None:
                processing = self.processing_requests(now)
                if processing + len(index) > limit:
                    self.faults.injected += 1
                    raise QueueFull(
                        f"Batch processing queue limit exceeded: {processing} requests are processing "
                        f"and this batch adds {len(index)}, over the limit of {limit}."
                    )
            self._seq += 1
            batch_id = f"msgbatch_01{_seq_text(self._seq)}{random_id('', 14)}"
            real = time.time()
            batch = Batch(
                id=batch_id,
                seq=self._seq,
                index=index,
                created_at=now,
                processing_seconds=self.settings.processing_seconds,
                cancel_seconds=self.settings.cancel_seconds,
                errored_rules=Faults(errored=self.faults.errored),
                origin=origin,
                created_real=real,
                not_found_calls=self.faults.not_found_after_create_calls,
                not_found_until_real=real + self.faults.not_found_after_create_seconds,
                listed_from=now + self.faults.list_lag_seconds,
            )
            self.batches[batch_id] = batch
            self.seq_of[batch_id] = batch.seq
            return batch

    def get(self, batch_id: str, *, transient_404: bool = False) -> Batch | None:
        """The batch with transitions applied, or None (also while an injected post-create 404 lasts)."""
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            if transient_404:
                if batch.not_found_calls > 0:
                    batch.not_found_calls -= 1
                    self.faults.injected += 1
                    return None
                if time.time() < batch.not_found_until_real:
                    self.faults.injected += 1
                    return None
            batch.refresh(self.clock.now())
            return batch

    def cancel(self, batch: Batch) -> None:
        with self.lock:
            now = self.clock.now()
            batch.refresh(now)
            if batch.ended_at is None and batch.cancel_initiated_at is None:
                batch.cancel_initiated_at = now
                batch.refresh(now)

    def delete(self, batch_id: str) -> None:
        with self.lock:
            self.batches.pop(batch_id, None)

    def page(self, after_id: str | None, before_id: str | None, limit: int) -> dict[str, Any]:
        """Newest first. ``after_id``: the next older page; ``before_id``: the newer page next to it."""
        with self.lock:
            now = self.clock.now()
            listed = (b for b in self.batches.values() if now >= b.listed_from)
            ordered = sorted(listed, key=lambda b: b.seq, reverse=True)
            if after_id is not None:
                cursor = self.seq_of.get(after_id, 0)
                candidates = [b for b in ordered if b.seq < cursor]
                chosen, has_more = candidates[:limit], len(candidates) > limit
            elif before_id is not None:
                cursor = self.seq_of.get(before_id, 0)
                candidates = [b for b in ordered if b.seq > cursor]
                chosen, has_more = candidates[-limit:], len(candidates) > limit
            else:
                chosen, has_more = ordered[:limit], len(ordered) > limit
            for batch in chosen:
                batch.refresh(now)
            data = [b.to_json(now) for b in chosen]
        return {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": dict(self.calls),
                "batches": len(self.batches),
                "requests": sum(len(b.index) for b in self.batches.values()),
                "faults_injected": self.faults.injected,
                "now": rfc3339(self.clock.now()),
                "settings": dict(vars(self.settings)),
            }


def _seq_text(seq: int) -> str:
    """Fixed-width base62 of the creation sequence: ids of one emulator sort by creation."""
    chars = []
    for _ in range(6):
        seq, r = divmod(seq, 62)
        chars.append(_ALPHABET[r])
    return "".join(reversed(chars))
