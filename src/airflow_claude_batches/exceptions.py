"""The provider's own exception types: one base, so a caller can catch everything this provider raises.

Each names what went wrong with the numbers needed to act on it; none ever carries an API key.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException

__all__ = [
    "AmbiguousCreateError",
    "BatchJobError",
    "ClaudeBatchesError",
    "CreateFailedError",
    "ForeignResultsError",
    "IncompleteResultsError",
    "JobNotAdmittedError",
    "JobRefusedError",
    "MissingExtraError",
    "ResultsError",
    "SubmitRefused",
    "TriggerEventError",
    "UnsafeDeleteError",
]


class ClaudeBatchesError(Exception):
    """Base of every error this provider raises on its own account."""


class ResultsError(ClaudeBatchesError, ValueError):
    """Results that cannot be stored or read as they are (unknown type, foreign id, bad checksum…)."""


class IncompleteResultsError(ResultsError):
    """
    A batch's results do not account for each of its requests exactly once.

    Lines are missing (the stream ended early or broke off) or a ``custom_id`` came twice, so the
    stored lines per result type differ from the batch's ``request_counts``. A new download may
    give the whole set; nothing is stored as complete meanwhile.
    """


class ForeignResultsError(ResultsError):
    """
    A result line whose ``custom_id`` does not belong to this batch's job and index range.

    Downloading again does not help: the batch holds requests this job did not send (a batch adopted
    by mistake, or ids minted elsewhere), so its results are refused as a whole.
    """


class CreateFailedError(ClaudeBatchesError):
    """A batch could not be created after several ambiguous failures, and none is found at the API."""


class AmbiguousCreateError(ClaudeBatchesError):
    """
    After a create whose answer was lost, several batches at the API could be the one it made.

    Adopting one by guess could attach another job's batch, creating again could pay twice: the
    task stops and names the candidates for a person to decide (``airflow claude-batches adopt``).
    """


class UnsafeDeleteError(ClaudeBatchesError):
    """A delete was refused: the path is not the batch's own folder under the store or archive root."""


class JobRefusedError(ClaudeBatchesError, AirflowFailException):
    """
    The job may not run as written (its plan, its size against the queue, its budget): the message
    lists why and says that nothing was sent. A retry would be refused the same way, so it fails
    the task without retrying.
    """


class SubmitRefused(JobRefusedError):
    """Governance refused the task itself (its team, its DAG, its code, its credentials)."""


class JobNotAdmittedError(ClaudeBatchesError, AirflowException):
    """The job waited for room in the account queue and got none in time; nothing was sent."""


class BatchJobError(ClaudeBatchesError, AirflowException):
    """The job's batches did not end as needed (timed out, failed, nothing succeeded)."""


class TriggerEventError(ClaudeBatchesError, AirflowException):
    """A trigger sent an event this version does not know: fail closed rather than guess."""


class MissingExtraError(ClaudeBatchesError, ValueError):
    """
    A store path's scheme needs an optional part that is not installed (``s3://`` without the
    ``[s3]`` extra): said when the path is made, before anything is read, written or sent.
    """
