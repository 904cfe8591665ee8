"""A DAG's team comes from where it lives: bundle teams in multi-team mode, else the `dags` patterns."""

from __future__ import annotations

import json

import pytest

from airflow_claude_batches.governance.policy import Governance
from airflow_claude_batches.governance.teams import DagLocation, TeamBindingError, derive_team, locate_dag
from operator_harness import team_dag

JOB = {
    "allowed_models": ["claude-haiku-4-5"],
    "allowed_fields": [],
    "max_tokens_cap": 10,
    "max_requests": 1,
    "max_bytes": 100,
    "max_job_cost_usd": 1,
}
GOVERNANCE = Governance.model_validate(
    {
        "teams": {
            "marketing": {"dags": ["marketing/**", "marketing_*.py", {"bundle": "mkt-*"}]},
            "support": {"dags": ["support/*.py", {"bundle": "shared", "path": "tickets/**"}]},
            "greedy": {"dags": [{"bundle": "shared", "path": "**/report.py"}]},
        },
        "job_types": {"enrich": JOB},
    }
)


@pytest.mark.parametrize(
    ("bundle", "path", "team"),
    [
        ("dags-folder", "marketing/nightly.py", "marketing"),
        ("dags-folder", "marketing/deep/er/nightly.py", "marketing"),
        ("dags-folder", "marketing_enrichment.py", "marketing"),
        ("mkt-repo", "anything/at/all.py", "marketing"),
        ("dags-folder", "support/tickets.py", "support"),
        ("shared", "tickets/daily/triage.py", "support"),
        (None, "marketing/nightly.py", "marketing"),
    ],
)
def test_patterns_give_each_dag_one_team(bundle, path, team):
    assert derive_team(GOVERNANCE, DagLocation(bundle, path)) == team


@pytest.mark.parametrize(
    ("bundle", "path", "expected"),
    [
        ("dags-folder", "sub/marketing_enrichment.py", "belongs to no team"),  # anchored at the root
        ("dags-folder", "support/deeper/tickets.py", "belongs to no team"),  # * stays in one folder
        ("dags-folder", "finance/ledger.py", "belongs to no team"),
        ("shared", "tickets/report.py", "matches the 'dags' patterns of teams support, greedy"),
    ],
)
def test_no_team_or_two_teams_is_refused(bundle, path, expected):
    with pytest.raises(TeamBindingError, match=expected):
        derive_team(GOVERNANCE, DagLocation(bundle, path))


def test_a_task_without_a_dag_file_belongs_to_no_team():
    with pytest.raises(TeamBindingError, match="no DAG file"):
        derive_team(GOVERNANCE, None)


def test_multi_team_mode_uses_the_airflow_team_of_the_bundle(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    monkeypatch.setenv(
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
        json.dumps(
            [
                {"name": "mkt", "classpath": "x", "kwargs": {}, "team_name": "marketing"},
                {"name": "ops", "classpath": "x", "kwargs": {}, "team_name": "operations"},
                {"name": "common", "classpath": "x", "kwargs": {}},
            ]
        ),
    )
    # The path patterns play no part: support's folder in marketing's bundle is marketing's.
    assert derive_team(GOVERNANCE, DagLocation("mkt", "support/tickets.py")) == "marketing"
    with pytest.raises(TeamBindingError, match=r"Airflow team 'operations' .* is not registered"):
        derive_team(GOVERNANCE, DagLocation("ops", "x.py"))
    with pytest.raises(TeamBindingError, match="bundle without an Airflow team"):
        derive_team(GOVERNANCE, DagLocation("common", "marketing/x.py"))


def test_the_location_comes_from_airflow_not_from_the_dag():
    from types import SimpleNamespace

    dag = team_dag("marketing", "nightly")
    assert locate_dag(dag) == DagLocation("dags-folder", "marketing/nightly.py")
    ti = SimpleNamespace(bundle_instance=SimpleNamespace(name="mkt-repo"))
    assert locate_dag(dag, ti) == DagLocation("mkt-repo", "marketing/nightly.py")
    assert locate_dag(None) is None
