"""Faults after the call, lost and late answers, cut result streams, result order, list lag, queue limit.

Each through the official SDK, sync and async, as the provider's code will meet them.
"""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from .conftest import make_requests


def ended_batch(emu, client: anthropic.Anthropic, n: int) -> str:
    batch = client.messages.batches.create(requests=make_requests(n))
    emu.advance(3)
    return batch.id


def custom_ids(client: anthropic.Anthropic, batch_id: str) -> list[str]:
    return [r.custom_id for r in client.messages.batches.results(batch_id)]


async def acustom_ids(aclient: anthropic.AsyncAnthropic, batch_id: str) -> list[str]:
    return [r.custom_id async for r in await aclient.messages.batches.results(batch_id)]


# -- http[i].when = "after", status 0 --------------------------------------------------------------


async def test_lost_create_response_leaves_a_batch_the_caller_never_hears_of(emu, client, aclient):
    emu.set_faults(http=[{"route": "create", "when": "after", "status": 0, "times": 2}])

    with pytest.raises(anthropic.APIConnectionError):
        client.with_options(max_retries=0).messages.batches.create(requests=make_requests(3))
    with pytest.raises(anthropic.APIConnectionError):
        await aclient.with_options(max_retries=0).messages.batches.create(requests=make_requests(4))

    listed = client.messages.batches.list().data
    assert sorted(b.request_counts.processing for b in listed) == [3, 4]
    assert emu.stats()["faults_injected"] == 2


async def test_sdk_retries_re_send_a_create_whose_response_was_lost(emu, client, aclient):
    emu.set_faults(http=[{"route": "create", "when": "after", "status": 0, "times": 1}])
    answered = client.messages.batches.create(requests=make_requests(2))
    assert emu.stats()["batches"] == 2  # one paid for twice: the first answer was lost

    emu.reset()
    emu.set_faults(http=[{"route": "create", "when": "after", "status": 0, "times": 1}])
    aanswered = await aclient.messages.batches.create(requests=make_requests(2))
    listed = [b.id for b in client.messages.batches.list().data]
    assert len(listed) == 2 and aanswered.id == listed[0]  # the SDK returns the second, newest
    assert answered.id not in listed


async def test_connection_closed_before_the_call_creates_nothing(emu, client, aclient):
    emu.set_faults(http=[{"route": "create", "status": 0, "times": 2}])

    with pytest.raises(anthropic.APIConnectionError):
        client.with_options(max_retries=0).messages.batches.create(requests=make_requests(2))
    with pytest.raises(anthropic.APIConnectionError):
        await aclient.with_options(max_retries=0).messages.batches.create(requests=make_requests(2))
    assert emu.stats()["batches"] == 0
    assert client.messages.batches.create(requests=make_requests(2)).request_counts.processing == 2


async def test_error_after_cancel_and_delete_took_effect(emu, client, aclient):
    emu.configure(processing_seconds=100)
    batch = client.messages.batches.create(requests=make_requests(2))
    emu.set_faults(http=[{"route": "cancel", "when": "after", "status": 529, "batch_id": batch.id}])

    with pytest.raises(anthropic.APIStatusError) as excinfo:
        client.with_options(max_retries=0).messages.batches.cancel(batch.id)
    assert excinfo.value.status_code == 529
    assert client.messages.batches.retrieve(batch.id).processing_status == "canceling"

    emu.advance(200)
    emu.set_faults(http=[{"route": "delete", "when": "after", "status": 500}])
    with pytest.raises(anthropic.NotFoundError):  # the retry asks to delete what is already gone
        await aclient.messages.batches.delete(batch.id)
    assert emu.stats()["batches"] == 0


async def test_error_before_the_call_leaves_it_undone(emu, client, aclient):
    emu.configure(processing_seconds=100)
    batch = client.messages.batches.create(requests=make_requests(2))
    emu.set_faults(http=[{"route": "cancel", "status": 500, "when": "before", "times": 2}])

    with pytest.raises(anthropic.InternalServerError):
        client.with_options(max_retries=0).messages.batches.cancel(batch.id)
    with pytest.raises(anthropic.InternalServerError):
        await aclient.with_options(max_retries=0).messages.batches.cancel(batch.id)
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"


# -- http[i].delay_seconds ---------------------------------------------------------------------------


async def test_delayed_answer_times_the_client_out_after_the_create_took_effect(emu, client, aclient):
    emu.set_faults(http=[{"route": "create", "when": "after", "delay_seconds": 3, "times": 2}])

    with pytest.raises(anthropic.APITimeoutError):
        client.with_options(max_retries=0, timeout=0.5).messages.batches.create(requests=make_requests(1))
    with pytest.raises(anthropic.APITimeoutError):
        await aclient.with_options(max_retries=0, timeout=0.5).messages.batches.create(
            requests=make_requests(1)
        )
    assert emu.stats()["batches"] == 2


async def test_delayed_answer_without_status_is_the_calls_own(emu, client, aclient):
    batch = client.messages.batches.create(requests=make_requests(1))
    emu.set_faults(http=[{"route": "retrieve", "delay_seconds": 0.2, "times": 2}])

    assert client.messages.batches.retrieve(batch.id).id == batch.id
    assert (await aclient.messages.batches.retrieve(batch.id)).id == batch.id
    assert emu.stats()["faults_injected"] == 2


async def test_delayed_error_answer(emu, client, aclient):
    emu.set_faults(http=[{"route": "list", "status": 429, "delay_seconds": 0.1, "times": 2}])

    with pytest.raises(anthropic.RateLimitError):
        client.with_options(max_retries=0).messages.batches.list()
    with pytest.raises(anthropic.RateLimitError):
        await aclient.with_options(max_retries=0).messages.batches.list()
    assert client.messages.batches.list().data == []


