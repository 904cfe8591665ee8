"""
Account admission: a job is created only when the workspace's processing queue has room for it.

The processing queue is an account-wide limit shared by every team (``account.queue_limit`` in the
governance file, set to the usage tier's limit). Before creating a job's batches the submit operator
asks for admission; a job that does not fit waits, deferred to
:class:`~airflow_claude_batches.triggers.capacity.ClaudeCapacityTrigger`, until it does.

**In flight** counts three things, all read inside one transaction under the admission lock:

1. managed batches still in flight: the ledger's unfinished batches, each at its ``processing``
   count (the API's list, when it shows the batch, is fresher and wins: ended there means 0);
2. reservations: requests of admitted jobs whose batches are not in the ledger yet (a batch
   enters the ledger in the same transaction that shrinks its job's reservation, so it is never
   counted twice nor missed, however late the API's list shows it);
3. unmanaged volume: unfinished batches the API lists that the ledger does not hold as unfinished
   (created around the service, or a lost create response).

The list is newest first and a batch ends at the latest 24 h after ``created_at``, so paging stops
at the first batch created more than :data:`LIST_HORIZON` ago (24 h plus a margin for clock skew).

**Waiting list.** Jobs asking for room are rows of ``cb_admission`` ranked by the job type's priority
class in the governance file (``time_sensitive`` first, then ``normal``, then ``bulk``), then by
arrival. A DAG's ``priority_weight`` plays no part: it only orders a team's own pool. A job is
admitted only when no live waiting entry ranks ahead of it and ``in flight + reserved + its
requests <= queue_limit``. So room that frees up goes to the first in line instead of being eaten
by smaller jobs behind it; among equals it is first come, first served.

**Why it never overshoots.** The decision and the ``admitted`` mark are one transaction under the
admission lock (``SELECT … FOR UPDATE`` on PostgreSQL, the write lock on SQLite): two admissions
cannot both miss each other.

**Crashes.** A waiting entry is refreshed on every poll; one not refreshed within its
``stale_after_seconds`` (or past its deadline) stops blocking others. A reservation stops counting
:data:`RESERVATION_SECONDS` after admission, time enough to upload the largest batch. Entries dead
for a day are deleted by the next admission. A retry of a job re-uses its entry and keeps its place.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt
from sqlalchemy import Connection, delete, select

from airflow_claude_batches.ledger import Ledger, upsert
from airflow_claude_batches.store import schema

if TYPE_CHECKING:
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

__all__ = [
    "LIST_HORIZON",
    "RESERVATION_SECONDS",
    "AdmissionDecision",
    "AdmissionEntry",
    "AdmissionQueue",
    "ListedBatches",
    "evaluate",
    "list_batches",
    "try_admit",
]

#: Batches created longer ago than this have ended (24 h lifetime + 1 h for clock skew).
LIST_HORIZON = timedelta(hours=25)
#: How long an admitted job's size counts as reserved if its task never creates its batches.
RESERVATION_SECONDS = 600.0
#: The least time a waiting entry stays live without a refresh (the triggerer may take a while to
#: pick up a deferred task).
MIN_STALE_AFTER_SECONDS = 300.0
#: Entries dead for this long are deleted by the next admission.
PURGE_AFTER = timedelta(days=1)
_LOCK = "admission"


class AdmissionEntry(BaseModel):
    """One job asking the account for room."""

    model_config = ConfigDict(extra="forbid")

    entry_id: str = Field(pattern=r"^[a-z0-9_-]{1,80}$", description="{team}_{job_key}")
    team: str
    job_id: str
    job_type: str
    request_count: NonNegativeInt = Field(description="requests of the batches still to create")
    created_requests: NonNegativeInt = 0
    priority_rank: int = Field(default=1, description="0 goes first: the job type's priority class")
    enqueued_at: AwareDatetime
    heartbeat_at: AwareDatetime
    deadline_at: AwareDatetime
    stale_after_seconds: float = Field(default=MIN_STALE_AFTER_SECONDS, gt=0)
    state: Literal["waiting", "admitted"] = "waiting"
    admitted_at: AwareDatetime | None = None

    def rank(self) -> tuple[int, datetime, str]:
        """Sort key of the waiting list: priority class, then first come."""
        return (self.priority_rank, self.enqueued_at, self.entry_id)

    def live(self, now: datetime) -> bool:
        """Whether the entry still counts: a fresh waiter, or a recent reservation."""
        if self.state == "admitted":
            return self.admitted_at is not None and (now - self.admitted_at).total_seconds() <= (
                RESERVATION_SECONDS
            )
        fresh = (now - self.heartbeat_at).total_seconds() <= self.stale_after_seconds
        return fresh and now <= self.deadline_at

    @property
    def reserved(self) -> int:
        """Requests of an admitted job not yet in the ledger."""
        return max(0, self.request_count - self.created_requests) if self.state == "admitted" else 0

    def dead_since(self) -> datetime:
        if self.state == "admitted" and self.admitted_at is not None:
            return self.admitted_at + timedelta(seconds=RESERVATION_SECONDS)
        return min(self.heartbeat_at + timedelta(seconds=self.stale_after_seconds), self.deadline_at)


class AdmissionDecision(BaseModel):
    """The outcome of one admission attempt, with the numbers behind it."""

    admitted: bool
    in_flight: int = Field(description="processing requests of unfinished batches, managed or not")
    unmanaged: int = Field(default=0, description="part of in_flight the ledger does not manage")
    reserved: int = Field(description="requests of other admitted jobs not in the ledger yet")
    request_count: int
    limit: int
    ahead: list[str] = Field(default=[], description="live waiting entries ranked before this job")

    @property
    def summary(self) -> str:
        total = self.in_flight + self.reserved + self.request_count
        unmanaged = f" (unmanaged {self.unmanaged})" if self.unmanaged else ""
        text = (
            f"in flight {self.in_flight}{unmanaged} + reserved {self.reserved} + this job "
            f"{self.request_count} = {total} {'<=' if total <= self.limit else '>'} queue limit {self.limit}"
        )
        if self.ahead:
            text += f"; {len(self.ahead)} job(s) ahead in line: {', '.join(self.ahead)}"
        return text


@dataclass
class ListedBatches:
    """What the API's list says of the batches created within :data:`LIST_HORIZON`."""

    unfinished: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)


