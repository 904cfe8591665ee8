"""The official SDK (sync and async) against the emulator: every route and the status machine."""

from __future__ import annotations

import re
from datetime import timedelta

import anthropic
import httpx
import pytest

from .conftest import make_requests

DAY = 86_400
RFC3339_MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
BATCH_KEYS = {
    "id", "type", "processing_status", "request_counts", "created_at", "expires_at", "ended_at",
    "cancel_initiated_at", "archived_at", "results_url",
}  # fmt: skip


def raw_batch(emu, batch_id: str) -> dict:
    response = httpx.get(f"{emu.base_url}/v1/messages/batches/{batch_id}", headers={"x-api-key": emu.api_key})
    response.raise_for_status()
    return response.json()


def assert_counts_sum(batch, n: int) -> None:
    counts = batch.request_counts
    assert counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired == n


def test_create_returns_in_progress_batch_with_all_ten_keys(emu, client):
    batch = client.messages.batches.create(requests=make_requests(3))

    assert batch.id.startswith("msgbatch_")
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.model_dump() == {
        "processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0
    }  # fmt: skip
    assert batch.results_url is None and batch.ended_at is None
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    raw = raw_batch(emu, batch.id)
    assert set(raw) == BATCH_KEYS
    assert RFC3339_MICROS.match(raw["created_at"]) and RFC3339_MICROS.match(raw["expires_at"])


def test_batch_ends_after_processing_seconds_and_streams_results(emu, client):
    requests = make_requests(12, max_tokens=40)
    batch = client.messages.batches.create(requests=requests)
    emu.advance(3)

    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 12 and ended.request_counts.processing == 0
    assert ended.results_url == f"{emu.base_url}/v1/messages/batches/{batch.id}/results"
    assert RFC3339_MICROS.match(raw_batch(emu, batch.id)["ended_at"])

    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == [r["custom_id"] for r in requests]
    assert [r.custom_id for r in results] != [r["custom_id"] for r in requests], "results come in any order"
    for line in results:
        assert line.result.type == "succeeded"
        message = line.result.message
        assert message.id.startswith("msg_") and message.role == "assistant" and message.type == "message"
        assert message.model == "claude-sonnet-4-5"
        assert message.content[0].type == "text" and message.content[0].text
        assert 1 <= message.usage.output_tokens <= 40
        assert message.stop_reason == ("max_tokens" if message.usage.output_tokens == 40 else "end_turn")
        assert message.usage.cache_read_input_tokens == 0 and message.usage.service_tier == "batch"


def test_results_are_deterministic_and_input_tokens_follow_text_size(emu, client):
    short = {"custom_id": "short", "params": {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"}]}}  # fmt: skip
    long = {"custom_id": "long", "params": {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "word " * 2000}]}}  # fmt: skip
    batch = client.messages.batches.create(requests=[short, long])
    emu.advance(3)
    first = {r.custom_id: r.result.message for r in client.messages.batches.results(batch.id)}
    again = {r.custom_id: r.result.message for r in client.messages.batches.results(batch.id)}

    assert first == again
    assert first["short"].usage.input_tokens < 10
    assert 2000 < first["long"].usage.input_tokens < 3000


def test_results_before_end_raise_client_side_without_a_call(emu, client):
    batch = client.messages.batches.create(requests=make_requests(2))

    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        client.messages.batches.results(batch.id)
    assert emu.stats()["calls"]["results"] == 0


def test_cancel_goes_through_canceling_and_cancels_requests_not_yet_run(emu, client):
    emu.configure(processing_seconds=100, cancel_seconds=5)
    batch = client.messages.batches.create(requests=make_requests(10))
    emu.advance(30)  # about 3 of 10 requests have run

    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 10
    emu.advance(6)

    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 3 and ended.request_counts.canceled == 7
    assert_counts_sum(ended, 10)
    types = sorted(r.result.type for r in client.messages.batches.results(batch.id))
    assert types == ["canceled"] * 7 + ["succeeded"] * 3


def test_cancel_of_an_ended_batch_is_rejected(emu, client):
    batch = client.messages.batches.create(requests=make_requests(1))
    emu.advance(3)

    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        client.messages.batches.cancel(batch.id)


def test_unfinished_requests_expire_24_hours_after_create(emu, client):
    emu.configure(processing_seconds=2 * DAY)
    batch = client.messages.batches.create(requests=make_requests(10))
    emu.advance(DAY - 60)
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    emu.advance(120)

    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at == ended.expires_at
    assert (ended.request_counts.succeeded, ended.request_counts.expired) == (5, 5)
    assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"succeeded", "expired"}


