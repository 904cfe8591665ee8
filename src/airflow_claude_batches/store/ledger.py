"""
The batch ledger: one row per batch in the ledger database (:mod:`airflow_claude_batches.store`).

The ledger is the organization's memory of every batch: who sent it (team, job, DAG, task, try), what
it was expected to cost and did cost, where its results went, and its life after the run (consumed,
archived, deleted at the API). It maps a ``job_key`` back to the full job id.

Every change is one transaction that writes only the fields it changes, so writers of different
fields (the trigger's counts, a consumer's ``consumed_at``, retention's ``archived_at``) never undo
each other. Each change of status or counts also lands in the batch's status history. The queries
that run per submit or per page view (spend, in-flight batches, a team summary, a page of batches)
are SQL over indexes (``benchmarks/ledger_scale.py``: at 100,000 batches a submit's checks take
~0.01-0.05 s and the team summary ~0.2 s on SQLite; the summary's all-time counts are the part that
still grows with history).

Records hold no secrets: the model forbids unknown fields, so nothing slips in by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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
from sqlalchemy import BigInteger, Connection, and_, case, cast, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from airflow_claude_batches.store import schema
from airflow_claude_batches.store.database import LedgerDatabase, ledger_database
from airflow_claude_batches.store.paths import check_batch_id

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = [
    "LEDGER_DIR",
    "RESULTS_RETENTION",
    "BatchPage",
    "CreateIntent",
    "DailySpend",
    "ImportOutcome",
    "Ledger",
    "LedgerError",
    "LedgerRecord",
    "LedgerRecordNotFound",
    "ProcessingSteps",
    "RequestCounts",
    "StatusPoint",
    "TeamTotals",
    "import_files",
    "period_starts",
    "upsert",
]

#: Where the first version kept one JSON file per batch (``{store root}/_ledger/``): read by
#: ``airflow claude-batches db import-files``.
LEDGER_DIR = "_ledger"
#: The API keeps results this long after ``created_at``; then ``archived_at`` is set and they are gone.
RESULTS_RETENTION = timedelta(days=29)
#: What a batch costs as the budget counts it: actual once its results are stored, else the estimate.
_BATCH_COST = func.coalesce(schema.batches.c.actual_cost_usd, schema.batches.c.estimated_cost_usd, 0.0)

ProcessingStatus = Literal["in_progress", "canceling", "ended"]
Origin = Literal["managed", "adopted", "unmanaged", "foreign"]


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
    purged_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    origin: Origin = Field(
        default="managed",
        description="managed: created by the service; adopted: brought under management later; "
        "unmanaged: found at the API, created around the service; foreign: its results belong to another job",
    )

    @field_validator(
        "created_at",
        "expires_at",
        "ended_at",
        "results_expire_at",
        "consumed_at",
        "archived_at",
        "deleted_at",
        "purged_at",
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


@dataclass(frozen=True)
class StatusPoint:
    """A batch's status and counts as observed at one moment."""

    observed_at: datetime
    processing_status: str
    request_counts: RequestCounts


@dataclass(frozen=True)
class TeamTotals:
    """One team's batches, in-flight volume, counts (also per job type) and committed spend (see
    :meth:`Ledger.spend`)."""

    team: str
    batches: int
    batches_in_flight: int
    requests_processing: int
    request_counts: dict[str, int]
    spend_today_usd: float
    spend_month_usd: float
    counts_by_job_type: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class DailySpend:
    """Per team, the cost of the batches created on each UTC day (``day`` is its midnight, UTC)."""

    team: str
    day: datetime
    usd: float


@dataclass(frozen=True)
class ProcessingSteps:
    """Per team, how its requests in ``processing`` changed within each time bucket.

    ``start`` is the bucket's start (UTC); ``change`` the net change of the team's processing requests
    over the bucket. Changes from before the requested period are folded into its first bucket, so
    the running sum of ``change`` is the team's requests processing at the end of each bucket.
    """

    team: str
    start: datetime
    change: int


@dataclass(frozen=True)
class CreateIntent:
    """A planned batch of a job, recorded before its create was sent; ``batch_id`` once it exists."""

    team: str
    job_key: str
    batch_index: int
    job_id: str
    planned_batches: int
    planned_requests: int
    first_index: int
    intended_at: datetime
    batch_id: str | None