async def list_batches(hook: ClaudeBatchesHook, now: datetime | None = None) -> ListedBatches:
    """The workspace's recent batches from the API's list: processing counts of the unfinished ones."""
    horizon = (now or datetime.now(timezone.utc)) - LIST_HORIZON
    listed = ListedBatches()
    async for batch in hook.aiter_batches():
        if batch.created_at < horizon:
            break  # newest first: everything from here on has ended
        if batch.processing_status == "ended":
            listed.ended.add(batch.id)
        else:
            listed.unfinished[batch.id] = batch.request_counts.processing
    return listed


def evaluate(
    entries: list[AdmissionEntry],
    me: AdmissionEntry,
    in_flight: int,
    limit: int,
    now: datetime,
    *,
    unmanaged: int = 0,
) -> AdmissionDecision:
    """Decide whether ``me`` fits: nobody live ahead in line and enough room. Pure."""
    others = [e for e in entries if e.entry_id != me.entry_id and e.live(now)]
    waiting = (e for e in others if e.state == "waiting" and e.rank() < me.rank())
    ahead = sorted(waiting, key=AdmissionEntry.rank)
    reserved = sum(e.reserved for e in others)
    fits = in_flight + reserved + me.request_count <= limit
    return AdmissionDecision(
        admitted=fits and not ahead,
        in_flight=in_flight,
        unmanaged=unmanaged,
        reserved=reserved,
        request_count=me.request_count,
        limit=limit,
        ahead=[e.entry_id for e in ahead],
    )


