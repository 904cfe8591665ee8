"""The dashboard as on-call sees it: headless Chromium against the real api-server, signed in through
Airflow's own login form, with a problem planted in the cluster's ledger.

Planted (docs/dashboard.md explains what each looks like):

- marketing: 44.7 % of its requests errored or expired, its job type (enrichment) alerts at 5 %;
  one batch's results under a long ``file://`` path;
- support: $42 of its $50 daily budget spent today (84 %) and a batch running for 21 h of its 24 h
  ceiling.

The checks follow the DOM contract of the page (table and chart ids, ``data-*`` attributes) and what
a person sees (computed colours, no sideways scrolling at 1,400 px); the light and dark screenshots
land in ``docs/img/`` for docs/dashboard.md.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.remote.webelement import WebElement
from sqlalchemy import delete, insert
from tests.integration.airflow_cluster import ADMIN_USER, REPO
from tests.integration.browser import (
    chromium,
    evidence,
    full_page_png,
    is_red,
    luminance,
    shown_colours,
    wait_css,
    wait_url,
)
from tests.integration.conftest import ClusterManager, RunningCluster

from airflow_claude_batches.governance.ids import job_key
from airflow_claude_batches.store import schema
from airflow_claude_batches.store.ledger import LedgerRecord, RequestCounts

pytestmark = pytest.mark.integration

DASHBOARD = "/claude-batches/"
#: Where the Airflow UI shows the plugin's external view (``url_route`` of ClaudeBatchesPlugin).
UI_VIEW = "/plugin/claude-batches"
SCREENSHOTS = REPO / "docs" / "img"
ALERT_TEAM, WARN_TEAM = "marketing", "support"


@dataclass(frozen=True)
class Planted:
    """The batches put into the ledger: ids to find their rows, and the long results URI."""

    failing_batch: str
    near_ceiling_batch: str
    results_uri: str
    batch_ids: tuple[str, ...]


def _record(team: str, job_type: str, job_id: str, batch_id: str, **fields: object) -> LedgerRecord:
    return LedgerRecord.model_validate(
        {
            "batch_id": batch_id,
            "team": team,
            "job_type": job_type,
            "job_id": job_id,
            "job_key": job_key(job_id),
            "dag_id": f"{team}_dashboard_browser",
            "task_id": "submit",
            **fields,
        }
    )


def plant(running: RunningCluster, now: datetime) -> Planted:
    """Write the problem batches (and the status history the in-flight chart draws) to the ledger."""
    tag = uuid.uuid4().hex[:10]
    job_id = "catalog-refresh-emea-apac-q3-full-product-descriptions"
    failing = f"msgbatch_browser_{tag}_failing"
    older = f"msgbatch_browser_{tag}_twodays"
    near_ceiling = f"msgbatch_browser_{tag}_ceiling"
    results_uri = f"{running.results_root}/marketing/{job_key(job_id)}/{failing}"

    def counts(total: int, **kinds: int) -> RequestCounts:
        return RequestCounts(succeeded=total - sum(kinds.values()), **kinds)

    started = now - timedelta(hours=3)
    marketing = [
        # 44.7 % errored + expired in every marketing batch, so in the team's ratio too.
        _record(
            "marketing",
            "enrichment",
            job_id,
            failing,
            request_count=10_000,
            processing_status="ended",
            created_at=started,
            ended_at=now - timedelta(hours=1),
            expires_at=started + timedelta(hours=24),
            request_counts=counts(10_000, errored=4_000, expired=470),
            estimated_cost_usd=92.5,
            actual_cost_usd=61.25,
            results_uri=results_uri,
        ),
        _record(
            "marketing",
            "enrichment",
            f"{job_id}-2",
            older,
            request_count=2_000,
            processing_status="ended",
            created_at=now - timedelta(days=2),
            ended_at=now - timedelta(days=2, hours=-2),
            request_counts=counts(2_000, errored=800, expired=94),
            estimated_cost_usd=150.0,
            actual_cost_usd=118.4,
            results_uri=f"{running.results_root}/marketing/{job_key(job_id + '-2')}/{older}",
        ),
    ]
    support = [
        # 21 h into its 24 h: on-call has 3 h to act.
        _record(
            "support",
            "classification",
            "tickets-backlog",
            near_ceiling,
            request_count=3_000,
            created_at=now - timedelta(hours=21),
            expires_at=now + timedelta(hours=3),
            request_counts=RequestCounts(processing=1_800, succeeded=1_200),
            estimated_cost_usd=6.0,
        ),
        # $42 of the $50 daily budget, spent within the current UTC day.
        _record(
            "support",
            "classification",
            "tickets-today",
            f"msgbatch_browser_{tag}_today",
            request_count=3_000,
            processing_status="ended",
            created_at=now - timedelta(minutes=2),
            ended_at=now - timedelta(minutes=1),
            request_counts=counts(3_000),
            estimated_cost_usd=45.0,
            actual_cost_usd=42.0,
        ),
    ]
    records = marketing + support
    ledger = running.ledger()
    ledger.put_many(records)

    def point(batch_id: str, at: datetime, status: str, seen: RequestCounts) -> dict[str, object]:
        return {"batch_id": batch_id, "observed_at": at, "processing_status": status, **seen.model_dump()}

    # What the poller saw along the way (put() recorded only the present): each batch in flight from
    # its creation until it ended; the running one half done 10 h ago.
    history = [
        point(r.batch_id, r.created_at, "in_progress", RequestCounts(processing=r.request_count))
        for r in records
    ]
    history += [point(r.batch_id, r.ended_at, "ended", r.request_counts) for r in records if r.ended_at]
    history.append(
        point(
            near_ceiling,
            now - timedelta(hours=10),
            "in_progress",
            RequestCounts(processing=2_400, succeeded=600),
        )
    )
    with ledger.db.write() as conn:
        conn.execute(insert(schema.batch_status_history), history)
    return Planted(failing, near_ceiling, results_uri, tuple(r.batch_id for r in records))


def unplant(running: RunningCluster, planted: Planted) -> None:
    """Remove the planted batches: later tests of the session see the ledger their DAGs made."""
    with running.ledger().db.write() as conn:
        ids = list(planted.batch_ids)
        conn.execute(
            delete(schema.batch_status_history).where(schema.batch_status_history.c.batch_id.in_(ids))
        )
        conn.execute(delete(schema.batches).where(schema.batches.c.batch_id.in_(ids)))


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(clusters: ClusterManager) -> RunningCluster:
    return clusters.get("file")


@pytest.fixture(scope="module")
def planted(cluster: RunningCluster) -> Iterator[Planted]:
    found = plant(cluster, datetime.now(timezone.utc))
    yield found
    unplant(cluster, found)


@pytest.fixture(scope="module")
def browser_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chromium")


@pytest.fixture(scope="module")
def signed_in(cluster: RunningCluster, planted: Planted, browser_logs: Path) -> Iterator[Chrome]:
    """One Chromium, signed in as the admin through the login form, for the page checks."""
    driver = chromium(browser_logs)
    try:
        with evidence(driver, browser_logs, "sign-in"):
            sign_in(driver, cluster, cluster.cluster.api_url + DASHBOARD)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def failures(tmp_path: Path) -> Path:
    """Where a failing test's screenshot and page source go (its pytest tmp dir)."""
    return tmp_path


