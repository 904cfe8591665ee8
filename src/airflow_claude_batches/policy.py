"""
The public import path of the governance file's models and loader (DESIGN.md's public names).

They live in :mod:`airflow_claude_batches.governance.policy`; platform tooling that validates a
governance file imports them from here, which stays stable when the package's inside moves.
"""

from airflow_claude_batches.governance.policy import (
    REQUIRED_FIELDS,
    AccountPolicy,
    DagPattern,
    Governance,
    JobTypePolicy,
    PolicyError,
    Priority,
    TeamPolicy,
    load_policy,
)

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