class AdmissionQueue:
    """The waiting list and the reservations, in the ledger database (``cb_admission``)."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger or Ledger()

    def get(self, entry_id: str) -> AdmissionEntry | None:
        with self.ledger.db.read() as conn:
            return _get(conn, entry_id)

    def remove(self, entry_id: str) -> None:
        with self.ledger.db.write() as conn:
            conn.execute(delete(schema.admission).where(schema.admission.c.entry_id == entry_id))

    def entries(self) -> list[AdmissionEntry]:
        with self.ledger.db.read() as conn:
            return _entries(conn)

    def admit(
        self, entry: AdmissionEntry, listed: ListedBatches, limit: int, now: datetime | None = None
    ) -> tuple[AdmissionEntry, AdmissionDecision]:
        """
        One admission attempt: refresh ``entry`` (keeping an earlier live entry's place), decide,
        and mark it admitted if it fits, all in one transaction under the admission lock.

        :return: the entry as now stored (``admitted`` or ``waiting``) and the decision.
        """
        now = now or datetime.now(timezone.utc)
        db = self.ledger.db
        with db.write() as conn:
            db.lock(conn, _LOCK)
            previous = _get(conn, entry.entry_id)
            keep_place = previous is not None and previous.state == "waiting" and previous.live(now)
            entry = entry.model_copy(
                update={
                    "enqueued_at": previous.enqueued_at if keep_place and previous else entry.enqueued_at,
                    "heartbeat_at": now,
                    "state": "waiting",
                    "admitted_at": None,
                    "created_requests": 0,
                }
            )
            entries = []
            for other in _entries(conn):
                if not other.live(now) and now - other.dead_since() > PURGE_AFTER:
                    table = schema.admission
                    conn.execute(delete(table).where(table.c.entry_id == other.entry_id))
                else:
                    entries.append(other)
            managed, unmanaged = _in_flight(conn, listed, now)
            decision = evaluate(entries, entry, managed + unmanaged, limit, now, unmanaged=unmanaged)
            if decision.admitted:
                entry = entry.model_copy(update={"state": "admitted", "admitted_at": now})
            upsert(conn, schema.admission, entry.model_dump(), ["entry_id"])
        return entry, decision


def _get(conn: Connection, entry_id: str) -> AdmissionEntry | None:
    row = conn.execute(select(schema.admission).where(schema.admission.c.entry_id == entry_id)).first()
    return AdmissionEntry.model_validate(dict(row._mapping)) if row is not None else None


def _entries(conn: Connection) -> list[AdmissionEntry]:
    return [AdmissionEntry.model_validate(dict(r._mapping)) for r in conn.execute(select(schema.admission))]


def _in_flight(conn: Connection, listed: ListedBatches, now: datetime) -> tuple[int, int]:
    """(managed, unmanaged) requests in flight: the ledger's unfinished batches and the list's others."""
    table = schema.batches
    rows = conn.execute(
        select(table.c.batch_id, table.c.processing).where(
            table.c.processing_status != "ended", table.c.created_at >= now - LIST_HORIZON
        )
    ).all()
    managed = 0
    for batch_id, processing in rows:
        if batch_id not in listed.ended:
            managed += listed.unfinished.get(batch_id, processing)
    held = {batch_id for batch_id, _ in rows}
    unmanaged = sum(n for batch_id, n in listed.unfinished.items() if batch_id not in held)
    return managed, unmanaged


async def try_admit(
    queue: AdmissionQueue, entry: AdmissionEntry, limit: int, hook: ClaudeBatchesHook
) -> tuple[AdmissionEntry, AdmissionDecision]:
    """One admission attempt for ``entry``: read the API's list, then decide in the database."""
    listed = await list_batches(hook)
    return await asyncio.to_thread(queue.admit, entry, listed, limit)