# -- results: truncate_after_lines / drop_after_lines -----------------------------------------------


async def test_truncated_results_end_cleanly_short(emu, client, aclient):
    batch_id = ended_batch(emu, client, 30)
    other_id = ended_batch(emu, client, 5)
    emu.set_faults(results=[{"batch_id": batch_id, "truncate_after_lines": 7, "times": 2}])

    assert len(custom_ids(client, other_id)) == 5  # another batch is not cut
    assert len(custom_ids(client, batch_id)) == 7
    assert len(await acustom_ids(aclient, batch_id)) == 7
    assert sorted(custom_ids(client, batch_id)) == [f"r{i:05d}" for i in range(30)]  # used up


async def test_dropped_results_stream_raises_mid_way(emu, client, aclient):
    batch_id = ended_batch(emu, client, 30)
    emu.set_faults(results=[{"drop_after_lines": 10, "times": 2}])

    received: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError):
        received.extend(r.custom_id for r in client.messages.batches.results(batch_id))
    assert 0 < len(received) <= 10
    areceived: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError):
        async for r in await aclient.messages.batches.results(batch_id):
            areceived.append(r.custom_id)
    assert 0 < len(areceived) <= 10
    assert len(custom_ids(client, batch_id)) == 30


def test_raw_lines_before_the_drop_are_all_delivered(emu, client):
    batch_id = ended_batch(emu, client, 30)
    emu.set_faults(results=[{"drop_after_lines": 10}])

    lines: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        client.messages.batches.with_streaming_response.results(batch_id) as response,
    ):
        lines.extend(response.iter_lines())
    assert len(lines) == 10


# -- results_order -----------------------------------------------------------------------------------


async def test_shuffled_results_come_in_a_new_order_every_download(emu, client, aclient):
    batch_id = ended_batch(emu, client, 60)
    fixed = custom_ids(client, batch_id)
    assert fixed == custom_ids(client, batch_id) and fixed != sorted(fixed)

    emu.set_faults(results_order="shuffled")
    orders = [custom_ids(client, batch_id), await acustom_ids(aclient, batch_id)]
    orders.append(custom_ids(client, batch_id))
    assert all(sorted(order) == sorted(fixed) for order in orders)
    assert len({tuple(order) for order in [fixed, *orders]}) == 4


# -- list_lag_seconds --------------------------------------------------------------------------------


async def test_new_batch_is_listed_only_after_the_lag(emu, client, aclient):
    emu.set_faults(list_lag_seconds=30)
    first = client.messages.batches.create(requests=make_requests(1))
    emu.advance(20)
    second = await aclient.messages.batches.create(requests=make_requests(1))

    assert client.messages.batches.list().data == []
    assert (await aclient.messages.batches.retrieve(second.id)).id == second.id
    emu.advance(10)
    assert [b.id for b in client.messages.batches.list().data] == [first.id]
    emu.advance(20)
    assert [b.id async for b in aclient.messages.batches.list()] == [second.id, first.id]


# -- queue_limit -------------------------------------------------------------------------------------


async def test_queue_limit_refuses_a_create_that_would_overflow(emu, client, aclient):
    emu.configure(processing_seconds=10)
    emu.set_faults(queue_limit=10)
    client.messages.batches.create(requests=make_requests(6))

    with pytest.raises(anthropic.RateLimitError) as excinfo:
        client.with_options(max_retries=0).messages.batches.create(requests=make_requests(5))
    assert excinfo.value.body["error"]["type"] == "rate_limit_error"
    assert "6 requests are processing" in excinfo.value.body["error"]["message"]
    with pytest.raises(anthropic.RateLimitError):
        await aclient.with_options(max_retries=0).messages.batches.create(requests=make_requests(5))
    await aclient.messages.batches.create(requests=make_requests(4))  # exactly the limit
    assert emu.stats()["batches"] == 2

    emu.advance(10)  # both ended: the queue is empty again
    assert client.messages.batches.create(requests=make_requests(10)).request_counts.processing == 10
    with pytest.raises(anthropic.RateLimitError):
        client.with_options(max_retries=0).messages.batches.create(requests=make_requests(11))


# -- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"http": [{"route": "create", "status": 500, "when": "during"}]}, "when must be one of"),
        ({"http": [{"route": "create"}]}, "status must be"),
        ({"http": [{"route": "create", "status": 1}]}, "status must be"),
        ({"http": [{"route": "create", "status": 0, "delay_seconds": -1}]}, "delay_seconds"),
        ({"results": [{"truncate_after_lines": 3, "drop_after_lines": 3}]}, "exactly one of"),
        ({"results": [{"times": 2}]}, "exactly one of"),
        ({"results": [{"drop_after_lines": -1}]}, "drop_after_lines must be an integer"),
        ({"results": [{"truncate_after_lines": 1, "times": 0}]}, "times must be"),
        ({"results": [{"truncate_after_lines": 1, "lines": 2}]}, "unknown keys"),
        ({"results_order": "random"}, "results_order"),
        ({"list_lag_seconds": "soon"}, "list_lag_seconds"),
        ({"queue_limit": -1}, "queue_limit"),
        ({"queue_limit": 1.5}, "queue_limit"),
    ],
)
def test_malformed_new_fault_keys_are_rejected(emu, faults, message):
    with pytest.raises(ValueError, match=message):
        emu.set_faults(**faults)
