"""ClaudeBatchesHook against the emulator: the real SDK over HTTP, sync and async."""

from __future__ import annotations

import asyncio
import json
import time

import anthropic
import pytest
from airflow.providers.anthropic.exceptions import AnthropicError as ProviderError

from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from operator_harness import api_requests


def _requests(n: int) -> list[dict]:
    return api_requests([f"team_job_{i:08d}" for i in range(n)])


def _ended(hook: ClaudeBatchesHook, emu, n: int = 3) -> str:
    batch = hook.create_batch(_requests(n))
    emu.advance(3600)
    assert hook.get_batch(batch.id).processing_status == "ended"
    return batch.id


def test_sync_round_trip(api):
    hook = ClaudeBatchesHook()
    batch_id = _ended(hook, api)
    lines = [json.loads(line) for line in hook.iter_result_lines(batch_id)]
    assert sorted(r["custom_id"] for r in lines) == [f"team_job_{i:08d}" for i in range(3)]
    assert {r["result"]["type"] for r in lines} == {"succeeded"}
    assert batch_id in [b.id for b in hook.list_batches()]
    assert hook.delete_batch(batch_id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        hook.get_batch(batch_id)


def test_result_lines_are_the_raw_api_bytes(api):
    hook = ClaudeBatchesHook()
    batch_id = _ended(hook, api, n=2)
    raw = list(hook.iter_result_lines(batch_id))
    decoded = list(hook.conn.messages.batches.results(batch_id))
    assert {json.loads(line)["custom_id"] for line in raw} == {r.custom_id for r in decoded}
    assert all(isinstance(line, bytes) and not line.endswith(b"\n") for line in raw)


def test_results_before_the_end_fail_on_the_client(api):
    hook = ClaudeBatchesHook()
    batch = hook.create_batch(_requests(1))
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        list(hook.iter_result_lines(batch.id))


async def test_async_methods(api):
    sync_hook = ClaudeBatchesHook()
    batch = sync_hook.create_batch(_requests(4))
    async with ClaudeBatchesHook() as hook:
        assert (await hook.aget_batch(batch.id)).processing_status == "in_progress"
        assert batch.id in [b.id async for b in hook.aiter_batches()]
        assert (await hook.acancel_batch(batch.id)).processing_status == "canceling"
        api.advance(3600)
        ended = await hook.aget_batch(batch.id)
        assert ended.processing_status == "ended"
        assert sum(ended.request_counts.model_dump().values()) == 4
        lines = [json.loads(line) async for line in hook.aiter_result_lines(batch.id)]
        assert len(lines) == 4
        assert (await hook.adelete_batch(batch.id)).id == batch.id


async def test_async_list_follows_every_page(api):
    hook = ClaudeBatchesHook()
    created = [hook.create_batch(_requests(1)).id for _ in range(3)]
    async with ClaudeBatchesHook() as ahook:
        client = await ahook.async_client()
        page = await client.messages.batches.list(limit=1)
        assert page.has_more  # the API pages; the hook must follow them all
        listed = [b.id async for b in ahook.aiter_batches()]
    assert listed[:3] == created[::-1]  # newest first


async def test_async_methods_never_block_the_event_loop(api):
    """A ticker on the same loop keeps ticking while the hook waits on a slow, retried API."""
    hook_sync = ClaudeBatchesHook()
    batch_id = _ended(hook_sync, api, n=50)
    api.set_faults(http=[{"route": "retrieve", "status": 529, "times": 2, "retry_after": 0.3}])
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async def work() -> None:
        async with ClaudeBatchesHook() as hook:  # connection lookup included
            await hook.aget_batch(batch_id)  # two 529s with retry-after, then success
            assert len([line async for line in hook.aiter_result_lines(batch_id)]) == 50
        done.set()

    started = time.monotonic()
    await asyncio.gather(ticker(), work())
    assert time.monotonic() - started >= 0.5  # the retries really waited
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.3f}s"
    assert api.stats()["calls"]["retrieve"] >= 3


def test_connection_without_key_is_refused(emu, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT", json.dumps({"conn_type": "anthropic", "host": emu.base_url})
    )
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    with pytest.raises((anthropic.AuthenticationError, anthropic.AnthropicError, TypeError)):
        ClaudeBatchesHook().get_batch("msgbatch_missing")


def test_create_from_a_serialized_body_sends_it_as_is(api):
    requests = _requests(3)
    body = json.dumps({"requests": requests}, separators=(",", ":")).encode()
    hook = ClaudeBatchesHook()
    batch = hook.create_batch_body(body)
    assert batch.request_counts.processing == 3
    api.advance(3600)
    got = sorted(json.loads(line)["custom_id"] for line in hook.iter_result_lines(batch.id))
    assert got == [r["custom_id"] for r in requests]


def test_create_from_a_body_does_not_retry_unless_asked(api):
    body = json.dumps({"requests": _requests(1)}).encode()
    hook = ClaudeBatchesHook()
    api.set_faults(http=[{"route": "create", "status": 500, "times": 1, "retry_after_ms": 1}])
    with pytest.raises(anthropic.InternalServerError):
        hook.create_batch_body(body)
    assert api.stats()["calls"]["create"] == 1 and api.stats()["batches"] == 0
    api.set_faults(http=[{"route": "create", "status": 500, "times": 1, "retry_after_ms": 1}])
    assert hook.create_batch_body(body, max_retries=1).request_counts.processing == 1


def test_create_refuses_a_body_the_api_rejects(api):
    hook = ClaudeBatchesHook()
    with pytest.raises(anthropic.BadRequestError):
        hook.create_batch_body(b'{"requests": [{"custom_id": "bad id!", "params": {}}]}')
    assert api.stats()["batches"] == 0


async def test_hooks_of_one_connection_share_one_client_and_the_last_closes_it(api):
    hooks = [ClaudeBatchesHook() for _ in range(20)]
    clients = await asyncio.gather(*(hook.async_client() for hook in hooks))
    assert len({id(client) for client in clients}) == 1
    shared = clients[0]
    for hook in hooks[:-1]:
        await hook.aclose()
    assert not shared.is_closed()  # one user left
    assert (await hooks[-1].aget_batch(_ended(ClaudeBatchesHook(), api))).processing_status == "ended"
    await hooks[-1].aclose()
    assert shared.is_closed()
    async with ClaudeBatchesHook() as again:
        assert await again.async_client() is not shared  # a new user gets a new client


async def test_a_failed_client_build_reaches_every_waiter_and_is_not_kept(emu, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT",
        json.dumps({"conn_type": "anthropic", "host": emu.base_url, "extra": {"platform": "vertex"}}),
    )
    hooks = [ClaudeBatchesHook() for _ in range(3)]
    outcomes = await asyncio.gather(*(hook.async_client() for hook in hooks), return_exceptions=True)
    assert all(isinstance(o, ProviderError) and "not available" in str(o) for o in outcomes)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT",
        json.dumps({"conn_type": "anthropic", "host": emu.base_url, "password": emu.api_key}),
    )
    async with ClaudeBatchesHook() as hook:
        assert [b async for b in hook.aiter_batches()] == []
