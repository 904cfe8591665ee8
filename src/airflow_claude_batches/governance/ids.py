"""Namespaced ``custom_id`` values for Message Batches requests.

The API accepts a ``custom_id`` only if it matches ``^[a-zA-Z0-9_-]{1,64}$``; it is the one field that
ties a result line back to its request. Every id this provider sends is ``{team}_{job_key}_{index}``:

- ``team``: a registered team name, ``^[a-z][a-z0-9]{0,15}$`` (no ``_`` so the id splits cleanly);
- ``job_key``: at most 32 characters of ``[a-z0-9-]`` derived from the job id by :func:`job_key`;
- ``index``: the record's position in the logical job, zero-padded to 8 digits.

For example ``namespaced_id("billing", "reconcile-2026-06-06", 42)`` is
``billing_reconcile-2026-06-06_00000042``. The longest id is 16 + 1 + 32 + 1 + 8 = 58 characters.

Job keys are injective: a job id that already is a short canonical slug is its own key; any other job
id becomes ``{readable-prefix}--{hash}`` where the hash covers the full original id. A canonical slug
never contains ``--``, so the two forms cannot meet, and two hashed keys differ whenever their
hashes do (60 bits: a collision needs about a billion job ids in one team).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass

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

#: What the Message Batches API accepts as a ``custom_id``.
CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: A registered team name.
TEAM_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,15}$")

MAX_JOB_KEY_LENGTH = 32
MAX_INDEX = 99_999_999
_INDEX_DIGITS = 8
_HASH_LENGTH = 12  # base32 characters, 60 bits
_HASH_SEPARATOR = "--"
_PREFIX_LENGTH = MAX_JOB_KEY_LENGTH - _HASH_LENGTH - len(_HASH_SEPARATOR)
_EMPTY_PREFIX = "id"  # readable stand-in when nothing of the job id survives slugging

_SLUG = r"[a-z0-9]+(?:-[a-z0-9]+)*"
#: A job key as :func:`job_key` produces it: a canonical slug, or a slug prefix, ``--`` and the hash.
JOB_KEY_PATTERN = re.compile(rf"^(?:{_SLUG}|{_SLUG}{_HASH_SEPARATOR}[a-z2-7]{{{_HASH_LENGTH}}})$")
_INDEX_PATTERN = re.compile(rf"^[0-9]{{{_INDEX_DIGITS}}}$")
_NOT_SLUG_CHARS = re.compile(r"[^a-z0-9]+")


class InvalidCustomId(ValueError):
    """A ``custom_id`` that this provider did not mint (or a part that cannot make one)."""


@dataclass(frozen=True)
class RecordRef:
    """Where one result line belongs: the team, the job (by key) and the record's index in the job."""

    team: str
    job_key: str
    index: int


@functools.lru_cache(maxsize=1024)  # minting 100,000 ids of one job hashes its id once
def job_key(job_id: str) -> str:
    """
    Return the ``[a-z0-9-]{1,32}`` key for ``job_id``; distinct job ids get distinct keys.

    The slug lowercases the id, turns every run of other characters into one ``-`` and strips ``-``
    from the ends. If that gives back ``job_id`` unchanged within 32 characters, it is the key.
    Otherwise (``"Reconcile 2026"``, anything with ``_``, ``:`` or non-ASCII text, long ids) the key
    is the slug cut to 18 characters, ``--`` and a hash of the full original id.

    :raises ValueError: if ``job_id`` is not a non-empty string.
    """
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"job id must be a non-empty string, got {job_id!r}")
    slug = _NOT_SLUG_CHARS.sub("-", job_id.lower()).strip("-")
    if slug == job_id and len(slug) <= MAX_JOB_KEY_LENGTH:
        return slug
    # surrogatepass keeps the encoding injective for any str, even one holding lone surrogates.
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).digest()
    short_hash = base64.b32encode(digest).decode("ascii").lower()[:_HASH_LENGTH]
    prefix = slug[:_PREFIX_LENGTH].rstrip("-") or _EMPTY_PREFIX
    return f"{prefix}{_HASH_SEPARATOR}{short_hash}"


def namespaced_id(team: str, job_id: str, index: int) -> str:
    """
    Mint the ``custom_id`` of record ``index`` of job ``job_id`` run by ``team``.

    :raises ValueError: on a team name outside ``TEAM_PATTERN``, an empty job id, or an index that is
        not an int in ``0..99,999,999``.
    """
    if not isinstance(team, str) or not TEAM_PATTERN.fullmatch(team):
        raise ValueError(f"team must match {TEAM_PATTERN.pattern}, got {team!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
        raise ValueError(f"record index must be an int in 0..{MAX_INDEX:,}, got {index!r}")
    return f"{team}_{job_key(job_id)}_{index:0{_INDEX_DIGITS}d}"


def parse_custom_id(custom_id: str) -> RecordRef:
    """
    Split a ``custom_id`` minted by :func:`namespaced_id` back into its parts.

    :raises InvalidCustomId: if the id is not ``{team}_{job_key}_{index}`` with each part valid.
    """
    if not isinstance(custom_id, str):
        raise InvalidCustomId(f"custom_id must be a string, got {type(custom_id).__name__}")
    parts = custom_id.split("_")
    if len(parts) != 3:
        raise InvalidCustomId(
            f"custom_id {custom_id!r} is not '{{team}}_{{job_key}}_{{index}}': "
            f"splitting on '_' gives {len(parts)} part(s), expected 3"
        )
    team, key, index = parts
    if not TEAM_PATTERN.fullmatch(team):
        raise InvalidCustomId(f"custom_id {custom_id!r}: team {team!r} does not match {TEAM_PATTERN.pattern}")
    if len(key) > MAX_JOB_KEY_LENGTH or not JOB_KEY_PATTERN.fullmatch(key):
        raise InvalidCustomId(
            f"custom_id {custom_id!r}: job key {key!r} is not a job key "
            f"(at most {MAX_JOB_KEY_LENGTH} characters of [a-z0-9-], as job_key() makes them)"
        )
    if not _INDEX_PATTERN.fullmatch(index):
        raise InvalidCustomId(f"custom_id {custom_id!r}: index {index!r} is not {_INDEX_DIGITS} digits")
    return RecordRef(team=team, job_key=key, index=int(index))
