"""Two teams sharing a small account queue through the submit operator, and team budgets.

Everything real but the scheduler: the operator's execute, its capacity and batch triggers run as the
triggerer would run them, the emulator is the API, and the waiting list and ledger are on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime, timezone

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from airflow_claude_batches.capacity.admission import AdmissionQueue, list_batches
from airflow_claude_batches.governance.ids import job_key
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord
from airflow_claude_batches.triggers.batch import ClaudeBatchTrigger
from airflow_claude_batches.triggers.capacity import ClaudeCapacityTrigger
from operator_harness import FakeTI, execute, make_context, run_trigger, team_dag

LIMIT = 100
POLICY_FILE_VAR = "AIRFLOW__CLAUDE_BATCHES__POLICY_FILE"

POLICY = f"""
teams:
  alpha: {{dags: ["alpha/**"]}}
  beta: {{daily_budget_usd: 0.01, monthly_budget_usd: 1.0, dags: ["beta/**"]}}
job_types:
  enrich:
    allowed_models: [claude-haiku-4-5]
    allowed_fields: []
    max_tokens_cap: 100
    max_requests: 1000
    max_bytes: 10000000
    max_job_cost_usd: 10.0
  urgent:
    teams: [beta]
    allowed_models: [claude-haiku-4-5]
    allowed_fields: []
    max_tokens_cap: 100
    max_requests: 1000
    max_bytes: 10000000
    max_job_cost_usd: 10.0
    time_sensitive: true
account:
  queue_limit: {LIMIT}
  admission_poll_seconds: 0.05
  admission_max_wait_seconds: 30
