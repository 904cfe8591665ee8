"""
One job's batches on the worker: created without paying twice, stored complete or not at all.

**Create intents.** No idempotency key exists for a create, and a lost answer (timeout, dropped
connection, 5xx) may hide a batch that exists and is billed. So before each create the job records
an intent (job key, batch index, planned request count, time) in the ledger, and sends the create
with the SDK's automatic retries off. After an ambiguous failure, and on any later attempt that finds
the intent still open (a retry after a crash), it lists the batches created since the intent and
adopts the one the ledger does not know whose request count equals the plan, when there is exactly
one; with several it stops (:class:`~airflow_claude_batches.exceptions.AmbiguousCreateError`) and
alerts; with none it creates again. The list may lag behind a create, so it is read again for up to
``[claude_batches] create_reconcile_seconds`` before concluding that nothing was made. An adopted
batch is checked again when its results arrive: every ``custom_id`` must belong to this job.

**Storing.** :func:`store_batch` streams an ended batch's results into the store through
:func:`~airflow_claude_batches.store.results.persist_batch_results` (complete or nothing) and records
counts, cost and location in the ledger; a batch whose results belong to another job is marked
``foreign`` and alerted. The operator, retention and ``airflow claude-batches adopt`` share it;
:func:`store_job` stores every batch of a job that ended, alerts when too many of its requests
failed, and sums up the job for XCom and the results asset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from airflow_claude_batches import alerts
from airflow_claude_batches.exceptions import AmbiguousCreateError, CreateFailedError, ForeignResultsError
from airflow_claude_batches.store.ledger import CreateIntent, Ledger, LedgerRecord, RequestCounts
from airflow_claude_batches.store.results import ResultsManifest, persist_batch_results

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath
    from anthropic.types.messages import MessageBatch

    from airflow_claude_batches.governance.cost import ModelPrice
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
    from airflow_claude_batches.jobs.plan import JobPlan, PlannedBatch

__all__ = [
    "MAX_CREATE_ATTEMPTS",
    "EndedBatch",
    "batch_record",
    "create_batches",
    "created_batches",
    "find_created",
    "is_ambiguous",
    "store_batch",
    "store_job",
]

log = logging.getLogger(__name__)

#: Creates sent for one planned batch before giving up (each after finding nothing at the API).
MAX_CREATE_ATTEMPTS = 3
#: How far before its intent a batch may look created (the API's clock against the worker's).
CLOCK_SKEW = timedelta(minutes=10)
#: Default of ``[claude_batches] create_reconcile_seconds``.
DEFAULT_RECONCILE_SECONDS = 30.0


@dataclass(frozen=True)
class EndedBatch:
    """The API's last word on a batch of the job: what its stored results must match."""

    batch_id: str
    request_counts: Mapping[str, int]
    ended_at: datetime | None


def created_batches(ledger: Ledger, team: str, job_key: str) -> tuple[list[str], bool]:
    """The batches earlier tries of a job created (its create intents), and whether that is all of them."""
    intents = ledger.intents(team, job_key)
    created = [i.batch_id for i in intents if i.batch_id is not None]
    return created, bool(intents) and len(created) == intents[0].planned_batches


def batch_record(ti: Any, plan: JobPlan, batch: MessageBatch, planned: PlannedBatch) -> LedgerRecord:
    """The ledger record of ``batch``, just created by the task instance ``ti`` for part of ``plan``."""
    return LedgerRecord(
        batch_id=batch.id,
        team=plan.team,
        job_type=plan.job_type,
        job_id=plan.job_id,
        job_key=plan.job_key,
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        try_number=ti.try_number,
        request_count=planned.request_count,
        first_index=planned.first_index,
        processing_status=batch.processing_status,
        request_counts=RequestCounts(**batch.request_counts.model_dump()),
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        estimated_cost_usd=planned.estimated_cost_usd,
    )


def is_ambiguous(error: BaseException) -> bool:
    """Whether a failed create may still have made the batch (no answer, or a server-side error)."""
    from anthropic import APIConnectionError, APIStatusError

    if isinstance(error, APIConnectionError):  # includes timeouts: the request may have arrived
        return True
    return isinstance(error, APIStatusError) and (error.status_code >= 500 or error.status_code in (408, 409))


def _reconcile_seconds() -> float:
    from airflow.providers.common.compat.sdk import conf

    return conf.getfloat("claude_batches", "create_reconcile_seconds", fallback=DEFAULT_RECONCILE_SECONDS)


