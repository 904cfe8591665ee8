"""
Retention: what happens to a batch's results after its job ran, driven by each job type's policy.

For every batch in the ledger, :func:`run_retention` does at most these steps, in this order:

0. **Store what was never stored.** An ended batch whose results are not in the store (its task
   failed while storing, or it was adopted) and that the API still holds is stored now, through the
   operator's own code path (:func:`~airflow_claude_batches.jobs.lifecycle.store_batch`: complete or
   nothing). If that fails, an ``unstored`` alert goes out and the batch is left exactly as it is:
   nothing is archived, purged or deleted at the API for a batch whose results exist nowhere else.
1. **Unconsumed warning.** An ended batch whose results nobody marked consumed (``consumed_at``) and
   whose results expire at the API (``results_expire_at``, created + 29 days) in less than
   ``warn_days`` days raises an ``unconsumed`` alert, once per run.
2. **Archive or purge** at ``created_at + retention_days`` (the job type's policy):

   - *archive* copies the stored batch (result files, then the manifest, rewritten to point at its new
     location) to ``{archive root}/{team}/{job_key}/{batch_id}/``, re-hashes the copy against the
     manifest, and only then deletes the originals. The archive root is ``[claude_batches]
     archive_root`` (connection ``archive_conn_id``), default ``{results root}/_archive``.
   - *purge* deletes the stored batch.

   The ledger records each: ``archived_at`` with ``results_uri`` at the archive copy, or
   ``purged_at`` with ``results_uri`` cleared.
3. **Delete at the API** once the batch is archived or purged, or once the API dropped its results
   itself (day 29): ``DELETE /v1/messages/batches/{id}`` (a 404, already gone, is fine) and the
   ledger's ``deleted_at``.

It is safe to run again at any time, also after a run killed at any step: each step is recorded in
the ledger before the next one starts and skipped once recorded, and every step is idempotent (a
verified archive copy is not copied again, deleting what is already gone is a no-op). Nothing is
deleted before its archive copy verifies, and deletes touch only the batch's own folder
(``{root}/{team}/{job_key}/{batch_id}``) under the configured store root or archive root, checked on
the resolved path: a ledger row pointing anywhere else is refused and reported. Batches that are not
``ended`` are never touched; batches of a job type no longer in the policy, and batches the service
does not manage (``unmanaged`` or ``foreign``), are left alone. A failing batch is logged and listed
in the report, and the others go on; :meth:`RetentionReport.raise_for_failures` then fails the task.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_claude_batches import alerts
from airflow_claude_batches.exceptions import UnsafeDeleteError
from airflow_claude_batches.governance.policy import load_policy
from airflow_claude_batches.hooks import DEFAULT_CONN_ID
from airflow_claude_batches.store.ledger import RESULTS_RETENTION, Ledger, LedgerRecord
from airflow_claude_batches.store.paths import CONFIG_SECTION, atomic_write, batch_dir, plain_uri, store_root
from airflow_claude_batches.store.results import (
    CHUNK_SIZE,
    KEYS_FILE,
    MANIFEST_FILE,
    RESULT_TYPES,
    ResultsError,
    read_manifest,
    verify_results,
)

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_claude_batches.governance.policy import Governance
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

__all__ = [
    "ARCHIVE_DIR",
    "DEFAULT_WARN_DAYS",
    "RetentionError",
    "RetentionReport",
    "archive_root",
    "run_retention",
]

log = logging.getLogger(__name__)

#: Folder of the default archive root under the results root (not a valid team name, so never a team's).
ARCHIVE_DIR = "_archive"
#: Warn about unconsumed results when fewer days than this remain before the API drops them.
DEFAULT_WARN_DAYS = alerts.UNCONSUMED_WARNING / timedelta(days=1)


class RetentionError(RuntimeError):
    """Retention could not finish a batch (for example its archive copy did not verify)."""


@dataclass
class RetentionReport:
    """
    What one retention run did.

    ``counts`` per action or state: ``stored``, ``unconsumed_alert``, ``archived``, ``purged``,
    ``deleted`` (at the API) are actions of this run; ``not_ended``, ``unknown_job_type``,
    ``not_managed``, ``unstored`` (could not be stored: kept, alerted), ``done`` (deleted in an earlier
    run) and ``kept`` (nothing due yet) say why a batch was left as it was.
    """

    counts: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A small JSON-able summary for XCom."""
        return {"counts": dict(sorted(self.counts.items())), "failed": sorted(self.failures)}

    def raise_for_failures(self) -> None:
        """Raise :class:`RetentionError` listing every batch that failed, if any did."""
        if self.failures:
            lines = "\n".join(f"  {batch_id}: {reason}" for batch_id, reason in sorted(self.failures.items()))
            raise RetentionError(f"retention failed for {len(self.failures)} batch(es):\n{lines}")


