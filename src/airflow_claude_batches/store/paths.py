"""
Where things live in the results store, and the one way to write there.

The store root is ``[claude_batches] results_root`` (default ``file://$AIRFLOW_HOME/claude_batches``,
or e.g. ``s3://bucket/prefix`` with ``[claude_batches] results_conn_id``); a batch's files live under
``{root}/{team}/{job_key}/{batch_id}/``. Every segment is checked against its pattern before it becomes
part of a path, so no name from a DAG or the API can point outside its own folder, and every file is
written by :func:`atomic_write`, so a crash never leaves a partial file under a final name. Results,
manifests, keys and the retention archive all go through here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO, TYPE_CHECKING

from airflow_claude_batches.exceptions import ResultsError
from airflow_claude_batches.governance.ids import JOB_KEY_PATTERN, TEAM_PATTERN
from airflow_claude_batches.store.filesystems import require_filesystem

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = [
    "CONFIG_SECTION",
    "atomic_write",
    "batch_dir",
    "check_batch_id",
    "job_dir",
    "plain_uri",
    "store_root",
]

CONFIG_SECTION = "claude_batches"

# Batch ids are opaque (``msgbatch_…``) but become a path segment: refuse anything that could escape.
_BATCH_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# s3fs buffers this much per open writer before uploading a part: four writers stay well under 100 MB
# whatever the size of the results, and 10,000 parts (the S3 maximum) still allow 80 GB per file.
_WRITE_BLOCK_SIZE = 8 * 2**20


def store_root(root: str | ObjectStoragePath | None = None, conn_id: str | None = None) -> ObjectStoragePath:
    """
    Return the store root as an ``ObjectStoragePath`` carrying its connection.

    A path given as ``root`` is returned as it is (it carries its own connection).

    ``root`` and ``conn_id`` default to ``[claude_batches] results_root`` and ``results_conn_id``; an
    empty root means ``file://$AIRFLOW_HOME/claude_batches``. The connection must travel with the path:
    ``ObjectStoragePath("s3://…")`` without one does not fall back to ``aws_default``.
    """
    from airflow.providers.common.compat.sdk import conf
    from airflow.sdk import ObjectStoragePath

    if isinstance(root, ObjectStoragePath):
        return root
    if not root:
        root = conf.get(CONFIG_SECTION, "results_root", fallback="") or ""
    if not root:
        from airflow.configuration import get_airflow_home

        root = f"file://{get_airflow_home()}/claude_batches"
    if conn_id is None:
        conn_id = conf.get(CONFIG_SECTION, "results_conn_id", fallback="") or None
    return require_filesystem(ObjectStoragePath(root, conn_id=conn_id))


def _segment(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ResultsError(f"{what} {value!r} cannot be a store path segment: must match {pattern.pattern}")
    return value


def check_batch_id(batch_id: str) -> str:
    """Return ``batch_id`` if it is safe as a path segment (ids are opaque, paths are not)."""
    return _segment(batch_id, _BATCH_ID_PATTERN, "batch id")


def job_dir(root: ObjectStoragePath, team: str, job_key: str) -> ObjectStoragePath:
    """``{root}/{team}/{job_key}``: one logical job, possibly spanning several batches."""
    return root / _segment(team, TEAM_PATTERN, "team") / _segment(job_key, JOB_KEY_PATTERN, "job key")


def batch_dir(root: ObjectStoragePath, team: str, job_key: str, batch_id: str) -> ObjectStoragePath:
    """``{root}/{team}/{job_key}/{batch_id}``: the results of one batch."""
    return job_dir(root, team, job_key) / check_batch_id(batch_id)


@contextmanager
def atomic_write(target: ObjectStoragePath) -> Iterator[IO[bytes]]:
    """
    Open ``target`` for binary writing so that it appears complete or not at all.

    Bytes go to a hidden temporary name beside the target (``.{name}.tmp-{uuid}``, never matching a
    reader's pattern); on a clean exit it is moved onto the target (``rename`` on a local disk, a
    server-side copy on S3, both atomic to readers), on any error it is removed and the error re-raised.
    The one writer for results, manifests, keys and ledger records.
    """
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    fs = tmp.fs
    try:
        # fs.open rather than ObjectStoragePath.open: the latter reports hook lineage on every write
        # call, and the temporary name is no asset anyway.
        with fs.open(tmp.path, "wb", block_size=_WRITE_BLOCK_SIZE) as handle:
            yield handle
        fs.mv(tmp.path, target.path)
    except BaseException:
        with suppress(Exception):
            fs.rm(tmp.path)
        raise


def plain_uri(path: ObjectStoragePath) -> str:
    """The URI without the connection id Airflow embeds as user info (that lives in ``conn_id``)."""
    return f"{path.protocol or 'file'}://{path.path}"
