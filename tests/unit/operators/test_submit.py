"""ClaudeBatchSubmitOperator end to end against the emulator, and every way a job is refused."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from airflow_claude_batches.exceptions import IncompleteResultsError
from airflow_claude_batches.governance.ids import job_key, parse_custom_id
from airflow_claude_batches.jobs import plan as job_module
from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from airflow_claude_batches.store.ledger import Ledger
from airflow_claude_batches.store.results import read_manifest, read_results
from operator_harness import POLICY, FakeTI, execute, make_context, run_to_completion, team_dag


def params(i: int = 0, **overrides) -> dict:
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": f"Describe product {i}"}],
        **overrides,
    }


def operator(policy_file, requests, folder: str = "alpha", **kwargs) -> ClaudeBatchSubmitOperator:
    """A submit task in a DAG of ``folder`` (alpha's DAGs by default), under ``policy_file`` (configured)."""
    kwargs.setdefault("team", "alpha")
    kwargs.setdefault("job_type", "enrich")
    with team_dag(folder):
        return ClaudeBatchSubmitOperator(task_id="submit", requests=requests, poll_interval=0.05, **kwargs)


def test_job_runs_to_results_joined_to_team_keys(api, policy_file, store):
    records = [{"key": f"SKU-{i}", "params": params(i)} for i in range(5)]
    op = operator(policy_file, records, job_id="Nightly enrichment 2026-11-27")
    context = make_context()
    summary = run_to_completion(op, context, api)

    key = job_key("Nightly enrichment 2026-11-27")
    (batch_id,) = summary["batch_ids"]
    assert context["ti"].xcom["batch_ids"] == [batch_id]
    assert summary["request_counts"] == {"succeeded": 5, "errored": 0, "canceled": 0, "expired": 0}
    assert 0 < summary["actual_cost_usd"] <= summary["estimated_cost_usd"]
    lines = (store / "alpha" / key / batch_id / "succeeded.jsonl").read_text().splitlines()
    assert len(lines) == 5
    refs = [parse_custom_id(json.loads(line)["custom_id"]) for line in lines]
    assert sorted((r.team, r.job_key, r.index) for r in refs) == [("alpha", key, i) for i in range(5)]
    joined = sorted((r.index, r.key) for r in read_results(ObjectStoragePath(summary["results_uri"])))
    assert joined == [(i, f"SKU-{i}") for i in range(5)]
    record = Ledger().get(batch_id)
    assert record.processing_status == "ended"
    assert record.actual_cost_usd == pytest.approx(summary["actual_cost_usd"])
    assert record.results_uri and record.results_uri.endswith(batch_id)
    assert "api_key" not in record.model_dump_json() and api.api_key not in record.model_dump_json()


def test_rejected_job_lists_every_violation_and_sends_nothing(api, policy_file, store):
    requests = [
        params(0),
        params(1, model="claude-opus-4-5"),
        params(2, tools=[{"name": "x", "input_schema": {"type": "object"}}]),
        params(3, max_tokens=5000),
        {k: v for k, v in params(4).items() if k != "max_tokens"},
        {"custom_id": "mine", **params(5)},
        {"key": "k", "custom_id": "mine", "params": params(6)},
        "not a request",
    ]
    with pytest.raises(AirflowFailException) as error:
        execute(operator(policy_file, requests), make_context())
    message = str(error.value)
    assert "nothing was sent" in message
    for expected in (
        "record 1: model 'claude-opus-4-5' is not allowed",
        "record 2: fields not allowed for job type 'enrich': tools",
        "record 3: max_tokens 5000 is over the cap of 100",
        "record 4: max_tokens is missing",
        "record 5: custom_id is minted by the operator",
        "record 6: custom_id is minted by the operator",
        "record 7: expected a params dict",
    ):
        assert expected in message
    assert "record 0" not in message
    assert api.stats()["calls"]["create"] == 0


def test_violations_list_is_capped_but_counted(api, policy_file, store):
    requests = [params(i, max_tokens=999) for i in range(30)]
    with pytest.raises(AirflowFailException, match=r"30 violation\(s\)") as error:
        execute(operator(policy_file, requests), make_context())
    assert "record 19:" in str(error.value) and "record 20:" not in str(error.value)
    assert "and 10 more" in str(error.value)
    assert api.stats()["calls"]["create"] == 0


@pytest.mark.parametrize(
    ("kwargs", "requests", "expected"),
    [
        ({"team": "gamma"}, [params()], "declares team 'gamma', but .* assigns its DAG to team 'alpha'"),
        ({"job_type": "translate"}, [params()], "unknown job type 'translate'"),
        ({"folder": "beta", "team": "beta"}, [params()], "not open to team 'beta'"),
        (
            {"folder": "gamma", "team": None},
            [params()],
            "the DAG file 'gamma/dag.py in bundle dags-folder' belongs to no team",
        ),
        ({}, [], "the job has no requests"),
        ({}, [params(i) for i in range(1001)], "1001 requests exceed the job type's max_requests 1000"),
    ],
)
def test_job_level_rejections_send_nothing(api, policy_file, store, kwargs, requests, expected):
    with pytest.raises(AirflowFailException, match=expected):
        execute(operator(policy_file, requests, **kwargs), make_context())
    assert api.stats()["calls"]["create"] == 0


def test_spend_over_the_ceiling_gives_estimate_and_ceiling(api, tmp_path, store, monkeypatch):
    path = tmp_path / "tight.yaml"
    path.write_text(POLICY.replace("max_job_cost_usd: 1.0", "max_job_cost_usd: 0.0001"))
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", str(path))
    with pytest.raises(AirflowFailException, match=r"estimated spend \$0\.\d+ exceeds .* ceiling \$0\.0001"):
        execute(operator(str(path), [params(i, max_tokens=100) for i in range(10)]), make_context())
    assert api.stats()["calls"]["create"] == 0


def test_malformed_jsonl_line_is_named(api, policy_file, store, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(params(0)) + "\n\n" + "{not json\n" + json.dumps(params(1)) + "\n")
    with pytest.raises(AirflowFailException, match=r"line 3: invalid JSON"):
        execute(operator(policy_file, path.as_uri()), make_context())
    assert api.stats()["calls"]["create"] == 0


def test_jsonl_file_job(api, policy_file, store, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps({"key": f"t{i}", "params": params(i)}) + "\n" for i in range(3)))
    summary = run_to_completion(operator(policy_file, str(path)), make_context(), api)
    assert summary["request_counts"]["succeeded"] == 3