def archive_root(
    root: str | ObjectStoragePath | None = None, conn_id: str | None = None
) -> ObjectStoragePath:
    """
    The archive root: ``root`` or ``[claude_batches] archive_root`` (with ``archive_conn_id``, which
    defaults to ``results_conn_id``); if neither is set, ``{results root}/_archive``.
    """
    from airflow.providers.common.compat.sdk import conf

    if root is None:
        root = conf.get(CONFIG_SECTION, "archive_root", fallback="") or None
    if root is None:
        return store_root() / ARCHIVE_DIR
    if conn_id is None:
        conn_id = conf.get(CONFIG_SECTION, "archive_conn_id", fallback="") or None
    return store_root(root, conn_id)


def run_retention(
    *,
    now: datetime | None = None,
    policy: Governance | None = None,
    ledger: Ledger | None = None,
    archive: ObjectStoragePath | None = None,
    hook: ClaudeBatchesHook | None = None,
    anthropic_conn_id: str = DEFAULT_CONN_ID,
    warn_days: float = DEFAULT_WARN_DAYS,
) -> RetentionReport:
    """
    Apply retention to every batch in the ledger (see the module docstring); never raises for one batch.

    :param now: the time to judge ages by (default: now, UTC); ledger times come from the API's clock.
    :param policy: the governance policy; default
        :func:`~airflow_claude_batches.governance.policy.load_policy`.
    :param ledger: default the ledger at ``[claude_batches] results_root``.
    :param archive: archive root; default :func:`archive_root`.
    :param hook: the API hook; default a ``ClaudeBatchesHook`` on ``anthropic_conn_id``.
    :param warn_days: warn about unconsumed results with fewer days than this left at the API.
    """
    now = now or datetime.now(timezone.utc)
    policy = policy or load_policy()
    ledger = ledger or Ledger()
    if hook is None:
        from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

        hook = ClaudeBatchesHook(anthropic_conn_id)
    retention = _Retention(
        now=now,
        policy=policy,
        ledger=ledger,
        archive=archive or archive_root(),
        hook=hook,
        warn_before=timedelta(days=warn_days),
    )
    report = RetentionReport()
    for record in ledger.records():
        if record.deleted_at is not None:
            report.counts["done"] += 1
            continue
        try:
            report.counts.update(retention.apply(record))
        except Exception as err:
            log.exception("Retention failed for batch %s (team %s)", record.batch_id, record.team)
            report.failures[record.batch_id] = f"{type(err).__name__}: {err}"
    log.info("Retention done: %s", report.summary())
    return report


