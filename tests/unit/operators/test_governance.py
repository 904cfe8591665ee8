"""Every way a DAG author tried to get around the governance file is refused, and nothing reaches the API.

Tried as team alpha's author would: their own policy file, a subclass with its own checks, beta's
name, a DAG copied from beta's folder, the official provider's batch operator. Each ends with no
batch created at the emulator.
"""

from __future__ import annotations

import json
import textwrap
from functools import cached_property

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_claude_batches.exceptions import SubmitRefused
from airflow_claude_batches.governance.policy import load_policy
from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator, govern
from operator_harness import execute, make_context, team_dag

#: What alpha's job type forbids: another model, and max_tokens far over the cap of 100.
OPUS = [{"model": "claude-opus-4-5", "max_tokens": 60_000, "messages": [{"role": "user", "content": "x"}]}]
HAIKU = [{"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}]
LENIENT = """
teams:
  alpha: {dags: ["**"]}
job_types:
  enrich:
    allowed_models: [claude-opus-4-5]
    allowed_fields: []
    max_tokens_cap: 100000
    max_requests: 10
    max_bytes: 1000000
    max_job_cost_usd: 1000
"""


def test_a_policy_file_argument_no_longer_exists(api, policy_file, store, tmp_path):
    own = tmp_path / "my_own_policy.yaml"
    own.write_text(LENIENT)
    with pytest.raises(TypeError, match="policy_file"), team_dag("alpha"):
        ClaudeBatchSubmitOperator(task_id="t", job_type="enrich", requests=OPUS, policy_file=str(own))
    assert api.stats()["calls"]["create"] == 0


class OwnGovernance(ClaudeBatchSubmitOperator):
    """Replaces the governance file with the author's own."""

    lenient_path = ""

    @cached_property
    def governance(self):
        return load_policy(self.lenient_path)


class SkipsValidation(ClaudeBatchSubmitOperator):
    """Replaces the planning step that validates every request."""

    def _plan(self, job_id):
        return super()._plan(job_id)


class Presets(ClaudeBatchSubmitOperator):
    """Only presets arguments: allowed."""

    def __init__(self, **kwargs):
        super().__init__(job_type="enrich", **kwargs)


@pytest.mark.parametrize("cls", [OwnGovernance, SkipsValidation])
def test_a_subclass_that_overrides_the_submit_path_is_refused(api, policy_file, store, tmp_path, cls):
    own = tmp_path / "my_own_policy.yaml"
    own.write_text(LENIENT)
    OwnGovernance.lenient_path = str(own)
    with team_dag("alpha"):
        task = cls(task_id="t", job_type="enrich", requests=OPUS, team="alpha")
    with pytest.raises(SubmitRefused, match="overrides the governed submit path") as error:
        execute(task, make_context())
    assert "Nothing was sent" in str(error.value)
    assert api.stats()["calls"]["create"] == 0


def test_a_subclass_that_presets_arguments_runs(api, policy_file, store):
    with team_dag("alpha"):
        task = Presets(task_id="t", requests=HAIKU, team="alpha")
    assert govern(task).team == "alpha"


def test_code_patched_into_the_task_is_refused(api, policy_file, store):
    with team_dag("alpha"):
        task = ClaudeBatchSubmitOperator(task_id="t", job_type="enrich", requests=OPUS, team="alpha")
    task._commit_spend = lambda *args: None
    with pytest.raises(SubmitRefused, match=r"overrides the governed submit path \(_commit_spend\)"):
        execute(task, make_context())
    assert api.stats()["calls"]["create"] == 0


def test_another_teams_name_is_refused(api, policy_file, store):
    """alpha's DAG naming beta would run on beta's pool, budget and job types."""
    with team_dag("alpha"):
        task = ClaudeBatchSubmitOperator(
            task_id="t", job_type="enrich", requests=HAIKU, team="beta", pool="claude_batches_beta"
        )
    with pytest.raises(AirflowFailException, match=r"declares team 'beta', but .* to team 'alpha'"):
        execute(task, make_context())
    assert api.stats()["calls"]["create"] == 0


def test_a_dag_copied_from_another_teams_folder_still_naming_that_team_is_refused(api, policy_file, store):
    with team_dag("alpha", dag_id="copied_from_beta"):
        task = ClaudeBatchSubmitOperator(task_id="t", job_type="enrich", requests=HAIKU, team="beta")
    with pytest.raises(SubmitRefused, match="declares team 'beta'"):
        execute(task, make_context())
    assert api.stats()["calls"]["create"] == 0


def test_the_team_is_derived_when_not_declared(api, policy_file, store):
    with team_dag("alpha"):
        task = ClaudeBatchSubmitOperator(
            task_id="t", job_type="enrich", requests=HAIKU, pool="claude_batches_alpha"
        )
    governed = govern(task)
    assert (governed.team, task.team, governed.team_policy.pool) == ("alpha", "alpha", "claude_batches_alpha")


def test_a_task_outside_any_dag_belongs_to_no_team(api, policy_file, store):
    task = ClaudeBatchSubmitOperator(task_id="t", job_type="enrich", requests=HAIKU, team="alpha")
    with pytest.raises(SubmitRefused, match="belongs to no team"):
        execute(task, make_context())
    assert api.stats()["calls"]["create"] == 0


# ------------------------------------------------------------------------- when the DAG is parsed

DAG_FILE = textwrap.dedent(
    """
    from datetime import datetime

    from airflow.sdk import DAG
    {imports}

    with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1)):
        {task}
    """
)
SUBMIT_IMPORT = "from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator"
REQUEST = '{"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}'


def parse(bundle, relative: str, imports: str, task: str, dag_id: str = "d"):
    """The DagBag of one DAG file of a bundle, as the DAG processor parses it (policy plugins included)."""
    from airflow.dag_processing.dagbag import DagBag

    path = bundle / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DAG_FILE.format(imports=imports, dag_id=dag_id, task=task))
    return DagBag(dag_folder=str(path), bundle_path=bundle, bundle_name="teams")


def test_the_cluster_policy_is_an_installed_policy_plugin():
    from airflow import settings

    from airflow_claude_batches.governance import cluster_policy

    assert cluster_policy in settings.get_policy_plugin_manager().get_plugins()


def test_parsing_binds_an_undeclared_team_to_its_pool_and_asset(policy_file, tmp_path):
    from airflow_claude_batches.store.results import results_asset

    bag = parse(
        tmp_path,
        "alpha/nightly.py",
        SUBMIT_IMPORT,
        f'ClaudeBatchSubmitOperator(task_id="t", job_type="enrich", requests=[{REQUEST}])',
    )
    assert bag.import_errors == {}
    task = bag.dags["d"].task_dict["t"]
    assert task.pool == "claude_batches_alpha"
    assert results_asset("alpha", "enrich") in task.outlets


def test_parsing_refuses_a_dag_copied_from_another_teams_folder(policy_file, tmp_path):
    bag = parse(
        tmp_path,
        "alpha/copied_from_beta.py",
        SUBMIT_IMPORT,
        f'ClaudeBatchSubmitOperator(task_id="t", team="beta", job_type="enrich", requests=[{REQUEST}])',
    )
    (error,) = bag.import_errors.values()
    assert "declares team 'beta'" in error and "to team 'alpha'" in error
    assert bag.dags == {}


def test_parsing_refuses_a_subclass_that_replaces_execute(policy_file, tmp_path):
    bag = parse(
        tmp_path,
        "alpha/own_execute.py",
        SUBMIT_IMPORT
        + "\n\nclass Direct(ClaudeBatchSubmitOperator):\n    def execute(self, context):\n        pass\n",
        f'Direct(task_id="t", job_type="enrich", requests=[{REQUEST}])',
    )
    (error,) = bag.import_errors.values()
    assert "overrides the governed submit path (execute)" in error


def test_parsing_refuses_the_official_providers_batch_operator(api, policy_file, tmp_path):
    bag = parse(
        tmp_path,
        "alpha/official.py",
        "from airflow.providers.anthropic.operators.batch import AnthropicBatchOperator",
        f'AnthropicBatchOperator(task_id="t", requests=[{{"custom_id": "a", "params": {REQUEST}}}])',
    )
    (error,) = bag.import_errors.values()
    assert "AnthropicBatchOperator" in error
    assert bag.dags == {}
    assert api.stats()["calls"]["create"] == 0


def test_parsing_refuses_a_dag_file_that_calls_the_api_through_a_hook(policy_file, tmp_path):
    bag = parse(
        tmp_path,
        "alpha/hooked.py",
        "from airflow.sdk import task\nfrom airflow.providers.anthropic.hooks.anthropic import AnthropicHook",
        'task(task_id="direct")(lambda: AnthropicHook().create_batch([]))()',
    )
    (error,) = bag.import_errors.values()
    assert "CB004" in error


def test_the_opt_out_leaves_parsing_to_the_operators_own_checks(policy_file, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__CLUSTER_POLICY", "False")
    bag = parse(
        tmp_path,
        "alpha/official.py",
        "from airflow.providers.anthropic.operators.batch import AnthropicBatchOperator",
        f'AnthropicBatchOperator(task_id="t", requests=[{{"custom_id": "a", "params": {REQUEST}}}])',
    )
    assert bag.import_errors == {}


def test_the_api_refusing_the_key_is_one_paragraph_and_nothing_is_sent(policy_file, store, monkeypatch):
    from airflow_claude_batches.emulator import run_emulator

    with run_emulator(api_key="sk-test-the-right-one") as strict:
        monkeypatch.setenv(
            "AIRFLOW_CONN_ANTHROPIC_DEFAULT",
            json.dumps({"conn_type": "anthropic", "host": strict.base_url, "password": "sk-ant-wrong"}),
        )
        with team_dag("alpha"):
            task = ClaudeBatchSubmitOperator(task_id="t", job_type="enrich", requests=HAIKU, team="alpha")
        with pytest.raises(SubmitRefused) as error:
            execute(task, make_context())
        assert strict.stats()["calls"]["create"] == 0
    message = str(error.value)
    assert "rejected the API key (HTTP 401) while checking account capacity" in message
    assert "'anthropic_default'" in message and message.endswith("Nothing was sent.")
    assert "sk-ant-wrong" not in message and "\n" not in message


def test_an_undeclared_team_runs_end_to_end_and_resumes_in_a_fresh_task(api, policy_file, store):
    """What the DAG processor binds (pool, asset) and the worker derives again after deferral."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    from airflow_claude_batches.governance.cluster_policy import task_policy
    from operator_harness import run_trigger

    def parsed() -> ClaudeBatchSubmitOperator:
        with team_dag("alpha"):
            # A short poll: the trigger's first poll waits a hash-derived share of the interval (48 s of 60).
            task = ClaudeBatchSubmitOperator(
                task_id="t", job_type="enrich", requests=HAIKU, job_id="derived", poll_interval=0.05
            )
        task_policy(task)
        return task

    context = make_context()
    with pytest.raises(TaskDeferred) as deferred:
        execute(parsed(), context)
    api.advance(3600)
    event = asyncio.run(run_trigger(deferred.value.trigger))
    summary = parsed().execute_complete(context, event)
    assert summary["team"] == "alpha" and summary["request_counts"]["succeeded"] == 1
    assert api.stats()["calls"]["create"] == 1
