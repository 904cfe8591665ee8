"""Quote a user's value in an error message without letting it swamp the message.

A 300 MB ``model`` string must not become a 300 MB exception in the task log: every message that
shows a value a user gave quotes it through :func:`quote`, which keeps about
:data:`MAX_QUOTED_CHARS` characters and says how long the value was.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["MAX_QUOTED_CHARS", "quote"]

#: About how many characters of a user's value an error message shows.
MAX_QUOTED_CHARS = 200

_repr = reprlib.Repr()
_repr.maxstring = MAX_QUOTED_CHARS
_repr.maxother = MAX_QUOTED_CHARS
_repr.maxlong = 40
_repr.maxlevel = 3
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = 6


def quote(value: Any) -> str:
    """
    ``repr(value)`` cut to about :data:`MAX_QUOTED_CHARS` characters.

    A long string or bytes value keeps its start and says how long it was; containers show their
    first items, nested at most three levels. Never builds the full ``repr`` of a large value.
    """
    if isinstance(value, str | bytes) and len(value) > MAX_QUOTED_CHARS:
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:MAX_QUOTED_CHARS]!r}... ({len(value)} {unit})"
    text = _repr.repr(value)
    return text if len(text) <= 2 * MAX_QUOTED_CHARS else text[: 2 * MAX_QUOTED_CHARS] + "..."
