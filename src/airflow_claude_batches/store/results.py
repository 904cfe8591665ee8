"""
The results store: where finished batches land, split by result type, with a manifest.

Layout under the store root (``[claude_batches] results_root``, default
``file://$AIRFLOW_HOME/claude_batches``, or e.g. ``s3://bucket/prefix`` with
``[claude_batches] results_conn_id``)::

    {root}/{team}/{job_key}/keys.jsonl                 # optional: {"index": i, "key": k} per record
    {root}/{team}/{job_key}/{batch_id}/succeeded.jsonl # raw result lines, exactly as the API sent them
    {root}/{team}/{job_key}/{batch_id}/errored.jsonl
    {root}/{team}/{job_key}/{batch_id}/canceled.jsonl
    {root}/{team}/{job_key}/{batch_id}/expired.jsonl
    {root}/{team}/{job_key}/{batch_id}/manifest.json   # written last: a batch is complete iff it exists
    {root}/_ledger/{batch_id}.json                     # legacy: airflow claude-batches db import-files

Every file goes through ``airflow.sdk.ObjectStoragePath`` so ``file://`` and ``s3://`` share one code
path, and every file is written by :func:`~airflow_claude_batches.store.paths.atomic_write`, so a
crash never leaves a partial file under a final name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any, Literal, NoReturn, get_args

import msgspec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from airflow_claude_batches.exceptions import ForeignResultsError, IncompleteResultsError, ResultsError
from airflow_claude_batches.governance.cost import actual_cost
from airflow_claude_batches.governance.ids import RecordRef, parse_custom_id
from airflow_claude_batches.store.paths import atomic_write, check_batch_id, plain_uri

if TYPE_CHECKING:
    from airflow.sdk import Asset, ObjectStoragePath

    from airflow_claude_batches.governance.cost import ModelPrice

__all__ = [
    "KEYS_FILE",
    "MANIFEST_FILE",
    "RESULT_TYPES",
    "ResultRecord",
    "ResultType",
    "ResultsError",
    "ResultsManifest",
    "persist_batch_results",
    "read_manifest",
    "read_results",
    "verify_results",
    "write_keys",
    "write_results",
]

log = logging.getLogger(__name__)

ResultType = Literal["succeeded", "errored", "canceled", "expired"]
RESULT_TYPES: tuple[ResultType, ...] = get_args(ResultType)
MANIFEST_FILE = "manifest.json"
_SUPERSEDED_PREFIX = f"{MANIFEST_FILE}.superseded-"
KEYS_FILE = "keys.jsonl"
CHUNK_SIZE = 2**20
#: Downloads of one batch's results before :func:`persist_batch_results` gives up.
DOWNLOAD_ATTEMPTS = 3
#: Seconds before the second download; the third waits twice as long.
RETRY_DELAY_SECONDS = 1.0


class ResultsManifest(BaseModel):
    """What one stored batch holds; ``manifest.json`` beside the result files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str
    job_id: str
    job_key: str
    job_type: str
    batch_id: str
    batch_ids: list[str] = Field(description="Every batch of the logical job, this one included.")
    counts: dict[ResultType, int]
    sizes: dict[ResultType, int] = Field(description="Bytes per result file.")
    checksums: dict[ResultType, str] = Field(description="'sha256:<hex>' of each result file.")
    locations: dict[ResultType, str] = Field(description="URI of each result file.")
    conn_id: str | None = Field(default=None, description="Airflow connection that reads the locations.")
    estimated_cost_usd: float | None = None
    actual_cost_usd: float = Field(description="Batch-price cost summed from usage of succeeded results.")
    created_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    written_at: AwareDatetime
    namespaced: bool = Field(
        default=True,
        description="False for a batch adopted from outside the service: custom_ids kept as given.",
    )

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class ResultRecord:
    """One result line joined back to the team's job and record."""

    team: str
    job_id: str
    job_key: str
    index: int | None  # None for a batch adopted from outside: its ids were minted elsewhere
    key: str | None
    result_type: ResultType
    custom_id: str
    result: dict[str, Any]


