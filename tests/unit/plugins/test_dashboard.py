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
from html.parser import HTMLParser
from pathlib import Path

import pytest
from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
from fastapi import FastAPI
from fastapi.testclient import TestClient

from airflow_claude_batches.plugins.dashboard import URL_PREFIX, ClaudeBatchesPlugin, create_app
from airflow_claude_batches.plugins.dashboard_data import batch_row, team_summaries
from airflow_claude_batches.store.ledger import Ledger, LedgerRecord, RequestCounts

REPO = Path(__file__).resolve().parents[3]
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
    fields = {
        "processing_status": "ended",
        "request_counts": RequestCounts(succeeded=7, errored=2, expired=1),
        "ended_at": NOW - timedelta(minutes=30),
        "actual_cost_usd": 0.25,
        "results_uri": f"file:///store/{team}/{batch_id}",
        **changes,
    }
    return record(batch_id, team, **fields)


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
        "import sys, airflow_claude_batches.plugins.dashboard\n"
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


class _Elements(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside each, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        text: list[str] = []
        self.found.append((tag, {k: v or "" for k, v in attrs}, text))
        if tag not in ("meta", "line", "rect", "br", "input", "link", "path"):
            self._open.append(text)

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("meta", "line", "rect", "br", "input", "link", "path"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for text in self._open:
            text.append(data)


def elements(page: str, tag: str, **wanted: str) -> list[tuple[dict[str, str], str]]:
    """The ``tag`` elements whose attributes include ``wanted`` (``class_`` matches one class)."""
    parser = _Elements()
    parser.feed(page)
    css = wanted.pop("class_", None)
    return [
        (attrs, "".join(text).strip())
        for t, attrs, text in parser.found
        if t == tag
        and all(attrs.get(k.replace("_", "-")) == v for k, v in wanted.items())
        and (css is None or css in attrs.get("class", "").split())
    ]


def cell(page: str, row_attr: str, row_value: str, col: str) -> tuple[dict[str, str], str]:
    """The ``td[data-col=col]`` of the row whose ``row_attr`` is ``row_value``."""
    start = page.index(f'{row_attr}="{row_value}"')
    row = page[start : page.index("</tr>", start)]
    ((attrs, text),) = elements("<tr " + row + "</tr>", "td", data_col=col)
    return attrs, text


POLICY = """
teams:
  gamma: {}
  delta: {daily_budget_usd: 10}
  epsilon: {monthly_budget_usd: 1000}
  zeta: {daily_budget_usd: 1000, monthly_budget_usd: 5000}
job_types:
  enrich:
    allowed_models: [claude-haiku-4-5]
    allowed_fields: []
    max_tokens_cap: 100
    max_requests: 100000
    max_bytes: 10000000
    max_job_cost_usd: 100
    error_ratio_alert: 0.05
"""


@pytest.fixture
def governed(tmp_path, monkeypatch) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", str(path))


@pytest.fixture
def dash(ledger_db, auth_manager: BaseAuthManager, token: str):
    """The dashboard app over a fresh ledger database (SQLite, then PostgreSQL), and a viewer's GET."""
    server = FastAPI()
    server.mount(URL_PREFIX, create_app(ledger_db))
    client = TestClient(server)

    def get(path: str, **params):
        return client.get(URL_PREFIX + path, params=params, cookies={"_token": token})

    return Ledger(ledger_db), get


def test_problem_teams_come_first_coloured_against_their_thresholds(dash, governed) -> None:
    ledger, get = dash
    # gamma: 44.7 % errored, threshold 5 % -> alert. delta: $12.50 of a $10 daily budget -> alert.
    # epsilon: $850 of $1,000 this month -> warn. zeta: healthy, 0 % -> ok.
    ledger.put(ended("msgbatch_g1", "gamma", request_counts=RequestCounts(succeeded=553, errored=447)))
    healthy = RequestCounts(succeeded=10)
    ledger.put(ended("msgbatch_d1", "delta", actual_cost_usd=12.5, request_counts=healthy, created_at=NOW))
    ledger.put(ended("msgbatch_e1", "epsilon", actual_cost_usd=850.0, request_counts=healthy, created_at=NOW))
    ledger.put(ended("msgbatch_z1", "zeta", request_counts=RequestCounts(succeeded=10)))
    page = get("/").text
    rows = [
        (attrs["data-team"], attrs["data-state"])
        for attrs, _ in elements(page, "tr")
        if "data-state" in attrs
    ]
    assert rows[:2] in ([("gamma", "alert"), ("delta", "alert")], [("delta", "alert"), ("gamma", "alert")])
    assert rows[2:] == [("epsilon", "warn"), ("zeta", "ok")]
    ratio, text = cell(page, "data-team", "gamma", "errored-ratio")
    assert (ratio.get("data-level"), text) == ("alert", "44.7\u00a0%")
    assert cell(page, "data-team", "gamma", "threshold")[1] == "5.0\u00a0%"
    used, text = cell(page, "data-team", "delta", "budget-used")
    assert (used.get("data-level"), text) == ("alert", "125.0\u00a0%")
    assert cell(page, "data-team", "delta", "budget")[1] == "$10.00/day"
    assert cell(page, "data-team", "epsilon", "budget-used")[0].get("data-level") == "warn"
    assert "data-level" not in cell(page, "data-team", "zeta", "errored-ratio")[0]
    summary = get("/api/summary").json()["teams"]
    assert [s["team"] for s in summary][2:] == ["epsilon", "zeta"]
    assert summary[-1]["reasons"] == [] and summary[-1]["budget_used"] == pytest.approx(0.25 / 1000)


def test_without_a_policy_the_default_threshold_judges_and_the_page_says_so(dash, monkeypatch) -> None:
    ledger, get = dash
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", "/nonexistent/policy.yaml")
    ledger.put(ended("msgbatch_a1"))  # 30 % errored/expired, default threshold 5 %
    page = get("/").text
    assert [a["data-state"] for a, _ in elements(page, "tr", data_team="alpha") if "data-state" in a] == [
        "alert"
    ]
    assert "No governance file" in page and cell(page, "data-team", "alpha", "budget")[1] == "none"


def test_the_css_lets_a_cell_colour_show_inside_a_coloured_row() -> None:
    """The red of an alert cell must show in a tinted row: a row's state paints the ``tr``, never its
    cells' backgrounds, so no row rule can outrank a cell rule."""
    from airflow_claude_batches.plugins.dashboard import templates

    css = templates().get_template("dashboard.css").render()
    rules = re.findall(r"([^{}]+)\{([^}]*)\}", css)
    for selector, body in rules:
        if "background" in body and "td" in selector:
            assert "tr[" not in selector, selector
    assert any('td[data-level="alert"]' in sel and "--cb-danger-subtle" in body for sel, body in rules)


def test_flagged_batches_come_first_with_counts_in_their_own_columns(dash) -> None:
    ledger, get = dash
    ledger.put(
        record(
            "msgbatch_old",
            created_at=NOW - timedelta(hours=21),
            request_count=123_456,
            request_counts=RequestCounts(processing=100_000, succeeded=23_456),
        )
    )
    ledger.put(ended("msgbatch_expiring", created_at=NOW - timedelta(days=27)))
    for n in range(3):
        ledger.put(ended(f"msgbatch_new{n}", created_at=NOW - timedelta(minutes=n), consumed_at=NOW))
    page = get("/").text
    rows = [(a["data-batch-id"], a["data-flagged"]) for a, _ in elements(page, "tr") if "data-batch-id" in a]
    assert rows == [
        ("msgbatch_old", "true"),
        ("msgbatch_expiring", "true"),
        ("msgbatch_new0", "false"),
        ("msgbatch_new1", "false"),
        ("msgbatch_new2", "false"),
    ]
    columns = ("succeeded", "errored", "canceled", "expired", "processing", "requests", "status")
    texts = [cell(page, "data-batch-id", "msgbatch_old", col)[1] for col in columns]
    assert texts == ["23,456", "0", "0", "0", "100,000", "123,456", "In progress"]
    age = cell(page, "data-batch-id", "msgbatch_old", "age")
    assert age[0].get("data-level") == "alert" and re.fullmatch(r"21h \d\dm", age[1])
    assert cell(page, "data-batch-id", "msgbatch_expiring", "results-expire")[0].get("data-level") == "alert"
    assert cell(page, "data-batch-id", "msgbatch_new0", "status")[1] == "Ended"
    states = {a["data-team"]: a["data-state"] for a, _ in elements(page, "tr") if "data-state" in a}
    assert states == {"alpha": "warn"}  # 0.03 % errored: ok, but two flagged batches


def test_results_show_a_short_path_with_the_full_uri_on_hover_and_copy(dash) -> None:
    ledger, get = dash
    uri = "file:///var/lib/airflow/claude-batches/results/marketing/nightly-enrichment-7f3a/msgbatch_r1"
    ledger.put(ended("msgbatch_r1", results_uri=uri))
    ledger.put(record("msgbatch_r2"))
    page = get("/").text
    start = page.index('data-batch-id="msgbatch_r1"')
    row = page[start : page.index("</tr>", start)]
    ((_span, short),) = elements(row, "span", title=uri)
    assert short == "…/marketing/nightly-enrichment-7f3a/msgbatch_r1/"
    assert [a["data-copy"] for a, _ in elements(row, "button", class_="cb-copy")] == [uri]
    assert cell(page, "data-batch-id", "msgbatch_r2", "results")[1] == "—"


def test_batch_cells_stay_narrow_and_keep_the_full_value_in_a_title(dash) -> None:
    """The batches table fits 1,400 px (issue 12): short dates, short ids, the second facts (job
    type, estimate, when consumed) under the first; every full value is in a title."""
    ledger, get = dash
    created, consumed = NOW - timedelta(hours=3), NOW - timedelta(minutes=5)
    ledger.put(ended("msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", created_at=created, consumed_at=consumed))
    ledger.put(record("msgbatch_run", estimated_cost_usd=6.0))
    page = get("/").text
    row = "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"
    ((_code, shown),) = elements(page, "code", title=row)
    assert shown == "…jWR4ZsDV8d"
    created_cell = cell(page, "data-batch-id", row, "created")[1]
    assert created_cell == f"{created:%m-%d %H:%M}"
    ((time_attrs, _),) = [
        (a, t)
        for a, t in elements(page, "time")
        if a.get("datetime", "").startswith(f"{created:%Y-%m-%dT%H:%M}")
    ]
    assert time_attrs["title"] == time_attrs["datetime"] and datetime.fromisoformat(time_attrs["datetime"])
    assert cell(page, "data-batch-id", row, "cost")[1].split() == ["$0.25", "$1.00"]  # actual, estimated
    assert cell(page, "data-batch-id", "msgbatch_run", "cost")[1].split() == ["—", "$6.00"]
    expire = cell(page, "data-batch-id", row, "results-expire")[1]
    assert expire.endswith(f"{consumed:%m-%d %H:%M}")  # consumed, and when
    assert cell(page, "data-batch-id", "msgbatch_run", "results-expire")[1].endswith("no")
    assert cell(page, "data-batch-id", row, "job")[1].split() == ["alpha-job", "enrich"]


def test_charts_keep_their_pixel_size_and_the_legend_inside() -> None:
    """Charts are drawn at the size they show (never stretched: 11 px text stays 11 px), and the
    spend legend wraps instead of running past the chart's edge."""
    from airflow_claude_batches.plugins.charts import _CHAR_W, spend_svg
    from airflow_claude_batches.plugins.dashboard import render_page

    days = [f"2026-11-{d:02d}" for d in range(1, 31)]
    one = {
        "team": "t",
        "daily_usd": [1.0] * 30,
        "daily_budget_usd": 2.0,
        "monthly_budget_usd": None,
        "budget_mark_usd": 2.0,
    }
    for teams in (1, 2, 4, 9):
        chart = spend_svg({"days": days, "spend": [{**one, "team": f"t{n}"} for n in range(teams)]})
        for item in chart["legend"]:
            assert item["x"] + len(item["label"]) * _CHAR_W <= chart["width"], (teams, item)
        assert chart["legend"][-1]["y"] < chart["height"]
    assert len({item["y"] for item in spend_svg({"days": days, "spend": [one]})["legend"]}) == 3
    assert len({item["y"] for item in spend_svg({"days": days, "spend": [one] * 4})["legend"]}) == 1
    page = render_page(
        {
            "now": NOW,
            "theme": None,
            "teams_filter": [],
            "summaries": [],
            "policy_problem": None,
            "waiting": [],
            "batches": [],
            "page": 1,
            "pages": 1,
            "total": 0,
            "charts": {"as_of": NOW.isoformat(), "days": days, "spend": [one], "hours": [], "in_flight": []},
        }
    )
    for attrs, _ in elements(page, "svg"):
        assert attrs["viewbox"] == f"0 0 {attrs['width']} {attrs['height']}", attrs


def test_numbers_read_as_people_write_them() -> None:
    from airflow_claude_batches.plugins.dashboard_data import (
        count,
        duration,
        human_status,
        percent,
        short_id,
        short_when,
        usd,
    )

    assert [usd(1234.5678), usd(0.004), usd(0), usd(None), usd(-2.5)] == [
        "$1,234.57",
        "<$0.01",
        "$0.00",
        "—",
        "-$2.50",
    ]
    assert (count(1234567), percent(0.447), duration(21 * 3600 + 5 * 60), duration(50 * 3600)) == (
        "1,234,567",
        "44.7\u00a0%",
        "21h 05m",
        "2d 02h",
    )
    assert [short_id("msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"), short_id("msgbatch_abc"), short_id("x" * 11)] == [
        "…jWR4ZsDV8d",
        "abc",
        "x" * 11,
    ]
    assert [short_when("2026-11-28T05:12:33.5Z"), short_when(None)] == ["11-28 05:12", "—"]
    assert [human_status(s) for s in ("in_progress", "canceling", "ended", "archived")] == [
        "In progress",
        "Canceling",
        "Ended",
        "Archived",
    ]


def test_spend_chart_has_a_series_and_budget_mark_per_team(dash, governed) -> None:
    ledger, get = dash
    ledger.put(ended("msgbatch_d1", "delta", actual_cost_usd=12.5, created_at=NOW))
    ledger.put(ended("msgbatch_d2", "delta", actual_cost_usd=4.0, created_at=NOW - timedelta(days=3)))
    ledger.put(ended("msgbatch_d3", "delta", actual_cost_usd=99.0, created_at=NOW - timedelta(days=40)))
    ledger.put(ended("msgbatch_g1", "gamma", actual_cost_usd=1.0, created_at=NOW))
    charts = get("/api/charts").json()
    assert len(charts["days"]) == 30 and charts["days"][-1] == f"{datetime.now(timezone.utc):%Y-%m-%d}"
    delta, gamma = charts["spend"]
    assert (delta["team"], delta["budget_mark_usd"], gamma["team"], gamma["budget_mark_usd"]) == (
        "delta",
        10.0,
        "gamma",
        None,
    )
    assert delta["daily_usd"][-1] == pytest.approx(12.5) and sum(delta["daily_usd"]) == pytest.approx(16.5)
    page = get("/").text
    chart = page[page.index('<svg id="cb-chart-spend"') : page.index("</svg>", page.index("cb-chart-spend"))]
    assert [a["data-team"] for a, _ in elements(chart, "g", class_="cb-series")] == ["delta", "gamma"]
    assert [a["data-team"] for a, _ in elements(chart, "line", class_="cb-budget") if "data-team" in a] == [
        "delta"
    ]
    # Today's $12.50 is over the $10 daily budget; the $4 three days ago is not.
    bars = [a["class"] for a, _ in elements(chart, "rect", class_="cb-bar")]
    assert sorted(bars) == ["cb-bar", "cb-bar", "cb-bar cb-over"] and elements(chart, "g", class_="cb-legend")


def test_in_flight_chart_follows_the_status_history(dash) -> None:
    from sqlalchemy import insert

    from airflow_claude_batches.store import schema

    ledger, get = dash
    ledger.put(
        ended(
            "msgbatch_h1",
            "beta",
            created_at=NOW - timedelta(hours=6),
            request_counts=RequestCounts(succeeded=100),
        )
    )
    hour = NOW.replace(minute=30, second=0, microsecond=0)
    with ledger.db.write() as conn:
        for hours_ago, processing in ((5, 100), (3, 40), (1, 0)):
            conn.execute(
                insert(schema.batch_status_history).values(
                    batch_id="msgbatch_h1",
                    observed_at=hour - timedelta(hours=hours_ago),
                    processing_status="in_progress",
                    processing=processing,
                    succeeded=100 - processing,
                    errored=0,
                    canceled=0,
                    expired=0,
                )
            )
    ledger.put(record("msgbatch_a1", request_counts=RequestCounts(processing=7)))  # in flight now
    charts = get("/api/charts").json()
    by_team = {s["team"]: s["processing"] for s in charts["in_flight"]}
    hours = charts["hours"]
    at = {h: i for i, h in enumerate(hours)}

    def level(team: str, hours_ago: int) -> int:
        start = (hour - timedelta(hours=hours_ago)).replace(minute=0)
        return by_team[team][at[start.isoformat()]]

    assert [level("beta", h) for h in (6, 5, 4, 3, 2, 1)] == [0, 100, 100, 40, 40, 0]
    assert by_team["beta"][-1] == 0 and by_team["alpha"][-1] == 7
    page = get("/").text
    chart = page[page.index('<svg id="cb-chart-inflight"') :]
    assert [a["data-team"] for a, _ in elements(chart, "g", class_="cb-series")] == ["alpha", "beta"]
    assert {a["data-team"] for a, _ in elements(chart, "g") if "data-team" in a} == {"alpha", "beta"}


def test_empty_charts_still_render_and_say_so(dash) -> None:
    _, get = dash
    page = get("/").text
    for chart_id in ("cb-chart-spend", "cb-chart-inflight"):
        start = page.index(f'<svg id="{chart_id}"')
        chart = page[start : page.index("</svg>", start)]
        assert [t for _, t in elements(chart, "text", class_="cb-empty")] == ["No data in the last 30 days"]
    assert get("/api/charts").json()["spend"] == []
    assert elements(page, "p", class_="cb-empty")  # no teams, nobody waiting, no batches


def test_theme_follows_the_airflow_ui_or_the_query(dash) -> None:
    _, get = dash
    followed = get("/").text
    ((html_attrs, _),) = elements(followed, "html")
    assert html_attrs["data-theme"] == "light"
    assert 'localStorage.getItem("theme")' in followed and "prefers-color-scheme" in followed
    for theme in ("dark", "light"):
        forced = get("/", theme=theme).text
        assert elements(forced, "html")[0][0]["data-theme"] == theme
        assert "localStorage" not in forced
    assert 'html[data-theme="dark"]' in followed  # the dark palette is there to switch to


@pytest.mark.parametrize("query", [{"theme": "bogus"}, {"page": "-1"}, {"page": "0"}, {"page": "x"}])
def test_bad_query_input_gets_a_clear_422(dash, query) -> None:
    _, get = dash
    response = get("/", **query)
    assert response.status_code == 422
    (field,) = {error["loc"][-1] for error in response.json()["detail"]}
    assert field == next(iter(query))


def test_hostile_names_come_out_escaped(dash) -> None:
    ledger, get = dash
    ledger.put(
        record(
            "msgbatch_x1",
            team="<b>t</b>",
            job_id="<script>alert(1)</script>",
            job_type="<i>jt</i>",
            results_uri='file:///r/"><script>x</script>/msgbatch_x1',
        )
    )
    page = get("/").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>t</b>" not in page and "<i>jt</i>" not in page and "<script>x</script>" not in page
    assert [a["data-team"] for a, _ in elements(page, "tr") if "data-state" in a] == ["<b>t</b>"]
    # Only our own inline scripts; nothing loaded from anywhere.
    assert not re.search(r"<script[^>]*\bsrc=", page) and "http://" not in page and "https://" not in page


def test_team_filter_narrows_page_api_and_charts(dash) -> None:
    ledger, get = dash
    ledger.put(ended("msgbatch_a1"))
    ledger.put(record("msgbatch_b1", team="beta"))
    page = get("/", team="beta").text
    assert "msgbatch_b1" in page and "msgbatch_a1" not in page
    assert [b["batch_id"] for b in get("/api/batches", team="beta").json()["batches"]] == ["msgbatch_b1"]
    assert [s["team"] for s in get("/api/charts", team="beta").json()["spend"]] == ["beta"]
    assert get("/api/summary", team="nobody").json()["teams"] == []


def test_summary_counts_in_flight_spend_and_error_ratio(dash) -> None:
    ledger, get = dash
    ledger.put(record("msgbatch_a1", created_at=NOW - timedelta(hours=21)))
    ledger.put(ended("msgbatch_a2", created_at=NOW - timedelta(days=27), expires_at=None))
    ledger.put(ended("msgbatch_a3", created_at=NOW, consumed_at=NOW))
    ledger.put(
        record("msgbatch_b1", team="beta", request_count=4, request_counts=RequestCounts(processing=4))
    )
    by_team = {s["team"]: s for s in get("/api/summary").json()["teams"]}
    alpha, beta = by_team["alpha"], by_team["beta"]
    assert (alpha["batches"], alpha["batches_in_flight"], alpha["requests_processing"]) == (3, 1, 10)
    committed = [(NOW - timedelta(hours=21), 1.0), (NOW - timedelta(days=27), 0.25), (NOW, 0.25)]
    today = sum(cost for created, cost in committed if created.date() == NOW.date())
    month = sum(cost for created, cost in committed if created.strftime("%Y-%m") == NOW.strftime("%Y-%m"))
    assert (alpha["spend_today_usd"], alpha["spend_month_usd"]) == (
        pytest.approx(today),
        pytest.approx(month),
    )
    assert alpha["errored_expired_ratio"] == pytest.approx(6 / 20)  # 2 errored + 1 expired of 10, twice
    assert (alpha["near_ceiling"], alpha["results_expiring"]) == (1, 1)
    assert (beta["batches_in_flight"], beta["requests_processing"], beta["errored_expired_ratio"]) == (
        1,
        4,
        0,
    )


def test_rows_flag_a_batch_near_its_ceiling_and_results_about_to_expire() -> None:
    rows = {
        r.batch_id: batch_row(r, NOW)
        for r in (
            record("msgbatch_a1", created_at=NOW - timedelta(hours=21)),
            ended("msgbatch_a2", created_at=NOW - timedelta(days=27), expires_at=None),
            ended("msgbatch_a3", created_at=NOW, consumed_at=NOW),
            record("msgbatch_b1", team="beta"),
        )
    }
    assert rows["msgbatch_a1"]["near_ceiling"] and rows["msgbatch_a1"]["age_seconds"] == 21 * 3600
    assert not rows["msgbatch_b1"]["near_ceiling"] and not rows["msgbatch_b1"]["flagged"]
    assert not rows["msgbatch_a2"]["near_ceiling"]  # ended: no ceiling applies any more
    assert rows["msgbatch_a2"]["results_expiring_soon"] and rows["msgbatch_a2"]["flagged"]
    assert not rows["msgbatch_a3"]["results_expiring_soon"]
    consumed_late = ended("msgbatch_a4", created_at=NOW - timedelta(days=27), consumed_at=NOW)
    assert not batch_row(consumed_late, NOW)["results_expiring_soon"]
    archived = ended("msgbatch_a5", created_at=NOW - timedelta(days=28), archived_at=NOW)
    assert batch_row(archived, NOW)["status"] == "archived"
    assert batch_row(archived, NOW)["status_label"] == "Archived"
    assert not batch_row(archived, NOW)["results_expiring_soon"]


def test_summaries_of_no_records_are_empty() -> None:
    assert team_summaries([], NOW) == []


def test_page_reads_as_of_and_refreshes(dash) -> None:
    from airflow_claude_batches.plugins.dashboard import REFRESH_SECONDS

    _, get = dash
    page = get("/").text
    assert f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' in page
    ((time_attrs, text),) = elements(page, "time", id="cb-as-of")
    as_of = datetime.fromisoformat(time_attrs["datetime"])
    assert abs((as_of - datetime.now(timezone.utc)).total_seconds()) < 600
    assert text == f"{as_of:%Y-%m-%d %H:%M:%S} UTC"


def test_waiting_section_and_api_show_every_waiting_job_with_position_and_reason(dash) -> None:
    from airflow_claude_batches.capacity.admission import AdmissionEntry, AdmissionQueue, ListedBatches

    ledger, get = dash
    ledger.put(record("msgbatch_a1"))  # a viewer sees the teams whose DAGs they may read
    ledger.put(record("msgbatch_b1", team="beta"))
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
    rows = get("/api/waiting").json()["waiting"]
    assert [(r["position"], r["team"], r["requests"], r["reason"]) for r in rows] == [
        (1, "beta", 10, "account_limit"),
        (2, "alpha", 50, "account_limit"),
        (3, "alpha", 1, "account_limit"),
    ]
    assert rows[1]["waited_seconds"] >= 600 and rows[1]["waiting_since"].startswith(f"{now:%Y-%m-%d}")
    assert rows[2]["detail"] == "2 job(s) ahead in line go first"
    assert [r["position"] for r in get("/api/waiting", team="beta").json()["waiting"]] == [1]
    page = get("/").text
    waiting = page[page.index('<table id="cb-waiting"') : page.index("</table>", page.index("cb-waiting"))]
    assert "&lt;i&gt;alpha_big&lt;/i&gt;" in waiting and "account limit" in waiting
    assert [a["data-team"] for a, _ in elements(waiting, "tr") if "data-team" in a] == [
        "beta",
        "alpha",
        "alpha",
    ]
    assert "No job waits for admission." not in page


def test_page_says_when_nobody_waits(dash) -> None:
    _, get = dash
    page = get("/").text
    assert [t for _, t in elements(page, "p", class_="cb-empty") if "admission" in t] == [
        "No job waits for admission."
    ]
    assert elements(page, "table", id="cb-waiting")


def test_the_installed_package_finds_its_templates() -> None:
    """The templates are package data: importlib finds them where the package is installed, and the
    wheel build (hatchling, the whole package folder) ships them."""
    from importlib.resources import files

    import tomllib

    folder = files("airflow_claude_batches.plugins") / "templates"
    assert {p.name for p in folder.iterdir()} >= {"dashboard.html", "charts.html", "dashboard.css"}
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["src/airflow_claude_batches"]
    assert not any("templates" in p or "*.html" in p for p in wheel.get("exclude", []))


def test_chart_data_is_reused_for_a_while_then_read_again(dash, monkeypatch) -> None:
    """A month of history is the page's costliest read: a page refreshing every minute reuses it."""

    ledger, get = dash
    ledger.put(ended("msgbatch_a1", created_at=NOW))
    ledger.put(ended("msgbatch_b0", "beta", created_at=NOW - timedelta(days=40)))  # beta is visible already
    first = get("/api/charts").json()
    ledger.put(ended("msgbatch_b1", "beta", created_at=NOW))
    assert get("/api/charts").json()["as_of"] == first["as_of"]
    assert [s["team"] for s in get("/api/charts").json()["spend"]] == ["alpha"]
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__DASHBOARD_CHARTS_SECONDS", "0")  # read on every view
    assert [s["team"] for s in get("/api/charts").json()["spend"]] == ["alpha", "beta"]