def _total(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired


def find_created(
    hook: ClaudeBatchesHook, ledger: Ledger, intent: CreateIntent, *, wait: float = 0.0
) -> MessageBatch | None:
    """
    The batch an earlier create of ``intent`` made, if the API lists exactly one that fits: created
    since the intent, unknown to the ledger, with the planned request count. Lists again for up to
    ``wait`` seconds while none fits (a new batch may show in the list late).

    :raises AmbiguousCreateError: if several fit.
    """
    since = intent.intended_at - CLOCK_SKEW
    deadline = time.monotonic() + wait
    delay = 0.5
    while True:
        listed: list[MessageBatch] = []
        for batch in hook.list_batches(limit=1000):
            if batch.created_at < since:
                break  # newest first: the rest are older than the intent
            if _total(batch) == intent.planned_requests:
                listed.append(batch)
        unknown = ledger.unknown([b.id for b in listed])
        candidates = [b for b in listed if b.id in unknown]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            ids = ", ".join(b.id for b in candidates)
            message = (
                f"batch {intent.batch_index} of job {intent.job_id!r} (team {intent.team}): its create "
                f"may have succeeded without an answer, and {len(candidates)} batches at the API fit "
                f"({intent.planned_requests} requests, created since {since:%Y-%m-%d %H:%M:%S} UTC): {ids}. "
                f"Nothing was created again. Check them and adopt the right one with "
                f"`airflow claude-batches adopt BATCH_ID --team {intent.team} --job-type JOB_TYPE`."
            )
            alerts.emit(
                alerts.Alert(
                    kind="ambiguous_create",
                    team=intent.team,
                    job_id=intent.job_id,
                    batch_id=ids,
                    message=message,
                )
            )
            raise AmbiguousCreateError(message)
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 5.0)


def create_batches(
    hook: ClaudeBatchesHook,
    ledger: Ledger,
    plan: JobPlan,
    record_for: Callable[[MessageBatch, PlannedBatch], LedgerRecord],
    *,
    admission_entry: str | None = None,
    reconcile_seconds: float | None = None,
) -> list[str]:
    """
    Create the job's batches that do not exist yet, each recorded in the ledger as it is made.

    Batches an earlier attempt created are re-used: the ledger's intents say which exist. Safe to
    call again after any crash or failure (see the module docstring).

    :param record_for: the ledger record of a created batch (who sent it, its place in the job).
    :return: every batch id of the job, in plan order.
    """
    wait = _reconcile_seconds() if reconcile_seconds is None else reconcile_seconds
    earlier = {i.batch_index: i for i in ledger.intents(plan.team, plan.job_key)}
    batch_ids: list[str] = []
    for index, planned in enumerate(plan.batches):
        known = earlier.get(index)
        if known is not None and known.batch_id is not None:
            batch_ids.append(known.batch_id)
            continue
        intent = ledger.intend(
            CreateIntent(
                team=plan.team,
                job_key=plan.job_key,
                batch_index=index,
                job_id=plan.job_id,
                planned_batches=len(plan.batches),
                planned_requests=planned.request_count,
                first_index=planned.first_index,
                intended_at=datetime.now(timezone.utc),
                batch_id=None,
            )
        )
        batch = None
        if known is not None:  # an earlier attempt stopped between its intent and its record
            # A batch it made may not be listed yet: look until the intent is `wait` seconds old.
            settled = intent.intended_at + timedelta(seconds=wait) - datetime.now(timezone.utc)
            batch = find_created(hook, ledger, intent, wait=max(0.0, settled.total_seconds()))
            if batch is not None:
                log.warning("Adopting batch %s, made by an earlier attempt that stopped.", batch.id)
        batch = batch or _create(hook, ledger, intent, planned, wait)
        ledger.record_created(record_for(batch, planned), batch_index=index, admission_entry=admission_entry)
        batch_ids.append(batch.id)
        log.info("Batch %d of job %s: %s (%d requests).", index, plan.job_id, batch.id, planned.request_count)
    return batch_ids


def _create(
    hook: ClaudeBatchesHook, ledger: Ledger, intent: CreateIntent, planned: PlannedBatch, wait: float
) -> MessageBatch:
    """Send the create (the SDK's retries off); after an ambiguous failure, look before sending again."""
    last: Exception | None = None
    for attempt in range(1, MAX_CREATE_ATTEMPTS + 1):
        try:
            return hook.create_batch_body(planned.body)  # the SDK's own retries are off
        except Exception as err:
            if not is_ambiguous(err):
                raise
            log.warning(
                "Create of batch %d of job %s failed without a clear answer (%s, attempt %d of %d): "
                "looking for it at the API before sending it again.",
                intent.batch_index,
                intent.job_id,
                type(err).__name__,
                attempt,
                MAX_CREATE_ATTEMPTS,
            )
            found = find_created(hook, ledger, intent, wait=wait)
            if found is not None:
                log.warning("Adopting batch %s: the lost create did make it.", found.id)
                return found
            last = err
    raise CreateFailedError(
        f"Batch {intent.batch_index} of job {intent.job_id!r} (team {intent.team}) could not be created: "
        f"{MAX_CREATE_ATTEMPTS} attempts failed without an answer and none made a batch the API lists. "
        f"Last error: {type(last).__name__}: {str(last)[:200]}"
    ) from last


