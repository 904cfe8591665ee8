"""
The dashboard's two charts: their data (SQL aggregates of the ledger, never a read of every record)
and their geometry for server-rendered inline SVG (no JavaScript library, nothing downloaded).

**Spend vs budget** is one small panel per team of daily bars over the last 30 UTC days, with the
team's budget as a dashed line. Daily bars because the budget check counts per UTC day (and month):
a bar above the line is a day the team spent more than its daily budget allows (for a team with a
monthly budget only, more than the month's even daily pace), and a streak of tall bars is visible
long before the month's total runs out. One panel per team, each on its own scale, because twenty
teams' lines on one scale hide every small team's overspend under the largest team's.

**Requests in flight** stacks each team's requests in ``processing`` per hour, from the status
history: the top edge is the account's queue use, each band a team's share of it.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_claude_batches.governance.policy import Governance
    from airflow_claude_batches.store.ledger import Ledger

__all__ = ["CHART_DAYS", "SERIES_COLOURS", "chart_data", "in_flight_svg", "spend_svg"]

#: Both charts cover this many UTC days, today included.
CHART_DAYS = 30
#: The in-flight chart's resolution: each point is the level at the end of this many seconds.
IN_FLIGHT_BUCKET_SECONDS = 3600
#: Teams cycle through this many series colours (CSS variables ``--cb-series-0`` …).
SERIES_COLOURS = 8


def chart_data(
    ledger: Ledger, scope: Sequence[str] | None, now: datetime, policy: Governance | None
) -> dict[str, Any]:
    """
    Both charts' series, as ``/api/charts`` returns them.

    ``spend``: per team with spend in the period, ``daily_usd`` for each of ``days``, its budgets and
    ``budget_mark_usd`` (the daily budget, else the monthly budget over the days of this month).
    ``in_flight``: per team with requests in flight in the period, ``processing`` at the end of each
    hour of ``hours``.
    """
    now = now.astimezone(timezone.utc)
    first_day = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=CHART_DAYS - 1)
    days = [first_day + timedelta(days=i) for i in range(CHART_DAYS)]
    spend: dict[str, list[float]] = {}
    for day in ledger.daily_spend(first_day, now + timedelta(seconds=1), scope):
        index = (day.day - first_day).days
        if 0 <= index < CHART_DAYS:
            spend.setdefault(day.team, [0.0] * CHART_DAYS)[index] += day.usd

    step = IN_FLIGHT_BUCKET_SECONDS
    first_hour = datetime.fromtimestamp(int(first_day.timestamp()) // step * step, timezone.utc)
    hours = [
        first_hour + timedelta(seconds=step * i)
        for i in range(int((now - first_hour).total_seconds()) // step + 1)
    ]
    changes: dict[str, list[int]] = {}
    for change in ledger.processing_steps(first_hour, now + timedelta(seconds=1), step, scope):
        index = int((change.start - first_hour).total_seconds()) // step
        if 0 <= index < len(hours):
            changes.setdefault(change.team, [0] * len(hours))[index] += change.change
    in_flight = []
    for team, deltas in sorted(changes.items()):
        levels, level = [], 0
        for delta in deltas:
            level += delta
            levels.append(max(level, 0))
        if any(levels):
            in_flight.append({"team": team, "processing": levels})

    return {
        "days": [day.date().isoformat() for day in days],
        "spend": [_spend_series(team, daily, policy, now) for team, daily in sorted(spend.items())],
        "hours": [hour.isoformat() for hour in hours],
        "in_flight": in_flight,
    }


def _spend_series(team: str, daily: list[float], policy: Governance | None, now: datetime) -> dict[str, Any]:
    team_policy = policy.teams.get(team) if policy is not None else None
    daily_budget = team_policy.daily_budget_usd if team_policy is not None else None
    monthly_budget = team_policy.monthly_budget_usd if team_policy is not None else None
    mark = daily_budget
    if mark is None and monthly_budget is not None:
        mark = monthly_budget / calendar.monthrange(now.year, now.month)[1]
    return {
        "team": team,
        "daily_usd": [round(usd, 6) for usd in daily],
        "daily_budget_usd": daily_budget,
        "monthly_budget_usd": monthly_budget,
        "budget_mark_usd": None if mark is None else round(mark, 6),
    }


# ----------------------------------------------------------------------------------------- geometry

_PANEL_W, _PANEL_H, _PANEL_COLUMNS = 330.0, 150.0, 4
_PLOT_TOP, _PLOT_BOTTOM, _PLOT_LEFT = 28.0, 18.0, 8.0


def spend_svg(data: dict[str, Any]) -> dict[str, Any]:
    """The spend chart's geometry: one panel per team, bars of daily spend, the budget mark."""
    from airflow_claude_batches.plugins.dashboard_data import usd

    series = data["spend"]
    columns = min(_PANEL_COLUMNS, max(len(series), 1))
    rows = -(-len(series) // columns) if series else 1
    plot_w, plot_h = _PANEL_W - 2 * _PLOT_LEFT, _PANEL_H - _PLOT_TOP - _PLOT_BOTTOM
    bar_w = plot_w / len(data["days"])
    panels = []
    for n, s in enumerate(series):
        top = max([*s["daily_usd"], s["budget_mark_usd"] or 0.0, 0.01]) * 1.1
        x0, y0 = (n % columns) * _PANEL_W, (n // columns) * _PANEL_H
        base = y0 + _PLOT_TOP + plot_h
        bars = [
            {
                "x": round(x0 + _PLOT_LEFT + i * bar_w + 0.5, 1),
                "y": round(base - value / top * plot_h, 1),
                "w": round(max(bar_w - 1, 1), 1),
                "h": round(value / top * plot_h, 1),
                "over": s["budget_mark_usd"] is not None and value > s["budget_mark_usd"],
                "title": f"{day}: {usd(value)}",
            }
            for i, (day, value) in enumerate(zip(data["days"], s["daily_usd"], strict=True))
            if value > 0
        ]
        mark = s["budget_mark_usd"]
        budget = None
        if mark is not None:
            kind = "daily budget" if s["daily_budget_usd"] is not None else "monthly budget, daily pace"
            budget = {"y": round(base - mark / top * plot_h, 1), "title": f"{kind}: {usd(mark)}"}
        panels.append(
            {
                "team": s["team"],
                "colour": n % SERIES_COLOURS,
                "x": x0,
                "y": y0,
                "x1": x0 + _PLOT_LEFT,
                "x2": x0 + _PLOT_LEFT + plot_w,
                "base": base,
                "label": s["team"],
                "total": f"{usd(sum(s['daily_usd']))} in {len(data['days'])} days",
                "bars": bars,
                "budget": budget,
            }
        )
    # One team's panel is narrower than the legend's longest entry: the chart is never narrower.
    width = max(columns * _PANEL_W, max(_legend_width(kind, label) for kind, label in _SPEND_LEGEND) + 16)
    legend = _legend(_SPEND_LEGEND, width, rows * _PANEL_H + 14)
    return {
        "width": width,
        "height": legend[-1]["y"] + 10,
        "legend": legend,
        "panels": panels,
        "first_day": data["days"][0] if data["days"] else "",
        "last_day": data["days"][-1] if data["days"] else "",
    }


#: The spend chart's legend: the kind of mark (``spend``, ``over``: a swatch; ``budget``: the dashed
#: line) and what it means.
_SPEND_LEGEND = (
    ("spend", "spend of the UTC day (actual, else estimated)"),
    ("over", "over budget"),
    ("budget", "daily budget (or the monthly budget's daily pace)"),
)
#: An 11 px sans-serif character's width, generously (DejaVu Sans, the widest fallback): the legend
#: is laid out on the server, where the text cannot be measured.
_CHAR_W = 6.8


#: The room a legend entry's mark takes before its text: a swatch, or the budget's dashed line.
_MARK_W = {"spend": 14.0, "over": 14.0, "budget": 34.0}


def _legend_width(kind: str, label: str) -> float:
    return _MARK_W[kind] + len(label) * _CHAR_W


def _legend(items: Sequence[tuple[str, str]], width: float, top: float) -> list[dict[str, Any]]:
    """Legend entries placed left to right, wrapping to a new line before one would pass ``width``:
    each ``{"kind", "label", "x", "y"}`` (``y`` is the text's baseline; the mark sits before ``x``)."""
    placed: list[dict[str, Any]] = []
    x, y = 8.0, top
    for kind, label in items:
        mark, needed = _MARK_W[kind], _legend_width(kind, label)
        if placed and x + needed > width - 8:
            x, y = 8.0, y + 18
        placed.append({"kind": kind, "label": label, "x": x + mark, "y": y, "mark_x": x})
        x += needed + 20
    return placed


def _runs(levels: list[int]) -> list[tuple[int, int, int]]:
    """``levels`` as ``(first, past_last, level)`` runs of equal values: a step path needs only their
    corners, so a month of hours that rarely change stays a short path."""
    runs: list[tuple[int, int, int]] = []
    for i, level in enumerate(levels):
        if runs and runs[-1][2] == level:
            runs[-1] = (runs[-1][0], i + 1, level)
        else:
            runs.append((i, i + 1, level))
    return runs


_IF_W, _IF_H, _IF_LEFT, _IF_RIGHT, _IF_TOP, _IF_BOTTOM = 1300.0, 240.0, 64.0, 12.0, 12.0, 24.0


def in_flight_svg(data: dict[str, Any]) -> dict[str, Any]:
    """The in-flight chart's geometry: a stacked step area per team, hours along x, a legend."""
    from airflow_claude_batches.plugins.dashboard_data import count

    series, hours = data["in_flight"], data["hours"]
    points = max(len(hours), 1)
    plot_w, plot_h = _IF_W - _IF_LEFT - _IF_RIGHT, _IF_H - _IF_TOP - _IF_BOTTOM
    totals = [sum(s["processing"][i] for s in series) for i in range(len(hours))]
    top = max([*totals, 1]) * 1.1
    step = plot_w / points

    def x(i: int) -> float:
        return round(_IF_LEFT + i * step, 1)

    def y(value: float) -> float:
        return round(_IF_TOP + plot_h - value / top * plot_h, 1)

    below = [0] * len(hours)
    bands = []
    for n, s in enumerate(series):
        above = [b + v for b, v in zip(below, s["processing"], strict=True)]
        upper = " ".join(f"L{x(i)},{y(v)} L{x(j)},{y(v)}" for i, j, v in _runs(above))
        lower = " ".join(f"L{x(j)},{y(v)} L{x(i)},{y(v)}" for i, j, v in reversed(_runs(below)))
        peak = max(s["processing"])
        bands.append(
            {
                "team": s["team"],
                "colour": n % SERIES_COLOURS,
                "path": f"M{x(0)},{y(below[0])} {upper} {lower} Z",
                "title": f"{s['team']}: up to {count(peak)} requests in flight, "
                f"{count(s['processing'][-1])} now",
            }
        )
        below = above
    grid = [{"y": y(top / 1.1 * f), "label": count(round(top / 1.1 * f))} for f in (0.0, 0.5, 1.0) if series]
    ticks = [
        {"x": x(i), "label": hour[5:10]}
        for i, hour in enumerate(hours)
        if hour[11:13] == "00" and i % 24 == 0
    ]
    return {
        "width": _IF_W,
        "height": _IF_H + 22 * (1 + len(series) // 6),
        "left": _IF_LEFT,
        "right": _IF_W - _IF_RIGHT,
        "base": _IF_TOP + plot_h,
        "bands": bands,
        "grid": grid,
        "ticks": ticks[:: max(1, len(ticks) // 10)],
        "legend": [
            {
                "team": s["team"],
                "colour": n % SERIES_COLOURS,
                "x": _IF_LEFT + (n % 6) * 150,
                "y": _IF_H + 6 + 22 * (n // 6),
            }
            for n, s in enumerate(series)
        ],
    }
