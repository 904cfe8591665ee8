"""
The governance file: which teams may run which kinds of batch jobs, with which models, fields,
sizes and budgets.

One YAML file for the whole Airflow deployment, owned by the platform team, at the path set by
``[claude_batches] policy_file`` (environment variable ``AIRFLOW__CLAUDE_BATCHES__POLICY_FILE``)::

    teams:
      marketing:
        daily_budget_usd: 200
        dags: ["marketing/**", "marketing_*.py"]   # which DAGs are the team's (see teams.py)
    job_types:
      enrichment:
        teams: [marketing]
        priority: bulk
        allowed_models: [claude-haiku-4-5]
        allowed_fields: [system, temperature]
        max_tokens_cap: 1024
        max_requests: 200000
        max_bytes: 500000000
        max_job_cost_usd: 150
    prices: {}        # overrides of airflow_claude_batches.governance.cost.DEFAULT_PRICES
    account: {queue_limit: 100000}

A team's or job type's name is its key. Unknown keys anywhere are errors, and so are duplicate keys
(plain YAML would silently keep the last one), and so is nesting deeper than :data:`MAX_YAML_DEPTH`.
Every error names the file, the entry and the field, and quotes at most about 200 characters of a
value (:func:`airflow_claude_batches.governance.quoting.quote`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from airflow.providers.common.compat.sdk import conf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from airflow_claude_batches.governance.cost import ModelPrice, UnknownModelPrice, price_for
from airflow_claude_batches.governance.ids import TEAM_PATTERN
from airflow_claude_batches.governance.quoting import quote
from airflow_claude_batches.governance.windows import SubmitWindow

__all__ = [
    "REQUIRED_FIELDS",
    "AccountPolicy",
    "DagPattern",
    "Governance",
    "JobTypePolicy",
    "PolicyError",
    "Priority",
    "TeamPolicy",
    "load_policy",
]

#: Deepest nesting of mappings and lists the governance file may have (it needs four levels).
MAX_YAML_DEPTH = 20
#: A job type's priority class: the admission waiting list serves the classes in this order.
Priority = Literal["time_sensitive", "normal", "bulk"]
_PRIORITY_RANKS: dict[str, int] = {"time_sensitive": 0, "normal": 1, "bulk": 2}

#: Messages parameters every request must carry; always allowed.
REQUIRED_FIELDS = ("model", "max_tokens", "messages")

_CONFIG_HINT = (
    "set [claude_batches] policy_file in airflow.cfg (or the environment variable "
    "AIRFLOW__CLAUDE_BATCHES__POLICY_FILE) to the path of the governance YAML file"
)


def default_pool(team: str) -> str:
    """The Airflow pool of a team that names none: ``claude_batches_{team}``."""
    return f"claude_batches_{team}"


class PolicyError(ValueError):
    """The governance file is missing or invalid, or a job asks for something it does not allow."""


class _Policy(BaseModel):
    # Frozen: load_policy hands one cached instance to every task in the process.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DagPattern(_Policy):
    """DAG files of a bundle: a bundle name glob and a file path glob relative to the bundle root."""

    bundle: str = Field(default="*", min_length=1, max_length=256, description="Glob over bundle names.")
    path: str = Field(default="**", min_length=1, max_length=512, description="Glob over bundle paths.")

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"{quote(path)} must be relative to the bundle root, without '..'")
        return path


class TeamPolicy(_Policy):
    """A team allowed to submit batches, with its Airflow pool, its budgets and its DAGs."""

    name: str = Field(pattern=TEAM_PATTERN.pattern, description="Part of every custom_id the team sends.")
    pool: str = Field(min_length=1, max_length=256, description="Defaults to claude_batches_{name}.")
    max_concurrent_batches: int = Field(default=2, ge=1, description="Slots of the team's pool.")
    daily_budget_usd: float | None = Field(default=None, ge=0)
    monthly_budget_usd: float | None = Field(default=None, ge=0)
    dags: list[DagPattern] = Field(
        default=[],
        description="The team's DAG files, when Airflow does not run in multi-team mode: a path glob "
        "relative to the bundle root (any bundle), or {bundle: GLOB, path: GLOB}. See teams.py.",
    )
    # Scheduling of the shared queue (see airflow_claude_batches.capacity.admission).
    max_queue_share: float | None = Field(
        default=None, gt=0, le=1, description="Largest share of account.queue_limit held while others wait."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_pool(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("pool") is None and isinstance(data.get("name"), str):
            data = {**data, "pool": default_pool(data["name"])}
        if isinstance(data, Mapping) and isinstance(data.get("dags"), list):
            data = {**data, "dags": [{"path": p} if isinstance(p, str) else p for p in data["dags"]]}
        return data


class JobTypePolicy(_Policy):
    """A kind of batch job: who may run it and what each of its requests and the whole job may be."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    teams: list[str] = Field(default=[], description="Teams allowed to use it; empty means every team.")
    allowed_models: list[str] = Field(min_length=1)
    allowed_fields: list[str] = Field(
        description="Top-level Messages parameters allowed besides model, max_tokens and messages."
    )
    max_tokens_cap: int = Field(gt=0)
    max_requests: int = Field(ge=1, description="Per logical job, which may span several batches.")
    max_bytes: int = Field(gt=0, description="Per job, of the serialized request params.")
    max_job_cost_usd: float = Field(gt=0, description="Ceiling of the job's estimated cost at batch prices.")
    error_ratio_alert: float = Field(default=0.05, ge=0, le=1)
    retention_days: int = Field(default=28, ge=1, le=29, description="The API drops results at day 29.")
    archive: bool = Field(default=True, description="Archive results at retention (else purge them).")
    priority: Priority = Field(
        default="normal",
        description="Order in the admission waiting list: time_sensitive, then normal, then bulk.",
    )

    @model_validator(mode="before")
    @classmethod
    def _time_sensitive_flag(cls, data: Any) -> Any:
        """Accept the earlier ``time_sensitive: true|false`` as ``priority: time_sensitive|normal``."""
        if not isinstance(data, Mapping) or "time_sensitive" not in data:
            return data
        data = dict(data)
        flag = data.pop("time_sensitive")
        if not isinstance(flag, bool):
            raise ValueError("time_sensitive: must be true or false (or use priority)")
        implied = "time_sensitive" if flag else "normal"
        if data.setdefault("priority", implied) != implied and flag:
            raise ValueError(
                f"time_sensitive: true contradicts priority {quote(data['priority'])}; keep only priority"
            )
        return data

    @property
    def time_sensitive(self) -> bool:
        """Whether the job type's priority class is ``time_sensitive``."""
        return self.priority == "time_sensitive"

    @property
    def priority_rank(self) -> int:
        """The priority class as a sort key: 0 for time_sensitive (served first), 1 normal, 2 bulk."""
        return _PRIORITY_RANKS[self.priority]

    # Scheduling of the shared queue (see airflow_claude_batches.capacity.admission).
    window: SubmitWindow | None = Field(default=None, description="When its jobs may be admitted.")
    exclusive: bool = Field(default=False, description="One job at a time across the account.")

    @model_validator(mode="after")
    def _time_sensitive_has_no_window(self) -> JobTypePolicy:
        if self.time_sensitive and self.window is not None:
            raise PydanticCustomError("window", "a time-sensitive job type cannot have a window")
        return self

    def check_request(self, params: Mapping[str, Any]) -> list[str]:
        """
        Return what is wrong with one request's Messages ``params`` under this job type (empty if ok).

        ``custom_id`` is not judged here: the operator mints ids and rejects requests that bring one.
        """
        if not isinstance(params, Mapping):
            return [f"params must be a mapping of Messages parameters, got {type(params).__name__}"]
        problems = []
        model = params.get("model")
        if model is None:
            problems.append("model is missing")
        elif not isinstance(model, str) or model not in self.allowed_models:
            problems.append(
                f"model {quote(model)} is not allowed for job type {self.name!r} "
                f"(allowed: {', '.join(self.allowed_models)})"
            )
        allowed = {*REQUIRED_FIELDS, *self.allowed_fields, "custom_id"}
        extra = sorted(
            field if isinstance(field, str) and len(field) <= 64 else quote(field)
            for field in params
            if field not in allowed
        )
        if extra:
            shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
            problems.append(
                f"fields not allowed for job type {self.name!r}: {shown} "
                f"(allowed besides {', '.join(REQUIRED_FIELDS)}: {', '.join(self.allowed_fields) or 'none'})"
            )
        max_tokens = params.get("max_tokens")
        if max_tokens is None:
            problems.append("max_tokens is missing")
        elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            problems.append(f"max_tokens must be a positive int, got {quote(max_tokens)}")
        elif max_tokens > self.max_tokens_cap:
            problems.append(
                f"max_tokens {max_tokens} is over the cap of {self.max_tokens_cap} for job type {self.name!r}"
            )
        messages = params.get("messages")
        if messages is None:
            problems.append("messages is missing")
        elif not isinstance(messages, list) or not messages:
            problems.append("messages must be a non-empty list")
        return problems