def store_batch(
    hook: ClaudeBatchesHook,
    ledger: Ledger,
    record: LedgerRecord,
    dest: ObjectStoragePath,
    *,
    prices: Mapping[str, ModelPrice] | None = None,
    batch_ids: list[str] | None = None,
    counts: Mapping[str, int] | None = None,
    ended_at: datetime | None = None,
) -> ResultsManifest:
    """
    Store an ended batch's results under ``dest``, complete or not at all, and record it in the ledger.

    :param counts: the batch's ``request_counts`` as the API last reported them once it ended (what the
        stored lines must match), with ``ended_at``; retrieved from the API when not given.
    :raises ForeignResultsError: after marking the batch ``foreign`` and alerting.
    """
    if counts is None:
        batch = hook.get_batch(record.batch_id)
        counts, ended_at = batch.request_counts.model_dump(), batch.ended_at
    fields: dict[str, Any] = {
        "batch_ids": batch_ids or [record.batch_id],
        "estimated_cost_usd": record.estimated_cost_usd,
        "created_at": record.created_at,
        "ended_at": ended_at,
        "expires_at": record.expires_at,
        "prices": prices,
    }
    try:
        manifest = persist_batch_results(
            partial(hook.iter_result_lines, record.batch_id),
            dest,
            team=record.team,
            job_id=record.job_id,
            job_key=record.job_key,
            job_type=record.job_type,
            batch_id=record.batch_id,
            expected_counts=counts,
            first_index=record.first_index,
            request_count=record.request_count,
            # A batch adopted from outside carries custom_ids minted elsewhere: kept as given.
            namespaced=record.origin != "adopted",
            **fields,
        )
    except ForeignResultsError as err:
        ledger.update(record.batch_id, origin="foreign")
        alerts.emit_about(
            record, "foreign", f"its results do not belong to this job, nothing was stored: {err}"
        )
        raise
    ledger.update(
        record.batch_id,
        processing_status="ended",
        request_counts=counts,
        ended_at=ended_at,
        actual_cost_usd=manifest.actual_cost_usd,
        results_uri=str(dest),
    )
    return manifest


def store_job(
    hook: ClaudeBatchesHook,
    ledger: Ledger,
    job_dir: ObjectStoragePath,
    batches: list[EndedBatch],
    *,
    job_type: str,
    error_ratio_alert: float,
    prices: Mapping[str, ModelPrice] | None = None,
) -> dict[str, Any]:
    """
    Store every ended batch of one job under ``job_dir`` (:func:`store_batch`) and sum the job up.

    A batch whose errored and expired requests exceed ``error_ratio_alert`` (the job type's
    threshold) is alerted. Returns the summary the task pushes to XCom and the results asset carries:
    counts over all batches, estimated and actual cost, where the results are.
    """
    totals = {"succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    actual = estimated = 0.0
    batch_ids = [b.batch_id for b in batches]
    records = [ledger.get(batch_id) for batch_id in batch_ids]
    for record, ended in zip(records, batches, strict=True):
        manifest = store_batch(
            hook,
            ledger,
            record,
            job_dir / record.batch_id,
            prices=prices,
            batch_ids=batch_ids,
            counts=ended.request_counts,
            ended_at=ended.ended_at,
        )
        for kind in totals:
            totals[kind] += ended.request_counts.get(kind, 0)
        actual += manifest.actual_cost_usd
        estimated += record.estimated_cost_usd or 0.0
        ratio = alerts.failure_ratio(ended.request_counts)
        if ratio > error_ratio_alert:
            alerts.emit_about(
                record,
                "error_ratio",
                f"{ratio:.1%} of requests errored or expired "
                f"(threshold {error_ratio_alert:.1%}) {dict(ended.request_counts)}",
            )
    return {
        "team": records[0].team,
        "job_type": job_type,
        "job_id": records[0].job_id,
        "batch_ids": batch_ids,
        "request_counts": totals,
        "estimated_cost_usd": round(estimated, 6),
        "actual_cost_usd": round(actual, 6),
        "results_uri": str(job_dir),
        "results_conn_id": job_dir.conn_id,
    }