def results_asset(team: str, job_type: str) -> Asset:
    """
    The Airflow Asset updated each time a job of ``team`` and ``job_type`` has stored its results.

    The submit operator declares it as an outlet, so a downstream DAG can be scheduled on it
    (``schedule=[results_asset("marketing", "enrichment")]``) and read where the results are
    from the event's ``extra``.
    """
    from airflow.sdk import Asset

    return Asset(
        name=f"claude_batches/{team}/{job_type}",
        uri=f"claude-batches://{team}/{job_type}",
        group="claude_batches",
    )


class _Usage(msgspec.Struct):
    """The token counts of ``message.usage`` that price a result; other fields are skipped unread."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: dict[str, Any] | None = None


class _Message(msgspec.Struct):
    model: str | None = None
    usage: _Usage | None = None


class _Result(msgspec.Struct):
    type: Any = None
    message: _Message | None = None


class _Line(msgspec.Struct):
    """What storing a result line needs of it: ``custom_id``, ``result.type``, the model and usage."""

    custom_id: Any = None
    result: _Result | None = None


#: Decodes only the fields above (the message's content is skipped, never built into objects).
_decode_line = msgspec.json.Decoder(_Line).decode


class _ResultFileWriter:
    """Counts, sizes and hashes lines as they go into one result file, in chunks of ``CHUNK_SIZE``."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.count = 0
        self.size = 0
        self.sha256 = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_size = 0

    def write_line(self, line: bytes) -> None:
        self._pending += (line, b"\n")
        self._pending_size += len(line) + 1
        self.count += 1
        if self._pending_size >= CHUNK_SIZE:
            self.flush()

    def flush(self) -> None:
        data = b"".join(self._pending)
        self.handle.write(data)
        self.sha256.update(data)
        self.size += len(data)
        self._pending.clear()
        self._pending_size = 0


class _UsageTotals:
    """
    Token counts of succeeded results summed per model; priced once at the end.

    Cost is linear in each count, so pricing the sums equals summing the prices, without a price
    lookup per line. Only the 1-hour share of cache writes is capped per line (as ``actual_cost``
    does), so it is summed already capped.
    """

    def __init__(self) -> None:
        self.by_model: dict[str, list[int]] = {}

    def add(self, model: str, usage: _Usage) -> None:
        writes = usage.cache_creation_input_tokens or 0
        writes_1h = min(int((usage.cache_creation or {}).get("ephemeral_1h_input_tokens") or 0), writes)
        totals = self.by_model.get(model)
        if totals is None:
            totals = self.by_model[model] = [0, 0, 0, 0, 0]
        totals[0] += usage.input_tokens or 0
        totals[1] += usage.output_tokens or 0
        totals[2] += writes
        totals[3] += writes_1h
        totals[4] += usage.cache_read_input_tokens or 0

    def cost(self, prices: Mapping[str, ModelPrice] | None) -> float:
        return sum(
            actual_cost(
                model,
                {
                    "input_tokens": t[0],
                    "output_tokens": t[1],
                    "cache_creation_input_tokens": t[2],
                    "cache_creation": {"ephemeral_1h_input_tokens": t[3]},
                    "cache_read_input_tokens": t[4],
                },
                prices,
            )
            for model, t in self.by_model.items()
        )