class AccountPolicy(_Policy):
    """Limits shared by every team on the Anthropic workspace."""

    queue_limit: int = Field(
        default=100_000, ge=1, description="Max requests in `processing` across the workspace (tier limit)."
    )
    admission_max_wait_seconds: float = Field(default=3600, ge=0)
    admission_poll_seconds: float = Field(default=30, gt=0)
    time_sensitive_reserve: int = Field(
        default=0, ge=0, description="Requests of queue_limit that only time-sensitive job types may use."
    )


class Governance(_Policy):
    """The whole governance file."""

    teams: dict[str, TeamPolicy]
    job_types: dict[str, JobTypePolicy]
    prices: dict[str, ModelPrice] = Field(default={}, description="Overrides of cost.DEFAULT_PRICES.")
    account: AccountPolicy = Field(default_factory=AccountPolicy)
    source: str = Field(default="<governance>", description="Where it was loaded from, for messages.")

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        """Give each team and job type its key as ``name``; an entry may be empty (all defaults)."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for section in ("teams", "job_types"):
            entries = data.get(section)
            if isinstance(entries, Mapping):
                data[section] = {
                    key: {"name": key, **(entry or {})} if isinstance(entry, Mapping | None) else entry
                    for key, entry in entries.items()
                }
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> Governance:
        problems = []
        known_teams = ", ".join(self.teams) or "none"
        pools: dict[str, str] = {}
        for key, team in self.teams.items():
            if team.name != key:
                problems.append(f"teams.{key}.name: {team.name!r} differs from its key {key!r}")
            if team.pool in pools:
                problems.append(
                    f"teams.{key}.pool: pool {team.pool!r} is already the pool of team {pools[team.pool]!r}; "
                    f"each team needs its own pool"
                )
            pools.setdefault(team.pool, key)
        for key, job_type in self.job_types.items():
            if job_type.name != key:
                problems.append(f"job_types.{key}.name: {job_type.name!r} differs from its key {key!r}")
            problems.extend(
                f"job_types.{key}.teams: team {team!r} is not registered (registered teams: {known_teams})"
                for team in job_type.teams
                if team not in self.teams
            )
            for model in job_type.allowed_models:
                try:
                    price_for(model, self.prices)
                except UnknownModelPrice:
                    problems.append(
                        f"job_types.{key}.allowed_models: no price known for model {model!r}; "
                        f"add it under 'prices:'"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def resolve(self, team: str, job_type: str) -> tuple[TeamPolicy, JobTypePolicy]:
        """
        Return the policies that govern ``team`` running a job of ``job_type``.

        :raises PolicyError: for an unregistered team, an unknown job type, or a job type that is not
            open to the team.
        """
        team_policy = self.teams.get(team)
        if team_policy is None:
            raise PolicyError(
                f"{self.source}: team {quote(team)} is not registered "
                f"(registered teams: {', '.join(self.teams)})"
            )
        job_policy = self.job_types.get(job_type)
        if job_policy is None:
            raise PolicyError(
                f"{self.source}: unknown job type {quote(job_type)} (job types: {', '.join(self.job_types)})"
            )
        if job_policy.teams and team not in job_policy.teams:
            raise PolicyError(
                f"{self.source}: job type {job_type!r} is not open to team {team!r} "
                f"(teams allowed: {', '.join(job_policy.teams)})"
            )
        return team_policy, job_policy


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping and deep nesting."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # Composing recurses once per level: stop long before Python's recursion limit.
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {quote(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _validation_messages(source: str, error: ValidationError) -> list[str]:
    lines: list[str] = []
    for detail in error.errors(include_url=False):
        location = ".".join(str(p) if len(str(p)) <= 64 else quote(p) for p in detail["loc"])
        if detail["type"] == "value_error" and not location:
            # The file-wide cross-checks: each line already starts with its location.
            lines.extend(f"{source}: {line}" for line in str(detail["ctx"]["error"]).splitlines())
        elif detail["type"] == "value_error":
            lines.append(f"{source}: {location}: {detail['ctx']['error']}")
        else:
            lines.append(f"{source}: {location or '(top level)'}: {detail['msg']}")
    return lines


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int, size: int) -> Governance:
    """Parse and validate the file; the stat values only make a changed file a new cache key."""
    try:
        with open(path, encoding="utf-8") as file:
            raw = yaml.load(file, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except OSError as error:
        raise PolicyError(f"{path}: cannot read the governance file: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise PolicyError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, Mapping):
        raise PolicyError(
            f"{path}: the governance file must be a mapping with teams:, job_types:, prices: and account:, "
            f"got {'an empty file' if raw is None else type(raw).__name__}"
        )
    if "source" in raw:
        raise PolicyError(f"{path}: source: Extra inputs are not permitted")
    try:
        return Governance.model_validate({**raw, "source": path})
    except ValidationError as error:
        raise PolicyError("\n".join(_validation_messages(path, error))) from None


def load_policy(path: str | os.PathLike[str] | None = None) -> Governance:
    """
    Load and validate the governance file.

    The parsed file is cached per path, modification time and size, so tasks in one worker process
    do not re-parse it, while an edited file is picked up by the next call.

    :param path: the YAML file; ``None`` reads ``[claude_batches] policy_file`` from Airflow config.
    :raises PolicyError: if no file is configured, or it cannot be read, parsed or validated.
    """
    if path is None:
        path = conf.get("claude_batches", "policy_file", fallback="")
    if not path:
        raise PolicyError(f"no governance file configured: {_CONFIG_HINT}")
    path = os.path.abspath(os.fspath(path))
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise PolicyError(f"{path}: governance file not found ({_CONFIG_HINT})") from None
    except OSError as error:
        raise PolicyError(f"{path}: cannot read the governance file: {error.strerror}") from None
    return _load(path, stat.st_mtime_ns, stat.st_size)
