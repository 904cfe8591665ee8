"""
Which teams' batches a dashboard user may see: the teams whose DAGs the auth manager lets them read.

The dashboard shows spend, job and run ids and where results are: what a team's DAGs produce. So
a user sees a team only if the configured auth manager authorizes them to read (``GET``) every DAG
that team's batches came from (``is_authorized_dag``), and, in Airflow's multi-team mode, only if
they are a member of the team (``is_authorized_team``). Users with one of the roles in
``[claude_batches] dashboard_all_teams_roles`` (default ``Admin``) see every team. A team whose
batches name no DAG (adopted or unmanaged ones) is shown only to those users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf

from airflow_claude_batches.governance.teams import multi_team_mode

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager


__all__ = ["sees_all_teams", "visible_teams"]


def _roles(user: Any) -> set[str]:
    """The user's role names, whatever the auth manager: ``role`` (simple) or ``roles`` (FAB)."""
    names = {getattr(user, "role", None)}
    names.update(getattr(role, "name", role) for role in getattr(user, "roles", None) or [])
    return {str(name).casefold() for name in names if name}


def sees_all_teams(user: Any) -> bool:
    """Whether ``user`` has a role of ``[claude_batches] dashboard_all_teams_roles``."""
    configured = conf.get("claude_batches", "dashboard_all_teams_roles", fallback="Admin")
    wanted = {role.strip().casefold() for role in configured.split(",") if role.strip()}
    return bool(wanted & _roles(user))


def visible_teams(
    user: Any, team_dags: Mapping[str, Iterable[str]], auth_manager: BaseAuthManager | None = None
) -> frozenset[str] | None:
    """
    The teams ``user`` may see, or ``None`` for all of them.

    :param team_dags: each team's DAG ids (:meth:`~airflow_claude_batches.store.ledger.Ledger.team_dags`).
    :param auth_manager: the configured one (``get_auth_manager()``) unless given.
    """
    if sees_all_teams(user):
        return None
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails, TeamDetails

    if auth_manager is None:
        from airflow.api_fastapi.app import get_auth_manager

        auth_manager = get_auth_manager()
    multi_team = multi_team_mode()
    visible = set()
    for team, dag_ids in team_dags.items():
        dags = set(dag_ids)
        if not dags:
            continue
        if multi_team and not auth_manager.is_authorized_team(
            method="GET", user=user, details=TeamDetails(name=team)
        ):
            continue
        team_name = team if multi_team else None
        if all(
            auth_manager.is_authorized_dag(
                method="GET", user=user, details=DagDetails(id=dag, team_name=team_name)
            )
            for dag in sorted(dags)
        ):
            visible.add(team)
    return frozenset(visible)
