"""Plan one logical job before anything is sent: read, validate, mint ids, price and split.

The operator calls :func:`plan_job` on the worker. Every check runs over the whole job first and
all violations are reported together, so a team fixes its input in one round trip and the API
never sees a job that the policy rejects.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from airflow.sdk import ObjectStoragePath

from airflow_claude_batches.exceptions import MissingExtraError
from airflow_claude_batches.governance.cost import estimate_request_cost
from airflow_claude_batches.governance.ids import MAX_INDEX, job_key, namespaced_id
from airflow_claude_batches.governance.policy import Governance
from airflow_claude_batches.governance.quoting import quote
from airflow_claude_batches.store.filesystems import require_filesystem

#: The API's limits for one batch (a job larger than this becomes several batches).
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
#: How many violations the error message lists (the total is always given).
SHOWN_VIOLATIONS = 20
#: Bytes of JSON framing around each request in the create body (``,`` and list brackets).
_FRAMING_BYTES = 1
_BODY_START = b'{"requests":['
_BODY_END = b"]}"
_BODY_OVERHEAD_BYTES = len(_BODY_START + _BODY_END)
#: Deepest nesting of objects and arrays a JSONL line may have (Messages params need about 8).
MAX_JSON_DEPTH = 64


class JobRejected(ValueError):
    """The job breaks its policy; nothing was sent. The message lists the violations."""


@dataclass(frozen=True)
class Record:
    """One request of a job as a team gave it: its position, the team's own key, its params."""

    index: int
    key: str | None
    params: Any
    #: Where it came from, for messages: ``record 3`` or ``line 4``.
    origin: str


@dataclass
class PlannedBatch:
    """
    The requests of one batch, ready to send, with their place in the job.

    Each request is serialized once, while planning (its size decides the split), straight into the
    create body: ``body`` is the ``{"requests": [...]}`` JSON the API receives, built without a
    second copy of the job in memory.
    """

    first_index: int
    request_count: int = 0
    size_bytes: int = _BODY_OVERHEAD_BYTES
    estimated_cost_usd: float = 0.0
    _buffer: io.BytesIO = field(default_factory=io.BytesIO, repr=False)
    _body: bytes | None = field(default=None, repr=False)

    def add(self, request: bytes, cost: float) -> None:
        self._buffer.write(b"," if self.request_count else _BODY_START)
        self._buffer.write(request)
        self.request_count += 1
        self.size_bytes += len(request) + _FRAMING_BYTES
        self.estimated_cost_usd += cost

    @property
    def body(self) -> bytes:
        """The create body (JSON bytes); the buffer is closed off on first access (no copy)."""
        if self._body is None:
            self._buffer.write(_BODY_END if self.request_count else _BODY_START + _BODY_END)
            self._body = self._buffer.getvalue()  # shares the buffer's bytes, no copy
            self._buffer = io.BytesIO()
        return self._body


@dataclass
class JobPlan:
    """A validated job: its batches, the team's record keys in job order, and the spend estimate."""

    team: str
    job_type: str
    job_id: str
    job_key: str
    batches: list[PlannedBatch]
    keys: list[str | None]
    estimated_cost_usd: float

    @property
    def request_count(self) -> int:
        return sum(b.request_count for b in self.batches)


def iter_records(source: Any, conn_id: str | None = None) -> Iterator[Record]:
    """
    Yield the records of a job from a list (inline or from XCom) or a JSONL file's URI.

    A record is a Messages ``params`` dict, or ``{"key": ..., "params": {...}}`` with a key of the
    team's own. A URI (``file://``, ``s3://``, or a local path) is read line by line, never whole.
    A malformed line (also one nested deeper than :data:`MAX_JSON_DEPTH`) is yielded as a record
    whose params is a :class:`ValueError`, so the caller reports it with the other violations
    instead of stopping at the first one.

    :raises JobRejected: when the URI cannot be read (missing, a directory, no access): one
        paragraph saying what and where, and that nothing was sent.
    """
    if isinstance(source, str):
        yield from _iter_jsonl(source, conn_id)
        return
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise JobRejected(
            "requests must be a list of request dicts or the URI of a JSONL file, "
            f"got {type(source).__name__}; nothing was sent"
        )
    for index, item in enumerate(source):
        yield _record(index, item, f"record {index}")


def _iter_jsonl(uri: str, conn_id: str | None) -> Iterator[Record]:
    index = 0
    try:
        lines = require_filesystem(ObjectStoragePath(uri, conn_id=conn_id)).open("rb")
    except MissingExtraError as error:
        raise JobRejected(
            f"The requests file {quote(uri)} cannot be read: {error} Nothing was sent."
        ) from None
    except (OSError, ValueError) as error:
        raise JobRejected(_unreadable(uri, conn_id, error)) from None
    with lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            yield _record(index, _parse_line(raw), f"line {number}")
            index += 1


def _parse_line(raw: bytes) -> Any:
    """One JSONL line, or a ValueError naming what is wrong with it."""
    # Nesting is bounded by the count of openers: only a line with many of them needs a closer look.
    deep = raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH
    try:
        item = json.loads(raw)
    except RecursionError:
        return ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    except ValueError as e:
        return ValueError(f"invalid JSON ({e})")
    if deep and _depth(item) > MAX_JSON_DEPTH:
        return ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return item