def write_results(
    lines: Iterable[bytes | str],
    dest: ObjectStoragePath,
    *,
    team: str,
    job_id: str,
    job_key: str,
    job_type: str,
    batch_id: str,
    batch_ids: Sequence[str] | None = None,
    estimated_cost_usd: float | None = None,
    created_at: datetime | None = None,
    ended_at: datetime | None = None,
    expires_at: datetime | None = None,
    prices: Mapping[str, ModelPrice] | None = None,
    records: range | None = None,
    expected_counts: Mapping[str, int] | None = None,
    namespaced: bool = True,
) -> ResultsManifest:
    """
    Stream raw JSONL result lines into ``dest`` (a batch directory), one file per result type.

    ``lines`` is consumed once and never held: e.g. ``iter_lines()`` of
    ``client.messages.batches.with_streaming_response.results(batch_id)``. Each line is stored byte
    for byte as the API sent it. The manifest (counts, sizes, sha256, locations, actual cost from the
    ``usage`` of succeeded results at batch prices) is written last, after all four files, so a batch
    directory with a manifest is complete. Writing the same batch again replaces it whole.

    Fails closed with :class:`ResultsError` on a line that is not JSON, has an unknown ``result.type``,
    or a ``custom_id`` not of this team and job; nothing is then left under a final name. The checks
    that make results complete are :func:`persist_batch_results`'s: use it to store a batch.

    :param prices: price overrides (the policy's ``prices``) on top of ``cost.DEFAULT_PRICES``.
    :param records: the job indexes this batch holds; a ``custom_id`` outside it is a
        :class:`ForeignResultsError`, one seen twice an :class:`IncompleteResultsError`.
    :param expected_counts: the batch's ``request_counts``; lines per type that differ are an
        :class:`IncompleteResultsError` and nothing is committed.
    :param namespaced: ``False`` for a batch adopted from outside the service: the ``custom_id`` values
        were not minted here, so they are kept as given (the API made them unique in the batch).
    """
    check_batch_id(batch_id)
    targets = {result_type: dest / f"{result_type}.jsonl" for result_type in RESULT_TYPES}
    seen = bytearray(len(records)) if records is not None else None
    # Every custom_id of this job is the prefix and an 8-digit index; others get the full check.
    prefix = f"{team}_{job_key}_"
    id_length = len(prefix) + 8
    usage = _UsageTotals()
    with ExitStack() as stack:
        writers = {rt: _ResultFileWriter(stack.enter_context(atomic_write(p))) for rt, p in targets.items()}
        by_type: dict[Any, _ResultFileWriter] = dict(writers)
        for number, raw in enumerate(lines, start=1):
            line = (raw.encode() if isinstance(raw, str) else raw).rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                entry = _decode_line(line)
            except msgspec.DecodeError as err:
                _explain_bad_line(line, number, team, job_key, batch_id, err)
            result = entry.result
            writer = by_type.get(result.type) if result is not None and isinstance(result.type, str) else None
            custom_id = entry.custom_id
            if writer is None or result is None or not isinstance(custom_id, str):
                _explain_bad_line(line, number, team, job_key, batch_id, None)
            if namespaced and (
                len(custom_id) != id_length
                or not custom_id.startswith(prefix)
                or not (custom_id[-8:].isascii() and custom_id[-8:].isdigit())
            ):
                _explain_bad_line(line, number, team, job_key, batch_id, None)
            if seen is not None and records is not None:
                _claim(seen, records, int(custom_id[-8:]), batch_id, number)
            if result.type == "succeeded":
                message = result.message
                if message is None or message.model is None or message.usage is None:
                    raise ResultsError(f"result line {number}: succeeded result without message model/usage")
                usage.add(message.model, message.usage)
            writer.write_line(line)
        for writer in writers.values():
            writer.flush()
        if expected_counts is not None:  # still inside the writers: a mismatch commits nothing
            _check_counts(batch_id, {rt: w.count for rt, w in writers.items()}, expected_counts)
        cost = usage.cost(prices)

    manifest = ResultsManifest(
        team=team,
        job_id=job_id,
        job_key=job_key,
        job_type=job_type,
        batch_id=batch_id,
        batch_ids=list(batch_ids) if batch_ids else [batch_id],
        counts={rt: w.count for rt, w in writers.items()},
        sizes={rt: w.size for rt, w in writers.items()},
        checksums={rt: f"sha256:{w.sha256.hexdigest()}" for rt, w in writers.items()},
        locations={rt: plain_uri(p) for rt, p in targets.items()},
        conn_id=dest.conn_id,
        estimated_cost_usd=estimated_cost_usd,
        actual_cost_usd=round(cost, 6),
        created_at=created_at,
        ended_at=ended_at,
        expires_at=expires_at,
        written_at=datetime.now(timezone.utc),
        namespaced=namespaced,
    )
    with atomic_write(dest / MANIFEST_FILE) as handle:
        handle.write(manifest.model_dump_json(indent=2).encode())
    return manifest