def test_jsonl_job_on_s3_with_results_on_s3(api, policy_file, store, s3_store):
    """Requests read from and results written to a real S3 protocol server (moto_server)."""
    root, conn_id = s3_store
    source = ObjectStoragePath(f"{root}/inputs/requests.jsonl", conn_id=conn_id)
    source.write_text("".join(json.dumps({"key": f"s{i}", "params": params(i)}) + "\n" for i in range(3)))
    op = operator(
        policy_file,
        f"{root}/inputs/requests.jsonl",
        requests_conn_id=conn_id,
        results_uri=f"{root}/results",
        results_conn_id=conn_id,
    )
    summary = run_to_completion(op, make_context(), api)
    assert summary["results_uri"].startswith("s3://") and summary["results_conn_id"] == conn_id
    joined = read_results(ObjectStoragePath(summary["results_uri"], conn_id=conn_id))
    assert sorted((r.index, r.key) for r in joined) == [(0, "s0"), (1, "s1"), (2, "s2")]


def test_team_name_is_checked_when_the_dag_is_parsed(policy_file):
    with pytest.raises(ValueError, match="not a team name"):
        operator(policy_file, [params()], team="Team_A")


def test_pool_of_another_team_is_refused(api, policy_file, store):
    with pytest.raises(AirflowFailException, match="team alpha's pool is 'claude_batches_alpha'"):
        execute(operator(policy_file, [params()], pool="claude_batches_beta"), make_context())
    assert api.stats()["calls"]["create"] == 0


def test_retry_reattaches_instead_of_resubmitting(api, policy_file, store):
    op = operator(policy_file, [params(i) for i in range(3)], job_id="retry-me")
    with pytest.raises(TaskDeferred) as first:
        execute(op, make_context())
    retry = operator(policy_file, [params(i) for i in range(3)], job_id="retry-me")
    summary = run_to_completion(retry, make_context(FakeTI(try_number=2)), api)
    assert api.stats()["calls"]["create"] == 1
    assert summary["batch_ids"] == first.value.trigger.batch_ids


def test_large_job_is_split_into_batches_of_one_logical_job(api, policy_file, store, monkeypatch):
    monkeypatch.setattr(job_module, "MAX_BATCH_REQUESTS", 2)
    summary = run_to_completion(operator(policy_file, [params(i) for i in range(5)]), make_context(), api)
    assert len(summary["batch_ids"]) == 3
    assert summary["request_counts"]["succeeded"] == 5
    indexes = sorted(r.index for r in read_results(ObjectStoragePath(summary["results_uri"])))
    assert indexes == list(range(5))
    assert [Ledger().get(b).first_index for b in summary["batch_ids"]] == [0, 2, 4]


def test_results_cut_once_are_downloaded_again_and_stored_whole(api, policy_file, store):
    api.set_faults(results=[{"truncate_after_lines": 2, "times": 1}], results_order="shuffled")
    summary = run_to_completion(operator(policy_file, [params(i) for i in range(5)]), make_context(), api)

    assert summary["request_counts"]["succeeded"] == 5
    assert api.stats()["calls"]["results"] == 2
    (batch_id,) = summary["batch_ids"]
    assert read_manifest(ObjectStoragePath(summary["results_uri"]) / batch_id).counts["succeeded"] == 5