def _depth(item: Any) -> int:
    """How deeply ``item`` nests dicts and lists (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(item, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def _unreadable(uri: str, conn_id: str | None, error: Exception) -> str:
    """One paragraph: which requests file, through which connection, what is wrong, nothing sent."""
    if isinstance(error, FileNotFoundError):
        what = "does not exist"
    elif isinstance(error, IsADirectoryError):
        what = "is a directory, not a JSONL file"
    elif isinstance(error, PermissionError):
        what = "cannot be read: access denied"
    else:
        what = f"cannot be read ({type(error).__name__}: {quote(str(error))})"
    via = f" through connection {conn_id!r}" if conn_id else ""
    return (
        f"The requests file {quote(uri)}{via} {what}. Check the URI given as requests (and, for s3://, "
        f"requests_conn_id and the bucket's permissions). Nothing was sent."
    )


def _record(index: int, item: Any, origin: str) -> Record:
    if isinstance(item, Mapping) and "params" in item and set(item) <= {"key", "params", "custom_id"}:
        key = item.get("key")
        if "custom_id" in item:
            return Record(index, None, ValueError(_CUSTOM_ID_MESSAGE), origin)
        return Record(index, None if key is None else str(key), item["params"], origin)
    return Record(index, None, item, origin)


_CUSTOM_ID_MESSAGE = "custom_id is minted by the operator from team, job and index; remove it (use 'key')"


def _violations(record: Record, governance: Governance, job_type: str) -> list[str]:
    params = record.params
    if isinstance(params, ValueError):
        return [str(params)]
    if not isinstance(params, Mapping):
        return [f"expected a params dict or {{'key', 'params'}}, got {type(params).__name__}"]
    found = ["custom_id is minted by the operator; remove it"] if "custom_id" in params else []
    return found + governance.job_types[job_type].check_request(params)


#: JSON bytes of one request, compact, UTF-8 as is (the API reads UTF-8; escapes would only add bytes).
_encode = msgspec.json.Encoder().encode


def plan_job(
    records: Iterable[Record], *, governance: Governance, team: str, job_type: str, job_id: str
) -> JobPlan:
    """
    Validate every record against the job type's policy and build the batches to send.

    :raises JobRejected: listing the first :data:`SHOWN_VIOLATIONS` violations with their record
        indexes (and how many in all), including the spend estimate against the ceiling.
    """
    _, policy = governance.resolve(team, job_type)
    key = job_key(job_id)
    violations: list[str] = []
    total_violations = 0
    batches: list[PlannedBatch] = []
    keys: list[str | None] = []
    job_bytes = 0
    estimate = 0.0
    count = 0
    for record in records:
        count += 1
        found = _violations(record, governance, job_type)
        if record.index > MAX_INDEX:
            found.append(f"a job holds at most {MAX_INDEX + 1} records")
        if found:
            total_violations += len(found)
            violations.extend(f"{record.origin}: {v}" for v in found[: SHOWN_VIOLATIONS - len(violations)])
            continue
        if total_violations:
            continue  # the job is rejected already: only keep counting violations
        custom_id = namespaced_id(team, job_id, record.index)
        try:
            request = _encode({"custom_id": custom_id, "params": record.params})
        except (TypeError, msgspec.EncodeError) as e:
            total_violations += 1
            if len(violations) < SHOWN_VIOLATIONS:
                violations.append(f"{record.origin}: params are not JSON: {e}")
            continue
        size = len(request) + _FRAMING_BYTES
        cost = estimate_request_cost(record.params, governance.prices)
        batch = batches[-1] if batches else None
        if (
            batch is None
            or batch.request_count >= MAX_BATCH_REQUESTS
            or batch.size_bytes + size > MAX_BATCH_BYTES
        ):
            batch = PlannedBatch(first_index=record.index)
            batches.append(batch)
        batch.add(request, cost)
        job_bytes += size
        estimate += cost
        keys.append(record.key)

    job_level: list[str] = []
    if count == 0:
        job_level.append("the job has no requests")
    if count > policy.max_requests:
        job_level.append(f"{count} requests exceed the job type's max_requests {policy.max_requests}")
    if not total_violations and job_bytes > policy.max_bytes:
        job_level.append(f"{job_bytes} bytes exceed the job type's max_bytes {policy.max_bytes}")
    if not total_violations and estimate > policy.max_job_cost_usd:
        job_level.append(
            f"estimated spend ${estimate:.4f} exceeds the job type's ceiling ${policy.max_job_cost_usd:.4f}"
        )
    if job_level or total_violations:
        raise JobRejected(
            _rejection_message(
                team, job_type, job_id, job_level + violations, len(job_level) + total_violations
            )
        )
    return JobPlan(
        team=team,
        job_type=job_type,
        job_id=job_id,
        job_key=key,
        batches=batches,
        keys=keys,
        estimated_cost_usd=estimate,
    )


def _rejection_message(team: str, job_type: str, job_id: str, shown: list[str], total: int) -> str:
    lines = [
        f"Job {quote(job_id)} (team {team}, job type {job_type}) rejected, nothing was sent: "
        f"{total} violation(s)"
    ]
    lines += [f"  - {v}" for v in shown[:SHOWN_VIOLATIONS]]
    if total > SHOWN_VIOLATIONS:
        lines.append(f"  ... and {total - SHOWN_VIOLATIONS} more")
    return "\n".join(lines)
