"""An auth manager that denies one user one team's DAGs, for the per-team dashboard views."""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

#: The user alpha's on-call engineer logs in as: a viewer everywhere but on beta's DAGs.
RESTRICTED_USER = "alpha_oncall"
DENIED_DAGS = frozenset({"beta_dag"})


class RestrictedAuthManager(SimpleAuthManager):
    """Airflow's simple auth manager, except that :data:`RESTRICTED_USER` may not read beta's DAGs."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        if user.get_name() == RESTRICTED_USER and details is not None and details.id in DENIED_DAGS:
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
