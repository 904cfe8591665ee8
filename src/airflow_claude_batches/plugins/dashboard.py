"""
The on-call dashboard: an Airflow UI page and a JSON API over the batch ledger.

:class:`ClaudeBatchesPlugin` (entry point ``airflow.plugins``) mounts a FastAPI app on the api-server
at ``/claude-batches`` and adds it to the UI's navigation:

- ``/claude-batches/``: the teams, problem teams first, coloured against the governance file (each
  job type's errored/expired ratio against its ``error_ratio_alert``, spend against the team's
  budgets: :mod:`~airflow_claude_batches.plugins.dashboard_data`); two charts (spend vs budget over
  30 days, requests in flight by team: :mod:`~airflow_claude_batches.plugins.charts`); the admission
  waiting line; then the batches, flagged ones first (a running batch past 20 h of its 24 h ceiling,
  unconsumed results the API drops within 3 days), then newest first, 100 a page (``?page=N``).
  ``?team=NAME`` (repeatable) narrows everything to some teams. A user sees only the teams whose
  DAGs the auth manager lets them read (:mod:`airflow_claude_batches.plugins.visibility`). ``?theme=dark``
  or ``light`` forces a colour mode; otherwise the page follows the Airflow UI's.
- ``/claude-batches/api/summary``, ``api/batches``, ``api/waiting`` and ``api/charts``: the same
  data as JSON.

The page is Jinja2 templates (package data under ``templates/``, autoescaped), inline CSS and
server-rendered SVG; its few lines of script set the colour mode, copy a result path and nothing else.
Every read is SQL over the ledger database's indexes, never a read of every record
(``benchmarks/ledger_scale.py`` measures them at 100,000 batches).

Airflow does not authenticate a plugin's FastAPI app, so every route depends on Airflow's own
``requires_access_view(AccessView.WEBSITE)``: the ``Authorization: Bearer`` token of the REST API or
the ``_token`` cookie the UI sets, checked by the configured auth manager (no JWT code of ours). An
unauthenticated API call gets 401; the page redirects to the auth manager's login page instead.

Every plugin is imported by every Airflow process, task processes included, so this module imports
only ``AirflowPlugin``: the FastAPI app (and the api-server's security module, Jinja2, the ledger)
is built on the first request, which only the api-server ever serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI
    from jinja2 import Environment

    from airflow_claude_batches.governance.policy import Governance
    from airflow_claude_batches.store.database import LedgerDatabase
    from airflow_claude_batches.store.ledger import Ledger

__all__ = [
    "DEFAULT_CHARTS_SECONDS",
    "REFRESH_SECONDS",
    "URL_PREFIX",
    "ClaudeBatchesPlugin",
    "create_app",
    "render_page",
    "templates",
]

URL_PREFIX = "/claude-batches"
#: The page reloads itself this often: on-call keeps it open.
REFRESH_SECONDS = 60
#: Default of ``[claude_batches] dashboard_charts_seconds``: the charts' data is reused this long per
#: set of teams. Their resolution is an hour and a day, and their month of history is the page's
#: costliest read (~0.5-2 s at 100,000 batches on SQLite, ``benchmarks/ledger_scale.py``), which a page
#: refreshing every minute per viewer should not repeat.
DEFAULT_CHARTS_SECONDS = 300.0
#: The page's colour modes (``?theme=``), as the Airflow UI names them.
Theme = Literal["light", "dark"]

_ASGIApp = Callable[..., Any]


# ------------------------------------------------------------------------------------------------ data


def _scope(ledger: Ledger, teams: list[str], user: Any) -> list[str] | None:
    """The teams to show: those asked for (all when none) that ``user`` may see; None means all."""
    from airflow_claude_batches.plugins.visibility import visible_teams

    allowed = visible_teams(user, ledger.team_dags())
    if allowed is None:
        return teams or None
    return sorted(allowed & set(teams) if teams else allowed)


def _policy() -> tuple[Governance | None, str | None]:
    """The governance file, or why there is none: the page still shows the ledger without it."""
    from airflow_claude_batches.governance.policy import PolicyError, load_policy

    try:
        return load_policy(), None
    except PolicyError as error:
        return None, str(error).splitlines()[0]


def _flagged(ledger: Ledger, scope: list[str] | None, now: datetime) -> list[dict[str, Any]]:
    from airflow_claude_batches.plugins.dashboard_data import NEAR_CEILING, RESULTS_WARNING, batch_row

    found = ledger.flagged(
        running_before=now - NEAR_CEILING, results_expire_before=now + RESULTS_WARNING, team=scope
    )
    return [row for row in (batch_row(r, now) for r in found) if row["flagged"]]


def _summaries(
    ledger: Ledger,
    scope: list[str] | None,
    now: datetime,
    policy: Governance | None,
    flagged: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The team rows; ``flagged``: the flagged batch rows if the caller read them already."""
    from airflow_claude_batches.plugins.dashboard_data import team_summaries

    if flagged is None:
        flagged = _flagged(ledger, scope, now)
    return team_summaries(ledger.team_totals(now, scope), now, policy, flagged)


def _waiting(ledger: Ledger, scope: list[str] | None, now: datetime) -> list[dict[str, Any]]:
    """The waiting line, the rows of the teams in ``scope`` (None: all); positions stay account-wide."""
    from airflow_claude_batches.capacity.admission import AdmissionQueue
    from airflow_claude_batches.plugins.dashboard_data import waiting_rows

    rows = waiting_rows(AdmissionQueue(ledger).waiting(now), now)
    return [row for row in rows if scope is None or row["team"] in scope]


# ------------------------------------------------------------------------------------------------ HTML