@dataclass(frozen=True)
class BatchPage:
    """One page of the batch list, newest first."""

    records: list[LedgerRecord]
    page: int
    per_page: int
    total: int


_COUNTED = {"processing_status", "request_counts"}
_FIELDS = tuple(LedgerRecord.model_fields)


def _row(record: LedgerRecord) -> dict[str, Any]:
    row = record.model_dump(exclude={"request_counts"})
    row.update(record.request_counts.model_dump())
    return row


def _record(row: Any) -> LedgerRecord:
    data = dict(row._mapping)
    data["request_counts"] = {kind: data.pop(kind) for kind in schema.COUNT_KINDS}
    return LedgerRecord.model_validate(data)


def upsert(conn: Connection, table: Any, values: dict[str, Any], keys: Sequence[str]) -> None:
    """Insert ``values`` or, if a row with the same ``keys`` exists, overwrite its other columns."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values)
    changes = {k: statement.excluded[k] for k in values if k not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changes))


class Ledger:
    """
    Read and write ledger records in the ledger database.

    :param database: defaults to the configured one (:func:`~airflow_claude_batches.store.database.
        ledger_database`: ``[claude_batches] ledger_conn_id``, else the embedded SQLite file).
    """

    def __init__(self, database: LedgerDatabase | None = None) -> None:
        self.db = database or ledger_database()

    def put(self, record: LedgerRecord) -> LedgerRecord:
        """Write ``record`` whole (replacing any record of the same batch), stamping ``updated_at``."""
        stamped = record.model_copy(update={"updated_at": datetime.now(timezone.utc)})
        with self.db.write() as conn:
            self._put(conn, stamped)
        return stamped

    def put_many(self, records: Iterable[LedgerRecord]) -> list[LedgerRecord]:
        """
        Write every record as :meth:`put` does, in one transaction: all or none.

        For bulk loads (imports, benchmarks), where a transaction per record is the cost.
        """
        now = datetime.now(timezone.utc)
        stamped = [record.model_copy(update={"updated_at": now}) for record in records]
        with self.db.write() as conn:
            for record in stamped:
                self._put(conn, record)
        return stamped

    def record_created(
        self, record: LedgerRecord, *, batch_index: int, admission_entry: str | None = None
    ) -> LedgerRecord:
        """
        Record a batch the service just created, in one transaction with what it settles.

        The job's spend commitment for ``batch_index`` now points at the batch (its spend counts
        through the batch from here on), and the job's admission reservation shrinks by the batch's
        requests (the ledger counts them as in flight from here on): there is no moment where a
        created batch is counted twice or not at all.
        """
        stamped = record.model_copy(update={"updated_at": datetime.now(timezone.utc)})
        with self.db.write() as conn:
            known = self._get(conn, record.batch_id, lock=True)
            if known is not None and (known.team, known.job_key) != (record.team, record.job_key):
                raise LedgerError(
                    f"batch {record.batch_id} is already in the ledger for job {known.job_id!r} of team "
                    f"{known.team}: it cannot also be batch {batch_index} of job {record.job_id!r}"
                )
            self._put(conn, stamped)
            intents = schema.create_intents
            conn.execute(
                update(intents)
                .where(
                    intents.c.team == record.team,
                    intents.c.job_key == record.job_key,
                    intents.c.batch_index == batch_index,
                )
                .values(batch_id=record.batch_id)
            )
            conn.execute(
                update(schema.spend_commitments)
                .where(
                    schema.spend_commitments.c.team == record.team,
                    schema.spend_commitments.c.job_key == record.job_key,
                    schema.spend_commitments.c.batch_index == batch_index,
                )
                .values(batch_id=record.batch_id)
            )
            if admission_entry is not None:
                entries = schema.admission
                conn.execute(
                    update(entries)
                    .where(entries.c.entry_id == admission_entry)
                    .values(created_requests=entries.c.created_requests + record.request_count)
                )
        return stamped

    def intend(self, intent: CreateIntent) -> CreateIntent:
        """
        Record that ``intent``'s batch is about to be created, unless an earlier attempt did: then
        return that earlier intent (its time bounds the search for a batch whose answer was lost).
        """
        table = schema.create_intents
        key = (table.c.team == intent.team, table.c.job_key == intent.job_key)
        with self.db.write() as conn:
            row = conn.execute(select(table).where(*key, table.c.batch_index == intent.batch_index)).first()
            if row is not None:
                return CreateIntent(**row._mapping)
            conn.execute(insert(table).values(**intent.__dict__))
        return intent

    def intents(self, team: str, job_key: str) -> list[CreateIntent]:
        """The job's create intents, by batch index."""
        table = schema.create_intents
        with self.db.read() as conn:
            rows = conn.execute(
                select(table)
                .where(table.c.team == team, table.c.job_key == job_key)
                .order_by(table.c.batch_index)
            ).all()
        return [CreateIntent(**row._mapping) for row in rows]

    def team_dags(self) -> dict[str, set[str]]:
        """The DAGs each team's batches came from (what the dashboard asks the auth manager about)."""
        table = schema.batches
        dags: dict[str, set[str]] = {}
        with self.db.read() as conn:
            for team, dag_id in conn.execute(select(table.c.team, table.c.dag_id).distinct()):
                found = dags.setdefault(team, set())
                if dag_id:
                    found.add(dag_id)
        return dags

    def unknown(self, batch_ids: Sequence[str]) -> set[str]:
        """Those of ``batch_ids`` the ledger has no record of."""
        table = schema.batches
        known: set[str] = set()
        ids = list(batch_ids)
        with self.db.read() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                known.update(
                    conn.execute(select(table.c.batch_id).where(table.c.batch_id.in_(chunk))).scalars()
                )
        return set(ids) - known

    def _put(self, conn: Connection, record: LedgerRecord) -> None:
        before = self._get(conn, record.batch_id, lock=True)
        upsert(conn, schema.batches, _row(record), ["batch_id"])
        if before is None or _status_of(before) != _status_of(record):
            self._observe(conn, record)

    def _observe(self, conn: Connection, record: LedgerRecord) -> None:
        conn.execute(
            insert(schema.batch_status_history).values(
                batch_id=record.batch_id,
                observed_at=record.updated_at or datetime.now(timezone.utc),
                processing_status=record.processing_status,
                **record.request_counts.model_dump(),
            )
        )

    def _get(self, conn: Connection, batch_id: str, *, lock: bool = False) -> LedgerRecord | None:
        query = select(schema.batches).where(schema.batches.c.batch_id == check_batch_id(batch_id))
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        return _record(row) if row is not None else None

    def get(self, batch_id: str) -> LedgerRecord:
        """The record of ``batch_id``; :class:`LedgerRecordNotFound` (a ``KeyError``) if none."""
        with self.db.read() as conn:
            record = self._get(conn, batch_id)
        if record is None:
            raise LedgerRecordNotFound(f"no ledger record for batch {batch_id!r} in {self.db.display_url}")
        return record

    def find(self, batch_id: str) -> LedgerRecord | None:
        """The record of ``batch_id``, or None."""
        with self.db.read() as conn:
            return self._get(conn, batch_id)

    def update(self, batch_id: str, /, **changes: Any) -> LedgerRecord:
        """
        Apply ``changes`` to the record of ``batch_id`` and return it: one transaction, the row locked,
        only the changed columns written.

        :raises LedgerRecordNotFound: if there is no record.
        :raises LedgerError: if a field is unknown, ``batch_id`` would change, or
            a value does not validate.
        """
        if unknown := sorted(set(changes) - set(_FIELDS)):
            raise LedgerError(f"cannot update batch {batch_id!r}: unknown ledger field(s) {unknown}")
        if changes.get("batch_id", batch_id) != batch_id:
            raise LedgerError(f"cannot update batch {batch_id!r}: batch_id is the record's identity")
        with self.db.write() as conn:
            current = self._get(conn, batch_id, lock=True)
            if current is None:
                raise LedgerRecordNotFound(
                    f"no ledger record for batch {batch_id!r} in {self.db.display_url}"
                )
            try:
                updated = LedgerRecord.model_validate(
                    {**current.model_dump(), **changes, "updated_at": datetime.now(timezone.utc)}
                )
            except ValidationError as err:
                raise LedgerError(f"cannot update batch {batch_id!r}: {err}") from None
            new_row, old_row = _row(updated), _row(current)
            columns = {k: v for k, v in new_row.items() if v != old_row[k] or k == "updated_at"}
            conn.execute(
                update(schema.batches).where(schema.batches.c.batch_id == batch_id).values(**columns)
            )
            if _status_of(updated) != _status_of(current):
                self._observe(conn, updated)
        return updated

    def records(
        self,
        *,
        team: str | Sequence[str] | None = None,
        job_type: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        origin: Sequence[str] | None = None,
        chunk: int = 1000,
    ) -> Iterator[LedgerRecord]:
        """
        The records that match every filter given, oldest first; read ``chunk`` rows per query.

        :param team: a team or several; ``status``: a ``processing_status``; ``since``/``until``: bounds
            of ``created_at`` (inclusive, exclusive); ``origin``: origins to include.
        """
        table = schema.batches
        where = _filters(team=team, job_type=job_type, status=status, since=since, until=until, origin=origin)
        after: tuple[datetime, str] | None = None
        while True:
            query = select(table).where(*where).order_by(table.c.created_at, table.c.batch_id).limit(chunk)
            if after is not None:
                query = query.where(
                    or_(
                        table.c.created_at > after[0],
                        and_(table.c.created_at == after[0], table.c.batch_id > after[1]),
                    )
                )
            with self.db.read() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield _record(row)
            if len(rows) < chunk:
                return
            after = (rows[-1].created_at, rows[-1].batch_id)

    def history(self, batch_id: str) -> list[StatusPoint]:
        """Every status and counts change of the batch, oldest first."""
        table = schema.batch_status_history
        with self.db.read() as conn:
            rows = conn.execute(
                select(table).where(table.c.batch_id == batch_id).order_by(table.c.observed_at, table.c.id)
            ).all()
        return [
            StatusPoint(
                row.observed_at,
                row.processing_status,
                RequestCounts(**{kind: getattr(row, kind) for kind in schema.COUNT_KINDS}),
            )
            for row in rows
        ]

    def page(
        self,
        page: int = 1,
        per_page: int = 100,
        *,
        team: Sequence[str] | None = None,
        status: str | None = None,
        since: datetime | None = None,
    ) -> BatchPage:
        """Page ``page`` (from 1) of the batches, newest first."""
        page, per_page = max(page, 1), min(max(per_page, 1), 1000)
        table = schema.batches
        where = _filters(team=team, status=status, since=since)
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
            rows = conn.execute(
                select(table)
                .where(*where)
                .order_by(table.c.created_at.desc(), table.c.batch_id.desc())
                .limit(per_page)
                .offset((page - 1) * per_page)
            ).all()
        return BatchPage([_record(r) for r in rows], page, per_page, total)

    def spend(
        self,
        conn: Connection,
        team: str | Sequence[str] | None,
        since: datetime,
        *,
        exclude_job: str | None = None,
    ) -> dict[str, float]:
        """
        Committed spend per team since ``since``: each batch created since then at its actual cost
        once known, else its estimate; plus each spend commitment made since then whose batch does
        not exist yet (a job between its budget check and its create) and that was not released.
        ``exclude_job`` (a job key) leaves out that job's own commitments.
        """
        batches, commitments = schema.batches, schema.spend_commitments
        totals: dict[str, float] = {}
        query = (
            select(batches.c.team, func.sum(_BATCH_COST))
            .where(batches.c.created_at >= since, *_filters(team=team))
            .group_by(batches.c.team)
        )
        for name, amount in conn.execute(query):
            totals[name] = totals.get(name, 0.0) + float(amount or 0.0)
        open_commitments = [
            commitments.c.committed_at >= since,
            commitments.c.batch_id.is_(None),
            commitments.c.released_at.is_(None),
        ]
        if team is not None:
            open_commitments.append(commitments.c.team.in_([team] if isinstance(team, str) else list(team)))
        if exclude_job is not None:
            open_commitments.append(commitments.c.job_key != exclude_job)
        query = (
            select(commitments.c.team, func.sum(commitments.c.amount_usd))
            .where(*open_commitments)
            .group_by(commitments.c.team)
        )
        for name, amount in conn.execute(query):
            totals[name] = totals.get(name, 0.0) + float(amount or 0.0)
        return totals

    def team_totals(self, now: datetime, teams: Sequence[str] | None = None) -> list[TeamTotals]:
        """
        Per team (by name): batches, in flight, counts over all batches (in total and per job type, which
        is what each job type's ``error_ratio_alert`` judges), spend today and this month.
        """
        table = schema.batches
        running = table.c.processing_status != "ended"
        day, month = period_starts(now)
        with self.db.read() as conn:
            rows = conn.execute(
                select(
                    table.c.team,
                    table.c.job_type,
                    func.count(),
                    func.sum(case((running, 1), else_=0)),
                    func.sum(case((running, table.c.processing), else_=0)),
                    *(func.sum(getattr(table.c, kind)) for kind in schema.COUNT_KINDS),
                )
                .where(*_filters(team=teams))
                .group_by(table.c.team, table.c.job_type)
            ).all()
            daily = self.spend(conn, teams, day)
            monthly = self.spend(conn, teams, month)
        by_team: dict[str, list[Any]] = {}
        for row in rows:
            by_team.setdefault(row[0], []).append(row)
        totals = []
        for team, team_rows in sorted(by_team.items()):
            by_type = {
                row[1]: {kind: int(row[5 + i] or 0) for i, kind in enumerate(schema.COUNT_KINDS)}
                for row in team_rows
            }
            totals.append(
                TeamTotals(
                    team=team,
                    batches=sum(row[2] for row in team_rows),
                    batches_in_flight=sum(int(row[3] or 0) for row in team_rows),
                    requests_processing=sum(int(row[4] or 0) for row in team_rows),
                    request_counts={
                        kind: sum(counts[kind] for counts in by_type.values()) for kind in schema.COUNT_KINDS
                    },
                    spend_today_usd=daily.get(team, 0.0),
                    spend_month_usd=monthly.get(team, 0.0),
                    counts_by_job_type=dict(sorted(by_type.items())),
                )
            )
        return totals

    def flagged(
        self,
        *,
        running_before: datetime,
        results_expire_before: datetime,
        team: Sequence[str] | None = None,
        limit: int = 200,
    ) -> list[LedgerRecord]:
        """
        The batches on-call acts on: still running though created before ``running_before`` (near
        the API's 24 h ceiling), oldest first; then ended batches whose results nobody consumed,
        archived or deleted and that the API drops before ``results_expire_before``, soonest first.
        At most ``limit`` of each; both are reads of a partial index (few rows of many).
        """
        table = schema.batches
        near_ceiling = (
            select(table)
            .where(
                table.c.processing_status != "ended",
                table.c.created_at < running_before,
                *_filters(team=team),
            )
            .order_by(table.c.created_at, table.c.batch_id)
            .limit(limit)
        )
        expiring = (
            select(table)
            .where(
                table.c.consumed_at.is_(None),
                table.c.archived_at.is_(None),
                table.c.deleted_at.is_(None),
                table.c.results_expire_at < results_expire_before,
                table.c.processing_status == "ended",
                *_filters(team=team),
            )
            .order_by(table.c.results_expire_at, table.c.batch_id)
            .limit(limit)
        )
        with self.db.read() as conn:
            rows = [*conn.execute(near_ceiling).all(), *conn.execute(expiring).all()]
        return [_record(row) for row in rows]

    def daily_spend(
        self, since: datetime, until: datetime, teams: Sequence[str] | None = None
    ) -> list[DailySpend]:
        """
        The cost of each team's batches created in ``[since, until)``, per UTC day: actual once known,
        else the estimate (as :meth:`spend` counts a batch). One aggregate over the team/spend index.
        """
        table = schema.batches
        with self.db.read() as conn:
            day = _bucket(conn, table.c.created_at, 86400)
            rows = conn.execute(
                select(table.c.team, day, func.sum(_BATCH_COST))
                .where(table.c.created_at >= since, table.c.created_at < until, *_filters(team=teams))
                .group_by(table.c.team, day)
            ).all()
        return [
            DailySpend(team, datetime.fromtimestamp(int(bucket) * 86400, timezone.utc), float(usd or 0.0))
            for team, bucket, usd in sorted(rows, key=lambda r: (r[0], r[1]))
        ]

    def processing_steps(
        self,
        since: datetime,
        until: datetime,
        bucket_seconds: int,
        teams: Sequence[str] | None = None,
        *,
        longest_batch: timedelta = timedelta(hours=24),
    ) -> list[ProcessingSteps]:
        """
        How each team's requests in ``processing`` changed per ``bucket_seconds`` over ``[since, until)``,
        from the status history (see :class:`ProcessingSteps`).

        Each history point's change is its ``processing`` minus the batch's previous point's (a window
        function), summed per team and bucket in SQL. Only batches created since ``since -
        longest_batch`` are read (the created-at index, then each batch's history by its index): an
        older batch ended before the period, as the API ends every batch within 24 h.
        """
        history, table = schema.batch_status_history, schema.batches
        previous = func.lag(history.c.processing).over(
            partition_by=history.c.batch_id, order_by=(history.c.observed_at, history.c.id)
        )
        steps = (
            select(
                table.c.team,
                history.c.observed_at,
                (history.c.processing - func.coalesce(previous, 0)).label("change"),
            )
            .join(table, table.c.batch_id == history.c.batch_id)
            .where(
                table.c.created_at >= since - longest_batch,
                table.c.created_at < until,
                *_filters(team=teams),
            )
            .subquery()
        )
        with self.db.read() as conn:
            bucket = _bucket(conn, steps.c.observed_at, bucket_seconds)
            first = int(since.timestamp()) // bucket_seconds
            start = case((steps.c.observed_at < since, first), else_=bucket)
            rows = conn.execute(
                select(steps.c.team, start, func.sum(steps.c.change))
                .where(steps.c.observed_at < until)
                .group_by(steps.c.team, start)
            ).all()
        return [
            ProcessingSteps(team, datetime.fromtimestamp(int(b) * bucket_seconds, timezone.utc), int(n or 0))
            for team, b, n in sorted(rows, key=lambda r: (r[0], r[1]))
        ]


