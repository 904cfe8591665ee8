"""
The on-call dashboard: an Airflow UI page and a JSON API over the batch ledger.

:class:`ClaudeBatchesPlugin` (entry point ``airflow.plugins``) mounts a FastAPI app on the api-server
at ``/claude-batches`` and adds it to the UI's navigation:

- ``/claude-batches/``: per team, batches in flight, requests processing, spend today and this month
  and the errored/expired ratio; then the batches, newest first, 100 a page (``?page=N``), with what
  on-call acts on highlighted: a running batch past 20 h of its 24 h ceiling, unconsumed results that
  the API drops within 3 days. ``?team=NAME`` (repeatable) narrows both to some teams. A user sees
  only the teams whose DAGs the auth manager lets them read (:mod:`airflow_claude_batches.visibility`).
- the waiting line: every job waiting for admission, first in line first, with its team, job,
  requests, position, since when it waits and why (:mod:`airflow_claude_batches.admission`).
- ``/claude-batches/api/summary``, ``/claude-batches/api/batches`` and ``/claude-batches/api/waiting``:
  the same data as JSON.

Both are SQL queries over the ledger database's indexes (a per-team aggregate, one page of rows),
never a read of every record: ~0.2 s at 100,000 batches (``benchmarks/ledger_scale.py``).

Airflow does not authenticate a plugin's FastAPI app, so every route depends on Airflow's own
``requires_access_view(AccessView.WEBSITE)``: the ``Authorization: Bearer`` token of the REST API or
the ``_token`` cookie the UI sets, checked by the configured auth manager (no JWT code of ours). An
unauthenticated API call gets 401; the page redirects to the auth manager's login page instead.

Every plugin is imported by every Airflow process, task processes included, so this module imports
only ``AirflowPlugin``: the FastAPI app (and the api-server's security module it needs) is built on
the first request, which only the api-server ever serves.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI

    from airflow_claude_batches.admission import AdmissionEntry
    from airflow_claude_batches.ledger import BatchPage, LedgerRecord, TeamTotals

__all__ = [
    "URL_PREFIX",
    "ClaudeBatchesPlugin",
    "batch_row",
    "create_app",
    "dashboard_html",
    "team_summaries",
    "waiting_rows",
]

URL_PREFIX = "/claude-batches"
#: The API expires a batch's unfinished requests 24 h after it was created.
BATCH_CEILING = timedelta(hours=24)
#: A running batch older than this is highlighted: on-call has 4 h left to act.
NEAR_CEILING = timedelta(hours=20)
#: The page reloads itself this often: on-call keeps it open.
REFRESH_SECONDS = 60
#: Unconsumed results that expire sooner than this are highlighted.
RESULTS_WARNING = timedelta(days=3)

_ASGIApp = Callable[..., Any]


# ------------------------------------------------------------------------------------------------ data


def _status(record: LedgerRecord) -> str:
    if record.deleted_at is not None:
        return "deleted"
    if record.archived_at is not None:
        return "archived"
    return record.processing_status


def batch_row(record: LedgerRecord, now: datetime) -> dict[str, Any]:
    """One ledger record as the dashboard shows it: the record's fields plus what is derived from them.

    ``age_seconds`` runs until the batch ended; ``near_ceiling`` flags a batch still running past
    :data:`NEAR_CEILING`; ``results_expiring_soon`` flags results nobody consumed yet that the API
    drops within :data:`RESULTS_WARNING`.
    """
    running = record.processing_status != "ended"
    age = (record.ended_at or now) - record.created_at
    expiring = (
        record.consumed_at is None
        and record.archived_at is None
        and record.deleted_at is None
        and record.results_expire_at is not None
        and record.results_expire_at - now < RESULTS_WARNING
    )
    return {
        **record.model_dump(mode="json"),
        "status": _status(record),
        "age_seconds": round(age.total_seconds()),
        "near_ceiling": running and age > NEAR_CEILING,
        "results_expiring_soon": expiring,
    }


def team_summaries(totals: list[TeamTotals], now: datetime) -> list[dict[str, Any]]:
    """Per team (sorted by name): in-flight batches and requests, spend and the errored/expired ratio.

    Spend is what the budget check counts (:meth:`airflow_claude_batches.ledger.Ledger.spend`):
    batches created in the UTC day and month of ``now``, at actual cost once known, else at their
    estimate, plus jobs committed but not created yet. The ratio covers every request of the team's
    batches in the ledger.
    """
    from airflow_claude_batches.alerts import failure_ratio

    return [
        {
            "team": t.team,
            "batches": t.batches,
            "batches_in_flight": t.batches_in_flight,
            "requests_processing": t.requests_processing,
            "day": now.astimezone(timezone.utc).strftime("%Y-%m-%d"),
            "month": now.astimezone(timezone.utc).strftime("%Y-%m"),
            "spend_today_usd": round(t.spend_today_usd, 6),
            "spend_month_usd": round(t.spend_month_usd, 6),
            "request_counts": t.request_counts,
            "errored_expired_ratio": round(failure_ratio(t.request_counts), 6),
        }
        for t in totals
    ]


def _scope(teams: list[str], user: Any) -> list[str] | None:
    """The teams to show: those asked for (all when none) that ``user`` may see; None means all."""
    from airflow_claude_batches.ledger import Ledger
    from airflow_claude_batches.visibility import visible_teams

    allowed = visible_teams(user, Ledger().team_dags())
    if allowed is None:
        return teams or None
    return sorted(allowed & set(teams) if teams else allowed)


def _summaries(scope: list[str] | None, now: datetime) -> list[dict[str, Any]]:
    from airflow_claude_batches.ledger import Ledger

    return team_summaries(Ledger().team_totals(now, scope), now)


def _page(scope: list[str] | None, page: int) -> BatchPage:
    """Page ``page`` of the ledger's batches of the teams in ``scope``, newest first."""
    from airflow_claude_batches.ledger import Ledger

    return Ledger().page(page, team=scope)


