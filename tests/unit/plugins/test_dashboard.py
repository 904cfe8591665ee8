"""The dashboard plugin: registration, Airflow's own authentication, and what the page and API show.

The app is mounted under ``/claude-batches`` in a parent FastAPI app, as the api-server mounts it.
Tokens are minted by the configured auth manager (Airflow's simple auth manager), exactly as
``POST /auth/token`` mints them, and checked by Airflow's own security dependency.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
from fastapi import FastAPI
from fastapi.testclient import TestClient

from airflow_claude_batches.ledger import Ledger, LedgerRecord, RequestCounts
from airflow_claude_batches.plugin import URL_PREFIX, ClaudeBatchesPlugin, batch_row, team_summaries

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def auth_manager() -> Iterator[BaseAuthManager]:
    """The auth manager the api-server would use (Airflow's simple auth manager), with a stable key."""
    from airflow import settings
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.models.revoked_token import RevokedToken

    # Validation looks the token's id up among revoked tokens: that one table, not a migrated DB.
    RevokedToken.__table__.create(settings.engine, checkfirst=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
        yield create_auth_manager()


@pytest.fixture(scope="module")
def token(auth_manager: BaseAuthManager) -> str:
    """A viewer's JWT, minted as ``POST /auth/token`` mints it."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return auth_manager.generate_jwt(SimpleAuthManagerUser(username="oncall", role="viewer"))


@pytest.fixture
def client(auth_manager: BaseAuthManager) -> TestClient:
    """The plugin's app mounted in a parent app at its prefix, as the api-server mounts it."""
    (app,) = ClaudeBatchesPlugin.fastapi_apps
    server = FastAPI()
    server.mount(app["url_prefix"], app["app"])
    return TestClient(server)


def record(batch_id: str, team: str = "alpha", **changes) -> LedgerRecord:
    fields = {
        "batch_id": batch_id,
        "team": team,
        "job_type": "enrich",
        "job_id": f"{team}-job",
        "job_key": f"{team}-job",
        "dag_id": f"{team}_dag",
        "request_count": 10,
        "created_at": NOW - timedelta(hours=1),
        "expires_at": NOW + timedelta(hours=23),
        "request_counts": RequestCounts(processing=10),
        "estimated_cost_usd": 1.0,
        **changes,
    }
    return LedgerRecord(**fields)


def ended(batch_id: str, team: str = "alpha", **changes) -> LedgerRecord:
    counts = RequestCounts(succeeded=7, errored=2, expired=1)
    return record(
        batch_id,
        team,
        processing_status="ended",
        request_counts=counts,
        ended_at=NOW - timedelta(minutes=30),
        actual_cost_usd=0.25,
        results_uri=f"file:///store/{team}/{batch_id}",
        **changes,
    )


@pytest.fixture
def ledger(store) -> Ledger:
    """alpha: one running batch near its ceiling, one ended with results about to expire unconsumed,
    one consumed; beta: one running batch; a job id that looks like markup."""
    ledger = Ledger()
    ledger.put(record("msgbatch_a1", created_at=NOW - timedelta(hours=21), job_id="<b>alpha</b>"))
    ledger.put(ended("msgbatch_a2", created_at=NOW - timedelta(days=27), expires_at=None))
    ledger.put(ended("msgbatch_a3", created_at=NOW, consumed_at=NOW))
    ledger.put(
        record("msgbatch_b1", team="beta", request_count=4, request_counts=RequestCounts(processing=4))
    )
    return ledger


# ----------------------------------------------------------------------------------------- registration


def test_plugin_registers_once_with_its_app_and_nav_entry() -> None:
    from airflow import plugins_manager

    plugins, errors = plugins_manager._get_plugins()
    ours = [p for p in plugins if p.name == ClaudeBatchesPlugin.name]
    assert len(ours) == 1, [p.source for p in ours]
    assert not any("claude" in str(key) for key in errors), errors
    apps, _ = plugins_manager.get_fastapi_plugins()
    assert [a["url_prefix"] for a in apps if a["url_prefix"] == URL_PREFIX] == [URL_PREFIX]
    (view,) = ours[0].external_views
    assert view["destination"] == "nav" and view["href"] == "claude-batches/"
    # setuptools leaves src/*.egg-info behind, which registers a second distribution; hatchling does not.
    assert not list((REPO / "src").glob("*.egg-info"))


def test_importing_the_plugin_leaves_out_the_api_server() -> None:
    """Task processes import every plugin: the web app and Airflow's security module wait for a request."""
    code = (
        "import sys, airflow_claude_batches.plugin\n"
        "print(sorted(m for m in ('fastapi', 'airflow.api_fastapi.core_api.security') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


# ---------------------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("path", ["/api/summary", "/api/batches"])
def test_api_without_a_token_is_refused(client: TestClient, ledger: Ledger, path: str) -> None:
    response = client.get(URL_PREFIX + path)
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated"}
    assert "msgbatch" not in response.text


def test_page_without_a_token_redirects_to_the_login_page(client: TestClient, ledger: Ledger) -> None:
    response = client.get(f"{URL_PREFIX}/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/auth/login?next=")
    assert "msgbatch" not in response.text


def test_a_forged_token_is_refused(client: TestClient, ledger: Ledger, token: str) -> None:
    header, payload, _ = token.split(".")
    for bad in ("garbage", f"{header}.{payload}.c2lnbmF0dXJl"):
        response = client.get(f"{URL_PREFIX}/api/batches", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 403, bad
        assert "msgbatch" not in response.text


def test_bearer_token_and_ui_cookie_both_open_the_page(
    client: TestClient, ledger: Ledger, token: str
) -> None:
    by_header = client.get(f"{URL_PREFIX}/", headers={"Authorization": f"Bearer {token}"})
    by_cookie = client.get(f"{URL_PREFIX}/", cookies={"_token": token})
    for response in (by_header, by_cookie):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        for batch_id in ("msgbatch_a1", "msgbatch_a2", "msgbatch_a3", "msgbatch_b1"):
            assert batch_id in response.text


# ------------------------------------------------------------------------------------------ what is shown


def test_page_escapes_ledger_values_and_loads_nothing_external(
    client: TestClient, ledger: Ledger, token: str
) -> None:
    page = client.get(f"{URL_PREFIX}/", cookies={"_token": token}).text
    assert "&lt;b&gt;alpha&lt;/b&gt;" in page and "<b>alpha</b>" not in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_team_filter_narrows_page_and_api(client: TestClient, ledger: Ledger, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    page = client.get(f"{URL_PREFIX}/?team=beta", headers=auth).text
    assert "msgbatch_b1" in page and "msgbatch_a1" not in page
    batches = client.get(f"{URL_PREFIX}/api/batches", params={"team": "beta"}, headers=auth).json()["batches"]
    assert [b["batch_id"] for b in batches] == ["msgbatch_b1"]
    both = client.get(f"{URL_PREFIX}/api/summary?team=beta&team=alpha", headers=auth).json()["teams"]
    assert [s["team"] for s in both] == ["alpha", "beta"]
    assert client.get(f"{URL_PREFIX}/api/summary?team=nobody", headers=auth).json()["teams"] == []


def test_summary_counts_in_flight_spend_and_error_ratio(
    client: TestClient, ledger: Ledger, token: str
) -> None:
    summary = client.get(f"{URL_PREFIX}/api/summary", headers={"Authorization": f"Bearer {token}"}).json()
    alpha, beta = summary["teams"]
    assert (alpha["batches"], alpha["batches_in_flight"], alpha["requests_processing"]) == (3, 1, 10)
    # Each batch by its creation time, at its actual cost once known, else its estimate (running a1).
    committed = [(NOW - timedelta(hours=21), 1.0), (NOW - timedelta(days=27), 0.25), (NOW, 0.25)]
    today = sum(cost for created, cost in committed if created.date() == NOW.date())
    month = sum(cost for created, cost in committed if created.strftime("%Y-%m") == NOW.strftime("%Y-%m"))
    assert (alpha["spend_today_usd"], alpha["spend_month_usd"]) == (
        pytest.approx(today),
        pytest.approx(month),
    )
    assert alpha["errored_expired_ratio"] == pytest.approx(6 / 20)  # 2 errored + 1 expired of 10, twice
    assert (beta["batches_in_flight"], beta["requests_processing"], beta["errored_expired_ratio"]) == (
        1,
        4,
        0,
    )


def test_rows_flag_a_batch_near_its_ceiling_and_results_about_to_expire(ledger: Ledger) -> None:
    rows = {r.batch_id: batch_row(r, NOW) for r in ledger.records()}
    assert rows["msgbatch_a1"]["near_ceiling"] and rows["msgbatch_a1"]["age_seconds"] == 21 * 3600
    assert not rows["msgbatch_b1"]["near_ceiling"]
    # Ended: no ceiling applies any more, however old.
    assert not rows["msgbatch_a2"]["near_ceiling"]
    assert rows["msgbatch_a2"]["results_expiring_soon"]  # created 27 days ago: 2 days of results left
    assert not rows["msgbatch_a3"]["results_expiring_soon"]  # fresh, and consumed anyway
    consumed_late = ended("msgbatch_a4", created_at=NOW - timedelta(days=27), consumed_at=NOW)
    assert not batch_row(consumed_late, NOW)["results_expiring_soon"]
    archived = ended("msgbatch_a5", created_at=NOW - timedelta(days=28), archived_at=NOW)
    assert batch_row(archived, NOW)["status"] == "archived"
    assert not batch_row(archived, NOW)["results_expiring_soon"]


def test_page_highlights_what_needs_on_call(client: TestClient, ledger: Ledger, token: str) -> None:
    page = client.get(f"{URL_PREFIX}/?team=alpha", cookies={"_token": token}).text
    rows = {
        line.split("<code>")[2].split("<")[0]: line for line in page.split("<tr")[1:] if "msgbatch_" in line
    }
    # The page's clock is the real one, a few minutes after this module's NOW in a long test run.
    assert re.search(r'class="n alert">21h \d\dm', rows["msgbatch_a1"]), rows["msgbatch_a1"]
    assert rows["msgbatch_a2"].startswith(' class="warn"') and "<td>no</td>" in rows["msgbatch_a2"]
    assert 'class="warn"' not in rows["msgbatch_a3"] and "<td>yes</td>" in rows["msgbatch_a3"]


def test_summaries_of_no_records_are_empty() -> None:
    assert team_summaries([], NOW) == []


def test_waiting_section_and_api_show_every_waiting_job_with_position_and_reason(
    client: TestClient, ledger: Ledger, token: str
) -> None:
    from airflow_claude_batches.admission import AdmissionEntry, AdmissionQueue, ListedBatches

    queue = AdmissionQueue(ledger)
    now = datetime.now(timezone.utc)

    def ask(entry_id: str, count: int, age: float, **kw) -> None:
        entry = AdmissionEntry(
            entry_id=entry_id,
            team=entry_id.split("_")[0],
            job_id=f"<i>{entry_id}</i>",
            job_type="enrich",
            request_count=count,
            enqueued_at=now - timedelta(seconds=age),
            heartbeat_at=now,
            deadline_at=now + timedelta(hours=1),
            **kw,
        )
        queue.admit(entry, ListedBatches(unfinished={"msgbatch_outside": 95}), limit=100, now=now)

    ask("alpha_big", 50, age=600)
    ask("beta_urgent", 10, age=60, priority_rank=0)
    ask("alpha_ok", 1, age=0)  # it would fit (95 + 1), but two jobs rank ahead
    auth = {"Authorization": f"Bearer {token}"}
    rows = client.get(f"{URL_PREFIX}/api/waiting", headers=auth).json()["waiting"]
    assert [(r["position"], r["team"], r["requests"], r["reason"]) for r in rows] == [
        (1, "beta", 10, "account_limit"),
        (2, "alpha", 50, "account_limit"),
        (3, "alpha", 1, "account_limit"),
    ]
    assert rows[1]["waited_seconds"] >= 600 and rows[1]["waiting_since"].startswith(f"{now:%Y-%m-%d}")
    assert rows[2]["detail"] == "2 job(s) ahead in line go first"
    beta = client.get(f"{URL_PREFIX}/api/waiting?team=beta", headers=auth).json()["waiting"]
    assert [r["position"] for r in beta] == [1]
    page = client.get(f"{URL_PREFIX}/", cookies={"_token": token}).text
    waiting = page[page.index("<h2>Waiting</h2>") : page.index("<h2>Batches</h2>")]
    assert "&lt;i&gt;alpha_big&lt;/i&gt;" in waiting and "account limit" in waiting
    assert "2 job(s) ahead in line go first" in waiting


def test_page_says_when_nobody_waits(client: TestClient, ledger: Ledger, token: str) -> None:
    page = client.get(f"{URL_PREFIX}/", cookies={"_token": token}).text
    assert "No job waits for admission." in page


def test_page_reads_as_of_when_refreshes_and_groups_thousands() -> None:
    from airflow_claude_batches.plugin import REFRESH_SECONDS, dashboard_html

    row = {
        "team": "alpha",
        "job_id": "j",
        "job_type": "enrich",
        "batch_id": "msgbatch_big",
        "status": "in_progress",
        "request_count": 100000,
        "request_counts": {"succeeded": 0, "errored": 0, "canceled": 0, "expired": 0, "processing": 100000},
        "created_at": NOW.isoformat(),
        "expires_at": None,
        "age_seconds": 21 * 3600,
        "near_ceiling": True,
        "results_expiring_soon": True,
        "estimated_cost_usd": 1.0,
        "actual_cost_usd": None,
        "results_uri": None,
        "consumed_at": None,
        "results_expire_at": None,
    }
    page = dashboard_html([], [row], [])
    assert f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' in page
    assert re.search(r"as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)
    assert '<td class="n">100,000</td>' in page and "0 / 0 / 0 / 0 / 100,000" in page
    # A red cell inside a yellow row stays red: the more specific rule comes with the alert.
    assert "tr.warn td.alert{background:#fed7d7" in page