def test_results_are_archived_29_days_after_create(emu, client):
    batch = client.messages.batches.create(requests=make_requests(2))
    emu.advance(28 * DAY)
    assert client.messages.batches.retrieve(batch.id).archived_at is None
    assert len(list(client.messages.batches.results(batch.id))) == 2
    emu.advance(DAY)

    archived = client.messages.batches.retrieve(batch.id)
    assert archived.archived_at == archived.created_at + timedelta(days=29)
    with pytest.raises(anthropic.NotFoundError, match="archived"):
        client.messages.batches.results(batch.id)


def test_list_pages_newest_first_with_after_and_before_ids(emu, client):
    ids = [client.messages.batches.create(requests=make_requests(1)).id for _ in range(5)]
    newest_first = ids[::-1]

    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more and page.first_id == newest_first[0] and page.last_id == newest_first[1]
    page2 = client.messages.batches.list(limit=2, after_id=page.last_id)
    assert [b.id for b in page2.data] == newest_first[2:4] and page2.has_more
    page3 = client.messages.batches.list(limit=2, after_id=page2.last_id)
    assert [b.id for b in page3.data] == newest_first[4:] and not page3.has_more
    back = client.messages.batches.list(limit=2, before_id=page3.first_id)
    assert [b.id for b in back.data] == newest_first[2:4] and back.has_more
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first  # auto-paging
    empty = client.messages.batches.list(after_id=newest_first[-1])
    assert empty.data == [] and empty.first_id is None and not empty.has_more


def test_list_limit_out_of_range_is_a_400(client):
    with pytest.raises(anthropic.BadRequestError, match="less than or equal to 1000"):
        client.messages.batches.list(limit=1001)
    with pytest.raises(anthropic.BadRequestError, match="greater than or equal to 1"):
        client.messages.batches.list(limit=0)


def test_delete_only_ended_batches(emu, client):
    batch = client.messages.batches.create(requests=make_requests(1))

    with pytest.raises(anthropic.BadRequestError) as excinfo:
        client.messages.batches.delete(batch.id)
    assert excinfo.value.status_code == 400
    assert excinfo.value.body["error"]["type"] == "invalid_request_error"
    assert excinfo.value.request_id == excinfo.value.body["request_id"]
    emu.advance(3)
    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_counts_always_sum_to_n_through_every_state(emu, client):
    emu.configure(processing_seconds=100, cancel_seconds=10)
    emu.set_faults(errored=[{"ratio": 0.3}])
    batch = client.messages.batches.create(requests=make_requests(37))
    seen = set()
    for step, action in enumerate(["wait", "cancel", "wait", "wait", "wait"]):
        if action == "cancel":
            client.messages.batches.cancel(batch.id)
        current = client.messages.batches.retrieve(batch.id)
        seen.add(current.processing_status)
        assert_counts_sum(current, 37)
        if current.processing_status != "ended":
            assert current.request_counts.processing == 37 and current.results_url is None
        emu.advance(5 * (step + 1))
    assert seen == {"in_progress", "canceling", "ended"}


def test_beta_routes_are_served_too(emu, client):
    batch = client.beta.messages.batches.create(
        requests=make_requests(2), betas=["message-batches-2024-09-24"]
    )
    emu.advance(3)

    assert client.beta.messages.batches.retrieve(batch.id).processing_status == "ended"
    assert len(list(client.beta.messages.batches.results(batch.id))) == 2


async def test_async_client_through_every_route(emu, aclient):
    batch = await aclient.messages.batches.create(requests=make_requests(4))
    assert (await aclient.messages.batches.retrieve(batch.id)).processing_status == "in_progress"
    other = await aclient.messages.batches.create(requests=make_requests(2))
    canceling = await aclient.messages.batches.cancel(other.id)
    assert canceling.processing_status == "canceling"
    emu.advance(3)

    page = await aclient.messages.batches.list(limit=10)
    assert [b.id for b in page.data] == [other.id, batch.id]
    results = [line async for line in await aclient.messages.batches.results(batch.id)]
    assert sorted(r.custom_id for r in results) == [f"r{i:05d}" for i in range(4)]
    deleted = await aclient.messages.batches.delete(batch.id)
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await aclient.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.BadRequestError, match="at most 64 characters"):
        await aclient.messages.batches.create(requests=make_requests(1, prefix="x" * 70))
