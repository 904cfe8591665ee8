"""
The public import path of the ``custom_id`` convention (DESIGN.md's public names).

The convention lives in :mod:`airflow_claude_batches.governance.ids` with the rest of the deployment's
rules; DAGs and readers of results import it from here, which stays stable when the package's inside
moves.
"""

from airflow_claude_batches.governance.ids import (
    CUSTOM_ID_PATTERN,
    JOB_KEY_PATTERN,
    MAX_INDEX,
    TEAM_PATTERN,
    InvalidCustomId,
    RecordRef,
    job_key,
    namespaced_id,
    parse_custom_id,
)

__all__ = [
    "CUSTOM_ID_PATTERN",
    "JOB_KEY_PATTERN",
    "MAX_INDEX",
    "TEAM_PATTERN",
    "InvalidCustomId",
    "RecordRef",
    "job_key",
    "namespaced_id",
    "parse_custom_id",
]