@dataclass(frozen=True)
class _Retention:
    now: datetime
    policy: Governance
    ledger: Ledger
    archive: ObjectStoragePath
    hook: ClaudeBatchesHook
    warn_before: timedelta

    def apply(self, record: LedgerRecord) -> list[str]:
        """The steps due for one batch, each recorded in the ledger; returns what was done or why not."""
        if record.origin not in ("managed", "adopted"):
            return ["not_managed"]
        job_type = self.policy.job_types.get(record.job_type)
        if job_type is None:
            log.warning(
                "Leaving batch %s alone: job type %r is not in the policy %s",
                record.batch_id,
                record.job_type,
                self.policy.source,
            )
            return ["unknown_job_type"]
        if record.processing_status != "ended":
            if record.expires_at is not None and self.now < record.expires_at:
                return ["not_ended"]
            record = self._refresh(record)  # nobody tracks it any more (a timed-out or failed task)
            if record.processing_status != "ended":
                return ["not_ended"]
        if record.deleted_at is not None:
            return ["done"]
        done = []
        if self._never_stored(record):
            if self.now >= _results_expire_at(record):
                self._delete_at_api(record)  # the API dropped the results itself: nothing left to keep
                return ["deleted"]
            try:
                record = self._store(record)
            except Exception as err:
                alerts.emit_about(
                    record, "unstored", f"results could not be stored, the batch is kept at the API: {err}"
                )
                log.warning("Batch %s: results not stored, kept at the API: %s", record.batch_id, err)
                return ["unstored"]
            done.append("stored")
        if self._unconsumed(record):
            done.append("unconsumed_alert")
        if (
            record.archived_at is None
            and record.purged_at is None
            and self.now >= record.created_at + timedelta(days=job_type.retention_days)
        ):
            step = self._archive(record) if job_type.archive else self._purge(record)
            record = self.ledger.get(record.batch_id)
            done.append(step)
        if record.archived_at is not None or record.purged_at is not None:
            self._delete_at_api(record)
            done.append("deleted")
        return done or ["kept"]

    def _never_stored(self, record: LedgerRecord) -> bool:
        return record.results_uri is None and record.archived_at is None and record.purged_at is None

    def _store(self, record: LedgerRecord) -> LedgerRecord:
        """Store the batch's results as the operator does, in its place under the store root."""
        from airflow_claude_batches.jobs.lifecycle import store_batch

        dest = batch_dir(store_root(), record.team, record.job_key, record.batch_id)
        store_batch(self.hook, self.ledger, record, dest, prices=self.policy.prices)
        log.info("Stored the results of batch %s, never stored before, at %s", record.batch_id, dest)
        return self.ledger.get(record.batch_id)

    def _refresh(self, record: LedgerRecord) -> LedgerRecord:
        """The API's word on a batch past its 24 h expiry that the ledger still shows unfinished."""
        batch = self.hook.get_batch(record.batch_id)
        if batch.processing_status == record.processing_status:
            return record
        return self.ledger.update(
            record.batch_id,
            processing_status=batch.processing_status,
            request_counts=batch.request_counts.model_dump(),
            ended_at=batch.ended_at,
        )

    def _unconsumed(self, record: LedgerRecord) -> bool:
        expire_at = _results_expire_at(record)
        left = expire_at - self.now
        if record.consumed_at is not None or not timedelta(0) < left < self.warn_before:
            return False
        alerts.emit_about(
            record,
            "unconsumed",
            f"results were never consumed and expire at the API in {_days(left)} "
            f"({expire_at:%Y-%m-%d %H:%M} UTC); stored at {record.results_uri or 'nowhere'}",
        )
        return True

    def _stored(self, record: LedgerRecord) -> ObjectStoragePath:
        """The batch's stored folder, refused unless it is the batch's own folder under a known root."""
        from airflow.sdk import ObjectStoragePath

        assert record.results_uri is not None
        # results_uri carries the store's connection (as URI user info).
        return own_folder(
            ObjectStoragePath(record.results_uri),
            record,
            [store_root(), self.archive],
        )

    def _archive(self, record: LedgerRecord) -> str:
        source = self._stored(record)
        dest = batch_dir(self.archive, record.team, record.job_key, record.batch_id)
        if _same(source, dest):
            raise RetentionError(
                f"batch {record.batch_id} is already in the archive at {dest} (no archived_at)"
            )
        if _verified(dest):
            log.info(
                "Batch %s: a verified archive copy exists at %s (an earlier run stopped)",
                record.batch_id,
                dest,
            )
        elif (source / MANIFEST_FILE).exists():
            _copy_batch(source, dest)
            try:
                verify_results(dest)
            except ResultsError as err:
                _remove_batch(dest)
                raise RetentionError(
                    f"archive copy does not match the manifest, originals kept at {source}: {err}"
                ) from err
        else:
            raise RetentionError(f"no complete results at {source}, and no archive copy at {dest}")
        _remove_batch(source)
        self.ledger.update(record.batch_id, archived_at=self.now, results_uri=str(dest))
        log.info("Archived batch %s: %s -> %s", record.batch_id, source, dest)
        return "archived"

    def _purge(self, record: LedgerRecord) -> str:
        source = self._stored(record)
        _remove_batch(source)
        self.ledger.update(record.batch_id, purged_at=self.now, results_uri=None)
        log.info("Purged batch %s (%s)", record.batch_id, source)
        return "purged"

    def _delete_at_api(self, record: LedgerRecord) -> None:
        from anthropic import NotFoundError  # the SDK loads when retention runs, not when its DAG is parsed

        try:
            self.hook.delete_batch(record.batch_id)
        except NotFoundError:
            log.info("Batch %s was already deleted at the API", record.batch_id)
        self.ledger.update(record.batch_id, deleted_at=self.now)