def test_results_cut_every_time_fail_the_task_with_the_numbers(api, policy_file, store):
    api.set_faults(results=[{"drop_after_lines": 2, "times": 10}])
    op = operator(policy_file, [params(i) for i in range(5)], job_id="cut-results")
    with pytest.raises(IncompleteResultsError, match="incomplete after 3 download") as error:
        run_to_completion(op, make_context(), api)

    assert "failed after 2 of 5 lines" in str(error.value)
    (batch_id,) = op._batch_ids
    assert not (store / "alpha" / "cut-results" / batch_id / "manifest.json").exists()
    assert Ledger().get(batch_id).results_uri is None  # not recorded as stored


def test_timeout_cancels_the_batches(api, policy_file, store):
    op = operator(policy_file, [params(i) for i in range(3)], wait_timeout=timedelta(0))
    with pytest.raises(AirflowException, match="deadline passed") as error:
        run_to_completion(op, make_context(), api, advance=0)
    assert "Cancelled batches" in str(error.value)
    (batch_id,) = op._batch_ids
    assert api.stats()["calls"]["cancel"] == 1
    assert Ledger().get(batch_id).processing_status == "canceling"  # the ledger knows it was cancelled


def test_worker_side_wait_runs_the_same_trigger(api, policy_file, store):
    api.configure(processing_seconds=0.3)
    summary = execute(operator(policy_file, [params(i) for i in range(2)], deferrable=False), make_context())
    assert summary["request_counts"]["succeeded"] == 2


def test_error_ratio_over_threshold_alerts(api, policy_file, store, caplog):
    api.set_faults(errored=[{"custom_id_regex": "_0000000[0-2]$"}])
    with caplog.at_level(logging.WARNING):
        summary = run_to_completion(operator(policy_file, [params(i) for i in range(5)]), make_context(), api)
    assert summary["request_counts"] == {"succeeded": 2, "errored": 3, "canceled": 0, "expired": 0}
    assert "CLAUDE_BATCHES_ALERT error_ratio team=alpha" in caplog.text


def test_event_with_unknown_status_fails_closed(policy_file):
    op = operator(policy_file, [params()])
    with pytest.raises(AirflowException, match="Unexpected event"):
        op.execute_complete(make_context(), {"status": "success", "batch_ids": [], "message": ""})
    with pytest.raises(AirflowException, match="Unexpected event"):
        op.execute_complete(make_context(), None)


def test_results_asset_is_an_outlet_and_its_event_says_where_results_are(api, policy_file, store):
    from collections import defaultdict
    from types import SimpleNamespace

    from airflow_claude_batches.store.results import results_asset

    op = operator(policy_file, [params(0)])
    asset = results_asset("alpha", "enrich")
    assert asset in op.outlets
    context = make_context()
    context["outlet_events"] = defaultdict(SimpleNamespace)
    summary = run_to_completion(op, context, api)
    assert context["outlet_events"][asset].extra == summary


def test_inline_prompts_are_never_rendered_as_jinja(api, policy_file, store):
    """A prompt may contain "{{" or "{%": inline requests go to the API exactly as given."""
    text = "Fill the template {{ customer.name }} {% if vip %}VIP{% endif %}"
    op = operator(policy_file, [params(0, messages=[{"role": "user", "content": text}])])
    summary = run_to_completion(op, make_context(), api)
    assert op.requests[0]["messages"][0]["content"] == text
    assert summary["request_counts"]["succeeded"] == 1


def test_a_retry_keeps_the_jobs_deadline_and_the_deferral_has_a_backstop(api, policy_file, store):
    import time
    from datetime import datetime, timezone

    first = operator(policy_file, [params(0)], job_id="keeps-deadline")
    with pytest.raises(TaskDeferred) as deferred:
        execute(first, make_context())
    trigger = deferred.value.trigger
    assert trigger.end_time == pytest.approx(
        time.time() + timedelta(hours=24, minutes=30).total_seconds(), abs=60
    )
    assert deferred.value.timeout == pytest.approx(timedelta(hours=25, minutes=30), abs=timedelta(minutes=1))

    (batch_id,) = trigger.batch_ids
    Ledger().update(
        batch_id, created_at=datetime.now(timezone.utc) - timedelta(hours=20)
    )  # the job began 20 h ago
    retry = operator(policy_file, [params(0)], job_id="keeps-deadline")
    with pytest.raises(TaskDeferred) as again:
        execute(retry, make_context(FakeTI(try_number=2)))
    left = again.value.trigger.end_time - time.time()
    assert left == pytest.approx(timedelta(hours=4, minutes=30).total_seconds(), abs=60)
    assert again.value.timeout == pytest.approx(timedelta(hours=5, minutes=30), abs=timedelta(minutes=1))
    assert api.stats()["calls"]["create"] == 1
