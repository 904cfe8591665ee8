"""Thin hook over the Message Batches API, sync for workers and native async for the triggerer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

if TYPE_CHECKING:
    from anthropic import Anthropic, AsyncAnthropic
    from anthropic.types.messages import DeletedMessageBatch, MessageBatch

_BATCHES = "The Message Batches API"
#: The API's largest page; listing every unfinished batch for admission is one call in most workspaces.
LIST_PAGE_SIZE = 1000


class ClaudeBatchesHook(AnthropicHook):
    """
    The official ``AnthropicHook`` plus what a governed batch service needs.

    It reads the same ``anthropic`` connection (API key in ``password``, base URL in ``host``,
    platform in ``extra``), so teams keep their ``anthropic_default`` connection. On top it adds:

    - sync ``delete_batch`` and ``iter_result_lines`` (the raw JSONL lines, streamed, so results can
      go to a store without decoding each into SDK models); the inherited ``create_batch``,
      ``get_batch``, ``cancel_batch`` and ``list_batches`` serve the rest;
    - native async twins on ``AsyncAnthropic`` (``aget_batch``, ``aiter_batches``, ``acancel_batch``,
      ``adelete_batch``, ``aiter_result_lines``) for triggers: nothing here blocks the event loop.
      The connection itself is fetched with Airflow's async lookup on first use.

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
            for line in response.iter_lines():
                if line:
                    yield line.encode()

    # --- triggerer side (async) ---------------------------------------------------------------

    async def async_client(self) -> AsyncAnthropic:
        """The hook's ``AsyncAnthropic`` client, built once; the connection is looked up without blocking."""
        if self._async_client is None:
            client = await self.get_async_conn()
            self._require_first_party(_BATCHES)
            self._async_client = cast("AsyncAnthropic", client)
        return self._async_client

    async def aclose(self) -> None:
        """Release the async client's HTTP connections."""
        if self._async_client is not None:
            await self._async_client.close()
            self._async_client = None

    async def __aenter__(self) -> ClaudeBatchesHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aget_batch(self, batch_id: str) -> MessageBatch:
        """Retrieve a batch."""
        client = await self.async_client()
        return await client.messages.batches.retrieve(batch_id)

    async def aiter_batches(self) -> AsyncIterator[MessageBatch]:
        """Every batch of the workspace, newest first, following all pages."""
        client = await self.async_client()
        async for batch in client.messages.batches.list(limit=LIST_PAGE_SIZE):
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
            async for line in response.iter_lines():
                if line:
                    yield line.encode()
