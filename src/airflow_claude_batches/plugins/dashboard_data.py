"""
What the on-call dashboard shows, shaped from the ledger and the policy: plain dicts (the JSON API
returns them as they are; the templates read them) and the formatting on-call reads.

A team's row is judged against the governance file: each job type's errored+expired ratio against
that job type's ``error_ratio_alert``, spend against the team's daily and monthly budgets. A team is
``alert`` when a ratio is over its threshold or a budget is used up; ``warn`` when a budget is 80 %
used, a batch nears the API's 24 h ceiling or unconsumed results near the day the API drops them;
``ok`` otherwise. The page lists ``alert`` teams first, then ``warn``, then ``ok``, the worst first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from airflow_claude_batches.alerts import (
    BATCH_CEILING,
    NEAR_CEILING_WARNING,
    UNCONSUMED_WARNING,
    failure_ratio,
)

if TYPE_CHECKING:
    from airflow_claude_batches.capacity.admission import AdmissionEntry
    from airflow_claude_batches.governance.policy import Governance
    from airflow_claude_batches.store.ledger import LedgerRecord, TeamTotals

__all__ = [
    "BUDGET_WARNING",
    "NEAR_CEILING",
    "RESULTS_WARNING",
    "State",
    "batch_row",
    "count",
    "human_status",
    "percent",
    "short_id",
    "short_path",
    "short_when",
    "team_summaries",
    "usd",
    "waiting_rows",
]

State = Literal["alert", "warn", "ok"]
_STATE_RANK: dict[str, int] = {"alert": 0, "warn": 1, "ok": 2}

#: A running batch older than this is flagged: on-call has 4 h left before the API's 24 h ceiling.
NEAR_CEILING = BATCH_CEILING - NEAR_CEILING_WARNING
#: Unconsumed results that the API drops sooner than this are flagged.
RESULTS_WARNING = UNCONSUMED_WARNING
#: A team that used this share of a budget is ``warn``; all of it, ``alert``.
BUDGET_WARNING = 0.8

_STATUS_LABELS = {
    "in_progress": "In progress",
    "canceling": "Canceling",
    "ended": "Ended",
    "archived": "Archived",
    "deleted": "Deleted",
}


# ------------------------------------------------------------------------------------------ formatting


def usd(value: float | None) -> str:
    """Dollars to the cent with thousands separators (``$1,234.56``); a non-zero sub-cent as ``<$0.01``."""
    if value is None:
        return "—"
    if 0 < abs(value) < 0.005:
        return "<$0.01"
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def count(value: int | None) -> str:
    """A count with thousands separators (``100,000``)."""
    return "—" if value is None else f"{value:,}"


def percent(ratio: float | None) -> str:
    """A ratio as a percentage to one decimal (``44.7 %``, a no-break space: the sign never wraps alone)."""
    return "—" if ratio is None else f"{ratio:.1%}".replace("%", "\u00a0%")


def duration(seconds: int) -> str:
    """``21h 05m``; ``2d 03h`` from 48 hours on."""
    hours, rest = divmod(max(seconds, 0), 3600)
    if hours >= 48:
        return f"{hours // 24}d {hours % 24:02d}h"
    return f"{hours}h {rest // 60:02d}m"


def when(value: str | None) -> str:
    """An ISO time as ``2026-11-28 04:50`` (UTC, as everything on the page)."""
    return value[:16].replace("T", " ") if value else "—"


def short_when(value: str | None) -> str:
    """An ISO time as ``11-28 04:50`` (UTC): the batches table's narrow date, the full time in a title."""
    return value[5:16].replace("T", " ") if value else "—"


def human_status(status: str) -> str:
    """The API's ``in_progress`` as on-call reads it: ``In progress``."""
    return _STATUS_LABELS.get(status, status.replace("_", " ").capitalize())


def short_path(uri: str | None, keep: int = 3) -> str:
    """The last ``keep`` parts of a results URI (``…/team/job_key/batch_id/``): the part that differs
    between batches; the page shows the full URI on hover and copies it with a button."""
    if not uri:
        return "—"
    parts = [part for part in uri.split("/") if part]
    if len(parts) <= keep + 1:
        return uri
    return "…/" + "/".join(parts[-keep:]) + "/"


def short_id(batch_id: str, keep: int = 10) -> str:
    """A batch id without the API's ``msgbatch_`` prefix and cut to its last ``keep`` characters
    (``…WR4ZsDV8d``): enough to tell a page's batches apart; the page shows the full id on hover."""
    rest = batch_id.removeprefix("msgbatch_")
    return rest if len(rest) <= keep + 1 else "…" + rest[-keep:]


# ------------------------------------------------------------------------------------------ the batches


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
    drops within :data:`RESULTS_WARNING`; ``flagged`` is either.
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
    near_ceiling = running and age > NEAR_CEILING
    status = _status(record)
    return {
        **record.model_dump(mode="json"),
        "status": status,
        "status_label": human_status(status),
        "age_seconds": round(age.total_seconds()),
        "near_ceiling": near_ceiling,
        "results_expiring_soon": expiring,
        "flagged": near_ceiling or expiring,
    }


def batch_rows(flagged: list[dict[str, Any]], page: Iterable[LedgerRecord], now: datetime) -> list[dict]:
    """The batch list: the ``flagged`` rows first, then the page's other batches, newest first."""
    shown = {row["batch_id"] for row in flagged}
    return flagged + [batch_row(r, now) for r in page if r.batch_id not in shown]


