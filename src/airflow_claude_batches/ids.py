"""
The public import path of the ``custom_id`` convention (DESIGN.md's public names).

The convention lives in :mod:`airflow_claude_batches.governance.ids` with the rest of the deployment's
rules; DAGs and readers of results import it from here (``namespaced_id``, ``parse_custom_id``,
``RecordRef``, ...), which stays stable when the package's inside moves.
"""

from airflow_claude_batches.governance import ids as _convention
from airflow_claude_batches.governance.ids import *  # noqa: F403

__all__ = _convention.__all__
