"""plan_job: each request serialized once, straight into the create body the API receives."""

from __future__ import annotations

import json

import pytest

from airflow_claude_batches.governance.ids import namespaced_id
from airflow_claude_batches.governance.policy import load_policy
from airflow_claude_batches.jobs import plan as job
from airflow_claude_batches.jobs.plan import JobRejected, iter_records, plan_job


def params(i: int, text: str = "hello") -> dict:
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": f"{text} {i}"}],
    }


def plan(policy_file, records, job_id="job-1"):
    return plan_job(
        iter_records(records),
        governance=load_policy(policy_file),
        team="alpha",
        job_type="enrich",
        job_id=job_id,
    )


def test_the_body_is_the_requests_with_their_minted_ids(policy_file):
    records = [params(0), {"key": "k1", "params": params(1, "héllo ✓")}, params(2)]
    planned = plan(policy_file, records)
    (batch,) = planned.batches
    body = json.loads(batch.body)
    assert body == {
        "requests": [
            {"custom_id": namespaced_id("alpha", "job-1", i), "params": p}
            for i, p in enumerate([params(0), params(1, "héllo ✓"), params(2)])
        ]
    }
    assert batch.request_count == planned.request_count == 3
    assert batch.size_bytes >= len(batch.body)  # sizes never undercount what is sent
    assert batch.body is batch.body  # built once
    assert planned.keys == [None, "k1", None]


def test_batches_split_at_the_byte_limit_and_each_body_holds_its_own(policy_file, monkeypatch):
    one = len(
        json.dumps(
            {"custom_id": namespaced_id("alpha", "job-1", 0), "params": params(0)}, separators=(",", ":")
        )
    )
    monkeypatch.setattr(job, "MAX_BATCH_BYTES", 20 + 3 * (one + 1))  # three requests a batch
    planned = plan(policy_file, [params(i) for i in range(7)])
    assert [b.request_count for b in planned.batches] == [3, 3, 1]
    assert [b.first_index for b in planned.batches] == [0, 3, 6]
    ids = [r["custom_id"] for b in planned.batches for r in json.loads(b.body)["requests"]]
    assert ids == [namespaced_id("alpha", "job-1", i) for i in range(7)]


def test_params_that_are_not_json_are_a_violation_not_a_crash(policy_file):
    bad = params(1)
    bad["temperature"] = object()  # no JSON for it
    with pytest.raises(JobRejected, match=r"record 1: params are not JSON"):
        plan(policy_file, [params(0), bad])