def admin_password(running: RunningCluster) -> str:
    passwords = json.loads(
        (running.cluster.home / "simple_auth_manager_passwords.json.generated").read_text()
    )
    return str(passwords[ADMIN_USER])


def sign_in(driver: Chrome, running: RunningCluster, target: str) -> None:
    """Open ``target`` signed out: Airflow's login page must come, then ``target`` once signed in."""
    driver.get(target)
    base = running.cluster.api_url
    login_url = wait_url(
        driver, f"{base}/auth/login", f"opening {target} signed out should lead to the login page"
    )
    next_urls = parse_qs(urlsplit(login_url).query).get("next", [])
    assert next_urls and next_urls[0].startswith(target), (
        f"the login page should send the user back to {target}, its next= is {next_urls}"
    )
    wait_css(driver, "input[name=username]", "the login form's username field").send_keys(ADMIN_USER)
    wait_css(driver, "input[name=password]", "the login form's password field").send_keys(
        admin_password(running)
    )
    wait_css(driver, "button[type=submit]:not([disabled])", "the enabled Sign in button").click()
    wait_url(driver, target, "after signing in, the browser should be back where it started")


# --------------------------------------------------------------------------------------------- helpers


def open_dashboard(driver: Chrome, running: RunningCluster, query: str = "") -> None:
    driver.get(running.cluster.api_url + DASHBOARD + query)
    wait_css(driver, "table#cb-teams tbody tr", "the teams table with rows")