def _copy_batch(source: ObjectStoragePath, dest: ObjectStoragePath) -> None:
    """Copy a stored batch (and its job's keys) to ``dest``; the manifest last, pointing at ``dest``."""
    manifest = read_manifest(source)
    for result_type in RESULT_TYPES:
        _copy_file(source / f"{result_type}.jsonl", dest / f"{result_type}.jsonl")
    keys = source.parent / KEYS_FILE
    if keys.exists():
        _copy_file(keys, dest.parent / KEYS_FILE)
    moved = manifest.model_copy(
        update={
            "locations": {rt: plain_uri(dest / f"{rt}.jsonl") for rt in RESULT_TYPES},
            "conn_id": dest.conn_id,
        }
    )
    with atomic_write(dest / MANIFEST_FILE) as handle:
        handle.write(moved.model_dump_json(indent=2).encode())


def _copy_file(source: ObjectStoragePath, dest: ObjectStoragePath) -> None:
    """Stream one file across stores (possibly different file systems) in chunks."""
    with source.fs.open(source.path, "rb") as reader, atomic_write(dest) as writer:
        while chunk := reader.read(CHUNK_SIZE):
            writer.write(chunk)


def _remove_batch(batch: ObjectStoragePath) -> None:
    """
    Delete a stored batch: the manifest first, so a half-deleted batch never looks complete; then the
    job directory too once no batch is left in it (only its ``keys.jsonl`` would remain). What is
    already gone is skipped, so a run killed half-way finishes the job next time.
    """
    fs = batch.fs
    if (batch / MANIFEST_FILE).exists():
        fs.rm((batch / MANIFEST_FILE).path)
    if batch.exists():
        fs.rm(batch.path, recursive=True)
    job = batch.parent
    if job.exists() and not any(child.is_dir() for child in job.iterdir()):
        fs.rm(job.path, recursive=True)


def _verified(batch: ObjectStoragePath) -> bool:
    if not (batch / MANIFEST_FILE).exists():
        return False
    try:
        verify_results(batch)
    except ResultsError:
        return False
    return True


def _resolved(path: ObjectStoragePath) -> tuple[str, str]:
    """(protocol, normalized path): symlinks resolved on local disks, ``..`` folded everywhere."""
    protocol = path.protocol if isinstance(path.protocol, str) else path.protocol[0]
    protocol = "file" if protocol in ("", "file", "local") else protocol
    raw = path.path
    return protocol, os.path.realpath(raw) if protocol == "file" else posixpath.normpath("/" + raw)


def _same(a: ObjectStoragePath, b: ObjectStoragePath) -> bool:
    return _resolved(a) == _resolved(b)


def own_folder(
    path: ObjectStoragePath, record: LedgerRecord, roots: list[ObjectStoragePath]
) -> ObjectStoragePath:
    """
    ``path`` if it is exactly ``{root}/{team}/{job_key}/{batch_id}`` of ``record`` under one of
    ``roots``, after resolving it; else :class:`~airflow_claude_batches.exceptions.UnsafeDeleteError`.
    """
    for root in roots:
        if _same(path, batch_dir(root, record.team, record.job_key, record.batch_id)):
            return path
    raise UnsafeDeleteError(
        f"batch {record.batch_id}: refusing to touch {plain_uri(path)}: it is not the batch's own folder "
        f"({record.team}/{record.job_key}/{record.batch_id}) under the store root or the archive root"
    )


def _results_expire_at(record: LedgerRecord) -> datetime:
    return record.results_expire_at or record.created_at + RESULTS_RETENTION


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86_400:.1f} days"
