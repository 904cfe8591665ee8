"""
Account admission: a job is created only when the workspace's processing queue has room for it.

The processing queue is an account-wide limit shared by every team (``account.queue_limit`` in the
governance file, set to the usage tier's limit). Before creating a job's batches the submit operator
asks for admission; a job that does not fit waits, deferred to
:class:`~airflow_claude_batches.triggers.capacity.ClaudeCapacityTrigger`, until it does.

**In flight** is the sum of ``request_counts.processing`` over every unfinished batch the API lists
for the workspace, so batches created outside this service count too. The list is newest first and
a batch ends at the latest 24 h after ``created_at``, so paging stops at the first batch created more
than :data:`LIST_HORIZON` ago (24 h plus a margin for clock skew): older batches are all ended.

**Waiting list.** Jobs asking for room are entries under ``{store root}/_admission/``, one small JSON
file per job (``{team}_{job_key}.json``), each with its size, its job type's ``time_sensitive`` flag,
the task's ``priority_weight`` and when it first asked. Waiting entries are ranked by
``(time_sensitive first, higher priority_weight first, earlier enqueued_at first)``, and a job is
admitted only when

1. no live waiting entry ranks ahead of it, and
2. ``in_flight + reserved + its request count <= queue_limit``, where ``reserved`` is the size of
   every other job admitted but whose batches may not be listed by the API yet.

So a time-sensitive job goes before every bulk job waiting for the same room, and while one waits,
bulk jobs do not take room even if they would fit (room frees up for it instead of being eaten by
smaller jobs). Among equals it is first come, first served: a giant job is never starved by a stream
of small ones, at the price of small jobs queueing behind it. Airflow's ``priority_weight`` orders
each team's pool queue, and breaks ties here.

**Why it never overshoots.** An admitted job's entry stays (state ``admitted``, a reservation) until
its batches exist, then the operator removes it; a reader reads the entries *before* listing the
API, so a job is always seen as either a reservation or a listed batch (briefly both, which only
over-counts). Two jobs admitted at the same moment cannot both miss each other: each writes
``admitted`` first, then re-reads the entries and the API and backs off (back to ``waiting``, keeping
its place) if the total with every other admitted job is over the limit; whichever re-reads second
sees the other. Both may back off in a tie; they try again at the next poll. What this cannot
control is batches created outside the service: they count as soon as the API lists them.

**Crashes.** A waiting entry is refreshed on every poll; one not refreshed within its
``stale_after_seconds`` (or past its deadline) stops blocking others. A reservation stops counting
:data:`RESERVATION_SECONDS` after admission, time enough to upload the largest batch. Entries dead
for a day are deleted by the next reader. A retry of a job re-uses its entry and keeps its place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from airflow_claude_batches.results import atomic_write, store_root

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

__all__ = [
    "ADMISSION_DIR",
    "LIST_HORIZON",
    "RESERVATION_SECONDS",
    "AdmissionDecision",
    "AdmissionEntry",
    "AdmissionQueue",
    "evaluate",
    "in_flight",
    "try_admit",
]

ADMISSION_DIR = "_admission"
#: Batches created longer ago than this have ended (24 h lifetime + 1 h for clock skew).
LIST_HORIZON = timedelta(hours=25)
#: How long an admitted job's size counts as reserved if its task never creates its batches.
RESERVATION_SECONDS = 600.0
#: The least time a waiting entry stays live without a refresh (the triggerer may take a while to
#: pick up a deferred task).
MIN_STALE_AFTER_SECONDS = 300.0
#: Entries dead for this long are deleted by whoever reads the waiting list.
PURGE_AFTER = timedelta(days=1)


class AdmissionEntry(BaseModel):
    """One job asking the account for room."""

    model_config = ConfigDict(extra="forbid")

    entry_id: str = Field(pattern=r"^[a-z0-9_-]{1,80}$", description="{team}_{job_key}")
    team: str
    job_id: str
    job_type: str
    request_count: NonNegativeInt
    time_sensitive: bool = False
    priority_weight: int = 1
    enqueued_at: AwareDatetime
    heartbeat_at: AwareDatetime
    deadline_at: AwareDatetime
    stale_after_seconds: float = Field(default=MIN_STALE_AFTER_SECONDS, gt=0)
    state: Literal["waiting", "admitted"] = "waiting"
    admitted_at: AwareDatetime | None = None

    def rank(self) -> tuple[bool, int, datetime, str]:
        """Sort key of the waiting list: time-sensitive, then priority_weight, then first come."""
        return (not self.time_sensitive, -self.priority_weight, self.enqueued_at, self.entry_id)

    def live(self, now: datetime) -> bool:
        """Whether the entry still counts: a fresh waiter, or a recent reservation."""
        if self.state == "admitted":
            return self.admitted_at is not None and (now - self.admitted_at).total_seconds() <= (
                RESERVATION_SECONDS
            )
        fresh = (now - self.heartbeat_at).total_seconds() <= self.stale_after_seconds
        return fresh and now <= self.deadline_at

    def dead_since(self) -> datetime:
        if self.state == "admitted" and self.admitted_at is not None:
            return self.admitted_at + timedelta(seconds=RESERVATION_SECONDS)
        return min(self.heartbeat_at + timedelta(seconds=self.stale_after_seconds), self.deadline_at)


class AdmissionDecision(BaseModel):
    """The outcome of one admission attempt, with the numbers behind it."""

    admitted: bool
    in_flight: int = Field(description="processing requests of unfinished batches, from the API")
    reserved: int = Field(description="requests of other admitted jobs not yet listed by the API")
    request_count: int
    limit: int
    ahead: list[str] = Field(default=[], description="live waiting entries ranked before this job")

    @property
    def summary(self) -> str:
        text = (
            f"in flight {self.in_flight} + reserved {self.reserved} + this job {self.request_count} "
            f"= {self.in_flight + self.reserved + self.request_count} "
            f"{'<=' if self.in_flight + self.reserved + self.request_count <= self.limit else '>'} "
            f"queue limit {self.limit}"
        )
        if self.ahead:
            text += f"; {len(self.ahead)} job(s) ahead in line: {', '.join(self.ahead)}"
        return text


class AdmissionQueue:
    """
    The waiting list in the store, beside the ledger: ``{root}/_admission/{entry_id}.json``.

    Each entry has one writer at a time (its task, then its capacity trigger), so plain atomic
    writes are enough; see the module docstring for how concurrent admissions stay under the limit.
    """

    def __init__(self, root: str | ObjectStoragePath | None = None, conn_id: str | None = None) -> None:
        self.path: ObjectStoragePath = store_root(root, conn_id) / ADMISSION_DIR

    def _file(self, entry_id: str) -> ObjectStoragePath:
        return self.path / f"{entry_id}.json"

    def put(self, entry: AdmissionEntry) -> None:
        with atomic_write(self._file(entry.entry_id)) as handle:
            handle.write(entry.model_dump_json().encode())

    def get(self, entry_id: str) -> AdmissionEntry | None:
        path = self._file(entry_id)
        try:
            return AdmissionEntry.model_validate_json(path.read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def remove(self, entry_id: str) -> None:
        path = self._file(entry_id)
        if path.exists():
            path.unlink()

    def entries(self, now: datetime | None = None) -> list[AdmissionEntry]:
        """Every readable entry; entries dead for over a day are deleted on the way."""
        now = now or datetime.now(timezone.utc)
        found = []
        for entry in self._read_all():
            if not entry.live(now) and now - entry.dead_since() > PURGE_AFTER:
                self.remove(entry.entry_id)
            else:
                found.append(entry)
        return found

    def _read_all(self) -> Iterator[AdmissionEntry]:
        if not self.path.exists():
            return
        for path in self.path.iterdir():
            if path.name.endswith(".json") and not path.name.startswith("."):
                try:
                    yield AdmissionEntry.model_validate_json(path.read_bytes())
                except (FileNotFoundError, ValidationError):
                    continue  # removed meanwhile, or not ours: it cannot block anyone


def evaluate(
    entries: list[AdmissionEntry],
    me: AdmissionEntry,
    in_flight: int,
    limit: int,
    now: datetime,
    *,
    respect_order: bool = True,
) -> AdmissionDecision:
    """
    Decide whether ``me`` fits: nobody ahead in line (if ``respect_order``) and enough room.

    Pure: the caller reads ``entries`` before ``in_flight`` (see the module docstring).
    """
    others = [e for e in entries if e.entry_id != me.entry_id and e.live(now)]
    reserved = sum(e.request_count for e in others if e.state == "admitted")
    ahead = (
        sorted((e for e in others if e.state == "waiting" and e.rank() < me.rank()), key=AdmissionEntry.rank)
        if respect_order
        else []
    )
    fits = in_flight + reserved + me.request_count <= limit
    return AdmissionDecision(
        admitted=fits and not ahead,
        in_flight=in_flight,
        reserved=reserved,
        request_count=me.request_count,
        limit=limit,
        ahead=[e.entry_id for e in ahead],
    )


async def in_flight(hook: ClaudeBatchesHook, now: datetime | None = None) -> int:
    """Requests in ``processing`` across the workspace's unfinished batches, from the API's list."""
    horizon = (now or datetime.now(timezone.utc)) - LIST_HORIZON
    total = 0
    async for batch in hook.aiter_batches():
        if batch.created_at < horizon:
            break  # newest first: everything from here on has ended
        if batch.processing_status != "ended":
            total += batch.request_counts.processing
    return total


async def try_admit(
    queue: AdmissionQueue, entry: AdmissionEntry, limit: int, hook: ClaudeBatchesHook
) -> tuple[AdmissionEntry, AdmissionDecision]:
    """
    One admission attempt for ``entry``: refresh it, decide, and if admitted double-check.

    :return: the entry as now stored (``admitted`` or ``waiting``) and the decision.
    """
    now = datetime.now(timezone.utc)
    entry = entry.model_copy(update={"heartbeat_at": now, "state": "waiting", "admitted_at": None})
    await asyncio.to_thread(queue.put, entry)
    entries = await asyncio.to_thread(queue.entries, now)
    decision = evaluate(entries, entry, await in_flight(hook, now), limit, now)
    if not decision.admitted:
        return entry, decision
    admitted = entry.model_copy(update={"state": "admitted", "admitted_at": now})
    await asyncio.to_thread(queue.put, admitted)
    now = datetime.now(timezone.utc)
    entries = await asyncio.to_thread(queue.entries, now)
    recheck = evaluate(entries, admitted, await in_flight(hook, now), limit, now, respect_order=False)
    if recheck.admitted:
        return admitted, recheck
    await asyncio.to_thread(queue.put, entry)
    return entry, recheck