def attr(element: WebElement, name: str) -> str:
    """An attribute's value, "" when absent."""
    return element.get_attribute(name) or ""


def rows(driver: Chrome, css: str) -> list[WebElement]:
    return driver.find_elements("css selector", css)


def cell(row: WebElement, column: str, what: str) -> WebElement:
    found = row.find_elements("css selector", f'td[data-col="{column}"]')
    assert found, f'{what}: no td[data-col="{column}"] in the row; row HTML: {attr(row, "outerHTML")[:800]}'
    return found[0]


def team_row(driver: Chrome, team: str) -> WebElement:
    found = rows(driver, f'table#cb-teams tbody tr[data-team="{team}"]')
    listed = [attr(r, "data-team") for r in rows(driver, "table#cb-teams tbody tr")]
    assert len(found) == 1, (
        f"expected one row of team {team} in table#cb-teams, found {len(found)}; rows: {listed}"
    )
    return found[0]


def number(text: str) -> int:
    """A count as displayed ("5,530") as an int; the thousands separator is part of the check."""
    assert re.fullmatch(r"\d{1,3}(,\d{3})*", text.strip()), f"not a count with thousands separators: {text!r}"
    return int(text.replace(",", ""))


# ------------------------------------------------------------------------------------------------ tests


def test_signed_out_visitor_is_sent_to_login_and_back(
    cluster: RunningCluster, planted: Planted, browser_logs: Path, failures: Path
) -> None:
    # `planted` before the first page view: a deployment reuses the charts' data for 5 minutes
    # ([claude_batches] dashboard_charts_seconds; 0 in the harness, as earlier tests view the page too).
    driver = chromium(browser_logs)
    try:
        with evidence(driver, failures, "login"):
            sign_in(driver, cluster, cluster.cluster.api_url + DASHBOARD)
            assert driver.get_cookie("_token"), "signed in, but the browser holds no _token cookie"
            heading = wait_css(driver, "h1", "the dashboard's heading").text
            assert heading == "Claude batches", f"signed in, the page's heading is {heading!r}"
    finally:
        driver.quit()


def test_teams_table_puts_the_problem_team_first_in_the_alert_colour(
    signed_in: Chrome, cluster: RunningCluster, failures: Path
) -> None:
    driver = signed_in
    with evidence(driver, failures, "teams"):
        open_dashboard(driver, cluster, "?theme=light")
        listed = [
            (attr(r, "data-team"), attr(r, "data-state")) for r in rows(driver, "table#cb-teams tbody tr")
        ]
        assert listed[0] == (ALERT_TEAM, "alert"), (
            f"the first team row should be {ALERT_TEAM}, alert; rows: {listed}"
        )
        states = [state for _, state in listed]
        rank = {"alert": 0, "warn": 1, "ok": 2}
        assert all(s in rank for s in states), f"data-state must be alert, warn or ok; rows: {listed}"
        assert states == sorted(states, key=rank.__getitem__), f"rows not ordered alert, warn, ok: {listed}"
        assert (WARN_TEAM, "warn") in listed, (
            f"{WARN_TEAM} (84 % of its daily budget, a batch at 21 h) should warn: {listed}"
        )

        alert = team_row(driver, ALERT_TEAM)
        ratio = cell(alert, "errored-ratio", f"{ALERT_TEAM}'s errored/expired ratio")
        assert "44.7" in ratio.text, (
            f"{ALERT_TEAM}'s errored-ratio cell should read 44.7 %, reads {ratio.text!r}"
        )
        threshold = cell(alert, "threshold", f"{ALERT_TEAM}'s alert threshold").text
        assert re.search(r"\b5(\.0+)?\s?%", threshold), (
            f"{ALERT_TEAM}'s threshold cell should read 5 %: {threshold!r}"
        )
        colours = shown_colours(driver, ratio)
        assert is_red(colours["background"]) or is_red(colours["color"]), (
            f"{ALERT_TEAM}'s errored-ratio cell should show the alert colour (red), computed: {colours}"
        )

        warn = team_row(driver, WARN_TEAM)
        used = cell(warn, "budget-used", f"{WARN_TEAM}'s share of its budget").text
        assert re.search(r"\b8[45](\.\d+)?\s?%", used), (
            f"{WARN_TEAM} spent $42 of $50 today: expected 84 %, got {used!r}"
        )
        assert "50" in cell(warn, "budget", f"{WARN_TEAM}'s budget").text
        warn_colours = shown_colours(driver, cell(warn, "errored-ratio", f"{WARN_TEAM}'s ratio"))
        assert not is_red(warn_colours["background"]), (
            f"{WARN_TEAM}'s errored ratio (0 %, under 2 %) must not show the alert colour, "
            f"computed: {warn_colours}"
        )
        for column in (
            "team",
            "in-flight",
            "processing",
            "spend-today",
            "spend-month",
            "budget",
            "budget-used",
        ):
            cell(alert, column, f"{ALERT_TEAM}'s row")