def waiting_rows(line: list[AdmissionEntry], now: datetime) -> list[dict[str, Any]]:
    """The waiting line as the dashboard shows it; ``position`` 1 is the first in line."""
    return [
        {
            "position": position,
            "team": e.team,
            "job_id": e.job_id,
            "job_type": e.job_type,
            "requests": e.request_count,
            "waiting_since": e.enqueued_at.isoformat(),
            "waited_seconds": round((now - e.enqueued_at).total_seconds()),
            "reason": e.reason,
            "detail": e.reason_detail,
        }
        for position, e in enumerate(line, start=1)
    ]


def _waiting(scope: list[str] | None, now: datetime) -> list[dict[str, Any]]:
    """The waiting line, the rows of the teams in ``scope`` (None: all); positions stay account-wide."""
    from airflow_claude_batches.admission import AdmissionQueue

    rows = waiting_rows(AdmissionQueue().waiting(now), now)
    return [row for row in rows if scope is None or row["team"] in scope]


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#1a202c;font-size:14px}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse;margin-bottom:1rem}
th,td{border:1px solid #cbd5e0;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#edf2f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.warn td{background:#fefcbf}td.alert,tr.warn td.alert{background:#fed7d7;font-weight:600}
.muted{color:#718096}code{font-size:12px}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _when(value: str | None) -> str:
    return _e(value[:19].replace("T", " ")) if value else ""


def _usd(value: float | None) -> str:
    return "" if value is None else f"${value:,.4f}"


def _age(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m"


def _summary_table(summaries: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>Team</th><th>Batches in flight</th><th>Requests processing</th>"
        "<th>Spend today (UTC)</th><th>Spend this month</th><th>Errored/expired</th></tr>"
    )
    rows = "".join(
        f'<tr><td><a href="?team={_e(s["team"])}">{_e(s["team"])}</a></td>'
        f'<td class="n">{s["batches_in_flight"]:,}</td><td class="n">{s["requests_processing"]:,}</td>'
        f'<td class="n">{_usd(s["spend_today_usd"])}</td><td class="n">{_usd(s["spend_month_usd"])}</td>'
        f'<td class="n">{s["errored_expired_ratio"]:.1%}</td></tr>'
        for s in summaries
    )
    return f"<table>{head}{rows}</table>"


def _batch_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>Team</th><th>Job</th><th>Job type</th><th>Batch</th><th>Status</th>"
        "<th>Requests</th><th>Succeeded / errored / canceled / expired / processing</th>"
        "<th>Created (UTC)</th><th>Expires</th><th>Age (24 h ceiling)</th><th>Estimated</th>"
        "<th>Actual</th><th>Results</th><th>Consumed</th><th>Results expire</th></tr>"
    )
    cells = []
    for row in rows:
        c = row["request_counts"]
        kinds = ("succeeded", "errored", "canceled", "expired", "processing")
        counts = " / ".join(f"{c[k]:,}" for k in kinds)
        age_class = ' class="n alert"' if row["near_ceiling"] else ' class="n"'
        expiry_class = ' class="alert"' if row["results_expiring_soon"] else ""
        css = ' class="warn"' if row["near_ceiling"] or row["results_expiring_soon"] else ""
        cells.append(
            f"<tr{css}><td>{_e(row['team'])}</td><td><code>{_e(row['job_id'])}</code></td>"
            f"<td>{_e(row['job_type'])}</td><td><code>{_e(row['batch_id'])}</code></td>"
            f'<td>{_e(row["status"])}</td><td class="n">{row["request_count"]:,}</td>'
            f'<td class="n">{counts}</td><td>{_when(row["created_at"])}</td>'
            f"<td>{_when(row['expires_at'])}</td><td{age_class}>{_age(row['age_seconds'])}</td>"
            f'<td class="n">{_usd(row["estimated_cost_usd"])}</td>'
            f'<td class="n">{_usd(row["actual_cost_usd"])}</td>'
            f"<td><code>{_e(row['results_uri'])}</code></td>"
            f"<td>{'yes' if row['consumed_at'] else 'no'}</td>"
            f"<td{expiry_class}>{_when(row['results_expire_at'])}</td></tr>"
        )
    return f"<table>{head}{''.join(cells)}</table>"


def _waiting_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>Position</th><th>Team</th><th>Job</th><th>Job type</th><th>Requests</th>"
        "<th>Waiting since (UTC)</th><th>Waited</th><th>Reason</th><th>Detail</th></tr>"
    )
    rows_html = "".join(
        f'<tr><td class="n">{r["position"]}</td><td>{_e(r["team"])}</td>'
        f"<td><code>{_e(r['job_id'])}</code></td><td>{_e(r['job_type'])}</td>"
        f'<td class="n">{r["requests"]}</td><td>{_when(r["waiting_since"])}</td>'
        f'<td class="n">{_age(r["waited_seconds"])}</td><td>{_e((r["reason"] or "").replace("_", " "))}</td>'
        f"<td>{_e(r['detail'])}</td></tr>"
        for r in rows
    )
    return f"<table>{head}{rows_html}</table>"


def _pager(page: int, per_page: int, total: int, teams: list[str]) -> str:
    pages = max(1, -(-total // per_page))
    query = "".join(f"&team={_e(t)}" for t in teams)
    links = [f'<a href="?page={page - 1}{query}">newer</a>'] if page > 1 else []
    links += [f'<a href="?page={page + 1}{query}">older</a>'] if page < pages else []
    return f'<p class="muted">page {page} of {pages} · {" · ".join(links)}</p>' if pages > 1 else ""


def dashboard_html(
    summaries: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    teams: list[str],
    *,
    page: int = 1,
    per_page: int = 100,
    total: int | None = None,
    waiting: list[dict[str, Any]] | None = None,
) -> str:
    """The page: self-contained HTML (inline CSS, no script), every ledger value escaped."""
    total = len(rows) if total is None else total
    scope = f'teams {_e(", ".join(teams))} · <a href="./">all teams</a>' if teams else "all teams"
    body = (
        f'<h1>Claude batches</h1><p class="muted">as of {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC '
        f"(refreshes every {REFRESH_SECONDS} s) · {scope} · {total:,} batch(es) in the ledger · "
        '<a href="api/summary">JSON summary</a> · <a href="api/batches">JSON batches</a> · '
        '<a href="api/waiting">JSON waiting</a></p>'
        f"<h2>Teams</h2>{_summary_table(summaries) if summaries else '<p>No batches.</p>'}"
        f"<h2>Waiting</h2>{_waiting_table(waiting) if waiting else '<p>No job waits for admission.</p>'}"
        f"<h2>Batches</h2>{_batch_table(rows) if rows else '<p>No batches.</p>'}"
        f"{_pager(page, per_page, total, teams)}"
        '<p class="muted">Highlighted: a running batch past 20 h of its 24 h ceiling; unconsumed '
        "results the API drops within 3 days.</p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}"><title>Claude batches</title>'
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )


# ------------------------------------------------------------------------------------------------- app


def create_app() -> FastAPI:
    """The dashboard app; every route requires a caller Airflow lets see its UI (``WEBSITE`` view)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user, requires_access_view
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.exceptions import HTTPException

    app = FastAPI(
        title="Claude batches dashboard",
        dependencies=[Depends(requires_access_view(AccessView.WEBSITE))],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(HTTPException)
    async def _login_for_pages(request: Request, exc: HTTPException) -> Response:
        # A person opening the page without a session goes to the login page; API callers get the 401.
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        if exc.status_code == 401 and not path.startswith("/api/"):
            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), 303)
        return await http_exception_handler(request, exc)

    TeamsQuery = Query(default=[], alias="team", description="Only these teams (repeatable).")
    PageQuery = Query(default=1, ge=1, description="Page of 100 batches, newest first.")
    UserDep = Depends(get_user)

    @app.get("/", response_class=HTMLResponse)
    def page(teams: list[str] = TeamsQuery, page: int = PageQuery, user: Any = UserDep) -> HTMLResponse:
        now, scope = datetime.now(timezone.utc), _scope(teams, user)
        found = _page(scope, page)
        rows = [batch_row(r, now) for r in found.records]
        html_page = dashboard_html(
            _summaries(scope, now),
            rows,
            teams,
            page=found.page,
            per_page=found.per_page,
            total=found.total,
            waiting=_waiting(scope, now),
        )
        return HTMLResponse(html_page)

    @app.get("/api/summary")
    def summary(teams: list[str] = TeamsQuery, user: Any = UserDep) -> JSONResponse:
        now = datetime.now(timezone.utc)
        return JSONResponse({"now": now.isoformat(), "teams": _summaries(_scope(teams, user), now)})

    @app.get("/api/waiting")
    def waiting(teams: list[str] = TeamsQuery, user: Any = UserDep) -> JSONResponse:
        now = datetime.now(timezone.utc)
        return JSONResponse({"now": now.isoformat(), "waiting": _waiting(_scope(teams, user), now)})

    @app.get("/api/batches")
    def batches(teams: list[str] = TeamsQuery, page: int = PageQuery, user: Any = UserDep) -> JSONResponse:
        now = datetime.now(timezone.utc)
        found = _page(_scope(teams, user), page)
        return JSONResponse(
            {
                "now": now.isoformat(),
                "page": found.page,
                "per_page": found.per_page,
                "total": found.total,
                "batches": [batch_row(r, now) for r in found.records],
            }
        )

    return app


class _LazyApp:
    """An ASGI app that builds the dashboard on its first request (see the module docstring)."""

    def __init__(self, factory: Callable[[], _ASGIApp]) -> None:
        self._factory = factory
        self._app: _ASGIApp | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = self._factory()
        await self._app(scope, receive, send)


class ClaudeBatchesPlugin(AirflowPlugin):
    """The dashboard on the api-server, and its entry in the UI's navigation."""

    name = "claude_batches"
    fastapi_apps = [
        {"app": _LazyApp(create_app), "url_prefix": URL_PREFIX, "name": "Claude batches dashboard"}
    ]
    external_views = [
        {
            "name": "Claude Batches",
            # Relative to the UI's base URL, so a deployment under a path prefix keeps working.
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "claude-batches",
            "destination": "nav",
            "category": "browse",
        }
    ]