def persist_batch_results(
    download: Callable[[], Iterable[bytes | str]],
    dest: ObjectStoragePath,
    *,
    team: str,
    job_id: str,
    job_key: str,
    job_type: str,
    batch_id: str,
    expected_counts: Mapping[str, int],
    first_index: int,
    request_count: int,
    attempts: int = DOWNLOAD_ATTEMPTS,
    retry_delay: float = RETRY_DELAY_SECONDS,
    namespaced: bool = True,
    **manifest_fields: Any,
) -> ResultsManifest:
    """
    Store an ended batch's results complete, or store none and fail with the numbers.

    Complete means: the lines per result type equal the API's ``request_counts`` and each of the
    batch's records (job indexes ``first_index`` to ``first_index + request_count - 1``) answers
    exactly once, in whatever order the lines come. A short body (the stream ended early or broke
    off) or a repeated ``custom_id`` is downloaded again, ``attempts`` times in all, ``retry_delay``
    seconds times the attempt number apart; then :class:`IncompleteResultsError` says what each
    download held. A ``custom_id`` of another job or batch raises :class:`ForeignResultsError` at once.

    A manifest already in ``dest`` (an earlier store of this batch) is first renamed
    ``manifest.json.superseded-{utc time}``, so it never describes files that are being replaced.
    Manifests moved aside stay beside the files while storing fails (the batch then reads as not
    stored) and are removed once a new manifest is written.

    :param download: returns a fresh line source per attempt, e.g.
        ``functools.partial(hook.iter_result_lines, batch_id)``.
    :param namespaced: see :func:`write_results` (``False`` skips the job and index checks).
    :param manifest_fields: passed to :func:`write_results` (``batch_ids``, ``estimated_cost_usd``,
        ``created_at``, ``ended_at``, ``expires_at``, ``prices``).
    """
    check_batch_id(batch_id)
    expected: dict[str, int] = {rt: expected_counts.get(rt, 0) for rt in RESULT_TYPES}
    if expected_counts.get("processing", 0) or sum(expected.values()) != request_count:
        raise ResultsError(
            f"Batch {batch_id}: request_counts {dict(expected_counts)} do not account for its "
            f"{request_count} requests as ended results; nothing was downloaded."
        )
    _move_manifest_aside(dest)
    records = range(first_index, first_index + request_count) if namespaced else None
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        source = _Download(download)
        try:
            manifest = write_results(
                source,
                dest,
                team=team,
                job_id=job_id,
                job_key=job_key,
                job_type=job_type,
                batch_id=batch_id,
                records=records,
                expected_counts=expected,
                namespaced=namespaced,
                **manifest_fields,
            )
        except IncompleteResultsError as err:
            failures.append(f"download {attempt}: {err}")
        except _DownloadFailed as err:
            failures.append(
                f"download {attempt}: failed after {source.received} of {request_count} lines: {err}"
            )
        else:
            _remove_superseded(dest)
            return manifest
        log.warning("Results of batch %s are incomplete (%s)", batch_id, failures[-1])
        if attempt < attempts:
            time.sleep(retry_delay * attempt)
    raise IncompleteResultsError(
        f"Results of batch {batch_id} are incomplete after {attempts} download(s); nothing was stored "
        f"as complete. Expected {expected} ({request_count} lines). " + "; ".join(failures)
    )


class _DownloadFailed(Exception):
    """The line source raised: the stream broke off (a transport or API error), not a bad line."""


class _Download:
    """Wraps a fresh line source: counts the lines received and marks the source's own errors."""

    def __init__(self, download: Callable[[], Iterable[bytes | str]]) -> None:
        self._download = download
        self.received = 0

    def __iter__(self) -> Iterator[bytes | str]:
        try:
            for line in self._download():
                self.received += 1
                yield line
        except Exception as err:
            raise _DownloadFailed(f"{type(err).__name__}: {err}") from err