def test_batches_table_puts_the_flagged_batch_first_with_readable_cells(
    signed_in: Chrome, cluster: RunningCluster, planted: Planted, failures: Path
) -> None:
    driver = signed_in
    with evidence(driver, failures, "batches"):
        open_dashboard(driver, cluster)
        listed = [
            (attr(r, "data-batch-id"), attr(r, "data-flagged"))
            for r in rows(driver, "table#cb-batches tbody tr")
        ]
        assert listed, "table#cb-batches has no rows"
        assert listed[0] == (planted.near_ceiling_batch, "true"), (
            f"the batch 21 h into its 24 h should be first and flagged; rows: {listed}"
        )
        flags = [flag for _, flag in listed]
        assert flags == sorted(flags, key=lambda f: f != "true"), f"flagged batches not on top: {listed}"

        first = rows(driver, "table#cb-batches tbody tr")[0]
        status = cell(first, "status", "the flagged batch's status").text.strip()
        assert status == "In progress", f"status should be human (In progress), reads {status!r}"
        assert number(cell(first, "processing", "the flagged batch").text) == 1_800

        failing = driver.find_element(
            "css selector", f'table#cb-batches tr[data-batch-id="{planted.failing_batch}"]'
        )
        expected = {"succeeded": 5_530, "errored": 4_000, "canceled": 0, "expired": 470, "processing": 0}
        seen = {kind: number(cell(failing, kind, f"the {kind} count").text) for kind in expected}
        assert seen == expected, (
            f"counts of {planted.failing_batch} in their columns: {seen}, expected {expected}"
        )

        results = cell(failing, "results", "the results location")
        spans = results.find_elements("css selector", "span[title]")
        assert spans, f"the results cell should hold a <span title=FULL URI>: {attr(results, 'outerHTML')}"
        assert attr(spans[0], "title") == planted.results_uri, (
            f"the results span's title should be the full URI {planted.results_uri!r}, "
            f"is {attr(spans[0], 'title')!r}"
        )
        shown = spans[0].text.strip()
        assert shown and len(shown) < len(planted.results_uri), (
            f"the results cell should show a short path, shows {shown!r} (full: {planted.results_uri!r})"
        )
        copy = results.find_elements("css selector", "button.cb-copy")
        assert copy and attr(copy[0], "data-copy") == planted.results_uri, (
            "a button.cb-copy with data-copy=the full URI should sit in the results cell: "
            f"{attr(results, 'outerHTML')}"
        )
        waiting = rows(driver, "table#cb-waiting") + rows(driver, "p.cb-empty")
        assert waiting, "neither the waiting line (table#cb-waiting) nor its empty note (p.cb-empty) is shown"
        as_of = wait_css(driver, "time#cb-as-of", "the as-of time").get_attribute("datetime")
        assert as_of and datetime.fromisoformat(as_of.replace("Z", "+00:00")).tzinfo, (
            f"time#cb-as-of should carry an ISO-8601 datetime with a zone, has {as_of!r}"
        )


