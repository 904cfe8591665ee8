"""Nothing paid twice: lost create answers, crashes at each point of the create path, adoption checks.

Everything is real: the operator's code path, the emulator over HTTP with its faults, the ledger in
SQLite. A crash is a real SIGKILL of a worker process (a subprocess), at the points where a create can
be half done.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_claude_batches.exceptions import AmbiguousCreateError, ForeignResultsError
from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from airflow_claude_batches.store.ledger import Ledger
from operator_harness import FakeTI, execute, make_context, run_to_completion, team_dag

PLANNED = 3  # batches per job in these tests (MAX_BATCH_REQUESTS is lowered to 2, 5 requests)


def params(i: int) -> dict:
    return {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": f"q{i}"}]}


@pytest.fixture
def split(monkeypatch):
    from airflow_claude_batches.jobs import plan as job_module

    monkeypatch.setattr(job_module, "MAX_BATCH_REQUESTS", 2)
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__CREATE_RECONCILE_SECONDS", "1")


def operator(policy_file: str, job_id: str, n: int = 5) -> ClaudeBatchSubmitOperator:
    """A submit task of team alpha, under the configured ``policy_file``."""
    with team_dag("alpha"):
        return ClaudeBatchSubmitOperator(
            task_id="submit",
            team="alpha",
            job_type="enrich",
            requests=[params(i) for i in range(n)],
            job_id=job_id,
            poll_interval=0.05,
        )


@pytest.mark.parametrize("lost", [1, 3])
def test_lost_create_answers_make_exactly_one_batch_each(api, policy_file, store, split, lost):
    api.set_faults(http=[{"route": "create", "status": 0, "when": "after", "times": lost}])
    summary = run_to_completion(operator(policy_file, f"lost-{lost}"), make_context(), api)
    assert api.stats()["batches"] == PLANNED
    assert len(summary["batch_ids"]) == PLANNED and summary["request_counts"]["succeeded"] == 5
    assert {r.batch_id for r in Ledger().records()} == set(summary["batch_ids"])


def test_a_server_error_before_the_create_sends_it_again_once_the_list_shows_nothing(
    api, policy_file, store, split
):
    api.set_faults(http=[{"route": "create", "status": 529, "times": 1}])
    summary = run_to_completion(operator(policy_file, "overloaded"), make_context(), api)
    assert api.stats()["batches"] == PLANNED == len(summary["batch_ids"])
    assert api.stats()["calls"]["create"] == PLANNED + 1


def test_two_batches_that_could_be_the_lost_one_stop_the_task_and_create_nothing_more(
    api, policy_file, store, split, caplog
):
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

    # A script outside the service sent a 2-request batch just now: it looks like ours.
    requests = [{"custom_id": f"x_y_{i:08d}", "params": params(i)} for i in range(2)]
    ClaudeBatchesHook().create_batch(requests)
    api.set_faults(http=[{"route": "create", "status": 0, "when": "after", "times": 1}])
    with pytest.raises(AmbiguousCreateError, match="2 batches at the API fit") as error:
        execute(operator(policy_file, "ambiguous"), make_context())
    assert "airflow claude-batches adopt" in str(error.value)
    assert api.stats()["batches"] == 2  # the script's and the lost one: nothing created again
    assert "CLAUDE_BATCHES_ALERT ambiguous_create" in caplog.text


def test_an_adopted_batch_whose_results_belong_to_another_job_is_marked_foreign(
    api, policy_file, store, split, caplog
):
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

    # The lost create never arrived; meanwhile another job's 2-request batch appeared: it gets adopted.
    ClaudeBatchesHook().create_batch(
        [{"custom_id": f"beta_other-job_{i:08d}", "params": params(i)} for i in range(2)]
    )
    api.set_faults(http=[{"route": "create", "status": 0, "when": "before", "times": 1}])
    op = operator(policy_file, "adopts-wrong", n=2)
    with pytest.raises(ForeignResultsError, match="belongs to team 'beta'"):
        run_to_completion(op, make_context(), api)
    (batch_id,) = op._batch_ids
    assert Ledger().get(batch_id).origin == "foreign"
    assert "CLAUDE_BATCHES_ALERT foreign" in caplog.text


WORKER = textwrap.dedent(
    """
    import os, signal, sys
    from airflow.sdk.exceptions import TaskDeferred
    from airflow_claude_batches.jobs import plan as job_module
    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
    from airflow_claude_batches.store.ledger import Ledger
    from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
    from operator_harness import execute, make_context, team_dag

    point, policy_file, job_id = sys.argv[1:4]
    os.environ["AIRFLOW__CLAUDE_BATCHES__POLICY_FILE"] = policy_file
    job_module.MAX_BATCH_REQUESTS = 2
    calls = {"create": 0}

    def crash():
        os.kill(os.getpid(), signal.SIGKILL)

    def wrap(cls, name, before=False, after=False, nth=2):
        original = getattr(cls, name)
        def wrapper(self, *args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            if before and calls[name] == nth:
                crash()
            result = original(self, *args, **kwargs)
            if after and calls[name] == nth:
                crash()
            return result
        setattr(cls, name, wrapper)

    create = "create_batch_body"
    if point == "after_intent":         # intent recorded, create never sent
        wrap(ClaudeBatchesHook, create, before=True)
    elif point == "after_create":       # the API made the batch, the answer never reached the ledger
        wrap(ClaudeBatchesHook, create, after=True)
    elif point == "after_record":       # the batch is in the ledger, the task never deferred
        wrap(Ledger, "record_created", after=True)
    with team_dag("alpha"):
        op = ClaudeBatchSubmitOperator(
            task_id="submit", team="alpha", job_type="enrich", job_id=job_id,
            requests=[{"model": "claude-haiku-4-5", "max_tokens": 8,
                       "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(5)],
        )
    try:
        execute(op, make_context())
    except TaskDeferred:
        print("DEFERRED")
    """
)


def kill_worker(point: str, policy_file: str, job_id: str, tmp_path: Path) -> None:
    """Run the submit path in a worker process that SIGKILLs itself at ``point``."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    tests_dir = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{tests_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    worker = subprocess.run(
        [sys.executable, str(script), point, policy_file, job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stdout + worker.stderr[-3000:]


@pytest.mark.parametrize("point", ["after_intent", "after_create", "after_record"])
def test_sigkill_at_each_point_of_the_create_path_then_a_retry_makes_exactly_the_planned_batches(
    api, policy_file, store, split, point, tmp_path
):
    job_id = f"killed-{point.replace('_', '-')}"
    kill_worker(point, policy_file, job_id, tmp_path)
    made = api.stats()["batches"]
    assert made == {"after_intent": 1, "after_create": 2, "after_record": 2}[point]

    summary = run_to_completion(operator(policy_file, job_id), make_context(FakeTI(try_number=2)), api)
    assert api.stats()["batches"] == PLANNED == len(set(summary["batch_ids"]))
    assert summary["request_counts"]["succeeded"] == 5
    assert sorted(r.batch_id for r in Ledger().records()) == sorted(summary["batch_ids"])
    assert json.loads(json.dumps(summary))["batch_ids"] == summary["batch_ids"]


def test_a_retry_right_after_a_crash_waits_for_a_list_that_shows_new_batches_late(
    api, policy_file, store, split, tmp_path, monkeypatch
):
    """The API lists a new batch 2 s after creating it; the retry comes at once and must still find it."""
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__CREATE_RECONCILE_SECONDS", "8")
    api.set_faults(list_lag_seconds=2)
    kill_worker("after_create", policy_file, "killed-listed-late", tmp_path)
    assert api.stats()["batches"] == 2
    summary = run_to_completion(
        operator(policy_file, "killed-listed-late"), make_context(FakeTI(try_number=2)), api
    )
    assert api.stats()["batches"] == PLANNED == len(summary["batch_ids"])