# -------------------------------------------------------------------------------------------- the teams


def _job_type_threshold(policy: Governance | None, job_type: str) -> float:
    from airflow_claude_batches.governance.policy import JobTypePolicy

    known = policy.job_types.get(job_type) if policy is not None else None
    if known is not None:
        return known.error_ratio_alert
    default = JobTypePolicy.model_fields["error_ratio_alert"].default
    return float(default)


def _over(ratio: float, threshold: float) -> float:
    """How far ``ratio`` is over ``threshold``, as a multiple (1.0 at the threshold)."""
    if threshold > 0:
        return ratio / threshold
    return float("inf") if ratio > 0 else 0.0


def team_summaries(
    totals: list[TeamTotals],
    now: datetime,
    policy: Governance | None = None,
    flagged: Iterable[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """
    Per team: in-flight batches and requests, spend, budgets and their use, the errored/expired
    ratio against its threshold, and the team's ``state``; problem teams first (see the module).

    Spend is what the budget check counts (:meth:`airflow_claude_batches.store.ledger.Ledger.spend`):
    batches created in the UTC day and month of ``now``, at actual cost once known, else at their
    estimate, plus jobs committed but not created yet. The ratios cover every request of the team's
    batches in the ledger, per job type; the row shows the job type furthest over its threshold.
    Without a policy (none configured, or invalid) budgets are unknown and thresholds the default.

    :param flagged: the batch rows (:func:`batch_row`) flagged near the ceiling or expiry.
    """
    near_ceiling: dict[str, int] = {}
    expiring: dict[str, int] = {}
    for row in flagged:
        if row["near_ceiling"]:
            near_ceiling[row["team"]] = near_ceiling.get(row["team"], 0) + 1
        if row["results_expiring_soon"]:
            expiring[row["team"]] = expiring.get(row["team"], 0) + 1
    summaries = [
        _team_summary(t, now, policy, near_ceiling.get(t.team, 0), expiring.get(t.team, 0)) for t in totals
    ]
    return sorted(summaries, key=lambda s: (_STATE_RANK[s["state"]], -s["severity"], s["team"]))


def _team_summary(
    t: TeamTotals, now: datetime, policy: Governance | None, near_ceiling: int, expiring: int
) -> dict[str, Any]:
    ratios = {
        job_type: (failure_ratio(counts), _job_type_threshold(policy, job_type))
        for job_type, counts in t.counts_by_job_type.items()
    }
    worst_type = max(ratios, key=lambda jt: (_over(*ratios[jt]), jt), default=None)
    worst_ratio, threshold = ratios[worst_type] if worst_type is not None else (0.0, None)
    team_policy = policy.teams.get(t.team) if policy is not None else None
    daily = team_policy.daily_budget_usd if team_policy is not None else None
    monthly = team_policy.monthly_budget_usd if team_policy is not None else None
    used = [
        (spend / budget if budget else float("inf") if spend > 0 else 0.0, period)
        for spend, budget, period in (
            (t.spend_today_usd, daily, "daily"),
            (t.spend_month_usd, monthly, "monthly"),
        )
        if budget is not None
    ]
    budget_used = max((share for share, _ in used), default=None)
    reasons = []
    error_over = threshold is not None and worst_ratio > threshold
    if error_over:
        reasons.append(f"{worst_type}: {percent(worst_ratio)} errored/expired, over {percent(threshold)}")
    reasons += [f"{period} budget {percent(share)} used" for share, period in used if share >= BUDGET_WARNING]
    if near_ceiling:
        reasons.append(f"{near_ceiling} batch(es) near the 24 h ceiling")
    if expiring:
        reasons.append(f"{expiring} batch(es) with unconsumed results expiring within 3 days")
    state: State
    if error_over or (budget_used is not None and budget_used >= 1):
        state = "alert"
    elif (budget_used is not None and budget_used >= BUDGET_WARNING) or near_ceiling or expiring:
        state = "warn"
    else:
        state = "ok"
    severity = max(_over(worst_ratio, threshold) if threshold is not None else 0.0, budget_used or 0.0)
    return {
        "team": t.team,
        "state": state,
        "severity": round(min(severity, 1e9), 6),
        "reasons": reasons,
        "batches": t.batches,
        "batches_in_flight": t.batches_in_flight,
        "requests_processing": t.requests_processing,
        "day": now.astimezone(timezone.utc).strftime("%Y-%m-%d"),
        "month": now.astimezone(timezone.utc).strftime("%Y-%m"),
        "spend_today_usd": round(t.spend_today_usd, 6),
        "spend_month_usd": round(t.spend_month_usd, 6),
        "daily_budget_usd": daily,
        "monthly_budget_usd": monthly,
        "budget_used": None if budget_used is None else round(min(budget_used, 1e9), 6),
        "request_counts": t.request_counts,
        "errored_expired_ratio": round(failure_ratio(t.request_counts), 6),
        "worst_job_type": worst_type,
        "worst_ratio": round(worst_ratio, 6),
        "error_ratio_threshold": threshold,
        "ratios_by_job_type": {jt: round(ratio, 6) for jt, (ratio, _) in ratios.items()},
        "near_ceiling": near_ceiling,
        "results_expiring": expiring,
    }


# ------------------------------------------------------------------------------------- the waiting line


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