@pytest.mark.parametrize("chart", ["cb-chart-spend", "cb-chart-inflight"])
def test_charts_draw_a_series_per_team(
    signed_in: Chrome, cluster: RunningCluster, chart: str, failures: Path
) -> None:
    driver = signed_in
    with evidence(driver, failures, chart):
        open_dashboard(driver, cluster)
        svg = wait_css(driver, f"svg#{chart}", f"the chart {chart}")
        assert svg.size["width"] > 0 and svg.size["height"] > 0, f"svg#{chart} has no size: {svg.size}"
        assert not svg.find_elements("css selector", "text.cb-empty"), f"svg#{chart} says it has no data"
        assert svg.find_elements("css selector", ".cb-legend"), f"svg#{chart} has no legend (.cb-legend)"
        for team in (ALERT_TEAM, WARN_TEAM):
            series = svg.find_elements("css selector", f'g.cb-series[data-team="{team}"]')
            teams = [attr(g, "data-team") for g in svg.find_elements("css selector", "g.cb-series")]
            assert len(series) == 1, f"svg#{chart} should have one g.cb-series for {team}; series: {teams}"
            box = driver.execute_script(
                "const b = arguments[0].getBBox(); return [b.width, b.height];", series[0]
            )
            assert box[0] > 0 or box[1] > 0, f"{team}'s series in svg#{chart} draws nothing (bbox {box})"
            if chart == "cb-chart-spend":
                assert svg.find_elements("css selector", f'.cb-budget[data-team="{team}"]'), (
                    f"svg#{chart} shows no budget for {team} (.cb-budget[data-team={team}])"
                )


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_page_fits_1400_px(signed_in: Chrome, cluster: RunningCluster, theme: str, failures: Path) -> None:
    driver = signed_in
    with evidence(driver, failures, f"fit-{theme}"):
        open_dashboard(driver, cluster, f"?theme={theme}")
        width, inner = driver.execute_script(
            "return [document.scrollingElement.scrollWidth, window.innerWidth];"
        )
        assert width <= inner, f"the page is {width} px wide in a {inner} px window (scrolls sideways)"
        # A table may sit in its own scrolling box: then the page fits, but its last columns are hidden.
        cut = driver.execute_script(
            """
            return [...document.querySelectorAll('table')].filter(t => {
                const box = t.parentElement.getBoundingClientRect();
                return t.getBoundingClientRect().right > Math.min(box.right, window.innerWidth) + 1;
            }).map(t => `table#${t.id}: ${t.scrollWidth} px in ${t.parentElement.clientWidth} px`);
            """
        )
        assert not cut, f"tables wider than their box at {inner} px, their last columns hidden: {cut}"


@pytest.mark.parametrize(
    ("theme", "screenshot"), [("light", "dashboard.png"), ("dark", "dashboard-dark.png")]
)
def test_theme_and_screenshot_for_the_docs(
    signed_in: Chrome, cluster: RunningCluster, theme: str, screenshot: str, failures: Path
) -> None:
    driver = signed_in
    with evidence(driver, failures, f"theme-{theme}"):
        open_dashboard(driver, cluster, f"?theme={theme}")
        shown = attr(driver.find_element("css selector", "html"), "data-theme")
        assert shown == theme, f"?theme={theme} should give <html data-theme={theme}>, got {shown!r}"
        background = shown_colours(driver, driver.find_element("css selector", "body"))["background"]
        shade = luminance(background)
        assert (shade < 0.2) if theme == "dark" else (shade > 0.8), (
            f"{theme} theme: the page background {background} has luminance {shade:.2f}"
        )
    full_page_png(driver, SCREENSHOTS / screenshot)


def test_dashboard_inside_the_airflow_ui(signed_in: Chrome, cluster: RunningCluster, failures: Path) -> None:
    driver = signed_in
    base = cluster.cluster.api_url
    with evidence(driver, failures, "airflow-ui"):
        driver.get(base + UI_VIEW)
        # The Airflow UI's colour mode (next-themes, localStorage "theme"): the page must follow it.
        driver.execute_script("localStorage.setItem('theme', 'dark');")
        driver.get(base + UI_VIEW)
        frame = wait_css(driver, 'iframe[src*="claude-batches"]', "the UI's frame showing the plugin view")
        assert frame.size["width"] > 0 and frame.size["height"] > 0, (
            f"the plugin's frame has no size: {frame.size}"
        )
        source = attr(frame, "src")
        # The view's href is relative to the UI's base URL: the frame must load the page itself.
        assert urlsplit(source).path == DASHBOARD, f"the UI's frame loads {source!r}, not {DASHBOARD}"
        driver.switch_to.frame(frame)
        try:
            first = wait_css(
                driver, "table#cb-teams tbody tr", f"the teams table inside the Airflow UI's frame ({source})"
            )
            assert attr(first, "data-team") == ALERT_TEAM, (
                f"inside the UI the first team should be {ALERT_TEAM}, is {attr(first, 'data-team')!r}"
            )
            theme = driver.find_element("css selector", "html").get_attribute("data-theme")
            assert theme == "dark", (
                f"inside the UI in dark mode the page should be dark, data-theme={theme!r}"
            )
        finally:
            driver.switch_to.default_content()
            driver.execute_script("localStorage.removeItem('theme');")
