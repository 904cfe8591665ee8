"""Every kind of emulator response validated against the official OpenAPI description."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from .conftest import make_requests

DAY = 86_400


@pytest.fixture
def http(emu):
    with httpx.Client(base_url=emu.base_url, headers={"x-api-key": emu.api_key}) as client:
        yield client


def create(http, n: int = 3, beta: bool = False) -> dict:
    response = http.post(
        "/v1/messages/batches" + ("?beta=true" if beta else ""), json={"requests": make_requests(n)}
    )
    assert response.status_code == 200
    return response.json()


def test_the_validator_rejects_a_batch_missing_a_key(validate, http):
    batch = create(http)
    validate("MessageBatch", batch)
    del batch["request_counts"]
    with pytest.raises(jsonschema.ValidationError):
        validate("MessageBatch", batch)


def test_batch_objects_in_every_state(emu, http, validate):
    emu.configure(processing_seconds=100, cancel_seconds=10)
    in_progress = create(http)
    canceled = create(http)
    validate("MessageBatch", in_progress)
    canceling = http.post(f"/v1/messages/batches/{canceled['id']}/cancel").json()
    assert canceling["processing_status"] == "canceling"
    validate("MessageBatch", canceling)
    emu.advance(200)
    for batch_id in (in_progress["id"], canceled["id"]):
        ended = http.get(f"/v1/messages/batches/{batch_id}").json()
        assert ended["processing_status"] == "ended"
        validate("MessageBatch", ended)
    emu.advance(29 * DAY)
    archived = http.get(f"/v1/messages/batches/{in_progress['id']}").json()
    assert archived["archived_at"] is not None
    validate("MessageBatch", archived)


def test_beta_batch_object(emu, http, validate):
    validate("BetaMessageBatch", create(http, beta=True))


def test_list_page_and_deleted_object(emu, http, validate):
    ids = [create(http)["id"] for _ in range(3)]
    page = http.get("/v1/messages/batches", params={"limit": 2}).json()
    validate("ListResponse_MessageBatch_", page)
    validate("BetaListResponse_MessageBatch_", page)
    validate(
        "ListResponse_MessageBatch_", http.get("/v1/messages/batches", params={"after_id": ids[0]}).json()
    )
    emu.advance(3)
    deleted = http.delete(f"/v1/messages/batches/{ids[0]}").json()
    validate("DeleteMessageBatchResponse", deleted)
    validate("BetaDeleteMessageBatchResponse", deleted)


def test_result_lines_of_every_type(emu, http, validate):
    emu.configure(processing_seconds=2 * DAY, cancel_seconds=1)
    emu.set_faults(errored=[{"custom_id_regex": "r0000[02468]$"}])
    expiring = create(http, n=10)
    canceled = create(http, n=10)
    emu.advance(DAY / 2)
    http.post(f"/v1/messages/batches/{canceled['id']}/cancel")
    emu.advance(DAY)
    seen = set()
    for batch in (expiring, canceled):
        url = http.get(f"/v1/messages/batches/{batch['id']}").json()["results_url"]
        response = http.get(url)
        assert response.status_code == 200
        for line in response.text.splitlines():
            item = json.loads(line)
            validate("MessageBatchIndividualResponse", item)
            validate("BetaMessageBatchIndividualResponse", item)
            seen.add(item["result"]["type"])
            if item["result"]["type"] == "succeeded":
                validate("Message", item["result"]["message"])
    assert seen == {"succeeded", "errored", "canceled", "expired"}


def test_error_envelopes(emu, http, validate):
    emu.set_faults(
        http=[
            {"route": "list", "status": 429, "times": 1},
            {"route": "list", "status": 529, "times": 1},
            {"route": "list", "status": 500, "times": 1},
        ]
    )
    responses = [http.get("/v1/messages/batches") for _ in range(3)]
    responses.append(httpx.get(f"{emu.base_url}/v1/messages/batches"))
    responses.append(http.get("/v1/messages/batches/msgbatch_missing"))
    responses.append(http.post("/v1/messages/batches", json={"requests": []}))
    assert [r.status_code for r in responses] == [429, 529, 500, 401, 404, 400]
    for response in responses:
        validate("ErrorResponse", response.json())
        validate("BetaErrorResponse", response.json())


def test_create_bodies_the_tests_send_are_valid_requests(validate):
    validate("CreateMessageBatchParams", {"requests": make_requests(2, temperature=0.2)})
    with pytest.raises(jsonschema.ValidationError):
        validate("CreateMessageBatchParams", {"requests": make_requests(1, prefix="bad:")})


def test_answers_under_the_new_faults(emu, http, validate):
    emu.set_faults(
        http=[{"route": "create", "when": "after", "status": 529, "times": 1}],
        queue_limit=5,
        results=[{"truncate_after_lines": 2}],
        results_order="shuffled",
        list_lag_seconds=10,
    )
    after = http.post("/v1/messages/batches", json={"requests": make_requests(3)})
    over = http.post("/v1/messages/batches", json={"requests": make_requests(3)})
    assert [after.status_code, over.status_code] == [529, 429]
    for response in (after, over):
        validate("ErrorResponse", response.json())
        validate("BetaErrorResponse", response.json())
    emu.advance(10)
    page = http.get("/v1/messages/batches").json()
    validate("ListResponse_MessageBatch_", page)
    (batch,) = page["data"]
    validate("MessageBatch", batch)
    for expected in (2, 3):  # truncated, then whole and shuffled
        lines = http.get(batch["results_url"]).text.splitlines()
        assert len(lines) == expected
        for line in lines:
            validate("MessageBatchIndividualResponse", json.loads(line))