def _move_manifest_aside(dest: ObjectStoragePath) -> None:
    """Rename an existing manifest so that nothing claims the files about to be rewritten."""
    manifest = dest / MANIFEST_FILE
    if not manifest.exists():
        return
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    aside = dest / f"{_SUPERSEDED_PREFIX}{stamp}"
    manifest.fs.mv(manifest.path, aside.path)
    log.info("Moved the earlier manifest of %s aside to %s before storing again", dest, aside.name)


def _remove_superseded(dest: ObjectStoragePath) -> None:
    """Once a new manifest is written, the ones moved aside describe files that are gone."""
    for child in dest.iterdir():
        if child.name.startswith(_SUPERSEDED_PREFIX):
            with suppress(FileNotFoundError):
                child.unlink()


def _explain_bad_line(
    line: bytes, number: int, team: str, job_key: str, batch_id: str, error: Exception | None
) -> NoReturn:
    """Raise the precise :class:`ResultsError` for a line the fast path refused."""
    entry = _parse_line(line, number)
    _ref_of(entry, team, job_key, f"batch {batch_id} result line {number}")
    raise ResultsError(f"result line {number} cannot be stored: {error or 'malformed'}")


def _parse_line(line: bytes, number: int) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError as err:
        raise ResultsError(f"result line {number} is not JSON: {err}") from None
    result = entry.get("result") if isinstance(entry, dict) else None
    result_type = result.get("type") if isinstance(result, dict) else None
    if result_type not in RESULT_TYPES:
        raise ResultsError(
            f"result line {number} has unknown result type {result_type!r} "
            f"(expected one of {', '.join(RESULT_TYPES)}); refusing to drop or misfile it"
        )
    return entry


def _ref_of(entry: Mapping[str, Any], team: str, job_key: str, where: str) -> RecordRef:
    """Parse the line's ``custom_id`` and insist it belongs to ``team``'s job ``job_key``."""
    custom_id: Any = entry.get("custom_id")  # parse_custom_id rejects a non-string
    try:
        ref = parse_custom_id(custom_id)
    except ValueError as err:
        raise ForeignResultsError(f"{where}: {err}") from None
    if (ref.team, ref.job_key) != (team, job_key):
        raise ForeignResultsError(
            f"{where}: custom_id {custom_id!r} belongs to team {ref.team!r} job {ref.job_key!r}, "
            f"not to team {team!r} job {job_key!r}"
        )
    return ref


def _claim(seen: bytearray, records: range, index: int, batch_id: str, number: int) -> None:
    """Mark record ``index`` as answered: one byte per record of the batch keeps memory flat."""
    offset = index - records.start
    if 0 <= offset < len(seen) and not seen[offset]:
        seen[offset] = 1
        return
    where = f"batch {batch_id} result line {number}"
    if not 0 <= offset < len(seen):
        raise ForeignResultsError(
            f"{where}: record index {index} is not one of this batch's records "
            f"({records.start} to {records.stop - 1})"
        )
    raise IncompleteResultsError(f"{where}: record index {index} answered twice")


def _check_counts(batch_id: str, counts: Mapping[str, int], expected: Mapping[str, int]) -> None:
    if all(counts[rt] == expected.get(rt, 0) for rt in RESULT_TYPES):
        return
    detail = ", ".join(f"{rt} {counts[rt]} of {expected.get(rt, 0)}" for rt in RESULT_TYPES)
    raise IncompleteResultsError(
        f"batch {batch_id} results hold {sum(counts.values())} of {sum(expected.values())} lines ({detail})"
    )


def write_keys(job: ObjectStoragePath, keys: Iterable[str | None]) -> int:
    """
    Store the team's record keys of a job once, as ``{job}/keys.jsonl``; return how many were written.

    ``keys`` runs in job order (the record index is the position); ``None`` marks a record without a
    key and is skipped. :func:`read_results` joins results to these keys by index.
    """
    written = 0
    with atomic_write(job / KEYS_FILE) as handle:
        for index, key in enumerate(keys):
            if key is None:
                continue
            if not isinstance(key, str):
                raise ResultsError(f"record key at index {index} must be a string, got {type(key).__name__}")
            handle.write(json.dumps({"index": index, "key": key}).encode() + b"\n")
            written += 1
    return written