"""


@pytest.fixture(autouse=True)
def _restore_policy_config(monkeypatch):
    """submit() points the configuration at its policy file; monkeypatch restores it afterwards."""
    monkeypatch.setenv(POLICY_FILE_VAR, "")


@pytest.fixture
def shared_policy(tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text(POLICY)
    return str(path)


def params(i: int) -> dict:
    return {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": f"q{i}"}]}


def submit(policy: str, team: str, job_type: str, n: int, job_id: str, **kwargs) -> ClaudeBatchSubmitOperator:
    os.environ[POLICY_FILE_VAR] = policy
    with team_dag(team):
        return ClaudeBatchSubmitOperator(
            task_id=f"{team}_{job_type}",
            team=team,
            job_type=job_type,
            requests=[params(i) for i in range(n)],
            job_id=job_id,
            poll_interval=0.05,
            **kwargs,
        )


def occupy(n: int) -> str:
    """A batch of ``n`` requests sent by a legacy script straight through the SDK: it counts too."""
    requests = [{"custom_id": f"legacy_job_{i:08d}", "params": params(i)} for i in range(n)]
    return ClaudeBatchesHook().create_batch(requests).id


def deferral(op: ClaudeBatchSubmitOperator, context: dict) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as deferred:
        execute(op, context)
    return deferred.value


async def test_giant_bulk_job_is_held_while_a_small_time_sensitive_job_runs_first(
    api, shared_policy, store, tmp_path
):
    """
    Account queue limit 100. A legacy script has 40 requests in flight. Team alpha's bulk job of 90
    cannot fit (130 > 100) and waits in the capacity trigger; team beta's time-sensitive job of 30
    fits (70) and runs at once. Alpha's job is admitted once the others have ended.

    Batches take 10 virtual minutes; the test moves the emulator's clock to end them, so slow
    machines cannot change the story (times below are real seconds since the start).
    """
    api.configure(processing_seconds=600)
    start = time.monotonic()
    timeline: list[tuple[float, int]] = []
    admissions: list[tuple[float, str, str]] = []
    done = asyncio.Event()

    def now() -> float:
        return round(time.monotonic() - start, 3)

    async def sample() -> None:
        async with ClaudeBatchesHook() as hook:
            while not done.is_set():
                volume = sum((await list_batches(hook)).unfinished.values())
                timeline.append((now(), volume))
                await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    await asyncio.sleep(0.1)
    occupy(40)
    admissions.append((now(), "legacy script (outside the service)", "not asked: created directly, 40"))

    alpha = submit(shared_policy, "alpha", "enrich", 90, "alpha giant enrichment")
    alpha_ctx = make_context(FakeTI(dag_id="alpha_dag", task_id="alpha_enrich"))
    held = await asyncio.to_thread(deferral, alpha, alpha_ctx)
    assert isinstance(held.trigger, ClaudeCapacityTrigger) and held.method_name == "execute_admitted"
    admissions.append((now(), "alpha enrich (bulk, 90) deferred", "in flight 40 + 90 > 100"))

    beta = submit(shared_policy, "beta", "urgent", 30, "beta urgent tickets")
    beta_ctx = make_context(FakeTI(dag_id="beta_dag", task_id="beta_urgent"))
    running = await asyncio.to_thread(deferral, beta, beta_ctx)
    assert isinstance(running.trigger, ClaudeBatchTrigger)
    admissions.append((now(), "beta urgent (time-sensitive, 30) admitted", "in flight 40 + 30 <= 100"))

    _, kwargs = held.trigger.serialize()
    capacity = asyncio.create_task(run_trigger(ClaudeCapacityTrigger(**json.loads(json.dumps(kwargs)))))
    await asyncio.sleep(0.5)
    assert not capacity.done()  # polled several times, still held: 70 + 90 > 100
    await asyncio.to_thread(api.advance, 600)
    admissions.append((now(), "emulator clock +600 s", "the legacy and beta batches end"))
    event = await capacity
    assert event["status"] == "admitted", event
    why = event["message"].removeprefix("Admitted: ")
    admissions.append((now(), "alpha enrich (bulk, 90) admitted", why))
    alpha_waiting = await asyncio.to_thread(execute_admitted, alpha, alpha_ctx, event)
    assert isinstance(alpha_waiting.trigger, ClaudeBatchTrigger)
    assert AdmissionQueue().get(f"alpha_{job_key('alpha giant enrichment')}") is None  # reservation dropped
    await asyncio.sleep(0.3)
    await asyncio.to_thread(api.advance, 600)
    admissions.append((now(), "emulator clock +600 s", "the alpha batch ends"))

    summaries = {}
    for name, op, ctx, deferred in (
        ("beta", beta, beta_ctx, running),
        ("alpha", alpha, alpha_ctx, alpha_waiting),
    ):
        payload = await run_trigger(deferred.trigger)
        summaries[name] = await asyncio.to_thread(op.execute_complete, ctx, payload)
    await asyncio.sleep(0.1)
    done.set()
    await sampler

    # Admission order: beta's time-sensitive job first, alpha's giant job after.
    order = [label for _, label, _ in admissions if "admitted" in label]
    assert order == ["beta urgent (time-sensitive, 30) admitted", "alpha enrich (bulk, 90) admitted"]
    peak = max(volume for _, volume in timeline)
    assert peak <= LIMIT
    assert 90 in {volume for _, volume in timeline}  # alpha's batch was seen in flight, alone
    assert event["decision"]["in_flight"] + event["decision"]["reserved"] + 90 <= LIMIT
    assert summaries["alpha"]["request_counts"]["succeeded"] == 90
    assert summaries["beta"]["request_counts"]["succeeded"] == 30
    assert api.stats()["calls"]["create"] == 3

    report = ["admission order (seconds since start):"]
    report += [f"  t={t:6.3f}s  {label}: {why}" for t, label, why in admissions]
    report.append(f"in-flight processing requests over time (queue limit {LIMIT}, peak {peak}):")
    changes = [(t, v) for i, (t, v) in enumerate(timeline) if i == 0 or v != timeline[i - 1][1]]
    report += [f"  t={t:6.3f}s  in_flight={v}" for t, v in changes]
    text = "\n".join(report)
    (tmp_path / "admission_timeline.txt").write_text(text + "\n")
    print(f"\n{text}\n(written to {tmp_path / 'admission_timeline.txt'})")


def execute_admitted(op: ClaudeBatchSubmitOperator, context: dict, event: dict) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute_admitted(context, event)
    return deferred.value


async def test_bulk_job_that_asked_first_yields_to_a_time_sensitive_one(api, shared_policy, store):
    """Both wait for the same room; when it comes, the time-sensitive job takes it though it asked later."""
    api.configure(processing_seconds=600)
    occupy(95)
    bulk = await asyncio.to_thread(
        deferral, submit(shared_policy, "alpha", "enrich", 10, "bulk"), make_context()
    )
    urgent = await asyncio.to_thread(
        deferral, submit(shared_policy, "beta", "urgent", 10, "urgent"), make_context()
    )
    assert isinstance(bulk.trigger, ClaudeCapacityTrigger) and isinstance(
        urgent.trigger, ClaudeCapacityTrigger
    )
    order: list[str] = []
    events: dict[str, dict] = {}

    async def wait(name: str, deferred: TaskDeferred) -> None:
        events[name] = await run_trigger(deferred.trigger)
        assert events[name]["status"] == "admitted"
        order.append(name)

    waiting = asyncio.gather(wait("bulk", bulk), wait("urgent", urgent))
    await asyncio.sleep(0.3)
    assert order == []
    await asyncio.to_thread(api.advance, 600)  # the legacy batch ends
    await waiting
    # Both fit once the legacy batch ends (0 + 10 + 10 <= 100), but the bulk job saw the
    # time-sensitive one ahead in line, so it went only after it, counting its reservation.
    assert order == ["urgent", "bulk"]
    assert events["urgent"]["decision"]["reserved"] == 0
    assert events["bulk"]["decision"]["reserved"] == 10


def test_a_job_larger_than_the_queue_limit_fails_fast(api, shared_policy, store):
    op = submit(shared_policy, "alpha", "enrich", LIMIT + 1, "too big")
    with pytest.raises(AirflowFailException, match=r"101 requests, more than the account queue limit of 100"):
        execute(op, make_context())
    assert api.stats()["calls"]["create"] == 0
    assert AdmissionQueue().entries() == []


def test_admission_timeout_fails_with_the_numbers_and_sends_nothing(api, tmp_path, store):
    impatient = tmp_path / "impatient.yaml"
    impatient.write_text(POLICY.replace("admission_max_wait_seconds: 30", "admission_max_wait_seconds: 0.2"))
    api.configure(processing_seconds=3600)
    occupy(95)
    op = submit(str(impatient), "alpha", "enrich", 10, "patient", deferrable=False)
    with pytest.raises(AirflowException, match="not admitted") as error:
        execute(op, make_context())
    numbers = "in flight 95 (unmanaged 95) + reserved 0 + this job 10 = 105 > queue limit 100"
    assert numbers in str(error.value)
    assert "Nothing was sent" in str(error.value)
    assert api.stats()["calls"]["create"] == 1  # the legacy batch only
    assert AdmissionQueue().entries() == []


def spent(team: str, cost: float, batch_id: str) -> None:
    Ledger().put(
        LedgerRecord(
            batch_id=batch_id,
            team=team,
            job_type="urgent",
            job_id="earlier",
            job_key="earlier",
            request_count=1,
            created_at=datetime.now(timezone.utc),
            estimated_cost_usd=cost * 2,
            actual_cost_usd=cost,
            processing_status="ended",
        )
    )


def test_team_over_its_daily_budget_is_refused_and_nothing_is_sent(api, shared_policy, store):
    spent("beta", 0.0099, "msgbatch_earlier")
    spent("alpha", 5.0, "msgbatch_other_team")  # another team's spend is not beta's
    op = submit(shared_policy, "beta", "urgent", 5, "over budget")
    with pytest.raises(
        AirflowFailException, match=r"Team beta would go over its budget, nothing was sent"
    ) as e:
        execute(op, make_context())
    message = str(e.value)
    assert "daily budget $0.01" in message and "$0.0099 already committed" in message
    assert "monthly" not in message
    assert api.stats()["calls"]["create"] == 0
    assert AdmissionQueue().entries() == []


def test_team_within_budget_runs(api, shared_policy, store):
    op = submit(shared_policy, "beta", "urgent", 1, "small")
    deferred = deferral(op, make_context())
    assert isinstance(deferred.trigger, ClaudeBatchTrigger)
    assert api.stats()["calls"]["create"] == 1


def test_twenty_jobs_racing_for_a_budget_that_fits_three_create_exactly_three(api, tmp_path, store):
    """Each job's estimate fits beta's daily budget alone, three fit together; 20 tasks at once."""
    import threading

    from airflow_claude_batches.governance.cost import estimate_request_cost

    budget = 3.5 * estimate_request_cost(params(0))
    path = tmp_path / "tight.yaml"
    path.write_text(POLICY.replace("daily_budget_usd: 0.01", f"daily_budget_usd: {budget!r}"))
    outcomes: list[str] = []
    start = threading.Barrier(20)

    def task(n: int) -> None:
        op = submit(str(path), "beta", "urgent", 1, f"racing job {n}")
        context = make_context(FakeTI(dag_id="beta_dag", task_id=f"t{n}"))
        start.wait()
        try:
            execute(op, context)
        except TaskDeferred:
            outcomes.append("created")
        except AirflowFailException as e:
            assert "would go over its budget" in str(e)
            outcomes.append("refused")

    threads = [threading.Thread(target=task, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 17
    assert api.stats()["calls"]["create"] == 3
