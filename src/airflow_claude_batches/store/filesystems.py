"""
Which object stores this installation can reach: S3 is an extra (``airflow-claude-batches[s3]``).

Without the Amazon provider, Airflow's ``ObjectStoragePath("s3://…")`` is made without complaint and
fails later with "No filesystem registered for scheme s3": :func:`require_filesystem` says instead,
where the path is made, which extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_claude_batches.exceptions import MissingExtraError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = ["EXTRAS", "require_filesystem"]

#: The extra of this distribution that brings each scheme's filesystem.
EXTRAS = {"s3": "s3", "s3a": "s3"}
_LOCAL = {"", "file", "local"}


def require_filesystem(path: ObjectStoragePath) -> ObjectStoragePath:
    """
    Return ``path`` if a filesystem serves its scheme, else raise :class:`MissingExtraError`.

    Local paths are always served and never load the providers' filesystems.
    """
    scheme = path.protocol
    if scheme in _LOCAL:
        return path
    from airflow.sdk.io import has_fs

    if has_fs(scheme):
        return path
    extra = EXTRAS.get(scheme)
    install = (
        f"install the {extra} extra: pip install 'airflow-claude-batches[{extra}]'"
        if extra
        else "install the Airflow provider that registers a filesystem for it"
    )
    raise MissingExtraError(f"No filesystem for {scheme}:// paths is installed: {install}.")
