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
admitted when nothing below holds it, no live waiting entry that could go ranks ahead of it, and
``in flight + reserved + its requests`` fits the limit. So room that frees up goes to the first in
line instead of being eaten by smaller jobs behind it; among equals it is first come, first served.

**What holds a job** (the decision's ``reason``, shown in the task log and on the dashboard; a held
job does not hold the jobs behind it):

- ``window``: its job type's :class:`~airflow_claude_batches.governance.windows.SubmitWindow` is closed. A job
  still waiting when the window closes keeps its place for the next one (its deadline moves to that
  window's end) or, with ``on_close: fail``, gives up (the decision's ``give_up``).
- ``exclusive``: its job type runs one job at a time, and a batch of that job type is in flight
  (the ledger's unfinished batches), another job of it is admitted and creating its batches, or
  one ranks ahead in line.
- ``team_share``: its team would hold more than its ``max_queue_share`` of ``queue_limit`` (batches in
  flight plus reservations plus this job) while a job of another team waits that could go (open
  window, under its own share). With nobody else waiting a team may go over its share: the queue
  never idles because of a share.
- ``account_limit``: the job does not fit, or a job that could go ranks ahead. Jobs that are not
  time-sensitive must also leave ``account.time_sensitive_reserve`` requests free, so a
  time-sensitive job finds room at once even while bulk work fills the queue.

A job over its team's budget never waits: it is refused at submit
(:mod:`~airflow_claude_batches.capacity.budget`).
Each admission reports how long the job waited as the metric ``claude_batches.admission.wait_seconds``
(tags ``team`` and ``job_type``) through Airflow's ``Stats``.

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
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal

from airflow.sdk.observability.stats import Stats
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt
from sqlalchemy import Connection, delete, select

from airflow_claude_batches.governance.windows import SubmitWindow
from airflow_claude_batches.store import schema
from airflow_claude_batches.store.ledger import Ledger, upsert

if TYPE_CHECKING:
    from airflow_claude_batches.governance.policy import AccountPolicy, JobTypePolicy, TeamPolicy
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

__all__ = [
    "LIST_HORIZON",
    "RESERVATION_SECONDS",
    "WAIT_METRIC",
    "AdmissionDecision",
    "AdmissionEntry",
    "AdmissionQueue",
    "InFlight",
    "ListedBatches",
    "Reason",
    "evaluate",
    "list_batches",
    "new_entry",
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
#: Seconds from asking to admission, per team and job type (a timing metric through Airflow's Stats).
WAIT_METRIC = "claude_batches.admission.wait_seconds"
_LOCK = "admission"

#: Why a job waits (see the module docstring).
Reason = Literal["account_limit", "team_share", "window", "exclusive"]
_WAITS_FOR: dict[str, str] = {
    "account_limit": "room under the account queue limit",
    "team_share": "its team's share of the queue",
    "window": "its job type's window",
    "exclusive": "the job running before it (exclusive job type)",
}


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
    window: SubmitWindow | None = Field(default=None, description="the job type's window")
    exclusive: bool = Field(default=False, description="the job type runs one job at a time")
    max_queue_share: float | None = Field(default=None, gt=0, le=1, description="the team's share")
    time_sensitive_reserve: NonNegativeInt = Field(default=0, description="left free unless time-sensitive")
    reason: Reason | None = Field(default=None, description="why it waited at its last check")
    reason_detail: str | None = None

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

    def usable_limit(self, limit: int) -> int:
        """The part of the queue limit this job may fill: all of it if time-sensitive."""
        return limit if self.priority_rank == 0 else max(0, limit - self.time_sensitive_reserve)

    def dead_since(self) -> datetime:
        if self.state == "admitted" and self.admitted_at is not None:
            return self.admitted_at + timedelta(seconds=RESERVATION_SECONDS)
        return min(self.heartbeat_at + timedelta(seconds=self.stale_after_seconds), self.deadline_at)


class AdmissionDecision(BaseModel):
    """The outcome of one admission attempt: the numbers behind it and, if the job waits, why."""

    admitted: bool
    in_flight: int = Field(description="processing requests of unfinished batches, managed or not")
    unmanaged: int = Field(default=0, description="part of in_flight the ledger does not manage")
    reserved: int = Field(description="requests of other admitted jobs not in the ledger yet")
    request_count: int
    limit: int
    kept_free: int = Field(default=0, description="requests of the limit kept for time-sensitive jobs")
    ahead: list[str] = Field(default=[], description="live waiting entries ranked before this job")
    reason: Reason | None = Field(default=None, description="what holds the job; None when admitted")
    detail: str = ""
    position: int = Field(default=1, description="place in the waiting line, 1 = first")
    waiting: int = Field(default=1, description="jobs in the waiting line, this one included")
    give_up: bool = Field(default=False, description="its window closed and the job type says fail")

    @property
    def summary(self) -> str:
        total = self.in_flight + self.reserved + self.request_count
        usable = self.limit - self.kept_free
        unmanaged = f" (unmanaged {self.unmanaged})" if self.unmanaged else ""
        kept = f" - {self.kept_free} kept for time-sensitive jobs" if self.kept_free else ""
        text = (
            f"in flight {self.in_flight}{unmanaged} + reserved {self.reserved} + this job "
            f"{self.request_count} = {total} {'<=' if total <= usable else '>'} "
            f"queue limit {self.limit}{kept}"
        )
        if self.ahead:
            text += f"; {len(self.ahead)} job(s) ahead in line: {', '.join(self.ahead)}"
        return text

    @property
    def why(self) -> str:
        """One line for the task log: where the job stands, what it waits for, and the numbers."""
        if self.reason is None:
            return f"admitted: {self.summary}"
        return (
            f"position {self.position} of {self.waiting} in line, waiting for {_WAITS_FOR[self.reason]}: "
            f"{self.detail} ({self.summary})"
        )


@dataclass(frozen=True)
class InFlight:
    """Requests in flight: managed ones per team, unmanaged ones, and the job types with batches running."""

    by_team: Mapping[str, int] = field(default_factory=dict)
    unmanaged: int = 0
    job_types: frozenset[str] = frozenset()

    @property
    def total(self) -> int:
        return sum(self.by_team.values()) + self.unmanaged


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
    team_in_flight: Mapping[str, int] | None = None,
    running_job_types: Collection[str] = (),
) -> AdmissionDecision:
    """
    Decide whether ``me`` is admitted now and, if not, why (see the module docstring). Pure.

    :param in_flight: requests in flight across the account, ``unmanaged`` of them outside the ledger.
    :param team_in_flight: the ledger's requests in flight per team (for team shares).
    :param running_job_types: job types with batches in flight (for exclusive job types).
    """
    others = [e for e in entries if e.entry_id != me.entry_id and e.live(now)]
    reserved = sum(e.reserved for e in others)
    holding = Counter(team_in_flight or {})
    busy = dict.fromkeys(running_job_types, "its batches in flight")
    for e in others:
        holding[e.team] += e.reserved
        if e.state == "admitted":
            busy.setdefault(e.job_type, f"{e.entry_id}, admitted and creating its batches")
    line = sorted([*(e for e in others if e.state == "waiting"), me], key=AdmissionEntry.rank)

    def closed(e: AdmissionEntry) -> bool:
        return e.window is not None and not e.window.is_open(now)

    def gate(e: AdmissionEntry) -> tuple[Reason, str] | None:
        if e.window is not None and closed(e):
            opens = e.window.local(e.window.next_open(now))
            return "window", f"outside its window {e.window}, which opens {opens}"
        if e.exclusive:
            before = (
                f"{o.entry_id}, ahead in line"
                for o in line
                if o.exclusive and o.job_type == e.job_type and o.rank() < e.rank() and not closed(o)
            )
            blocker = busy.get(e.job_type) or next(before, None)
            if blocker is not None:
                return "exclusive", f"job type {e.job_type} runs one job at a time; waiting for {blocker}"
        return None

    def over_share(e: AdmissionEntry) -> bool:
        share = e.max_queue_share
        return share is not None and holding[e.team] + e.request_count > share * limit

    gates = {e.entry_id: gate(e) for e in line}
    contenders = {e.team for e in line if gates[e.entry_id] is None and not over_share(e)}

    def held(e: AdmissionEntry) -> bool:
        return gates[e.entry_id] is not None or (over_share(e) and bool(contenders - {e.team}))

    ahead = [e for e in line if e.rank() < me.rank() and not held(e)]
    kept_free = limit - me.usable_limit(limit)
    fits = in_flight + reserved + me.request_count <= limit - kept_free
    reason: Reason | None = None
    detail = ""
    give_up = False
    if (gated := gates[me.entry_id]) is not None:
        reason, detail = gated
        if reason == "window" and me.window is not None and me.window.on_close == "fail":
            last_close = me.window.last_close(now)
            if me.enqueued_at < last_close:
                give_up = True
                at = me.window.local(last_close)
                detail = f"its window {me.window} closed at {at} before it was admitted"
    elif held(me):
        reason = "team_share"
        team_holds = holding[me.team]
        detail = (
            f"team {me.team} holds {team_holds} requests; with this job {team_holds + me.request_count} > "
            f"{me.max_queue_share:.0%} of the queue limit, while team(s) "
            f"{', '.join(sorted(contenders - {me.team}))} wait"
        )
    elif ahead or not fits:
        reason = "account_limit"
        detail = f"{len(ahead)} job(s) ahead in line go first" if ahead else "not enough room yet"
    return AdmissionDecision(
        admitted=reason is None,
        in_flight=in_flight,
        unmanaged=unmanaged,
        reserved=reserved,
        request_count=me.request_count,
        limit=limit,
        kept_free=kept_free,
        ahead=[e.entry_id for e in ahead],
        reason=reason,
        detail=detail,
        position=line.index(me) + 1,
        waiting=len(line),
        give_up=give_up,
    )


def new_entry(
    team: TeamPolicy,
    job_type: JobTypePolicy,
    account: AccountPolicy,
    *,
    job_key: str,
    job_id: str,
    request_count: int,
    now: datetime | None = None,
) -> AdmissionEntry:
    """
    A job's place in the waiting list, carrying the scheduling rules its policy gives it.

    The entry waits at most ``account.admission_max_wait_seconds``; a job type with a window may wait
    at least until the end of its next window.
    """
    now = now or datetime.now(timezone.utc)
    deadline = now + timedelta(seconds=account.admission_max_wait_seconds)
    if job_type.window is not None:
        deadline = max(deadline, job_type.window.next_close(now))
    return AdmissionEntry(
        entry_id=f"{team.name}_{job_key}",
        team=team.name,
        job_id=job_id,
        job_type=job_type.name,
        request_count=request_count,
        priority_rank=job_type.priority_rank,
        enqueued_at=now,
        heartbeat_at=now,
        deadline_at=deadline,
        stale_after_seconds=max(MIN_STALE_AFTER_SECONDS, 3 * account.admission_poll_seconds),
        window=job_type.window,
        exclusive=job_type.exclusive,
        max_queue_share=team.max_queue_share,
        time_sensitive_reserve=account.time_sensitive_reserve,
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

    def waiting(self, now: datetime | None = None) -> list[AdmissionEntry]:
        """The waiting line: live waiting entries, first in line first, each with why it waited."""
        now = now or datetime.now(timezone.utc)
        line = (e for e in self.entries() if e.state == "waiting" and e.live(now))
        return sorted(line, key=AdmissionEntry.rank)

    def admit(
        self, entry: AdmissionEntry, listed: ListedBatches, limit: int, now: datetime | None = None
    ) -> tuple[AdmissionEntry, AdmissionDecision]:
        """
        One admission attempt: refresh ``entry`` (keeping an earlier live entry's place), decide,
        and mark it admitted if it fits, all in one transaction under the admission lock. A job
        that waits is stored with the reason; a windowed job that keeps its place for the next
        window has its deadline moved to that window's end.

        :return: the entry as now stored (``admitted`` or ``waiting``) and the decision.
        """
        now = now or datetime.now(timezone.utc)
        db = self.ledger.db
        with db.write() as conn:
            db.lock(conn, _LOCK)
            previous = _get(conn, entry.entry_id)
            keep_place = previous is not None and previous.state == "waiting" and previous.live(now)
            deadline = entry.deadline_at
            if entry.window is not None and entry.window.on_close == "wait":
                deadline = max(deadline, entry.window.next_close(now))
            entry = entry.model_copy(
                update={
                    "enqueued_at": previous.enqueued_at if keep_place and previous else entry.enqueued_at,
                    "heartbeat_at": now,
                    "deadline_at": deadline,
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
            flight = _in_flight(conn, listed, now)
            decision = evaluate(
                entries,
                entry,
                flight.total,
                limit,
                now,
                unmanaged=flight.unmanaged,
                team_in_flight=flight.by_team,
                running_job_types=flight.job_types,
            )
            if decision.admitted:
                entry = entry.model_copy(
                    update={"state": "admitted", "admitted_at": now, "reason": None, "reason_detail": None}
                )
            else:
                entry = entry.model_copy(update={"reason": decision.reason, "reason_detail": decision.detail})
            upsert(conn, schema.admission, entry.model_dump(), ["entry_id"])
        if decision.admitted:
            waited = (now - entry.enqueued_at).total_seconds()
            Stats.timing(WAIT_METRIC, waited, tags={"team": entry.team, "job_type": entry.job_type})
        return entry, decision


def _get(conn: Connection, entry_id: str) -> AdmissionEntry | None:
    row = conn.execute(select(schema.admission).where(schema.admission.c.entry_id == entry_id)).first()
    return AdmissionEntry.model_validate(dict(row._mapping)) if row is not None else None


def _entries(conn: Connection) -> list[AdmissionEntry]:
    return [AdmissionEntry.model_validate(dict(r._mapping)) for r in conn.execute(select(schema.admission))]


def _in_flight(conn: Connection, listed: ListedBatches, now: datetime) -> InFlight:
    """The ledger's unfinished batches (per team, the list's counts where fresher) and the list's others."""
    table = schema.batches
    rows = conn.execute(
        select(table.c.batch_id, table.c.team, table.c.job_type, table.c.processing).where(
            table.c.processing_status != "ended", table.c.created_at >= now - LIST_HORIZON
        )
    ).all()
    by_team: Counter[str] = Counter()
    job_types = set()
    for batch_id, team, job_type, processing in rows:
        if batch_id not in listed.ended:
            by_team[team] += listed.unfinished.get(batch_id, processing)
            job_types.add(job_type)
    held = {row.batch_id for row in rows}
    unmanaged = sum(n for batch_id, n in listed.unfinished.items() if batch_id not in held)
    return InFlight(dict(by_team), unmanaged, frozenset(job_types))


async def try_admit(
    queue: AdmissionQueue,
    entry: AdmissionEntry,
    limit: int,
    hook: ClaudeBatchesHook,
    now: datetime | None = None,
) -> tuple[AdmissionEntry, AdmissionDecision]:
    """One admission attempt for ``entry``: read the API's list, then decide in the database."""
    listed = await list_batches(hook, now)
    return await asyncio.to_thread(queue.admit, entry, listed, limit, now)
