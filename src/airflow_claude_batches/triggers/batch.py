"""Deferrable wait for every batch of one logical job, on the async client only."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from airflow.triggers.base import TriggerEvent
from pydantic import BaseModel

from airflow_claude_batches import alerts
from airflow_claude_batches.hooks import DEFAULT_CONN_ID
from airflow_claude_batches.store.ledger import Ledger
from airflow_claude_batches.triggers.base import (
    ClaudeTrigger,
    batches_hook,
    first_poll_delay,
    hold_event,
)
from airflow_claude_batches.triggers.sweep import StatusBoard

if TYPE_CHECKING:
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

#: The API's statuses; anything else ends the wait with an error (fail closed).
KNOWN_STATUSES = frozenset({"in_progress", "canceling", "ended"})
#: Consecutive failed polls tolerated (a 404 right after create happens) before giving up.
MAX_CONSECUTIVE_POLL_FAILURES = 5
#: A shared sweep younger than this share of a trigger's interval serves its poll.
SWEEP_MAX_AGE = 0.9

__all__ = ["KNOWN_STATUSES", "BatchJobEvent", "BatchState", "ClaudeBatchTrigger", "hold_event"]


class BatchState(BaseModel):
    """What the job needs to know of one batch when the wait ends."""

    processing_status: str
    request_counts: dict[str, int]
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None


class BatchJobEvent(BaseModel):
    """
    The one event the trigger yields.

    ``ended``: every batch ended. ``timeout``: the job's deadline passed first (the operator then
    cancels, a timeout being the job's own decision). ``error``: polling kept failing or the API
    answered with a status this code does not model; nothing is cancelled, the batches may still
    be healthy and their results stay retrievable for 29 days.
    """

    status: Literal["ended", "timeout", "error"]
    batch_ids: list[str]
    batches: dict[str, BatchState] = {}
    message: str


def _state_of(batch: Any) -> BatchState:
    return BatchState(
        processing_status=batch.processing_status,
        request_counts=batch.request_counts.model_dump(),
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        ended_at=batch.ended_at,
    )


class LedgerWriter:
    """
    Writes the ledger changes of every trigger on an event loop from one worker thread at a time.

    A thousand triggers each writing from a thread of their own would have six threads fighting the
    event loop for the interpreter; here the changes queue up and one thread writes them in order.
    """

    _writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LedgerWriter] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self._pending: list[tuple[str, dict[str, Any], asyncio.Future[None]]] = []
        self._draining = False
        self._drainer: asyncio.Future[None] | None = None
        self._ledger: Ledger | None = None

    @classmethod
    def of(cls) -> LedgerWriter:
        """The writer of the running event loop."""
        return cls._writers.setdefault(asyncio.get_running_loop(), cls())

    async def update(self, batch_id: str, **changes: Any) -> None:
        """``Ledger().update(batch_id, **changes)`` off the loop; raises what the ledger raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch_id, changes, done))
        if not self._draining:
            self._draining = True
            self._drainer = asyncio.ensure_future(self._drain())
        await done

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                errors = await asyncio.to_thread(self._write, [(b, c) for b, c, _ in batch])
                for (_, _, done), error in zip(batch, errors, strict=True):
                    if not done.done():
                        done.set_exception(error) if error else done.set_result(None)
        finally:
            self._draining = False

    def _write(self, changes: list[tuple[str, dict[str, Any]]]) -> list[Exception | None]:
        # The ledger sits at the configured store root ([claude_batches] results_root).
        if self._ledger is None:
            self._ledger = Ledger()
        errors: list[Exception | None] = []
        for batch_id, fields in changes:
            try:
                self._ledger.update(batch_id, **fields)
                errors.append(None)
            except Exception as e:
                errors.append(e)
        return errors


def _as_created(state: BatchState) -> bool:
    """Whether ``state`` is what the operator recorded at create (nothing run yet): no ledger write."""
    return state.processing_status == "in_progress" and not any(
        n for kind, n in state.request_counts.items() if kind != "processing"
    )