def _load_keys(job: ObjectStoragePath) -> dict[int, str]:
    path = job / KEYS_FILE
    if not path.exists():
        return {}
    keys: dict[int, str] = {}
    with path.fs.open(path.path, "rb") as handle:
        for line in handle:
            if line.strip():
                entry = json.loads(line)
                keys[entry["index"]] = entry["key"]
    return keys


def read_manifest(batch: ObjectStoragePath) -> ResultsManifest:
    """Load ``manifest.json`` of a batch directory; :class:`ResultsError` if the batch is not complete."""
    path = batch / MANIFEST_FILE
    if not path.exists():
        raise ResultsError(f"{batch} has no {MANIFEST_FILE}: no complete results stored there")
    return ResultsManifest.model_validate_json(path.read_bytes())


def _batch_dirs(path: ObjectStoragePath) -> list[ObjectStoragePath]:
    """``path`` itself if it is a batch directory, else the complete batch directories of a job."""
    if (path / MANIFEST_FILE).exists():
        return [path]
    if not path.exists():
        raise ResultsError(f"no results stored at {path}")
    batches = []
    for child in sorted(path.iterdir(), key=str):
        if not child.is_dir():
            continue
        if (child / MANIFEST_FILE).exists():
            batches.append(child)
        else:
            log.warning(
                "Skipping %s: no %s yet (still being written, or a write failed)", child, MANIFEST_FILE
            )
    return batches


def read_results(
    path: ObjectStoragePath, *, types: Iterable[ResultType] = RESULT_TYPES
) -> Iterator[ResultRecord]:
    """
    Yield the stored results of a batch directory, or of every complete batch of a job directory.

    Each line is joined to its team, full job id (from the manifest), record index and the team's
    record key (from ``keys.jsonl``, if the job has one). Lines stream from the store; only the keys
    of the job are held in memory.
    """
    wanted = list(types)
    if unknown := [t for t in wanted if t not in RESULT_TYPES]:
        raise ResultsError(f"unknown result type(s) {unknown}; expected some of {list(RESULT_TYPES)}")
    batches = _batch_dirs(path)
    keys_by_job: dict[str, dict[int, str]] = {}
    for batch in batches:
        manifest = read_manifest(batch)
        job = batch.parent
        keys = keys_by_job.get(str(job))
        if keys is None:
            keys = keys_by_job[str(job)] = _load_keys(job)
        for result_type in wanted:
            file = batch / f"{result_type}.jsonl"
            with file.fs.open(file.path, "rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    entry = json.loads(line)
                    if not manifest.namespaced:  # adopted: the id is the only key there is
                        index, key = None, entry["custom_id"]
                    else:
                        index = _ref_of(entry, manifest.team, manifest.job_key, f"{file} line {number}").index
                        key = keys.get(index)
                    yield ResultRecord(
                        team=manifest.team,
                        job_id=manifest.job_id,
                        job_key=manifest.job_key,
                        index=index,
                        key=key,
                        result_type=result_type,
                        custom_id=entry["custom_id"],
                        result=entry["result"],
                    )


def verify_results(batch: ObjectStoragePath) -> ResultsManifest:
    """Re-hash every result file of a batch against its manifest; :class:`ResultsError` on a mismatch."""
    manifest = read_manifest(batch)
    for result_type in RESULT_TYPES:
        file = batch / f"{result_type}.jsonl"
        digest = hashlib.sha256()
        size = 0
        with file.fs.open(file.path, "rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
        found = f"sha256:{digest.hexdigest()}"
        if found != manifest.checksums[result_type] or size != manifest.sizes[result_type]:
            raise ResultsError(
                f"{file}: {size} bytes {found} does not match the manifest "
                f"({manifest.sizes[result_type]} bytes {manifest.checksums[result_type]})"
            )
    return manifest
