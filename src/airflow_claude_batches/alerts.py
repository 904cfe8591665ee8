"""Alerts for on-call: a batch job whose errors cross its threshold, that nears the 24 h ceiling, or
whose results nobody consumed before the API drops them (day 29).

An alert is a WARNING log line on the task (or triggerer) log with a fixed prefix that log-based
alerting can match, plus a StatsD/OpenTelemetry counter ``claude_batches.alert.<kind>`` tagged with
the team, so dashboards and paging rules need no log parsing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Literal, Protocol

from airflow.sdk.observability.stats import Stats
from pydantic import BaseModel

log = logging.getLogger(__name__)

#: The API expires a batch's unfinished requests this long after its creation.
BATCH_CEILING = timedelta(hours=24)
#: A batch still running this close to :data:`BATCH_CEILING` is alerted (its trigger) and flagged
#: (the dashboard): on-call still has time to act.
NEAR_CEILING_WARNING = timedelta(hours=4)
#: Unconsumed results this close to the day the API drops them are alerted (retention) and flagged
#: (the dashboard).
UNCONSUMED_WARNING = timedelta(days=3)

AlertKind = Literal[
    "error_ratio", "near_expiry", "unconsumed", "unstored", "unmanaged", "foreign", "ambiguous_create"
]


class Alert(BaseModel):
    """One alert about one batch of a team's job."""

    kind: AlertKind
    team: str
    job_id: str
    batch_id: str
    message: str


class BatchOfAJob(Protocol):
    """What an alert names of a batch: a ``LedgerRecord`` is one."""

    @property
    def team(self) -> str: ...
    @property
    def job_id(self) -> str: ...
    @property
    def batch_id(self) -> str: ...


def emit_about(batch: BatchOfAJob, kind: AlertKind, message: str) -> None:
    """:func:`emit` an alert about one batch of a team's job (e.g. a ledger record)."""
    emit(Alert(kind=kind, team=batch.team, job_id=batch.job_id, batch_id=batch.batch_id, message=message))


def emit(alert: Alert) -> None:
    """Log the alert and count it; never raises, an alert must not fail the job it reports on."""
    log.warning(
        "CLAUDE_BATCHES_ALERT %s team=%s batch=%s: %s", alert.kind, alert.team, alert.batch_id, alert.message
    )
    try:
        Stats.incr(f"claude_batches.alert.{alert.kind}", tags={"team": alert.team})
    except Exception:  # metrics backends are optional; the log line is the alert of record
        log.debug("Could not count alert %s", alert.kind, exc_info=True)


def failure_ratio(counts: Mapping[str, int]) -> float:
    """Share of a batch's requests that ended ``errored`` or ``expired`` (0 for an empty batch)."""
    total = sum(counts.get(k, 0) for k in ("succeeded", "errored", "canceled", "expired"))
    return (counts.get("errored", 0) + counts.get("expired", 0)) / total if total else 0.0
