"""
Deferrable wait for room in the account's processing queue.

The decision and the waiting line live in :mod:`airflow_claude_batches.capacity.admission`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from airflow.triggers.base import TriggerEvent
from pydantic import BaseModel

from airflow_claude_batches.capacity.admission import (
    AdmissionDecision,
    AdmissionEntry,
    AdmissionQueue,
    try_admit,
)
from airflow_claude_batches.hooks import DEFAULT_CONN_ID
from airflow_claude_batches.triggers.base import (
    ClaudeTrigger,
    batches_hook,
    first_poll_delay,
    hold_event,
)

if TYPE_CHECKING:
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

#: Consecutive failed admission attempts tolerated before the wait ends with an error.
MAX_CONSECUTIVE_FAILURES = 5


class AdmissionEvent(BaseModel):
    """
    The one event the trigger yields.

    ``admitted``: the job holds a reservation; the task creates its batches and removes the entry.
    ``timeout``: no room before the deadline; ``window_closed``: its window closed and its job type
    says fail; ``error``: the API or the store kept failing. In all three the trigger has removed the
    entry, so the job no longer blocks anyone.
    """

    status: Literal["admitted", "timeout", "window_closed", "error"]
    entry_id: str
    decision: AdmissionDecision | None = None
    waited_seconds: float
    message: str


class ClaudeCapacityTrigger(ClaudeTrigger):
    """
    Ask for admission every ``poll_interval`` seconds until the job is admitted or ``end_time`` passes.

    Async client only, shared with the other triggers of the connection; the waiting list (file or
    S3 I/O) is read and written from worker threads. The operator checked once before deferring, so
    the first check here comes at the entry's own point of the interval, spreading the checks of
    many waiting jobs. Every argument is plain data: the entry (ids, sizes, times), names and
    numbers, no secret.

    :param entry: The job's :class:`~airflow_claude_batches.capacity.admission.AdmissionEntry`, as JSON data.
    :param queue_limit: ``account.queue_limit`` when the job was submitted.
    :param conn_id: The ``anthropic`` connection.
    :param poll_interval: ``account.admission_poll_seconds``.
    :param end_time: Wall-clock deadline (epoch seconds): submit time + ``admission_max_wait_seconds``.
    :param min_seconds: Hold the event until the trigger has run this long (see
        :func:`~airflow_claude_batches.triggers.base.hold_event`).
    """

    fields = ("entry", "queue_limit", "conn_id", "poll_interval", "end_time", "min_seconds")

    def __init__(
        self,
        *,
        entry: dict[str, Any],
        queue_limit: int,
        conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30,
        end_time: float,
        min_seconds: float = 0,
    ) -> None:
        super().__init__()
        self.entry = entry
        self.queue_limit = queue_limit
        self.conn_id = conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.min_seconds = min_seconds

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        entry = AdmissionEntry.model_validate(self.entry)
        queue = await asyncio.to_thread(AdmissionQueue)
        async with await batches_hook(self.conn_id) as hook:
            event = await self._wait(queue, entry, hook)
        if event.status != "admitted":
            await asyncio.to_thread(queue.remove, entry.entry_id)
        await hold_event(started, self.min_seconds)
        yield TriggerEvent(event.model_dump(mode="json"))

    async def _wait(
        self, queue: AdmissionQueue, entry: AdmissionEntry, hook: ClaudeBatchesHook
    ) -> AdmissionEvent:
        started = entry.enqueued_at.timestamp()
        first_deadline = entry.deadline_at
        decision: AdmissionDecision | None = None
        failures = 0
        await asyncio.sleep(first_poll_delay(entry.entry_id, self.poll_interval))
        while True:
            try:
                entry, decision = await try_admit(queue, entry, self.queue_limit, hook)
            except Exception as e:
                failures += 1
                self.log.warning("Admission check failed (%d in a row): %s", failures, e)
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    return self._event(
                        "error", entry, decision, started, f"Admission failed {failures} times: {e}"
                    )
            else:
                failures = 0
                if decision.admitted:
                    self.log.info("Job %s %s", entry.job_id, decision.why)
                    return self._event("admitted", entry, decision, started, f"Admitted: {decision.summary}.")
                if decision.give_up:
                    return self._event("window_closed", entry, decision, started, decision.detail)
                self.log.info("Job %s waits: %s", entry.job_id, decision.why)
            moved = (entry.deadline_at - first_deadline).total_seconds()  # a window keeping its place
            if time.time() >= self.end_time + moved:
                return self._event(
                    "timeout", entry, decision, started, "No room in the account queue in time"
                )
            await asyncio.sleep(self.poll_interval)

    def _event(
        self,
        status: str,
        entry: AdmissionEntry,
        decision: AdmissionDecision | None,
        started: float,
        message: str,
    ) -> AdmissionEvent:
        return AdmissionEvent.model_validate(
            {
                "status": status,
                "entry_id": entry.entry_id,
                "decision": decision,
                "waited_seconds": round(time.time() - started, 3),
                "message": message,
            }
        )

    async def on_kill(self) -> None:
        """Leave the waiting list when a user kills the deferred task, so it blocks nobody."""
        entry = AdmissionEntry.model_validate(self.entry)
        queue = await asyncio.to_thread(AdmissionQueue)
        await asyncio.to_thread(queue.remove, entry.entry_id)
