"""Per-team views: a user sees only the teams whose DAGs the auth manager lets them read."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from fastapi import FastAPI
from fastapi.testclient import TestClient

from airflow_claude_batches.plugins.dashboard import URL_PREFIX, ClaudeBatchesPlugin
from airflow_claude_batches.plugins.visibility import sees_all_teams, visible_teams
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord
from auth_harness import RESTRICTED_USER, RestrictedAuthManager

ALPHA_ONCALL = SimpleAuthManagerUser(username=RESTRICTED_USER, role="viewer")
VIEWER = SimpleAuthManagerUser(username="someone", role="viewer")
ADMIN = SimpleAuthManagerUser(username="platform", role="admin")
TEAM_DAGS = {"alpha": {"alpha_dag"}, "beta": {"beta_dag", "beta_other"}, "adopted": set()}


def test_a_user_denied_one_teams_dags_does_not_see_that_team():
    assert visible_teams(ALPHA_ONCALL, TEAM_DAGS, RestrictedAuthManager()) == {"alpha"}


def test_a_viewer_of_every_dag_sees_every_team_with_dags():
    assert visible_teams(VIEWER, TEAM_DAGS, RestrictedAuthManager()) == {"alpha", "beta"}


def test_the_configured_roles_see_all_teams(monkeypatch):
    assert visible_teams(ADMIN, TEAM_DAGS, RestrictedAuthManager()) is None
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__DASHBOARD_ALL_TEAMS_ROLES", "Op, viewer")
    assert sees_all_teams(ALPHA_ONCALL) and not sees_all_teams(ADMIN)


def test_multi_team_mode_also_needs_team_membership(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    member = SimpleAuthManagerUser(username="someone", role="viewer", teams=["beta"])
    assert visible_teams(member, TEAM_DAGS, RestrictedAuthManager()) == {"beta"}


# --------------------------------------------------------------------------------------- the dashboard


@pytest.fixture
def auth_manager(monkeypatch) -> Iterator[RestrictedAuthManager]:
    """The restricted auth manager as the api-server's configured one."""
    from airflow import settings
    from airflow.api_fastapi.app import _AuthManagerState, create_auth_manager
    from airflow.models.revoked_token import RevokedToken

    RevokedToken.__table__.create(settings.engine, checkfirst=True)
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "auth_harness.RestrictedAuthManager")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
    previous, _AuthManagerState.instance = _AuthManagerState.instance, None
    manager = create_auth_manager()
    assert isinstance(manager, RestrictedAuthManager)
    yield manager
    _AuthManagerState.instance = previous


def put(batch_id: str, team: str) -> None:
    now = datetime.now(timezone.utc)
    Ledger().put(
        LedgerRecord(
            batch_id=batch_id,
            team=team,
            job_type="enrich",
            job_id=f"{team}-secret-job",
            job_key=f"{team}-secret-job",
            dag_id=f"{team}_dag",
            run_id=f"{team}-run",
            request_count=1,
            created_at=now - timedelta(hours=1),
            estimated_cost_usd=1.0,
            results_uri=f"s3://results/{team}/",
        )
    )


def test_the_dashboard_shows_a_restricted_user_only_their_teams(auth_manager, store):
    put("msgbatch_alpha1", "alpha")
    put("msgbatch_beta1", "beta")
    (plugin_app,) = ClaudeBatchesPlugin.fastapi_apps
    server = FastAPI()
    server.mount(plugin_app["url_prefix"], plugin_app["app"])
    client = TestClient(server)
    restricted = {"Authorization": f"Bearer {auth_manager.generate_jwt(ALPHA_ONCALL)}"}
    viewer = {"Authorization": f"Bearer {auth_manager.generate_jwt(VIEWER)}"}

    page = client.get(f"{URL_PREFIX}/", headers=restricted).text
    assert "msgbatch_alpha1" in page
    assert "beta" not in page  # no batch, job, run, spend or results location of beta
    asked = client.get(f"{URL_PREFIX}/api/batches?team=beta", headers=restricted).json()["batches"]
    assert asked == []
    summary = client.get(f"{URL_PREFIX}/api/summary", headers=restricted).json()["teams"]
    assert [s["team"] for s in summary] == ["alpha"]
    charts = client.get(f"{URL_PREFIX}/api/charts", headers=restricted).json()
    assert [s["team"] for s in charts["spend"]] == ["alpha"]

    everyone = client.get(f"{URL_PREFIX}/api/summary", headers=viewer).json()["teams"]
    assert [s["team"] for s in everyone] == ["alpha", "beta"]
