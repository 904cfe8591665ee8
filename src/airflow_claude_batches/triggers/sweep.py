"""
One status sweep per connection for every trigger waiting on batches in the same process.

A thousand triggers that each retrieve their batch every interval make a thousand calls an
interval. The triggers of one connection on one event loop share a :class:`StatusBoard` instead:
one listing of the workspace's batches (newest first, stopping at the oldest watched batch) serves
every trigger that polls within the same interval, and only a batch the listing did not show is
retrieved on its own (one not listed yet right after create, or an old one that has ended). Until a
watched batch's creation time is known, the listing may go back :data:`UNFINISHED_WITHIN` (a batch
still running is younger than its 24 h expiry); it stops as soon as every watched batch is seen,
which for batches just created is the first page.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anthropic.types.messages import MessageBatch

    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

#: Batches per listing page. Not the API's largest (1,000): decoding a page runs on the event loop,
#: and 100 batches decode in a few milliseconds where 1,000 hold every trigger up for a tenth of a second.
PAGE_SIZE = 100
#: How far back a batch that has not ended can have been created (its expiry, with a margin).
UNFINISHED_WITHIN = timedelta(hours=25)


class StatusBoard:
    """
    The latest listing of one connection's batches, shared by the triggers that watch them.

    Get the board of a connection with :meth:`of` (one per running event loop). A trigger calls
    :meth:`watch` once, :meth:`states` each poll and :meth:`unwatch` when it ends.
    """

    _boards: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, StatusBoard]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self._watchers: Counter[str] = Counter()
        #: Creation times of watched batches, learned from a listing or a retrieve.
        self._created_at: dict[str, datetime] = {}
        self._sweep: asyncio.Future[dict[str, MessageBatch]] | None = None
        self._sweep_started = 0.0

    @classmethod
    def of(cls, conn_id: str) -> StatusBoard:
        """The board of ``conn_id`` on the running event loop."""
        boards = cls._boards.setdefault(asyncio.get_running_loop(), {})
        return boards.setdefault(conn_id, cls())

    def watch(self, batch_ids: Iterable[str]) -> None:
        self._watchers.update(batch_ids)

    def unwatch(self, batch_ids: Iterable[str]) -> None:
        for batch_id in batch_ids:
            self._watchers[batch_id] -= 1
            if self._watchers[batch_id] <= 0:
                del self._watchers[batch_id]
                self._created_at.pop(batch_id, None)

    async def states(
        self, hook: ClaudeBatchesHook, batch_ids: Iterable[str], max_age: float
    ) -> dict[str, MessageBatch]:
        """
        The current state of each of ``batch_ids``, from a sweep started at most ``max_age`` ago.

        If no such sweep exists, this call starts one (through ``hook``); concurrent callers join it.
        A failed sweep or retrieve raises here, for every caller that relied on it.
        """
        if self._sweep is None or time.monotonic() - self._sweep_started > max_age:
            self._sweep_started = time.monotonic()
            self._sweep = asyncio.ensure_future(self._list(hook))
        # shield: a cancelled trigger must not cancel the sweep other triggers wait on.
        swept = await asyncio.shield(self._sweep)
        states: dict[str, MessageBatch] = {}
        for batch_id in batch_ids:
            batch = swept.get(batch_id)
            if batch is None:
                batch = await hook.aget_batch(batch_id)
                if batch_id in self._watchers:
                    self._created_at[batch_id] = batch.created_at
            states[batch_id] = batch
        return states

    async def _list(self, hook: ClaudeBatchesHook) -> dict[str, MessageBatch]:
        """List newest first until every watched batch is seen or the listing is older than all of them."""
        wanted = set(self._watchers)
        if not wanted:
            return {}
        known = [self._created_at[b] for b in wanted if b in self._created_at]
        if len(known) < len(wanted):
            known.append(datetime.now(timezone.utc) - UNFINISHED_WITHIN)
        oldest = min(known)
        seen: dict[str, MessageBatch] = {}
        async with aclosing(hook.aiter_batches(limit=PAGE_SIZE)) as batches:
            async for batch in batches:
                if batch.id in wanted:
                    seen[batch.id] = batch
                    if batch.id in self._watchers:
                        self._created_at[batch.id] = batch.created_at
                    if len(seen) == len(wanted):
                        break
                if batch.created_at < oldest:
                    break
        return seen