@dataclass(frozen=True)
class ImportOutcome:
    """What :func:`import_files` did."""

    imported: int
    skipped: int
    invalid: list[str]


def import_files(ledger: Ledger, root: ObjectStoragePath) -> ImportOutcome:
    """
    Import a first-version ledger (``{root}/_ledger/{batch_id}.json``) into the database.

    Idempotent: a batch already in the database keeps its row (it may have changed since), so the
    import can run again, or while tasks run. Files that are not ledger records are reported.
    """
    folder = root / LEDGER_DIR
    imported = skipped = 0
    invalid: list[str] = []
    if not folder.exists():
        return ImportOutcome(0, 0, [])
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".json") or path.name.startswith("."):
            continue  # a temporary of an interrupted atomic write
        try:
            record = LedgerRecord.model_validate_json(path.read_bytes())
        except ValidationError as err:
            invalid.append(f"{path.name}: {str(err).splitlines()[0][:200]}")
            continue
        with ledger.db.write() as conn:
            if ledger._get(conn, record.batch_id) is not None:
                skipped += 1
                continue
            ledger._put(conn, record)
        imported += 1
    return ImportOutcome(imported, skipped, invalid)


def period_starts(now: datetime) -> tuple[datetime, datetime]:
    """The start of the UTC day and of the UTC month that hold ``now``: the budgets' periods."""
    now = now.astimezone(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def _bucket(conn: Connection, column: Any, seconds: int) -> Any:
    """``column`` (a naive-UTC timestamp) as whole ``seconds`` since the epoch, in SQL (integer division)."""
    if conn.dialect.name == "postgresql":
        epoch = func.floor(func.extract("epoch", column))
    else:
        epoch = func.strftime("%s", column)
    return cast(epoch, BigInteger) // seconds


def _status_of(record: LedgerRecord) -> tuple[str, RequestCounts]:
    return record.processing_status, record.request_counts


def _filters(
    *,
    team: str | Sequence[str] | None = None,
    job_type: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    origin: Sequence[str] | None = None,
) -> list[Any]:
    table = schema.batches
    where: list[Any] = []
    if team is not None:
        where.append(table.c.team.in_([team] if isinstance(team, str) else list(team)))
    if job_type is not None:
        where.append(table.c.job_type == job_type)
    if status is not None:
        where.append(table.c.processing_status == status)
    if since is not None:
        where.append(table.c.created_at >= since)
    if until is not None:
        where.append(table.c.created_at < until)
    if origin is not None:
        where.append(table.c.origin.in_(list(origin)))
    return where
