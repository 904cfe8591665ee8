"""The single submission path: policy-checked, namespaced, tracked to completion, persisted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseOperator, ObjectStoragePath, literal
from airflow.triggers.base import BaseTrigger

from airflow_claude_batches.capacity.admission import (
    AdmissionDecision,
    AdmissionEntry,
    AdmissionQueue,
    new_entry,
    try_admit,
)
from airflow_claude_batches.capacity.budget import BudgetExceeded, commit_spend, release_spend
from airflow_claude_batches.exceptions import (
    BatchJobError,
    JobNotAdmittedError,
    JobRefusedError,
    SubmitRefused,
    TriggerEventError,
)
from airflow_claude_batches.governance.ids import TEAM_PATTERN, job_key
from airflow_claude_batches.governance.policy import (
    Governance,
    JobTypePolicy,
    PolicyError,
    TeamPolicy,
    default_pool,
    load_policy,
)
from airflow_claude_batches.governance.quoting import quote
from airflow_claude_batches.governance.teams import derive_team, locate_dag
from airflow_claude_batches.hooks import DEFAULT_CONN_ID
from airflow_claude_batches.jobs.lifecycle import (
    EndedBatch,
    batch_record,
    create_batches,
    created_batches,
    store_job,
)
from airflow_claude_batches.jobs.plan import JobPlan, JobRejected, iter_records, plan_job
from airflow_claude_batches.store.ledger import Ledger
from airflow_claude_batches.store.paths import job_dir, store_root
from airflow_claude_batches.store.results import results_asset, write_keys
from airflow_claude_batches.triggers.batch import BatchJobEvent, ClaudeBatchTrigger
from airflow_claude_batches.triggers.capacity import AdmissionEvent, ClaudeCapacityTrigger

if TYPE_CHECKING:
    import anthropic
    from airflow.sdk import Context

    from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

#: Batches live at most 24 h; the default wait leaves room for the last poll and cancellation.
DEFAULT_WAIT_TIMEOUT = timedelta(hours=24, minutes=30)
#: How long after the trigger's own deadline Airflow's deferral timeout fails the task anyway.
DEFERRAL_BACKSTOP = timedelta(hours=1)


class ClaudeBatchSubmitOperator(BaseOperator):
    """
    Submit a team's job to the Message Batches API under its job type's policy and wait for it.

    Before anything is sent, every request is checked against the job type (allowed models,
    allowlisted fields, ``max_tokens`` cap, count, bytes, spend ceiling); a job that breaks any rule
    fails with the full list of violations and creates no batch. The operator mints every
    ``custom_id`` (``{team}_{job_key}_{index}``): teams pass records, never ids. A job over the
    API's 100,000 requests or 256 MB becomes several batches of one logical job.

    The job then has to fit the team's budgets (``daily_budget_usd`` / ``monthly_budget_usd``,
    counted from the ledger, see :mod:`airflow_claude_batches.capacity.budget`) and the account's processing
    queue (``account.queue_limit``): a job that does not fit yet waits, deferred to
    :class:`~airflow_claude_batches.triggers.capacity.ClaudeCapacityTrigger`, in a waiting list where
    time-sensitive job types go first (see :mod:`airflow_claude_batches.capacity.admission`), for up to
    ``account.admission_max_wait_seconds``. A job larger than the queue limit fails at once. The task
    runs in its team's pool (``claude_batches_{team}`` unless the governance file names another, with
    ``include_deferred``: ``airflow claude-batches sync-pools``), so the pool's slots bound the team's
    jobs in flight; a task put in another team's pool is refused.

    Each batch is announced in the ledger before its create is sent (a create intent) and recorded
    as soon as it exists, so a retry of this task, a crash or a lost answer re-attaches to the
    batches the job created instead of paying for them twice (see
    :mod:`airflow_claude_batches.jobs.lifecycle`). The job id is the identity: the same job id
    re-attaches, a new one submits anew. The wait defers to :class:`ClaudeBatchTrigger` (or, with
    ``deferrable=False``, runs the same trigger on the worker). Once every batch has ended, the
    results are streamed into the store, split by result type, with a manifest: complete (every
    request answered once, as the API's counts say) or not at all, see
    :func:`~airflow_claude_batches.store.results.persist_batch_results`.

    Cancelling is irreversible: it happens when a user kills the task (``cancel_on_kill``) and when
    the job's own ``wait_timeout`` passes, never because polling failed.

    Governance cannot be replaced by the DAG: the governance file is ``[claude_batches] policy_file``
    (deployment configuration, no argument), the team is derived from where the DAG file lives
    (:mod:`airflow_claude_batches.governance.teams`), and the checks run in :func:`govern`, a module function
    that a subclass cannot replace; a subclass that overrides the submit path is refused (here and
    by the cluster policy, :mod:`airflow_claude_batches.governance.cluster_policy`).

    :param team: Optional; when given it must equal the team the governance file assigns the DAG
        to (it then also names the pool and the results asset when the DAG is parsed).
    :param job_type: Job type of the governance file that this job runs under.
    :param requests: A list of Messages ``params`` dicts or ``{"key": ..., "params": ...}`` records
        (``key`` is the team's own record key, joined back to results), an XCom of such a list, or
        the URI of a JSONL file of them (``file://``, ``s3://``): prefer a URI for large jobs, it is
        read line by line and keeps the rendered-fields table small.
    :param job_id: Identity of the logical job, stable across retries; a changed job id submits
        anew. Default: ``{dag_id}.{task_id}.{run_id}`` (plus the map index of a mapped task).
    :param results_uri: Root for this job's results; default ``[claude_batches] results_root``.
    :param results_conn_id: Connection for ``results_uri`` (an ``aws`` connection for s3://).
    :param requests_conn_id: Connection for reading a ``requests`` URI.
    :param anthropic_conn_id: The ``anthropic`` connection (API key, base URL).
    :param deferrable: Wait in the triggerer rather than on the worker. Default: Airflow's
        ``[operators] default_deferrable``, as for every provider's operators (the deployments this
        project ships set it to true: a 24 h wait belongs in the triggerer, not on a worker).
    :param poll_interval: Seconds between status polls.
    :param wait_timeout: How long to wait for the batches before cancelling them and failing.
    :param cancel_on_kill: Cancel the batches when a user kills the task.
    """

    template_fields: Sequence[str] = ("job_id", "requests", "results_uri")
    ui_color = "#d4a373"

    def __init__(
        self,
        *,
        job_type: str,
        requests: Any,
        team: str | None = None,
        job_id: str | None = None,
        results_uri: str | None = None,
        results_conn_id: str | None = None,
        requests_conn_id: str | None = None,
        anthropic_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60,
        wait_timeout: timedelta = DEFAULT_WAIT_TIMEOUT,
        cancel_on_kill: bool = True,
        pool: str | None = None,
        **kwargs: Any,
    ) -> None:
        if team is not None and not (isinstance(team, str) and TEAM_PATTERN.match(team)):
            raise ValueError(f"team {quote(team)} is not a team name (lowercase letters and digits, 1-16).")
        self.results_asset = results_asset(team, job_type) if team else None
        outlets = [*(kwargs.pop("outlets", None) or []), *([self.results_asset] if team else [])]
        super().__init__(pool=pool or (default_pool(team) if team else None), outlets=outlets, **kwargs)
        self.declared_team = team
        self._team = team
        self.pool_given = pool is not None
        self.job_type = job_type
        # An inline list is sent as given: Jinja must not touch prompt text (a "{{" in a prompt).
        self.requests = literal(requests) if isinstance(requests, list | tuple) else requests
        self.job_id = job_id
        self.results_uri = results_uri
        self.results_conn_id = results_conn_id
        self.requests_conn_id = requests_conn_id
        self.anthropic_conn_id = anthropic_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout
        self.cancel_on_kill = cancel_on_kill
        self._batch_ids: list[str] = []

    @cached_property
    def hook(self) -> ClaudeBatchesHook:
        from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

        return ClaudeBatchesHook(conn_id=self.anthropic_conn_id)

    @property
    def team(self) -> str:
        """The team :func:`govern` derived from the DAG (the declared one until then)."""
        if self._team is None:
            raise SubmitRefused(f"Task {self.task_id!r}: its team is not known before the governance check.")
        return self._team

    @property
    def governance(self) -> Governance:
        """The deployment's governance file, ``[claude_batches] policy_file``; nothing replaces it."""
        return load_policy()

    def _job_id(self, context: Context) -> str:
        if self.job_id:
            return self.job_id
        ti = context["ti"]
        suffix = f".{ti.map_index}" if ti.map_index is not None and ti.map_index >= 0 else ""
        return f"{ti.dag_id}.{ti.task_id}.{ti.run_id}{suffix}"

    def _job_dir(self, job_key: str) -> ObjectStoragePath:
        return job_dir(store_root(self.results_uri, self.results_conn_id), self.team, job_key)

    def _team_policy(self, context: Context) -> tuple[TeamPolicy, JobTypePolicy]:
        try:
            governed = govern(self, context["ti"])
        except PolicyError as e:
            raise SubmitRefused(f"Task {self.task_id!r}: {e}. Nothing was sent.") from None
        return governed.team_policy, governed.job_policy

    def execute(self, context: Context) -> Any:
        team_policy, job_policy = self._team_policy(context)
        job_id = self._job_id(context)
        created, complete = created_batches(Ledger(), self.team, job_key(job_id))
        if complete:
            self.log.info("Re-attaching to batches %s created by an earlier try.", created)
            return self._wait(context, job_id, created)
        plan = self._plan(job_id)
        account = self.governance.account
        entry = new_entry(
            team_policy,
            job_policy,
            account,
            job_key=plan.job_key,
            job_id=plan.job_id,
            request_count=sum(b.request_count for b in plan.batches[len(created) :]),
        )
        if entry.request_count > (usable := entry.usable_limit(account.queue_limit)):
            kept = account.queue_limit - usable
            kept_text = f" less the time_sensitive_reserve of {kept}" if kept else ""
            raise JobRefusedError(
                f"Job {job_id} has {entry.request_count} requests, more than the account queue limit of "
                f"{account.queue_limit}{kept_text} (account in {self.governance.source}): it could never "
                f"be admitted. Split it into smaller jobs. Nothing was sent."
            )
        self._commit_spend(team_policy, plan, created)
        queue = AdmissionQueue()
        try:
            entry, decision = asyncio.run(self._try_admit(queue, entry))
        except _access_refused() as error:
            queue.remove(entry.entry_id)
            release_spend(queue.ledger, self.team, plan.job_key)
            refusal = api_refusal(error, self.anthropic_conn_id, "checking account capacity")
            raise SubmitRefused(refusal) from None
        except BaseException:
            release_spend(queue.ledger, self.team, plan.job_key)
            raise
        if decision.admitted:
            self.log.info("Job %s %s.", job_id, decision.why)
            return self._create_and_wait(context, job_id, plan, entry.entry_id)
        if decision.give_up:
            queue.remove(entry.entry_id)
            release_spend(queue.ledger, self.team, plan.job_key)
            raise JobNotAdmittedError(f"Job {job_id} was not admitted: {decision.detail}. Nothing was sent.")
        self.log.info("Job %s waits: %s.", job_id, decision.why)
        trigger = ClaudeCapacityTrigger(
            entry=entry.model_dump(mode="json"),
            queue_limit=account.queue_limit,
            conn_id=self.anthropic_conn_id,
            poll_interval=account.admission_poll_seconds,
            end_time=entry.deadline_at.timestamp(),
            min_seconds=self._trigger_min_seconds(),
        )
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_admitted")
        return self.execute_admitted(context, asyncio.run(_first_event(trigger)))

    def execute_admitted(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """
        Resume after waiting for account capacity: create the batches, or fail with the numbers.

        The job is planned again (read and validated from ``requests``): a plan is too large to
        travel through the trigger, and planning is deterministic, so the batches are the same.
        Its spend commitment held its budget while it waited; a job that gives up releases it.
        """
        try:
            outcome = AdmissionEvent.model_validate(event)
        except ValueError as e:
            raise TriggerEventError(f"Unexpected event from ClaudeCapacityTrigger: {quote(event)}") from e
        job_id = self._job_id(context)
        queue = AdmissionQueue()
        try:
            self._team_policy(context)
        except BaseException:
            queue.remove(outcome.entry_id)
            raise
        if outcome.status != "admitted":
            release_spend(queue.ledger, self.team, job_key(job_id))
            numbers = f" Last check: {outcome.decision.summary}." if outcome.decision else ""
            raise JobNotAdmittedError(
                f"Job {job_id} (team {self.team}) was not admitted to the account queue after "
                f"{outcome.waited_seconds:.0f} s: {outcome.message}.{numbers} Nothing was sent."
            )
        try:
            plan = self._plan(job_id)
        except BaseException:
            queue.remove(outcome.entry_id)
            release_spend(queue.ledger, self.team, job_key(job_id))
            raise
        return self._create_and_wait(context, job_id, plan, outcome.entry_id)

    def _wait(self, context: Context, job_id: str, batch_ids: list[str]) -> Any:
        """
        Wait for the batches until ``wait_timeout`` after the first of them was created: a retry that
        re-attaches keeps the job's deadline instead of starting a new one. The deferral's own timeout
        is a backstop an hour later, should the trigger never fire.
        """
        self._batch_ids = batch_ids
        context["ti"].xcom_push(key="batch_ids", value=self._batch_ids)
        ledger = Ledger()
        started = min(ledger.get(batch_id).created_at for batch_id in batch_ids).timestamp()
        end_time = min(started, time.time()) + self.wait_timeout.total_seconds()
        trigger = ClaudeBatchTrigger(
            batch_ids=self._batch_ids,
            team=self.team,
            job_id=job_id,
            conn_id=self.anthropic_conn_id,
            poll_interval=self.poll_interval,
            end_time=end_time,
            cancel_on_kill=self.cancel_on_kill,
            min_seconds=self._trigger_min_seconds(),
        )
        if self.deferrable:
            backstop = timedelta(seconds=max(0.0, end_time - time.time())) + DEFERRAL_BACKSTOP
            self.defer(trigger=trigger, method_name="execute_complete", timeout=backstop)
        return self.execute_complete(context, asyncio.run(_first_event(trigger)))

    def _trigger_min_seconds(self) -> float:
        """How long a trigger holds its event (Airflow 3.3's defer/resume race; none on the worker)."""
        if not self.deferrable:
            return 0.0
        return conf.getfloat("claude_batches", "trigger_min_seconds", fallback=10)

    def _plan(self, job_id: str) -> JobPlan:
        try:
            plan = plan_job(
                iter_records(self.requests, self.requests_conn_id),
                governance=self.governance,
                team=self.team,
                job_type=self.job_type,
                job_id=job_id,
            )
        except JobRejected as e:
            raise JobRefusedError(str(e)) from e
        self.log.info(
            "Job %s: %d requests in %d batch(es), estimated at most $%.4f.",
            job_id,
            plan.request_count,
            len(plan.batches),
            plan.estimated_cost_usd,
        )
        return plan

    def _commit_spend(self, team_policy: TeamPolicy, plan: JobPlan, created: list[str]) -> None:
        """Refuse the job if its still-unsent batches would take the team over a budget, else commit them."""
        estimates = [(i, b.estimated_cost_usd) for i, b in enumerate(plan.batches) if i >= len(created)]
        estimate = sum(amount for _, amount in estimates)
        try:
            spend = commit_spend(
                Ledger(), team_policy, job_key=plan.job_key, job_id=plan.job_id, estimates=estimates
            )
        except BudgetExceeded as e:
            raise JobRefusedError(f"Job {plan.job_id}: {e}") from e
        self.log.info(
            "Team %s has committed $%.4f today and $%.4f this month; this job adds at most $%.4f.",
            self.team,
            spend.daily_usd,
            spend.monthly_usd,
            estimate,
        )

    async def _try_admit(
        self, queue: AdmissionQueue, entry: AdmissionEntry
    ) -> tuple[AdmissionEntry, AdmissionDecision]:
        from airflow_claude_batches.hooks.batches import ClaudeBatchesHook

        async with ClaudeBatchesHook(conn_id=self.anthropic_conn_id) as hook:
            return await try_admit(queue, entry, self.governance.account.queue_limit, hook)

    def _create_and_wait(self, context: Context, job_id: str, plan: JobPlan, entry_id: str) -> Any:
        """Create the admitted job's batches, then drop its entry (the ledger counts them now)."""
        try:
            batch_ids = self._create(context, job_id, plan, entry_id)
        except _access_refused() as error:
            created, _ = created_batches(Ledger(), self.team, job_key(job_id))
            raise SubmitRefused(
                api_refusal(error, self.anthropic_conn_id, "creating the job's batches", created)
            ) from None
        finally:
            AdmissionQueue().remove(entry_id)
        return self._wait(context, job_id, batch_ids)

    def _create(self, context: Context, job_id: str, plan: JobPlan, entry_id: str) -> list[str]:
        """
        Create the job's batches that earlier tries did not, through create intents in the ledger
        (:func:`~airflow_claude_batches.jobs.lifecycle.create_batches`): a retry after a crash or a
        lost answer finds the batches made before instead of paying for them twice. Planning is
        deterministic, so the same input gives the same batches.
        """
        if any(k is not None for k in plan.keys):  # the same plan writes the same file again on a retry
            write_keys(self._job_dir(plan.job_key), plan.keys)
        return create_batches(
            self.hook,
            Ledger(),
            plan,
            partial(batch_record, context["ti"], plan),
            admission_entry=entry_id,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Persist the results of ended batches; fail closed on anything but ``ended``."""
        try:
            outcome = BatchJobEvent.model_validate(event)
        except ValueError as e:
            raise TriggerEventError(f"Unexpected event from ClaudeBatchTrigger: {quote(event)}") from e
        self._batch_ids = outcome.batch_ids
        self._team_policy(context)
        if outcome.status == "timeout":
            self._cancel("the job's wait_timeout passed")
            raise BatchJobError(f"{outcome.message} Cancelled batches {outcome.batch_ids}.")
        if outcome.status != "ended":
            raise BatchJobError(
                f"{outcome.message} The batches were not cancelled; their results stay retrievable "
                f"for 29 days: {outcome.batch_ids}"
            )
        return self._persist(context, outcome)

    def _persist(self, context: Context, outcome: BatchJobEvent) -> dict[str, Any]:
        _, job_policy = self.governance.resolve(self.team, self.job_type)
        job_id = self._job_id(context)
        summary = store_job(
            self.hook,
            Ledger(),
            self._job_dir(job_key(job_id)),
            [
                EndedBatch(b, outcome.batches[b].request_counts, outcome.batches[b].ended_at)
                for b in outcome.batch_ids
            ],
            job_type=self.job_type,
            error_ratio_alert=job_policy.error_ratio_alert,
            prices=self.governance.prices,
        )
        self.log.info("Job %s ended: %s", job_id, summary)
        if "outlet_events" in context and self.results_asset is not None:  # tells downstream DAGs where
            context["outlet_events"][self.results_asset].extra = summary
        totals = summary["request_counts"]
        if sum(totals.values()) and not totals["succeeded"]:
            raise BatchJobError(
                f"No request of job {job_id} succeeded: {totals}. Results: {summary['results_uri']}"
            )
        return summary

    def _cancel(self, reason: str) -> None:
        for batch_id in self._batch_ids:
            try:
                batch = self.hook.cancel_batch(batch_id)
                self.log.warning("Cancelled batch %s: %s.", batch_id, reason)
                Ledger().update(batch_id, processing_status=batch.processing_status)
            except Exception as e:
                self.log.warning("Could not cancel batch %s: %s", batch_id, e)

    def on_kill(self) -> None:
        """Cancel the batches a worker-side wait was tracking (the trigger cancels deferred ones)."""
        if self.cancel_on_kill:
            self._cancel("the task was killed")


@dataclass(frozen=True)
class Governed:
    """What :func:`govern` found a submit task may do: its team and the policies that apply."""

    governance: Governance
    team: str
    team_policy: TeamPolicy
    job_policy: JobTypePolicy


#: The operator's own methods and properties: a subclass that replaces one of them is refused,
#: since it could skip a check, change what is sent or where it is recorded.
SUBMIT_PATH = frozenset(
    name
    for name, value in vars(ClaudeBatchSubmitOperator).items()
    if name != "__init__" and (callable(value) or isinstance(value, property | cached_property))
)
_ORIGINAL_SUBMIT_PATH = {name: vars(ClaudeBatchSubmitOperator)[name] for name in SUBMIT_PATH}


def overridden_submit_path(task: ClaudeBatchSubmitOperator) -> list[str]:
    """Names of the submit path that ``task``'s class (or the task itself) replaces; empty if none."""
    found = {
        name
        for cls in type(task).__mro__
        if cls is not ClaudeBatchSubmitOperator and issubclass(cls, ClaudeBatchSubmitOperator)
        for name in SUBMIT_PATH.intersection(vars(cls))
    }
    found.update(n for n in SUBMIT_PATH if vars(ClaudeBatchSubmitOperator)[n] is not _ORIGINAL_SUBMIT_PATH[n])
    # A cached property legitimately keeps its value in the instance; anything else there replaces code.
    found.update(
        n
        for n in SUBMIT_PATH.intersection(vars(task))
        if not isinstance(_ORIGINAL_SUBMIT_PATH[n], cached_property)
    )
    return sorted(found)


def govern(task: ClaudeBatchSubmitOperator, ti: Any = None, *, bind: bool = False) -> Governed:
    """
    Check a submit task against the deployment's governance file; the one place these checks live.

    A module function, so a DAG cannot replace it: the operator calls it before it reads a request
    and again when it resumes, and the cluster policy calls it when the DAG is parsed. It refuses a
    subclass that overrides the submit path, derives the task's team from where its DAG lives
    (a declared ``team`` must equal it), resolves the job type for that team and checks the pool.

    :param ti: the running task instance (it knows the DAG's bundle); ``None`` at parse time.
    :param bind: at parse time, give a task built without ``team`` or ``pool`` its team's pool and
        results asset (the scheduler runs it in that pool).
    :raises PolicyError: saying what is wrong and where to change it.
    """
    if overridden := overridden_submit_path(task):
        raise PolicyError(
            f"{type(task).__module__}.{type(task).__qualname__} overrides the governed submit path "
            f"({', '.join(overridden)}); subclass ClaudeBatchSubmitOperator only to preset arguments"
        )
    governance = load_policy()
    dag = task.dag if task.has_dag() else None
    team = derive_team(governance, locate_dag(dag, ti))
    if task.declared_team is not None and task.declared_team != team:
        raise PolicyError(
            f"the task declares team {quote(task.declared_team)}, but {governance.source} assigns its DAG "
            f"to team {team!r}; remove team= or correct it"
        )
    team_policy, job_policy = governance.resolve(team, task.job_type)
    if bind and not task.pool_given:
        task.pool = team_policy.pool
    if bind and task.results_asset is None:
        task.results_asset = results_asset(team, task.job_type)
        task.outlets = [*task.outlets, task.results_asset]
    if task.pool != team_policy.pool:
        raise PolicyError(
            f"the task runs in pool {quote(task.pool)}, but team {team}'s pool is {team_policy.pool!r} "
            f"({governance.source}): a team's batches count against its own quota; leave pool unset"
        )
    task._team = team
    return Governed(governance, team, team_policy, job_policy)


def _access_refused() -> tuple[type[anthropic.APIStatusError], ...]:
    """The API's 401 and 403 (the SDK is imported when a task runs, not when its DAG is parsed)."""
    import anthropic

    return (anthropic.AuthenticationError, anthropic.PermissionDeniedError)


def api_refusal(
    error: anthropic.APIStatusError, conn_id: str, during: str, created: Sequence[str] = ()
) -> str:
    """One paragraph for a 401/403 from the API: what, where, and whether anything was sent."""
    kind = "rejected the API key" if error.status_code == 401 else "denied access"
    sent = (
        f"Batches {', '.join(created)} were created before this; they are in the ledger."
        if created
        else "Nothing was sent."
    )
    return (
        f"The Anthropic API {kind} (HTTP {error.status_code}) while {during}, for the connection "
        f"{conn_id!r}. Check that connection's API key (password) and that its workspace may use the "
        f"Message Batches API. {sent}"
    )


async def _first_event(trigger: BaseTrigger) -> dict[str, Any]:
    """Run a trigger on the worker (``deferrable=False``): one wait loop serves both modes."""
    async for event in trigger.run():
        return event.payload
    raise TriggerEventError(f"{type(trigger).__name__} ended without an event.")
