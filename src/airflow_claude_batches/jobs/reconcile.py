"""
The unmanaged-batch sweep: every batch at the API that the ledger does not know is recorded and alerted.

Governance stops drift and honest mistakes in code a DAG cannot override, but a DAG author can still
run code on a worker: a script that calls the API around the service, or a create whose answer was
lost and never adopted, leaves a batch that nobody polls, stores or deletes, and that is paid for.
:func:`run_reconcile` (the hourly DAG ``claude_batches_reconcile``) lists every batch the API still
holds results for (the last 29 days, newest first) and compares with the ledger:

- a batch the ledger does not know is recorded with ``origin="unmanaged"`` under the team
  :data:`UNMANAGED_TEAM`, with its age, counts and status for the dashboard, and alerted once
  (``unmanaged``): the alert goes out when the row is written, and the row is written once;
- an unmanaged or adopted batch not ended in the ledger gets its status and counts refreshed (nobody
  else polls it; once it has ended, retention stores its results).

``airflow claude-batches adopt BATCH_ID --team T --job-type J`` (:func:`adopt_batch`) brings one
under management. Retention never touches an unmanaged batch: its results were never stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_claude_batches import alerts
from airflow_claude_batches.exceptions import ClaudeBatchesError
from airflow_claude_batches.governance.ids import job_key
from airflow_claude_batches.governance.policy import Governance, load_policy
from airflow_claude_batches.jobs.lifecycle import store_batch
from airflow_claude_batches.store.ledger import RESULTS_RETENTION, Ledger, LedgerRecord, RequestCounts
from airflow_claude_batches.store.paths import batch_dir, store_root
from airflow_claude_batches.store.results import ResultsManifest

if TYPE_CHECKING:
    from anthropic.types.messages import MessageBatch

    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

__all__ = [
    "UNMANAGED_TEAM",
    "AdoptError",
    "ReconcileReport",
    "adopt_batch",
    "run_reconcile",
    "total_requests",
]

log = logging.getLogger(__name__)

#: The ledger's team for batches nobody owns (not a valid team name: no team can be called that).
UNMANAGED_TEAM = "_unmanaged"


@dataclass
class ReconcileReport:
    """What one sweep saw: batches listed, newly found unmanaged ones, refreshed ones."""

    listed: int = 0
    found: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"listed": self.listed, "unmanaged_found": self.found, "refreshed": len(self.refreshed)}


def total_requests(batch: MessageBatch) -> int:
    """A batch's request count: its ``request_counts`` always add up to it."""
    return sum(batch.request_counts.model_dump().values())


def record_of(batch: MessageBatch, **identity: Any) -> LedgerRecord:
    """The ledger's row for a batch the service did not create: what the API says, plus ``identity``
    (team, job type, job id and key, origin)."""
    return LedgerRecord(
        batch_id=batch.id,
        request_count=total_requests(batch),
        processing_status=batch.processing_status,
        request_counts=RequestCounts(**batch.request_counts.model_dump()),
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        ended_at=batch.ended_at,
        **identity,
    )


def run_reconcile(
    *, hook: ClaudeBatchesHook | None = None, ledger: Ledger | None = None, now: datetime | None = None
) -> ReconcileReport:
    """Compare the API's batches of the last 29 days with the ledger (see the module docstring)."""
    if hook is None:
        from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

        hook = ClaudeBatchesHook()
    ledger = ledger or Ledger()
    horizon = (now or datetime.now(timezone.utc)) - RESULTS_RETENTION
    listed: dict[str, MessageBatch] = {}
    for batch in hook.list_batches(limit=1000):
        if batch.created_at < horizon:
            break  # newest first: the API holds no results for the rest
        listed[batch.id] = batch
    report = ReconcileReport(listed=len(listed))
    for batch_id in sorted(ledger.unknown(list(listed))):
        batch = listed[batch_id]
        ledger.put(
            record_of(
                batch,
                team=UNMANAGED_TEAM,
                job_type="unmanaged",
                job_id=batch_id,
                job_key="unmanaged",
                origin="unmanaged",
            )
        )
        report.found.append(batch_id)
        alerts.emit(
            alerts.Alert(
                kind="unmanaged",
                team=UNMANAGED_TEAM,
                job_id=batch_id,
                batch_id=batch_id,
                message=f"batch created {batch.created_at:%Y-%m-%d %H:%M} UTC around the service "
                f"({total_requests(batch)} requests, {batch.processing_status}): nobody stores or deletes "
                f"it; adopt it: `airflow claude-batches adopt {batch_id} --team TEAM --job-type JOB_TYPE`",
            )
        )
    for record in ledger.records(origin=("unmanaged", "adopted"), since=horizon):
        batch = listed.get(record.batch_id)
        if batch is None or record.processing_status == "ended":
            continue
        counts = RequestCounts(**batch.request_counts.model_dump())
        if (record.processing_status, record.request_counts) != (batch.processing_status, counts):
            ledger.update(
                record.batch_id,
                processing_status=batch.processing_status,
                request_counts=counts,
                ended_at=batch.ended_at,
            )
            report.refreshed.append(record.batch_id)
    log.info("Reconcile done: %s", report.summary())
    return report


class AdoptError(ClaudeBatchesError):
    """The batch cannot be adopted (already managed, or unknown at the API)."""


def adopt_batch(
    batch_id: str,
    *,
    team: str,
    job_type: str,
    job_id: str | None = None,
    hook: ClaudeBatchesHook | None = None,
    ledger: Ledger | None = None,
    governance: Governance | None = None,
) -> tuple[LedgerRecord, ResultsManifest | None]:
    r"""
    Bring a batch under management as a job of ``team`` and ``job_type`` (``origin="adopted"``).

    The batch is recorded (its spend then counts for the team), and if it has ended its results are
    stored like any other batch's, under ``{store root}/{team}/{job_key}/{batch_id}``; one still
    running is refreshed by the reconcile sweep and stored by retention once it ends. Its
    ``custom_id`` values were minted elsewhere, so they are kept as given; completeness is checked as
    for every batch.

    :raises AdoptError: if the ledger already manages the batch.
    :raises PolicyError: if the team may not run the job type.
    """
    if hook is None:
        from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

        hook = ClaudeBatchesHook()
    ledger = ledger or Ledger()
    governance = governance or load_policy()
    governance.resolve(team, job_type)
    known = ledger.find(batch_id)
    if known is not None and known.origin in ("managed", "adopted"):
        raise AdoptError(
            f"batch {batch_id} is already managed: job {known.job_id!r} of team {known.team}; nothing changed"
        )
    batch = hook.get_batch(batch_id)
    job_id = job_id or f"adopted {batch_id}"
    record = record_of(
        batch, team=team, job_type=job_type, job_id=job_id, job_key=job_key(job_id), origin="adopted"
    )
    ledger.put(record)
    log.info("Adopted batch %s as job %r of team %s (job type %s).", batch_id, job_id, team, job_type)
    if batch.processing_status != "ended":
        return record, None
    manifest = store_batch(
        hook,
        ledger,
        record,
        batch_dir(store_root(), team, record.job_key, batch_id),
        prices=governance.prices,
        counts=batch.request_counts.model_dump(),
        ended_at=batch.ended_at,
    )
    return ledger.get(batch_id), manifest
