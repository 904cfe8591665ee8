"""
The public import path of the governance file's models and loader (DESIGN.md's public names).

They live in :mod:`airflow_claude_batches.governance.policy`; platform tooling that validates a
governance file imports them from here (``load_policy``, ``Governance``, ``TeamPolicy``,
``JobTypePolicy``, ...), which stays stable when the package's inside moves.
"""

from airflow_claude_batches.governance import policy as _policy
from airflow_claude_batches.governance.policy import *  # noqa: F403

__all__ = _policy.__all__
