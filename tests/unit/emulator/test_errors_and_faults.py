"""Error responses, create validation and failure injection, as the official SDK sees them."""

from __future__ import annotations

import json
import socket
import time

import anthropic
import httpx
import pytest

from airflow_claude_batches.emulator import run_emulator

from .conftest import make_requests


def post_raw(emu, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{emu.base_url}/v1/messages/batches",
        content=body,
        headers={"x-api-key": emu.api_key, "content-type": "application/json", **(headers or {})},
    )


def assert_envelope(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    return body["error"]["message"]


def test_missing_api_key_is_401(emu):
    response = httpx.get(f"{emu.base_url}/v1/messages/batches")
    assert "x-api-key" in assert_envelope(response, 401, "authentication_error")


def test_only_the_configured_key_is_accepted():
    with run_emulator(api_key="sk-test-right") as emu:
        good = anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key)
        assert emu.api_key == "sk-test-right"
        assert good.messages.batches.list().data == []
        bad = anthropic.Anthropic(base_url=emu.base_url, api_key="sk-test-wrong")
        with pytest.raises(anthropic.AuthenticationError):
            bad.messages.batches.list()


def test_unknown_batch_id_is_404(client):
    for call in (
        client.messages.batches.retrieve,
        client.messages.batches.cancel,
        client.messages.batches.delete,
    ):
        with pytest.raises(anthropic.NotFoundError) as excinfo:
            call("msgbatch_doesnotexist")
        assert excinfo.value.body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        (make_requests(1, prefix="x" * 64), "requests.0.custom_id: String should have at most 64 characters"),
        (
            [*make_requests(1), {**make_requests(1)[0], "custom_id": "billing:reconcile"}],
            "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
        ),
        (
            [{**make_requests(1)[0], "custom_id": ""}],
            "requests.0.custom_id: String should have at least 1 character",
        ),
        (make_requests(2) + make_requests(1), "requests.2.custom_id: Duplicate custom_id 'r00000'"),
        ([], "requests: List should have at least 1 item after validation, not 0"),
        (
            make_requests(1, temperature=0.5, colour="red"),
            "requests.0.params.colour: Extra inputs are not permitted",
        ),
        ([{**make_requests(1)[0], "extra": 1}], "requests.0.extra: Extra inputs are not permitted"),
        (
            [{"custom_id": "a", "params": {"max_tokens": 5, "messages": []}}],
            "requests.0.params.model: Field required",
        ),
        (
            [{"custom_id": "a", "params": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}],
            "requests.0.params.max_tokens: Field required",
        ),
        (
            [{"custom_id": "a", "params": {"model": "m", "max_tokens": 5}}],
            "requests.0.params.messages: Field required",
        ),
        ([{"custom_id": "a"}], "requests.0.params: Field required"),
        (
            make_requests(1, max_tokens=0),
            "requests.0.params.max_tokens: Input should be greater than or equal to 1",
        ),
    ],
)
def test_create_validation_errors_are_400_with_the_api_message(client, emu, requests, message):
    with pytest.raises(anthropic.BadRequestError) as excinfo:
        client.messages.batches.create(requests=requests)

    assert excinfo.value.body["error"]["type"] == "invalid_request_error"
    assert excinfo.value.body["error"]["message"].startswith(message)
    assert emu.stats()["batches"] == 0


def test_unknown_top_level_key_and_missing_requests(emu):
    body = json.dumps({"requests": make_requests(1), "priority": "high"}).encode()
    assert assert_envelope(post_raw(emu, body), 400, "invalid_request_error") == (
        "priority: Extra inputs are not permitted"
    )
    assert assert_envelope(post_raw(emu, b"{}"), 400, "invalid_request_error") == "requests: Field required"
    assert "valid JSON" in assert_envelope(
        post_raw(emu, b'{"requests": [{"custom_'), 400, "invalid_request_error"
    )
    assert "valid JSON" in assert_envelope(
        post_raw(emu, json.dumps({"requests": make_requests(1)}).encode() + b" trailing"),
        400,
        "invalid_request_error",
    )


def test_more_than_100000_requests_is_400(emu):
    item = (
        '{"custom_id":"r%d","params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}}'
    )
    body = ('{"requests":[' + ",".join(item % i for i in range(100_001)) + "]}").encode()

    message = assert_envelope(post_raw(emu, body), 400, "invalid_request_error")
    assert message == "requests: List should have at most 100000 items after validation, not 100001"


def test_body_over_256_mb_is_413_without_reading_it_into_memory(emu):
    host, port = emu.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (256 * 1024 * 1024 + 1)
        )
        sock.shutdown(socket.SHUT_WR)
        reply = sock.makefile("rb").read().decode()
    assert reply.startswith("HTTP/1.1 413")
    assert '"request_too_large"' in reply


def test_create_ignores_beta_query_and_version_headers(emu):
    body = json.dumps({"requests": make_requests(1)}).encode()
    response = httpx.post(
        f"{emu.base_url}/v1/messages/batches?beta=true",
        content=body,
        headers={"x-api-key": "k", "anthropic-version": "1999-01-01", "anthropic-beta": "anything-123"},
    )
    assert response.status_code == 200 and response.json()["type"] == "message_batch"