def templates() -> Environment:
    """The page's Jinja2 templates (package data), autoescaped: every ledger value is escaped."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    from airflow_claude_batches.plugins import dashboard_data as data

    env = Environment(
        loader=PackageLoader("airflow_claude_batches.plugins", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        usd=data.usd,
        num=data.count,
        percent=data.percent,
        duration=data.duration,
        when=data.when,
        short_path=data.short_path,
        short_when=data.short_when,
        short_id=data.short_id,
    )
    return env


def render_page(context: dict[str, Any], env: Environment | None = None) -> str:
    """The dashboard page from ``context`` (see :func:`create_app`'s page route for its keys)."""
    from airflow_claude_batches.plugins.charts import in_flight_svg, spend_svg
    from airflow_claude_batches.plugins.dashboard_data import BUDGET_WARNING

    charts = context["charts"]
    return (
        (env or templates())
        .get_template("dashboard.html")
        .render(
            refresh_seconds=REFRESH_SECONDS,
            budget_warning=BUDGET_WARNING,
            spend_chart=spend_svg(charts),
            in_flight_chart=in_flight_svg(charts),
            **context,
        )
    )


# ------------------------------------------------------------------------------------------------- app


def create_app(database: LedgerDatabase | None = None) -> FastAPI:
    """
    The dashboard app; every route requires a caller Airflow lets see its UI (``WEBSITE`` view).

    :param database: the ledger database to show; the configured one (``Ledger()``) by default.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user, requires_access_view
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.exceptions import HTTPException

    from airflow_claude_batches.plugins.charts import chart_data
    from airflow_claude_batches.plugins.dashboard_data import batch_row, batch_rows
    from airflow_claude_batches.store.ledger import Ledger

    env = templates()
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
    PageQuery = Query(default=1, ge=1, le=1_000_000, description="Page of 100 batches, newest first.")
    ThemeQuery = Query(default=None, description="Force the colour mode (else the Airflow UI's).")
    UserDep = Depends(get_user)

    def ledger() -> Ledger:
        return Ledger(database)

    charts_read: dict[tuple[str, ...] | None, tuple[float, dict[str, Any]]] = {}

    def charts_of(found_ledger: Ledger, scope: list[str] | None, now: datetime) -> dict[str, Any]:
        """The charts' data for ``scope``, read at most once per ``dashboard_charts_seconds``."""
        from airflow.providers.common.compat.sdk import conf

        key = None if scope is None else tuple(scope)
        read = charts_read.get(key)
        reuse = conf.getfloat("claude_batches", "dashboard_charts_seconds", fallback=DEFAULT_CHARTS_SECONDS)
        if read is None or time.monotonic() - read[0] >= reuse:
            data = {"as_of": now.isoformat(), **chart_data(found_ledger, scope, now, _policy()[0])}
            if len(charts_read) > 100:  # many different team filters: start over
                charts_read.clear()
            read = charts_read[key] = (time.monotonic(), data)
        return read[1]

    @app.get("/", response_class=HTMLResponse)
    def page(
        teams: list[str] = TeamsQuery,
        page: int = PageQuery,
        theme: Theme | None = ThemeQuery,
        user: Any = UserDep,
    ) -> HTMLResponse:
        now, found_ledger = datetime.now(timezone.utc), ledger()
        scope = _scope(found_ledger, teams, user)
        policy, policy_problem = _policy()
        flagged = _flagged(found_ledger, scope, now)
        found = found_ledger.page(page, team=scope)
        html = render_page(
            {
                "now": now,
                "theme": theme,
                "teams_filter": teams,
                "summaries": _summaries(found_ledger, scope, now, policy, flagged),
                "policy_problem": policy_problem,
                "waiting": _waiting(found_ledger, scope, now),
                # Flagged batches lead the first page; later pages are the plain list.
                "batches": batch_rows(flagged if found.page == 1 else [], found.records, now),
                "page": found.page,
                "pages": max(1, -(-found.total // found.per_page)),
                "total": found.total,
                "charts": charts_of(found_ledger, scope, now),
            },
            env,
        )
        return HTMLResponse(html)

    @app.get("/api/summary")
    def summary(teams: list[str] = TeamsQuery, user: Any = UserDep) -> JSONResponse:
        now, found_ledger = datetime.now(timezone.utc), ledger()
        teams_shown = _summaries(found_ledger, _scope(found_ledger, teams, user), now, _policy()[0])
        return JSONResponse({"now": now.isoformat(), "teams": teams_shown})

    @app.get("/api/waiting")
    def waiting(teams: list[str] = TeamsQuery, user: Any = UserDep) -> JSONResponse:
        now, found_ledger = datetime.now(timezone.utc), ledger()
        rows = _waiting(found_ledger, _scope(found_ledger, teams, user), now)
        return JSONResponse({"now": now.isoformat(), "waiting": rows})

    @app.get("/api/batches")
    def batches(teams: list[str] = TeamsQuery, page: int = PageQuery, user: Any = UserDep) -> JSONResponse:
        now, found_ledger = datetime.now(timezone.utc), ledger()
        found = found_ledger.page(page, team=_scope(found_ledger, teams, user))
        return JSONResponse(
            {
                "now": now.isoformat(),
                "page": found.page,
                "per_page": found.per_page,
                "total": found.total,
                "batches": [batch_row(r, now) for r in found.records],
            }
        )

    @app.get("/api/charts")
    def charts(teams: list[str] = TeamsQuery, user: Any = UserDep) -> JSONResponse:
        now, found_ledger = datetime.now(timezone.utc), ledger()
        data = charts_of(found_ledger, _scope(found_ledger, teams, user), now)
        return JSONResponse({"now": now.isoformat(), **data})

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
