"""
One status sweep per connection for every trigger waiting on batches in the same process.

A thousand triggers that each retrieve their batch every interval make a thousand calls an
interval. The triggers of one connection on one event loop share a :class:`StatusBoard` instead:
one listing of the workspace's batches (newest first, stopping at the oldest watched batch) serves
every trigger that polls within the same interval, and only a batch the listing did not show is
retrieved on its own: one not yet listed right after create, or one whose creation time is not
known yet (its first poll).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from contextlib import aclosing
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anthropic.types.messages import MessageBatch

    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

#: A listing page holds up to this many batches when few are watched, else the API's largest page.
SMALL_PAGE = 100
LARGE_PAGE = 1000


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
        #: Creation times of watched batches, learned from their first retrieve.
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
        swept: dict[str, MessageBatch] = {}
        if self._created_at:
            if self._sweep is None or time.monotonic() - self._sweep_started > max_age:
                self._sweep_started = time.monotonic()
                self._sweep = asyncio.ensure_future(self._list(hook, dict(self._created_at)))
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

    async def _list(self, hook: ClaudeBatchesHook, wanted: dict[str, datetime]) -> dict[str, MessageBatch]:
        """List newest first until every wanted batch is seen or the listing is older than all of them."""
        oldest = min(wanted.values())
        seen: dict[str, MessageBatch] = {}
        missing = len(wanted)
        limit = SMALL_PAGE if len(wanted) <= SMALL_PAGE else LARGE_PAGE
        async with aclosing(hook.aiter_batches(limit=limit)) as batches:
            async for batch in batches:
                if batch.id in self._watchers:
                    seen[batch.id] = batch
                    missing -= batch.id in wanted
                if missing <= 0 or batch.created_at < oldest:
                    break
        return seen
