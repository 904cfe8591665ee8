"""
What this provider's triggers share: declared fields, one ``serialize()``, spread and held timing,
and their hook, imported off the event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import zlib
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.triggers.base import BaseTrigger

if TYPE_CHECKING:
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

_HOOK_MODULE = "airflow_claude_batches.hooks.batches"


class ClaudeTrigger(BaseTrigger):
    """
    A trigger whose keyword arguments are its declared :attr:`fields`, stored as attributes.

    The trigger row in the metadata database holds exactly these (plain data: ids, names, numbers,
    never a client or a secret), and :meth:`serialize` writes them back, so a field cannot be added
    to ``__init__`` and forgotten in ``serialize``.
    """

    #: The ``__init__`` keyword arguments, each kept as the attribute of the same name.
    fields: ClassVar[tuple[str, ...]]

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {name: getattr(self, name) for name in self.fields},
        )


def first_poll_delay(key: str, interval: float) -> float:
    """
    Seconds to wait before the first poll: a fixed fraction of ``interval`` derived from ``key``.

    A triggerer that starts (or restarts) with a thousand triggers would otherwise fire a thousand
    polls at once, every interval. The fraction is a hash of the key (a batch or entry id), so the
    polls spread evenly and the same trigger keeps its phase in any process.
    """
    return zlib.crc32(key.encode()) / 2**32 * interval


async def hold_event(started: float, min_seconds: float) -> None:
    """
    Wait until ``min_seconds`` have passed since ``started`` (``time.monotonic()``).

    Airflow 3.3 can fail a task whose trigger fires within seconds of its deferral: the worker's
    late report of the deferral lands after the resume (apache/airflow#67287). A small batch that
    has ended by the first poll, or a job admitted at the first check, would hit that; the operator
    passes ``[claude_batches] trigger_min_seconds`` (default 10) when it defers.
    """
    await asyncio.sleep(max(0.0, min_seconds - (time.monotonic() - started)))


async def batches_hook(conn_id: str) -> ClaudeBatchesHook:
    """
    A :class:`~airflow_claude_batches.hooks.batches.ClaudeBatchesHook` for ``conn_id``, its module
    (and the ``anthropic`` SDK) imported in a thread.

    Airflow's triggerer imports a trigger's module inside its event loop, and the SDK takes 1.5-4 s
    to import: at module level it would stall every trigger of the triggerer, of every provider, the
    first time one of ours starts. So the trigger modules import the hook only through here.
    """
    # Always through the import system, never sys.modules directly: while one trigger's thread is still
    # importing, the module is there half-initialized; import_module waits for it to finish.
    module = await asyncio.to_thread(importlib.import_module, _HOOK_MODULE)
    hook: ClaudeBatchesHook = module.ClaudeBatchesHook(conn_id=conn_id)
    return hook
