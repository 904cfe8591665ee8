"""
Which team a DAG belongs to: derived from where the DAG lives, never declared by the DAG.

Two modes, chosen by Airflow's own ``[core] multi_team`` setting:

- **Multi-team mode** (Airflow 3.3): a DAG's team is the Airflow team of its DAG bundle
  (``team_name`` in ``[dag_processor] dag_bundle_config_list``). The governance file must register a
  team of that name.
- **Otherwise**: each team of the governance file lists its DAG files under ``dags``, as path globs
  relative to the bundle root (any bundle) or as ``{bundle: GLOB, path: GLOB}``::

      teams:
        marketing:
          dags: ["marketing/**", "marketing_*.py", {bundle: "marketing-repo"}]

  ``*`` matches within one path segment, ``**`` across segments, ``?`` one character. Patterns are
  anchored at the bundle root: ``marketing_*.py`` is a file at the root, not in a subfolder.

A DAG that belongs to no team, or to two, is refused: a pattern that matches two teams' DAGs is a
mistake in the governance file, and guessing would spend one team's budget for the other.

Where the DAG lives is taken from Airflow, not from the DAG's code: the DAG processor and the task
runner set ``fileloc`` and ``relative_fileloc`` after importing the file, and the task runner knows
the bundle it loaded the DAG from.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import conf

from airflow_claude_batches.governance.policy import Governance, PolicyError
from airflow_claude_batches.governance.quoting import quote

__all__ = ["DagLocation", "TeamBindingError", "derive_team", "locate_dag", "multi_team_mode"]


class TeamBindingError(PolicyError):
    """A DAG belongs to no team of the governance file, or to more than one."""


@dataclass(frozen=True)
class DagLocation:
    """Where a DAG file lives: its bundle (if known) and its path relative to the bundle root."""

    bundle: str | None
    path: str

    def __str__(self) -> str:
        return f"{self.path} in bundle {self.bundle}" if self.bundle else self.path


def multi_team_mode() -> bool:
    """Whether Airflow runs in multi-team mode (``[core] multi_team``)."""
    return conf.getboolean("core", "multi_team", fallback=False)


def locate_dag(dag: Any, ti: Any = None) -> DagLocation | None:
    """
    Where ``dag`` was loaded from, or ``None`` for a DAG that no bundle holds.

    :param dag: the task's DAG, as the DAG processor or the task runner loaded it.
    :param ti: the running task instance; the task runner's knows the bundle it ran from.
    """
    if dag is None or not getattr(dag, "fileloc", None):
        return None
    bundle = getattr(getattr(ti, "bundle_instance", None), "name", None)
    relative = getattr(dag, "relative_fileloc", None)
    if bundle and relative and not os.path.isabs(relative):
        return DagLocation(bundle, Path(relative).as_posix())
    guessed = _bundle_of(os.path.abspath(dag.fileloc))
    if guessed is not None:
        return guessed
    if relative and not os.path.isabs(relative):
        return DagLocation(None, Path(relative).as_posix())
    return None


def _bundle_of(fileloc: str) -> DagLocation | None:
    """The configured bundle whose folder holds ``fileloc`` (the deepest one if folders nest)."""
    for name, root in _bundle_roots():
        try:
            relative = Path(fileloc).relative_to(root)
        except ValueError:
            continue
        return DagLocation(name, relative.as_posix())
    return None


def _bundle_roots() -> list[tuple[str, Path]]:
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    roots = [
        (bundle.name, Path(bundle.path).resolve()) for bundle in DagBundlesManager().get_all_dag_bundles()
    ]
    return sorted(roots, key=lambda item: len(str(item[1])), reverse=True)


def _airflow_team_of_bundle(bundle: str | None) -> str | None:
    """The Airflow team a bundle belongs to, from ``[dag_processor] dag_bundle_config_list``."""
    if bundle is None:
        return None
    for entry in conf.getjson("dag_processor", "dag_bundle_config_list", fallback=None) or []:
        if isinstance(entry, dict) and entry.get("name") == bundle:
            return entry.get("team_name")
    return None


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: ``**`` any depth, ``*`` within a segment, ``?`` one character."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _teams_by_pattern(governance: Governance, location: DagLocation) -> list[str]:
    return [
        name
        for name, team in governance.teams.items()
        if any(
            _glob(p.path).match(location.path) and _glob(p.bundle).match(location.bundle or "")
            for p in team.dags
        )
    ]


def derive_team(governance: Governance, location: DagLocation | None) -> str:
    """
    The governance team that owns the DAG at ``location``.

    :raises TeamBindingError: when no team owns it, two do, or (multi-team mode) its Airflow team
        is not registered in the governance file. The message says what to change and where.
    """
    if location is None:
        raise TeamBindingError(
            "the task has no DAG file that a DAG bundle holds, so it belongs to no team: a batch job "
            "must run in a DAG that the governance file assigns to a team"
        )
    if multi_team_mode():
        team = _airflow_team_of_bundle(location.bundle)
        if team is None:
            raise TeamBindingError(
                f"the DAG file {quote(str(location))} is in a bundle without an Airflow team "
                f"(multi-team mode: set team_name for the bundle in [dag_processor] dag_bundle_config_list)"
            )
        if team not in governance.teams:
            raise TeamBindingError(
                f"{governance.source}: the DAG's Airflow team {quote(team)} (bundle {location.bundle}) "
                f"is not registered (registered teams: {', '.join(governance.teams)})"
            )
        return team
    teams = _teams_by_pattern(governance, location)
    if not teams:
        raise TeamBindingError(
            f"{governance.source}: the DAG file {quote(str(location))} belongs to no team; list it under "
            f"one team's 'dags' patterns"
        )
    if len(teams) > 1:
        raise TeamBindingError(
            f"{governance.source}: the DAG file {quote(str(location))} matches the 'dags' patterns of "
            f"teams {', '.join(teams)}; a DAG belongs to exactly one team, narrow the patterns"
        )
    return teams[0]
