"""The dashboard on the real api-server: mounted by the plugin, closed without a token, and listing the
ledger's batches once an example DAG has run (the session's run of the examples on the file cluster)."""

from __future__ import annotations

import json

import httpx
import pytest
from tests.integration.airflow_cluster import ADMIN_USER, DAGS_FOLDER, dag_defined_in
from tests.integration.conftest import RunningCluster
from tests.integration.example_runs import Observed

pytestmark = pytest.mark.integration

DAG_ID = "support_ticket_classification"


@pytest.mark.skipif(not dag_defined_in(DAGS_FOLDER, DAG_ID), reason=f"{DAG_ID} not in dags/ yet")
def test_dashboard_needs_an_airflow_token_and_lists_the_ledger(
    file_cluster: RunningCluster, file_runs: dict[str, Observed]
) -> None:
    run_id, run = file_runs[DAG_ID].run_id, file_runs[DAG_ID].run
    assert run["state"] == "success", sorted(file_runs[DAG_ID].states)
    records = [r for r in file_cluster.ledger().records() if r.run_id == run_id]
    assert records, f"no ledger record of {DAG_ID}/{run_id}"

    with httpx.Client(base_url=file_cluster.cluster.api_url, timeout=30) as http:
        page = http.get("/claude-batches/", follow_redirects=False)
        assert page.status_code in (302, 303, 307), page.text[:500]
        assert "/auth/login" in page.headers["location"]
        assert http.get("/claude-batches/api/batches").status_code == 401

        passwords = json.loads(
            (file_cluster.cluster.home / "simple_auth_manager_passwords.json.generated").read_text()
        )
        login = http.post("/auth/token", json={"username": ADMIN_USER, "password": passwords[ADMIN_USER]})
        token = login.raise_for_status().json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}

        for response in (
            http.get("/claude-batches/", headers=bearer),
            http.get("/claude-batches/", cookies={"_token": token}),  # as the UI's iframe sends it
        ):
            assert response.status_code == 200, response.text[:500]
            for record in records:
                assert f'data-batch-id="{record.batch_id}"' in response.text
            for part in (
                'id="cb-teams"',
                'data-team="support"',
                'id="cb-chart-spend"',
                'id="cb-chart-inflight"',
            ):
                assert part in response.text, part

        listed = http.get("/claude-batches/api/batches", params={"team": "support"}, headers=bearer).json()
        ours = {b["batch_id"]: b for b in listed["batches"] if b["run_id"] == run_id}
        assert set(ours) == {r.batch_id for r in records}
        assert all(b["status"] == "ended" and b["team"] == "support" for b in ours.values())
        summary = http.get("/claude-batches/api/summary", headers=bearer).json()
        assert "support" in {s["team"] for s in summary["teams"]}
        charts = http.get("/claude-batches/api/charts", headers=bearer).json()
        assert "support" in {s["team"] for s in charts["spend"]} and len(charts["days"]) == 30

        plugins = http.get("/api/v2/plugins", headers=bearer).json()["plugins"]
        ours_registered = [p for p in plugins if p["name"] == "claude_batches"]
        assert len(ours_registered) == 1, plugins
        assert ours_registered[0]["external_views"][0]["destination"] == "nav"