def test_injected_429_is_retried_by_the_sdk_then_succeeds(emu, client):
    emu.set_faults(http=[{"route": "create", "status": 429, "times": 2, "retry_after_ms": 1}])

    batch = client.messages.batches.create(requests=make_requests(2))

    stats = emu.stats()
    assert stats["calls"]["create"] == 3 and stats["batches"] == 1 and stats["faults_injected"] == 2
    assert client.messages.batches.retrieve(batch.id).request_counts.processing == 2


async def test_injected_529_exhausting_retries_raises(emu, aclient):
    batch = await aclient.messages.batches.create(requests=make_requests(1))
    emu.set_faults(http=[{"route": "retrieve", "status": 529, "times": 3, "retry_after": 0.001}])

    with pytest.raises(anthropic.APIStatusError) as excinfo:
        await aclient.messages.batches.retrieve(batch.id)
    assert excinfo.value.status_code == 529
    assert excinfo.value.body["error"]["type"] == "overloaded_error"
    assert emu.stats()["calls"]["retrieve"] == 3
    assert (await aclient.messages.batches.retrieve(batch.id)).id == batch.id  # faults used up


def test_injected_errors_carry_retry_headers_and_target_one_route(emu, client):
    emu.set_faults(http=[{"route": "list", "status": 500, "times": 1, "retry_after": 2, "retry_after_ms": 3}])
    response = httpx.get(f"{emu.base_url}/v1/messages/batches", headers={"x-api-key": "k"})

    assert assert_envelope(response, 500, "api_error")
    assert response.headers["retry-after"] == "2" and response.headers["retry-after-ms"] == "3"
    client.messages.batches.create(requests=make_requests(1))  # other routes untouched
    assert len(client.messages.batches.list().data) == 1


def test_transient_404_after_create_for_n_calls(emu, client):
    emu.set_faults(not_found_after_create={"calls": 2})
    batch = client.messages.batches.create(requests=make_requests(1))

    for _ in range(2):
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(batch.id)
    assert client.messages.batches.retrieve(batch.id).id == batch.id


def test_transient_404_after_create_for_some_seconds(emu, client):
    emu.set_faults(not_found_after_create={"seconds": 0.3})
    batch = client.messages.batches.create(requests=make_requests(1))

    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)
    time.sleep(0.35)
    assert client.messages.batches.retrieve(batch.id).id == batch.id


def test_errored_results_by_custom_id_regex(emu, client):
    emu.set_faults(errored=[{"custom_id_regex": "r0000[13]$", "error_type": "invalid_request_error",
                             "message": "max_tokens: too large"}])  # fmt: skip
    batch = client.messages.batches.create(requests=make_requests(5))
    emu.advance(3)

    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.succeeded, counts.errored) == (3, 2)
    errored = {
        r.custom_id: r.result for r in client.messages.batches.results(batch.id) if r.result.type == "errored"
    }
    assert set(errored) == {"r00001", "r00003"}
    error = errored["r00001"].error
    assert error.type == "error" and error.error.type == "invalid_request_error"
    assert error.error.message == "max_tokens: too large"


def test_errored_ratio_is_deterministic(emu, client):
    emu.set_faults(errored=[{"ratio": 0.25}])
    first = client.messages.batches.create(requests=make_requests(400))
    second = client.messages.batches.create(requests=make_requests(400))
    emu.advance(3)

    def errored(batch_id: str) -> set[str]:
        return {r.custom_id for r in client.messages.batches.results(batch_id) if r.result.type == "errored"}

    assert errored(first.id) == errored(second.id)
    assert 60 < len(errored(first.id)) < 140


def test_faults_are_fixed_into_a_batch_at_create(emu, client):
    emu.set_faults(errored=[{"ratio": 1.0}])
    batch = client.messages.batches.create(requests=make_requests(3))
    emu.set_faults()
    emu.advance(3)

    assert client.messages.batches.retrieve(batch.id).request_counts.errored == 3


@pytest.mark.parametrize(
    "faults",
    [
        {"http": [{"route": "upload", "status": 429}]},
        {"http": [{"route": "create", "status": 200}]},
        {"http": [{"route": "create", "status": 429, "times": 0}]},
        {"errored": [{"ratio": 2}]},
        {"errored": [{"custom_id_regex": "("}]},
        {"explode": True},
    ],
)
def test_malformed_fault_config_is_rejected(emu, faults):
    with pytest.raises(ValueError, match="emulator rejected faults"):
        emu.set_faults(**faults)


def test_config_rejects_unknown_options(emu):
    with pytest.raises(ValueError, match="unknown config keys"):
        emu.configure(processing_minutes=3)
    with pytest.raises(ValueError, match="does not go backwards"):
        emu.advance(-1)


def test_chunked_request_body_is_refused_cleanly(emu):
    def body():
        yield json.dumps({"requests": make_requests(1)}).encode()

    response = httpx.post(f"{emu.base_url}/v1/messages/batches", content=body(), headers={"x-api-key": "k"})
    assert "Content-Length" in assert_envelope(response, 400, "invalid_request_error")
    assert emu.stats()["batches"] == 0
