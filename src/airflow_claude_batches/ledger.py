"""
The batch ledger: one JSON record per batch under ``{store root}/_ledger/{batch_id}.json``.

The ledger is the organization's memory of every batch: who sent it (team, job, DAG, task, try), what
it was expected to cost and did cost, where its results went, and its life after the run (consumed,
archived, deleted at the API). It maps a ``job_key`` back to the full job id. One file per batch keeps
writers from different tasks apart and keeps :meth:`Ledger.records` O(number of batches) on any store.

Records hold no secrets: the model forbids unknown fields, so nothing slips in by accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    field_validator,
    model_validator,
)

from airflow_claude_batches.results import atomic_write, check_batch_id, store_root

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = [
    "LEDGER_DIR",
    "RESULTS_RETENTION",
    "Ledger",
    "LedgerError",
    "LedgerRecord",
    "LedgerRecordNotFound",
    "RequestCounts",
]

LEDGER_DIR = "_ledger"
#: The API keeps results this long after ``created_at``; then ``archived_at`` is set and they are gone.
RESULTS_RETENTION = timedelta(days=29)

ProcessingStatus = Literal["in_progress", "canceling", "ended"]


class LedgerError(ValueError):
    """A ledger change that does not validate."""


class LedgerRecordNotFound(LedgerError, KeyError):
    """No ledger record for the batch."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RequestCounts(BaseModel):
    """The API's ``request_counts`` of a batch."""

    model_config = ConfigDict(extra="forbid")

    processing: NonNegativeInt = 0
    succeeded: NonNegativeInt = 0
    errored: NonNegativeInt = 0
    canceled: NonNegativeInt = 0
    expired: NonNegativeInt = 0


class LedgerRecord(BaseModel):
    """What the organization knows about one batch. Timestamps are timezone-aware, stored in UTC ISO."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    batch_id: str
    team: str
    job_type: str
    job_id: str
    job_key: str
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    try_number: int | None = None
    request_count: NonNegativeInt
    first_index: NonNegativeInt = Field(default=0, description="Job index of this batch's first record.")
    processing_status: ProcessingStatus = "in_progress"
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    results_expire_at: AwareDatetime | None = Field(default=None, description="created_at + 29 days.")
    estimated_cost_usd: float | None = None
    actual_cost_usd: float | None = None
    results_uri: str | None = None
    consumed_at: AwareDatetime | None = None
    archived_at: AwareDatetime | None = None
    deleted_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None

    @field_validator(
        "created_at",
        "expires_at",
        "ended_at",
        "results_expire_at",
        "consumed_at",
        "archived_at",
        "deleted_at",
        "updated_at",
    )
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return value.astimezone(timezone.utc) if value is not None else None

    @field_validator("batch_id")
    @classmethod
    def _safe_batch_id(cls, value: str) -> str:
        return check_batch_id(value)

    @model_validator(mode="after")
    def _default_results_expiry(self) -> LedgerRecord:
        if self.results_expire_at is None:
            # object.__setattr__ avoids re-entering validation through validate_assignment.
            object.__setattr__(self, "results_expire_at", self.created_at + RESULTS_RETENTION)
        return self


class Ledger:
    """
    Read and write ledger records in the results store.

    :param root: store root URI, or an ``ObjectStoragePath`` (which carries its own connection);
        defaults to ``[claude_batches] results_root``.
    :param conn_id: connection for a URI root; defaults to ``[claude_batches] results_conn_id``.

    Updates are read-modify-write of one small file with last-writer-wins: each batch has one writer
    at a time (its task, then its trigger, then retention), which is what makes that enough.
    """

    def __init__(self, root: str | ObjectStoragePath | None = None, conn_id: str | None = None) -> None:
        self.path: ObjectStoragePath = store_root(root, conn_id) / LEDGER_DIR

    def _file(self, batch_id: str) -> ObjectStoragePath:
        return self.path / f"{check_batch_id(batch_id)}.json"

    def put(self, record: LedgerRecord) -> LedgerRecord:
        """Write ``record`` (replacing any record of the same batch), stamping ``updated_at``."""
        stamped = record.model_copy(update={"updated_at": datetime.now(timezone.utc)})
        with atomic_write(self._file(record.batch_id)) as handle:
            handle.write(stamped.model_dump_json(indent=2).encode())
        return stamped

    def get(self, batch_id: str) -> LedgerRecord:
        """The record of ``batch_id``; :class:`LedgerRecordNotFound` (a ``KeyError``) if none."""
        path = self._file(batch_id)
        if not path.exists():
            raise LedgerRecordNotFound(f"no ledger record for batch {batch_id!r} under {self.path}")
        return LedgerRecord.model_validate_json(path.read_bytes())

    def update(self, batch_id: str, /, **changes: Any) -> LedgerRecord:
        """
        Apply ``changes`` to the record of ``batch_id``, validate the result, write and return it.

        :raises LedgerRecordNotFound: if there is no record.
        :raises LedgerError: if a field is unknown, ``batch_id`` would change, or
            a value does not validate.
        """
        if unknown := sorted(set(changes) - set(LedgerRecord.model_fields)):
            raise LedgerError(f"cannot update batch {batch_id!r}: unknown ledger field(s) {unknown}")
        if changes.get("batch_id", batch_id) != batch_id:
            raise LedgerError(f"cannot update batch {batch_id!r}: batch_id is the record's identity")
        current = self.get(batch_id)
        try:
            updated = LedgerRecord.model_validate({**current.model_dump(), **changes})
        except ValidationError as err:
            raise LedgerError(f"cannot update batch {batch_id!r}: {err}") from None
        return self.put(updated)

    def records(self) -> Iterator[LedgerRecord]:
        """Every record, in batch id order; one listing and one read per batch."""
        if not self.path.exists():
            return
        for path in sorted(self.path.iterdir(), key=lambda p: p.name):
            if path.name.endswith(".json") and not path.name.startswith("."):
                yield LedgerRecord.model_validate_json(path.read_bytes())