class ClaudeBatchTrigger(ClaudeTrigger):
    """
    Poll the batches of a job until all have ended, the deadline passes, or polling keeps failing.

    Every argument is plain data (no client, no secret): the trigger row in the metadata database
    holds only ids, names and the connection id. All triggers of a connection in one triggerer
    share one async client and one status sweep a poll interval (see
    :mod:`~airflow_claude_batches.triggers.sweep`); each one's first poll comes at its own point of
    the interval. The connection is looked up with Airflow's async lookup, the client is built and
    the ledger is written in worker threads, so nothing blocks the triggerer's event loop.

    :param batch_ids: The batches of one logical job.
    :param team: Owning team, for alerts (``None`` for a batch created outside the service).
    :param job_id: The job id, for alerts.
    :param conn_id: The ``anthropic`` connection.
    :param poll_interval: Seconds between polls.
    :param end_time: Wall-clock deadline (epoch seconds). Wall clock because the trigger may
        resume in another triggerer process, where a monotonic clock means nothing.
    :param cancel_on_kill: Cancel the batches when a user kills the deferred task.
    :param warn_before_expiry: Seconds before a batch's 24 h ``expires_at`` to alert on-call once.
    :param min_seconds: Hold the event until the trigger has run this long (:func:`hold_event`).
    """

    fields = (
        "batch_ids",
        "team",
        "job_id",
        "conn_id",
        "poll_interval",
        "end_time",
        "cancel_on_kill",
        "warn_before_expiry",
        "min_seconds",
    )

    def __init__(
        self,
        *,
        batch_ids: Sequence[str],
        team: str | None = None,
        job_id: str | None = None,
        conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60,
        end_time: float,
        cancel_on_kill: bool = True,
        warn_before_expiry: float = alerts.NEAR_CEILING_WARNING.total_seconds(),
        min_seconds: float = 0,
    ) -> None:
        super().__init__()
        self.batch_ids = list(batch_ids)
        self.team = team
        self.job_id = job_id
        self.conn_id = conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.cancel_on_kill = cancel_on_kill
        self.warn_before_expiry = warn_before_expiry
        self.min_seconds = min_seconds

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        async with await batches_hook(self.conn_id) as hook:
            event = await self._wait(hook)
        await hold_event(started, self.min_seconds)
        yield TriggerEvent(event.model_dump(mode="json"))

    async def _wait(self, hook: ClaudeBatchesHook) -> BatchJobEvent:
        board = StatusBoard.of(self.conn_id)
        board.watch(self.batch_ids)  # at once, so that the next sweep includes these batches
        try:
            await asyncio.sleep(first_poll_delay(self.batch_ids[0], self.poll_interval))
            return await self._poll(hook, board)
        finally:
            board.unwatch(self.batch_ids)

    async def _poll(self, hook: ClaudeBatchesHook, board: StatusBoard) -> BatchJobEvent:
        seen: dict[str, BatchState] = {}
        warned: set[str] = set()
        failures = 0
        while True:
            try:
                batches = await board.states(hook, self.batch_ids, self.poll_interval * SWEEP_MAX_AGE)
                states = {batch_id: _state_of(batch) for batch_id, batch in batches.items()}
            except Exception as e:
                failures += 1
                self.log.warning("Polling batches failed (%d in a row): %s", failures, e)
                if failures >= MAX_CONSECUTIVE_POLL_FAILURES:
                    return self._event("error", seen, f"Polling failed {failures} times in a row: {e}")
            else:
                failures = 0
                unknown = {
                    b: s.processing_status
                    for b, s in states.items()
                    if s.processing_status not in KNOWN_STATUSES
                }
                if unknown:
                    return self._event("error", states, f"Unknown processing_status from the API: {unknown}")
                await self._record_changes(seen, states)
                seen = states
                if all(s.processing_status == "ended" for s in states.values()):
                    return self._event("ended", states, f"All {len(states)} batch(es) ended.")
                self._warn_near_expiry(states, warned)
            if time.time() >= self.end_time:
                return self._event("timeout", seen, "The job's deadline passed before every batch ended.")
            await asyncio.sleep(self.poll_interval)

    def _event(self, status: str, states: dict[str, BatchState], message: str) -> BatchJobEvent:
        return BatchJobEvent.model_validate(
            {"status": status, "batch_ids": self.batch_ids, "batches": states, "message": message}
        )

    async def _record_changes(self, before: dict[str, BatchState], after: dict[str, BatchState]) -> None:
        """
        Write status and count changes to the ledger; a ledger hiccup must not end the wait.

        The first poll writes nothing if the batch is still as the operator recorded it at create.
        """
        for batch_id, state in after.items():
            old = before.get(batch_id)
            if old is None:
                if _as_created(state):
                    continue
            elif old == state:
                continue
            if old is None or old.processing_status != state.processing_status:
                self.log.info("Batch %s: %s %s", batch_id, state.processing_status, state.request_counts)
            try:
                await LedgerWriter.of().update(
                    batch_id,
                    processing_status=state.processing_status,
                    request_counts=state.request_counts,
                    ended_at=state.ended_at,
                )
            except Exception as e:
                self.log.warning("Could not update the ledger for batch %s: %s", batch_id, e)

    def _warn_near_expiry(self, states: dict[str, BatchState], warned: set[str]) -> None:
        now = datetime.now(timezone.utc)
        for batch_id, state in states.items():
            left = state.expires_at - now
            if (
                state.processing_status != "ended"
                and left <= timedelta(seconds=self.warn_before_expiry)
                and (batch_id not in warned)
            ):
                warned.add(batch_id)
                alerts.emit(
                    alerts.Alert(
                        kind="near_expiry",
                        team=self.team or "unregistered",
                        job_id=self.job_id or batch_id,
                        batch_id=batch_id,
                        message=f"not ended {left} before its 24 h expiry; unfinished requests will expire",
                    )
                )

    async def on_kill(self) -> None:
        """
        Cancel the batches when a user kills the deferred task (mark failed, clear, mark success).

        Cancelling is irreversible, so it happens only here and on the job's own timeout, never
        because polling failed or the triggerer restarted (``cleanup`` does not cancel).
        """
        if not self.cancel_on_kill:
            return
        async with await batches_hook(self.conn_id) as hook:
            for batch_id in self.batch_ids:
                try:
                    await hook.acancel_batch(batch_id)
                    self.log.info("on_kill: cancelled batch %s", batch_id)
                except Exception as e:
                    self.log.warning("on_kill: could not cancel batch %s: %s", batch_id, e)
