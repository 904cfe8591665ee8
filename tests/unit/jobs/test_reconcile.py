"""The unmanaged-batch sweep and adoption, against the emulator and a real ledger and store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_claude_batches.governance.ids import namespaced_id
from airflow_claude_batches.governance.policy import PolicyError, load_policy
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.jobs.reconcile import UNMANAGED_TEAM, AdoptError, adopt_batch, run_reconcile
from airflow_claude_batches.jobs.retention import run_retention
from airflow_claude_batches.store.ledger import Ledger
from airflow_claude_batches.store.results import read_results, verify_results
from operator_harness import execute, make_context, team_dag


def params(i: int) -> dict:
    return {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": f"q{i}"}]}


def around_the_service(n: int) -> str:
    """A script with the team's key sends a batch straight through the SDK."""
    requests = [{"custom_id": f"row-{i}", "params": params(i)} for i in range(n)]
    return ClaudeBatchesHook().create_batch(requests).id


def orphan(n: int) -> str:
    """A batch the service made whose answer was lost and never adopted: its ids are namespaced."""
    ids = [namespaced_id("alpha", "lost job", i) for i in range(n)]
    requests = [{"custom_id": c, "params": params(i)} for i, c in enumerate(ids)]
    return ClaudeBatchesHook().create_batch(requests).id


def managed(policy_file: str) -> list[str]:
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator

    with team_dag("alpha"):
        op = ClaudeBatchSubmitOperator(task_id="t", team="alpha", job_type="enrich", requests=[params(0)])
    with pytest.raises(TaskDeferred) as deferred:
        execute(op, make_context())
    return deferred.value.trigger.batch_ids


def test_the_sweep_records_and_alerts_batches_created_around_the_service_once(
    api, policy_file, store, caplog
):
    api.configure(processing_seconds=600)
    ours = managed(policy_file)
    outside, lost = around_the_service(3), orphan(2)
    report = run_reconcile()
    assert sorted(report.found) == sorted([outside, lost]) and report.listed == 3
    assert caplog.text.count("CLAUDE_BATCHES_ALERT unmanaged") == 2
    rows = {r.batch_id: r for r in Ledger().records(team=UNMANAGED_TEAM)}
    assert set(rows) == {outside, lost}
    assert rows[outside].origin == "unmanaged" and rows[outside].request_count == 3
    assert rows[outside].processing_status == "in_progress"
    assert Ledger().get(ours[0]).origin == "managed"

    caplog.clear()
    api.advance(600)
    again = run_reconcile()
    assert again.found == [] and sorted(again.refreshed) == sorted([outside, lost])
    assert "CLAUDE_BATCHES_ALERT unmanaged" not in caplog.text  # alerted once
    assert Ledger().get(outside).processing_status == "ended"
    assert Ledger().get(outside).request_counts.succeeded == 3
    page = Ledger().page(team=[UNMANAGED_TEAM])
    assert page.total == 2  # what the dashboard lists, with age, counts and status


def test_batches_older_than_29_days_are_not_swept(api, policy_file, store):
    from datetime import datetime, timezone

    around_the_service(1)
    assert run_reconcile(now=datetime.now(timezone.utc) + timedelta(days=30)).found == []


def test_retention_leaves_unmanaged_batches_alone(api, policy_file, store):
    outside = around_the_service(1)
    api.advance(3600)
    run_reconcile()
    report = run_retention(now=Ledger().get(outside).created_at + timedelta(days=40), policy=load_policy())
    assert report.counts == {"not_managed": 1}
    assert api.stats()["calls"]["delete"] == 0


def test_adopting_an_ended_batch_stores_its_results_like_any_other(api, policy_file, store):
    outside = around_the_service(3)
    api.advance(3600)
    run_reconcile()
    record, manifest = adopt_batch(outside, team="alpha", job_type="enrich")
    assert manifest is not None and manifest.counts["succeeded"] == 3
    assert (record.team, record.origin, record.job_id) == ("alpha", "adopted", f"adopted {outside}")
    assert record.actual_cost_usd == manifest.actual_cost_usd > 0
    assert verify_results(read_path(record.results_uri)) == manifest
    assert sorted((r.key, r.index) for r in read_results(read_path(record.results_uri))) == [
        ("row-0", None),
        ("row-1", None),
        ("row-2", None),
    ]
    with pytest.raises(AdoptError, match="already managed"):
        adopt_batch(outside, team="alpha", job_type="enrich")


def test_adopting_a_running_batch_stores_it_once_it_ends(api, policy_file, store):
    api.configure(processing_seconds=600)
    outside = around_the_service(2)
    record, manifest = adopt_batch(outside, team="alpha", job_type="enrich", job_id="legacy nightly")
    assert manifest is None and record.processing_status == "in_progress"
    api.advance(600)
    assert run_reconcile().refreshed == [outside]
    counts = run_retention(now=record.created_at + timedelta(days=1), policy=load_policy()).counts
    assert counts == {"stored": 1}
    stored = Ledger().get(outside)
    assert sorted(r.custom_id for r in read_results(read_path(stored.results_uri))) == ["row-0", "row-1"]


def read_path(uri):
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(uri)


def test_adopting_for_a_team_that_may_not_run_the_job_type_changes_nothing(api, policy_file, store):
    outside = around_the_service(1)
    with pytest.raises(PolicyError):
        adopt_batch(outside, team="beta", job_type="enrich")
    assert Ledger().find(outside) is None


def test_the_adopt_command(api, policy_file, store, capsys):
    from airflow.cli import cli_parser

    outside = around_the_service(1)
    api.advance(3600)
    args = cli_parser.get_parser().parse_args(
        ["claude-batches", "adopt", outside, "--team", "alpha", "--job-type", "enrich"]
    )
    args.func(args)
    out = capsys.readouterr().out
    assert f"Adopted {outside} as job 'adopted {outside}' of team alpha" in out and "Stored" in out
