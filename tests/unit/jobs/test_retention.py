"""Retention against the emulator and a real store: batches are made by running real jobs end to end."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import timedelta

import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, TaskDeferred
from anthropic import NotFoundError

from airflow_claude_batches.governance.policy import load_policy
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.jobs.retention import RetentionError, archive_root, run_retention
from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord
from airflow_claude_batches.store.results import read_manifest, read_results, verify_results
from operator_harness import POLICY, execute, make_context, run_to_completion, team_dag

POLICY_FILE_VAR = "AIRFLOW__CLAUDE_BATCHES__POLICY_FILE"

# enrich: archive at day 10; scrub: purge at day 5.
RETENTION_POLICY = (
    POLICY.replace("    error_ratio_alert: 0.2\n", "    error_ratio_alert: 0.2\n    retention_days: 10\n")
    + """
  scrub:
    teams: [alpha]
    allowed_models: [claude-haiku-4-5]
    allowed_fields: []
    max_tokens_cap: 100
    max_requests: 1000
    max_bytes: 10000000
    max_job_cost_usd: 1.0
    retention_days: 5
    archive: false
"""
)


@pytest.fixture
def policy_path(tmp_path, monkeypatch):
    path = tmp_path / "retention-policy.yaml"
    path.write_text(RETENTION_POLICY)
    # submit() points the configuration at its policy file; monkeypatch restores it afterwards.
    monkeypatch.setenv(POLICY_FILE_VAR, str(path))
    return str(path)


@pytest.fixture
def policy(policy_path):
    return load_policy(policy_path)


def submit(
    policy_path, job_id: str, job_type: str = "enrich", n: int = 2, **kwargs
) -> ClaudeBatchSubmitOperator:
    records = [
        {
            "key": f"{job_id}-{i}",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": f"hello {i}"}],
            },
        }
        for i in range(n)
    ]
    os.environ[POLICY_FILE_VAR] = policy_path  # the policy_path fixture restores it
    with team_dag("alpha"):
        return ClaudeBatchSubmitOperator(
            task_id="submit",
            team="alpha",
            job_type=job_type,
            job_id=job_id,
            requests=records,
            poll_interval=0.05,
            **kwargs,
        )


def run_job(api, policy_path, job_id: str, job_type: str = "enrich", **kwargs) -> LedgerRecord:
    """Run one job to stored results; return the ledger record of its (single) batch."""
    summary = run_to_completion(submit(policy_path, job_id, job_type, **kwargs), make_context(), api)
    (batch_id,) = summary["batch_ids"]
    return Ledger().get(batch_id)


def stored(record: LedgerRecord) -> ObjectStoragePath:
    assert record.results_uri
    return ObjectStoragePath(record.results_uri)


def at_day(record: LedgerRecord, days: float):
    return record.created_at + timedelta(days=days)


def is_gone_at_api(batch_id: str) -> bool:
    try:
        ClaudeBatchesHook().get_batch(batch_id)
    except NotFoundError:
        return True
    return False


def test_unconsumed_results_alert_once_per_run_before_the_api_drops_them(api, policy_path, store, caplog):
    # retention_days 28 (default) so nothing is due before the warning window.
    path = policy_path.replace("retention-policy", "default-retention")
    with open(path, "w") as f:
        f.write(POLICY)
    unread = run_job(api, path, "unread")
    read = run_job(api, path, "read")
    Ledger().update(read.batch_id, consumed_at=read.created_at + timedelta(days=1))
    policy = load_policy(path)

    with caplog.at_level(logging.WARNING):
        early = run_retention(now=at_day(unread, 25), policy=policy)
    assert early.counts == {"kept": 2} and "CLAUDE_BATCHES_ALERT" not in caplog.text

    with caplog.at_level(logging.WARNING):
        late = run_retention(now=at_day(unread, 26.5), policy=policy)
    assert late.counts == {"unconsumed_alert": 1, "kept": 1}
    (line,) = [r.getMessage() for r in caplog.records if "CLAUDE_BATCHES_ALERT" in r.getMessage()]
    assert f"unconsumed team=alpha batch={unread.batch_id}" in line and "in 2.5 days" in line
    assert api.stats()["calls"]["delete"] == 0


def test_archive_copies_verifies_then_deletes_originals_and_the_batch(api, policy_path, policy, store):
    record = run_job(api, policy_path, "nightly")
    source = stored(record)
    manifest = read_manifest(source)

    not_yet = run_retention(now=at_day(record, 9.9), policy=policy)
    assert not_yet.counts == {"kept": 1} and source.exists()

    report = run_retention(now=at_day(record, 10), policy=policy)
    assert report.summary() == {"counts": {"archived": 1, "deleted": 1}, "failed": []}
    after = Ledger().get(record.batch_id)
    archived = ObjectStoragePath(after.results_uri)
    assert archived == archive_root() / "alpha" / record.job_key / record.batch_id
    assert str(archived).startswith(f"file://{store}/_archive/")
    assert after.archived_at == after.deleted_at == at_day(record, 10)
    assert not source.exists() and not source.parent.exists()  # the job's keys went with its last batch
    copy = verify_results(archived)
    assert copy.checksums == manifest.checksums
    assert copy.locations["succeeded"] == f"file://{archived.path}/succeeded.jsonl"
    # The archive reads like the live store, record keys included.
    assert sorted(r.key for r in read_results(archived)) == ["nightly-0", "nightly-1"]
    assert api.stats()["calls"]["delete"] == 1 and is_gone_at_api(record.batch_id)


def test_purge_deletes_results_and_the_batch(api, policy_path, policy, store):
    record = run_job(api, policy_path, "secret", job_type="scrub")
    source = stored(record)
    report = run_retention(now=at_day(record, 5), policy=policy)
    assert report.counts == {"purged": 1, "deleted": 1}
    after = Ledger().get(record.batch_id)
    assert after.purged_at is not None and after.results_uri is None and after.deleted_at is not None
    assert after.archived_at is None
    assert not source.exists() and not archive_root().exists()
    assert is_gone_at_api(record.batch_id)


def test_rerun_does_nothing_twice(api, policy_path, policy, store):
    archived = run_job(api, policy_path, "one")
    purged = run_job(api, policy_path, "two", job_type="scrub")
    now = at_day(archived, 12)
    first = run_retention(now=now, policy=policy)
    assert first.counts == {"archived": 1, "purged": 1, "deleted": 2}
    ledger_before = {r.batch_id: r.model_dump(exclude={"updated_at"}) for r in Ledger().records()}

    again = run_retention(now=now + timedelta(days=1), policy=policy)
    assert again.counts == {"done": 2} and not again.failures
    assert api.stats()["calls"]["delete"] == 2
    assert {r.batch_id: r.model_dump(exclude={"updated_at"}) for r in Ledger().records()} == ledger_before
    assert purged.batch_id in ledger_before


def test_rerun_after_a_crash_between_copy_and_ledger_records_the_verified_copy(
    api, policy_path, policy, store
):
    record = run_job(api, policy_path, "crash")
    source = stored(record)
    dest = archive_root() / "alpha" / record.job_key / record.batch_id
    shutil.copytree(source.path, dest.path)  # the copy made it, then the originals went, then a crash
    shutil.rmtree(source.path)
    report = run_retention(now=at_day(record, 10), policy=policy)
    assert report.counts == {"archived": 1, "deleted": 1}
    assert Ledger().get(record.batch_id).results_uri == str(dest)


def test_corrupt_results_are_kept_reported_and_fail_the_task_others_go_on(api, policy_path, policy, store):
    bad = run_job(api, policy_path, "bad")
    good = run_job(api, policy_path, "good")
    bad_file = stored(bad) / "succeeded.jsonl"
    original = bad_file.read_bytes()
    bad_file.write_bytes(original.replace(b"hello", b"HELLO", 1) if b"hello" in original else original + b"x")

    report = run_retention(now=at_day(bad, 11), policy=policy)
    assert report.counts == {"archived": 1, "deleted": 1}
    assert list(report.failures) == [bad.batch_id]
    assert "does not match the manifest" in report.failures[bad.batch_id]
    assert report.summary()["failed"] == [bad.batch_id]
    with pytest.raises(RetentionError, match=rf"1 batch\(es\):\n  {bad.batch_id}: RetentionError: archive"):
        report.raise_for_failures()
    # Nothing of the bad batch was deleted, anywhere; no half archive is left behind.
    assert bad_file.exists() and (stored(bad) / "manifest.json").exists()
    assert not (archive_root() / "alpha" / bad.job_key).exists()
    after = Ledger().get(bad.batch_id)
    assert after.archived_at is None and after.deleted_at is None and after.results_uri == bad.results_uri
    assert not is_gone_at_api(bad.batch_id) and is_gone_at_api(good.batch_id)


def test_batch_with_missing_results_fails_alone(api, policy_path, policy, store):
    lost = run_job(api, policy_path, "lost")
    kept = run_job(api, policy_path, "kept", job_type="scrub")
    shutil.rmtree(stored(lost).path)
    report = run_retention(now=at_day(lost, 10), policy=policy)
    assert report.counts == {"purged": 1, "deleted": 1}
    assert "no complete results" in report.failures[lost.batch_id]
    assert Ledger().get(kept.batch_id).deleted_at is not None
    assert not is_gone_at_api(lost.batch_id)


def test_batches_not_ended_are_never_touched(api, policy_path, policy, store):
    with pytest.raises(TaskDeferred):
        execute(submit(policy_path, "running"), make_context())
    (record,) = Ledger().records()
    assert record.processing_status == "in_progress"
    report = run_retention(now=at_day(record, 40), policy=policy)
    assert report.counts == {"not_ended": 1}
    assert Ledger().get(record.batch_id) == record
    assert api.stats()["calls"]["delete"] == 0


def test_a_batch_nobody_tracks_any_more_is_refreshed_from_the_api_after_its_expiry(
    api, policy_path, policy, store
):
    """A task that timed out cancelled its batch and stopped polling: the ledger learns the end here."""
    with pytest.raises(AirflowException):
        run_to_completion(submit(policy_path, "timed-out", wait_timeout=timedelta(0)), make_context(), api, 0)
    (record,) = Ledger().records()
    assert record.processing_status == "canceling"
    api.advance(3600)
    assert run_retention(now=at_day(record, 0.5), policy=policy).counts == {"not_ended": 1}
    assert run_retention(now=at_day(record, 2), policy=policy).counts == {"stored": 1}  # as the task would
    refreshed = Ledger().get(record.batch_id)
    assert refreshed.processing_status == "ended" and refreshed.request_counts.canceled == 2
    assert read_manifest(stored(refreshed)).counts["canceled"] == 2
    assert run_retention(now=at_day(record, 29), policy=policy).counts == {"archived": 1, "deleted": 1}


def test_job_types_no_longer_in_the_policy_are_left_alone(api, policy_path, store, caplog, tmp_path):
    record = run_job(api, policy_path, "legacy", job_type="scrub")
    path = tmp_path / "without-scrub.yaml"
    path.write_text(POLICY)
    with caplog.at_level(logging.WARNING):
        report = run_retention(now=at_day(record, 40), policy=load_policy(path))
    assert report.counts == {"unknown_job_type": 1} and not report.failures
    assert f"Leaving batch {record.batch_id} alone: job type 'scrub' is not in the policy" in caplog.text
    assert stored(record).exists() and api.stats()["calls"]["delete"] == 0


def test_results_never_stored_are_stored_first_then_retention_goes_on(api, policy_path, policy, store):
    record = run_job(api, policy_path, "unstored", job_type="scrub")
    shutil.rmtree(stored(record).path)
    Ledger().update(record.batch_id, results_uri=None)  # the task died while storing
    assert run_retention(now=at_day(record, 1), policy=policy).counts == {"stored": 1}
    assert verify_results(stored(Ledger().get(record.batch_id))).counts["succeeded"] == 2
    assert run_retention(now=at_day(record, 5), policy=policy).counts == {"purged": 1, "deleted": 1}


def test_a_purge_of_results_that_cannot_be_stored_keeps_the_batch_at_the_api_and_alerts(
    api, policy_path, policy, store, caplog
):
    record = run_job(api, policy_path, "never-kept", job_type="scrub")
    shutil.rmtree(stored(record).path)
    Ledger().update(record.batch_id, results_uri=None)
    api.set_faults(results=[{"drop_after_lines": 1, "times": 100}])  # every download breaks off
    report = run_retention(now=at_day(record, 5), policy=policy)
    assert report.counts == {"unstored": 1} and not report.failures
    assert "CLAUDE_BATCHES_ALERT unstored" in caplog.text
    after = Ledger().get(record.batch_id)
    assert after.purged_at is None and after.deleted_at is None
    assert not is_gone_at_api(record.batch_id) and api.stats()["calls"]["delete"] == 0
    # Day 29: the API dropped the results itself; deleting the batch loses nothing.
    api.set_faults()
    assert run_retention(now=at_day(record, 29), policy=policy).counts == {"deleted": 1}


def test_a_ledger_row_pointing_outside_the_store_touches_nothing_there(
    api, policy_path, policy, store, tmp_path
):
    record = run_job(api, policy_path, "escape", job_type="scrub")
    outside = tmp_path / "precious"
    (outside / "alpha").mkdir(parents=True)
    (outside / "alpha" / "keep.txt").write_text("do not delete")
    for uri in (f"file://{outside}", f"file://{stored(record).path}/../../../../precious"):
        Ledger().update(record.batch_id, results_uri=uri)
        report = run_retention(now=at_day(record, 5), policy=policy)
        assert list(report.failures) == [record.batch_id]
        assert "refusing to touch" in report.failures[record.batch_id]
        assert (outside / "alpha" / "keep.txt").read_text() == "do not delete"
    assert not is_gone_at_api(record.batch_id)


def test_archive_root_comes_from_config(store, monkeypatch, tmp_path):
    assert archive_root() == ObjectStoragePath(f"file://{store}/_archive")
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__ARCHIVE_ROOT", f"file://{tmp_path}/cold")
    assert archive_root() == ObjectStoragePath(f"file://{tmp_path}/cold")


def test_archive_from_s3_to_s3(api, policy_path, policy, s3_store, tmp_path, monkeypatch):
    from airflow_claude_batches.store import migrations
    from airflow_claude_batches.store.database import ledger_database

    root, conn_id = s3_store
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT", f"{root}/results")
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__RESULTS_CONN_ID", conn_id)
    # A ledger of its own (an s3:// store would put the embedded one in the shared AIRFLOW_HOME).
    monkeypatch.setenv("AIRFLOW_CONN_S3_TEST_LEDGER", f'{{"conn_type": "sqlite", "host": "{tmp_path}/l.db"}}')
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__LEDGER_CONN_ID", "s3_test_ledger")
    migrations.upgrade(ledger_database())
    record = run_job(api, policy_path, "on-s3")
    source = stored(record)
    assert source.protocol == "s3" and source.conn_id == conn_id
    archive = ObjectStoragePath(f"{root}/archive", conn_id=conn_id)

    report = run_retention(now=at_day(record, 10), policy=policy, archive=archive)
    assert report.counts == {"archived": 1, "deleted": 1} and not report.failures
    dest = ObjectStoragePath(Ledger().get(record.batch_id).results_uri)
    assert dest.conn_id == conn_id and dest.path.startswith(archive.path)
    assert verify_results(dest).counts["succeeded"] == 2
    assert sorted(r.key for r in read_results(dest)) == ["on-s3-0", "on-s3-1"]
    assert not (source / "manifest.json").exists() and not (source / "succeeded.jsonl").exists()
    assert is_gone_at_api(record.batch_id)


class Killed(BaseException):
    """A kill at a step: not an Exception, so nothing in retention catches it (like SIGKILL)."""


def kill_at(monkeypatch, point: str) -> None:
    import airflow_claude_batches.jobs.retention as retention_module

    if point == "after_copy":
        original_copy = retention_module._copy_batch

        def copy_then_die(source, dest):
            original_copy(source, dest)
            raise Killed

        monkeypatch.setattr(retention_module, "_copy_batch", copy_then_die)
    elif point == "after_manifest_removed":

        def remove_manifest_then_die(batch):
            batch.fs.rm((batch / "manifest.json").path)
            raise Killed

        monkeypatch.setattr(retention_module, "_remove_batch", remove_manifest_then_die)
    elif point == "before_ledger":
        original_update = Ledger.update

        def die_before_recording(self, batch_id, /, **changes):
            if {"archived_at", "purged_at"} & set(changes):
                raise Killed
            return original_update(self, batch_id, **changes)

        monkeypatch.setattr(Ledger, "update", die_before_recording)
    elif point == "after_api_delete":
        original_delete = ClaudeBatchesHook.delete_batch

        def delete_then_die(self, batch_id):
            original_delete(self, batch_id)
            raise Killed

        monkeypatch.setattr(ClaudeBatchesHook, "delete_batch", delete_then_die)


def end_state(record: LedgerRecord, store, archive) -> dict:
    after = Ledger().get(record.batch_id)

    def files(root) -> list[str]:
        base = ObjectStoragePath(f"file://{root}") if not isinstance(root, ObjectStoragePath) else root
        if not base.exists():
            return []
        found = [str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()]
        return sorted(f.replace(record.batch_id, "B").replace(record.job_key, "J") for f in found)

    return {
        "archived": after.archived_at is not None,
        "purged": after.purged_at is not None,
        "deleted": after.deleted_at is not None,
        "results_in_archive": bool(after.results_uri) and "_archive" in after.results_uri,
        "store_files": [f for f in files(store) if not f.startswith(("_archive", "ledger.db"))],
        "archive_files": files(archive_root()),
        "gone_at_api": is_gone_at_api(record.batch_id),
    }


@pytest.mark.parametrize("job_type", ["enrich", "scrub"])
@pytest.mark.parametrize(
    "point", ["after_copy", "after_manifest_removed", "before_ledger", "after_api_delete"]
)
def test_retention_killed_at_a_step_then_run_twice_ends_as_an_undisturbed_run(
    api, policy_path, policy, store, monkeypatch, job_type, point
):
    if point == "after_copy" and job_type == "scrub":
        pytest.skip("a purge copies nothing")
    due = 10 if job_type == "enrich" else 5
    calm = run_job(api, policy_path, f"calm-{point}", job_type=job_type)
    run_retention(now=at_day(calm, due), policy=policy).raise_for_failures()
    expected = end_state(calm, store, archive_root())
    shutil.rmtree(store / "_archive", ignore_errors=True)

    record = run_job(api, policy_path, f"killed-{point}", job_type=job_type)
    with monkeypatch.context() as patch:
        kill_at(patch, point)
        with pytest.raises(Killed):
            run_retention(now=at_day(record, due), policy=policy)
    for _ in range(2):
        run_retention(now=at_day(record, due), policy=policy).raise_for_failures()
    assert end_state(record, store, archive_root()) == expected
