"""Thin hook over the Message Batches API, sync for workers and native async for the triggerer."""

from __future__ import annotations

import asyncio
import importlib
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.anthropic.hooks.anthropic import AnthropicHook, _ClientFactories
from airflow.providers.common.compat.connection import get_async_connection
from anthropic import (
    AsyncAnthropic,
    AsyncAnthropicAWS,
    AsyncAnthropicBedrock,
    AsyncAnthropicFoundry,
    AsyncAnthropicVertex,
)
from anthropic.types.messages import MessageBatch

if TYPE_CHECKING:
    from anthropic import Anthropic
    from anthropic.types.messages import DeletedMessageBatch

_BATCHES = "The Message Batches API"
_CREATE_PATH = "/v1/messages/batches"
#: The API's largest page; listing every unfinished batch for admission is one call in most workspaces.
LIST_PAGE_SIZE = 1000


@dataclass
class _Lease:
    """One shared client being built or in use, and how many hooks hold it."""

    client: asyncio.Task[AsyncAnthropic]
    users: int = 0


class _SharedAsyncClients:
    """
    One ``AsyncAnthropic`` per (event loop, connection id), counted by its users.

    Keyed by loop because an httpx client belongs to the loop it first ran on; held weakly, so a
    loop that closes with users left takes its clients with it.
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Lease]] = (
            weakref.WeakKeyDictionary()
        )

    async def acquire(self, hook: ClaudeBatchesHook) -> AsyncAnthropic:
        leases = self._by_loop.setdefault(asyncio.get_running_loop(), {})
        lease = leases.get(hook.conn_id)
        if lease is None:
            lease = leases[hook.conn_id] = _Lease(asyncio.ensure_future(hook._build_async_client()))
        lease.users += 1
        try:
            # shield: one waiter being cancelled must not cancel the build the others wait on.
            return await asyncio.shield(lease.client)
        except BaseException:
            await self.release(hook.conn_id)
            raise

    async def release(self, conn_id: str) -> None:
        leases = self._by_loop.get(asyncio.get_running_loop(), {})
        lease = leases.get(conn_id)
        if lease is None:
            return
        lease.users -= 1
        if lease.users > 0:
            return
        del leases[conn_id]
        if not lease.client.done():
            lease.client.cancel()
        elif not lease.client.cancelled() and lease.client.exception() is None:
            await lease.client.result().close()

    def users(self, conn_id: str) -> int:
        """How many hooks hold the client of ``conn_id`` on the running loop (0: none is open)."""
        lease = self._by_loop.get(asyncio.get_running_loop(), {}).get(conn_id)
        return lease.users if lease else 0


_SHARED_CLIENTS = _SharedAsyncClients()


class ClaudeBatchesHook(AnthropicHook):
    """
    The official ``AnthropicHook`` plus what a governed batch service needs.

    It reads the same ``anthropic`` connection (API key in ``password``, base URL in ``host``,
    platform in ``extra``), so teams keep their ``anthropic_default`` connection. On top it adds:

    - sync ``create_batch_body`` (a body serialized once while planning, sent as is, retries off),
      ``delete_batch`` and ``iter_result_lines`` (the raw JSONL lines, streamed, so results can go
      to a store without decoding each into SDK models); the inherited ``get_batch``,
      ``cancel_batch`` and ``list_batches`` serve the rest;
    - native async twins on ``AsyncAnthropic`` (``aget_batch``, ``aiter_batches``, ``acancel_batch``,
      ``adelete_batch``, ``aiter_result_lines``) for triggers: nothing here blocks the event loop.
      Every hook of a connection on one event loop shares one client (:meth:`async_client`).

    Call :meth:`aclose` (or use ``async with``) when done with the async client.
    """

    hook_name = "Claude Batches"

    def __init__(self, conn_id: str = AnthropicHook.default_conn_name, *args: Any, **kwargs: Any) -> None:
        super().__init__(conn_id, *args, **kwargs)
        self._async_client: AsyncAnthropic | None = None

    @property
    def _client(self) -> Anthropic:
        self._require_first_party(_BATCHES)
        return self._first_party_conn

    # --- worker side (sync) -------------------------------------------------------------------

    def create_batch_body(self, body: bytes, *, max_retries: int = 0) -> MessageBatch:
        """
        Create a batch from its body already serialized (``{"requests": [...]}`` as JSON bytes).

        The bytes go out as they are through the SDK's own client (its headers, errors and
        response model), so a 256 MB job is not built again in memory and encoded a second time.
        Automatic retries are off by default: a create whose answer was lost may still have made a
        (paid) batch, and only the caller can look for it before trying again.
        """
        client = self._client.with_options(max_retries=max_retries)
        return client.post(_CREATE_PATH, content=body, cast_to=MessageBatch)

    def delete_batch(self, batch_id: str) -> DeletedMessageBatch:
        """Delete an ended batch and its results at the API (irreversible)."""
        return self._client.messages.batches.delete(batch_id)

    def iter_result_lines(self, batch_id: str) -> Iterator[bytes]:
        """
        Stream the raw result lines of an ended batch.

        Raw lines, not SDK models: the store keeps exactly what the API returned, and decoding
        100,000 ``Message`` models only to re-encode them would dominate the download time.
        """
        results = self._client.messages.batches.with_streaming_response.results(batch_id)
        with results as response:
            rest = b""
            for chunk in response.iter_bytes():
                lines, rest = _split_lines(rest + chunk)
                yield from lines
            if rest.strip():
                yield rest

    # --- triggerer side (async) ---------------------------------------------------------------

    async def async_client(self) -> AsyncAnthropic:
        """
        The ``AsyncAnthropic`` client of this connection on the running event loop, shared.

        Every hook of one connection on one loop (in the triggerer: every trigger of that
        connection) holds the same client, so its HTTP connection pool and its TLS context are built
        once, not per trigger. The first user looks the connection up with Airflow's async lookup and
        builds the client in a worker thread: building one loads the certificate bundle (~20 ms of
        CPU), which would otherwise stall every trigger on the loop. The last :meth:`aclose` closes it.
        """
        if self._async_client is None:
            self._async_client = await _SHARED_CLIENTS.acquire(self)
        return self._async_client

    async def _build_async_client(self) -> AsyncAnthropic:
        """Look the connection up without blocking, then build its async client off the loop."""
        if "_connection" not in self.__dict__:
            self._connection = await get_async_connection(self.conn_id, hook=self)
        self._require_first_party(_BATCHES)
        factories: _ClientFactories[Any] = _ClientFactories(
            anthropic=AsyncAnthropic,
            bedrock=AsyncAnthropicBedrock,
            vertex=AsyncAnthropicVertex,
            aws=AsyncAnthropicAWS,
            foundry=AsyncAnthropicFoundry,
        )
        return cast("AsyncAnthropic", await asyncio.to_thread(self._build_off_loop, factories))

    def _build_off_loop(self, factories: _ClientFactories[Any]) -> Any:
        # The HTTP transport imports its asyncio backend on the first request: import it here too,
        # in the builder's thread, rather than on the loop (~0.1 s where bytecode is not cached).
        importlib.import_module("anyio._backends._asyncio")
        return self._build_client(factories)

    async def aclose(self) -> None:
        """Give the shared async client back; the last user of it on this loop closes it."""
        if self._async_client is not None:
            self._async_client = None
            await _SHARED_CLIENTS.release(self.conn_id)

    async def __aenter__(self) -> ClaudeBatchesHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aget_batch(self, batch_id: str) -> MessageBatch:
        """Retrieve a batch."""
        client = await self.async_client()
        return await client.messages.batches.retrieve(batch_id)

    async def aiter_batches(self, limit: int = LIST_PAGE_SIZE) -> AsyncGenerator[MessageBatch, None]:
        """Every batch of the workspace, newest first, following pages of ``limit`` as they are read."""
        client = await self.async_client()
        async for batch in client.messages.batches.list(limit=limit):
            yield batch

    async def acancel_batch(self, batch_id: str) -> MessageBatch:
        """Request cancellation: the batch goes to ``canceling``, then ends with un-run requests canceled."""
        client = await self.async_client()
        return await client.messages.batches.cancel(batch_id)

    async def adelete_batch(self, batch_id: str) -> DeletedMessageBatch:
        """Delete an ended batch and its results at the API (irreversible)."""
        client = await self.async_client()
        return await client.messages.batches.delete(batch_id)

    async def aiter_result_lines(self, batch_id: str) -> AsyncIterator[bytes]:
        """Stream the raw result lines of an ended batch (see :meth:`iter_result_lines`)."""
        client = await self.async_client()
        async with client.messages.batches.with_streaming_response.results(batch_id) as response:
            rest = b""
            async for chunk in response.iter_bytes():
                lines, rest = _split_lines(rest + chunk)
                for line in lines:
                    yield line
            if rest.strip():
                yield rest


def _split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """
    The complete non-empty lines of ``data`` (without ``\\n`` or ``\\r\\n``) and the unfinished rest.

    Bytes split as they arrive: decoding every line to text only to encode it again for the store
    costs more than the download.
    """
    lines = data.split(b"\n")
    rest = lines.pop()
    return [line.rstrip(b"\r") for line in lines if line and line != b"\r"], rest
