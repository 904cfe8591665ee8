"""Incremental parsing and validation of a ``POST /v1/messages/batches`` body.

A 100,000-request body is ~235 MB: ``json.load`` of it would build well over a gigabyte of Python
objects. Instead the body is read from the socket in 1 MB slices and each element of ``requests`` is
decoded on its own with ``JSONDecoder.raw_decode``, validated, reduced to a few numbers
(:class:`RequestIndex`), and dropped.

Error messages follow the API's own (pydantic-style) wording, e.g.
``requests.0.custom_id: String should have at most 64 characters``.
"""

from __future__ import annotations

import codecs
import json
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BufferedIOBase
from typing import IO, Any

MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
#: The Messages API caps one request at 32 MB; a pending element larger than this is malformed JSON.
_MAX_ELEMENT_CHARS = 33 * 1024 * 1024
_CHUNK = 1 << 20

CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CUSTOM_ID_PATTERN_TEXT = "^[a-zA-Z0-9_-]{1,64}$"

#: Top-level Messages API parameters (``CreateMessageParams`` in the OpenAPI description).
MESSAGES_PARAMS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "cache_control",
        "container",
        "inference_geo",
        "metadata",
        "output_config",
        "service_tier",
        "stop_sequences",
        "stream",
        "system",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
    }
)
#: ``BetaCreateMessageParams`` adds these; accepted on ``?beta=true``.
BETA_MESSAGES_PARAMS = MESSAGES_PARAMS | {
    "context_management",
    "mcp_servers",
    "output_format",
    "speed",
    "user_profile_id",
}
_REQUIRED_PARAMS = ("model", "messages", "max_tokens")


class BatchValidationError(ValueError):
    """The body would be rejected by the API with 400 ``invalid_request_error``."""


@dataclass
class RequestIndex:
    """What the emulator keeps per batch: enough to answer results, nothing more."""

    custom_ids: list[str] = field(default_factory=list)
    max_tokens: array = field(default_factory=lambda: array("l"))
    input_tokens: array = field(default_factory=lambda: array("l"))
    model_ids: array = field(default_factory=lambda: array("H"))
    models: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.custom_ids)

    def add(self, custom_id: str, model: str, max_tokens: int, input_tokens: int) -> None:
        try:
            model_id = self.models.index(model)
        except ValueError:
            model_id = len(self.models)
            self.models.append(model)
        self.custom_ids.append(custom_id)
        self.max_tokens.append(max_tokens)
        self.input_tokens.append(input_tokens)
        self.model_ids.append(model_id)


class _Stream:
    """A text window over a binary body: read lazily, decode UTF-8 incrementally."""

    def __init__(self, raw: IO[bytes] | BufferedIOBase, length: int) -> None:
        self._raw = raw
        self._left = length
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.eof = False

    def fill(self, at_least: int = 0) -> bool:
        """Append at least ``at_least`` (or one slice) more bytes of text; drop what was consumed."""
        if self.eof:
            return False
        parts = []
        wanted = max(at_least, _CHUNK)
        while wanted > 0 and self._left > 0:
            data = self._raw.read(min(self._left, max(wanted, _CHUNK)))
            if not data:
                break
            self._left -= len(data)
            wanted -= len(data)
            parts.append(data)
        final = self._left <= 0 or not parts
        try:
            text = self._decoder.decode(b"".join(parts), final=final)
        except UnicodeDecodeError:
            raise BatchValidationError("The request body is not valid UTF-8") from None
        self.eof = final
        self.buf = self.buf[self.pos :] + text
        self.pos = 0
        return True

    def drain(self) -> None:
        """Read and discard the rest of the body so the connection stays usable."""
        while self._left > 0:
            data = self._raw.read(min(self._left, _CHUNK))
            if not data:
                break
            self._left -= len(data)

    def peek(self) -> str:
        while True:
            buf, pos = self.buf, self.pos
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            self.pos = pos
            if pos < len(buf):
                return buf[pos]
            if not self.fill():
                return ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _invalid_json()
        self.pos += 1

    def value(self, decoder: json.JSONDecoder) -> tuple[Any, int]:
        """Decode the next JSON value; returns it and its length in characters."""
        self.peek()
        while True:
            try:
                obj, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                pending = len(self.buf) - self.pos
                if self.eof or pending > _MAX_ELEMENT_CHARS or not self.fill(max(_CHUNK, pending)):
                    raise _invalid_json() from None
                continue
            if end == len(self.buf) and not self.eof and not isinstance(obj, (dict, list, str)):
                # A number or literal cut at the window's edge may continue in the next slice.
                self.fill()
                continue
            start, self.pos = self.pos, end
            return obj, end - start


def _invalid_json() -> BatchValidationError:
    return BatchValidationError(
        "There was an error parsing the body of your request. The body must be valid JSON."
    )


def _text_size(value: Any) -> int:
    """Characters of text in a Messages value (strings anywhere inside it; keys excluded)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_size(v) for v in value)
    if isinstance(value, dict):
        return sum(_text_size(v) for k, v in value.items() if k not in ("type", "role", "cache_control"))
    return 0


def estimate_input_tokens(params: dict[str, Any]) -> int:
    """About four characters a token, plus a few tokens of framing per message."""
    chars = (
        _text_size(params.get("messages"))
        + _text_size(params.get("system"))
        + _text_size(params.get("tools"))
    )
    messages = params.get("messages")
    framing = 3 * len(messages) if isinstance(messages, list) else 0
    return max(1, (chars + 3) // 4 + framing)


def _validate_request(i: int, item: Any, seen: dict[str, int], allowed: frozenset[str]) -> tuple[str, dict]:
    loc = f"requests.{i}"
    if not isinstance(item, dict):
        raise BatchValidationError(f"{loc}: Input should be a valid dictionary")
    for key in item:
        if key not in ("custom_id", "params"):
            raise BatchValidationError(f"{loc}.{key}: Extra inputs are not permitted")
    for key in ("custom_id", "params"):
        if key not in item:
            raise BatchValidationError(f"{loc}.{key}: Field required")
    custom_id = item["custom_id"]
    if not isinstance(custom_id, str):
        raise BatchValidationError(f"{loc}.custom_id: Input should be a valid string")
    if not custom_id:
        raise BatchValidationError(f"{loc}.custom_id: String should have at least 1 character")
    if len(custom_id) > 64:
        raise BatchValidationError(f"{loc}.custom_id: String should have at most 64 characters")
    if not CUSTOM_ID_RE.match(custom_id):
        raise BatchValidationError(
            f"{loc}.custom_id: String should match pattern '{_CUSTOM_ID_PATTERN_TEXT}'"
        )
    if custom_id in seen:
        raise BatchValidationError(
            f"{loc}.custom_id: Duplicate custom_id '{custom_id}' (also used by requests.{seen[custom_id]}); "
            "custom_id values must be unique within a batch"
        )
    params = item["params"]
    if not isinstance(params, dict):
        raise BatchValidationError(f"{loc}.params: Input should be a valid dictionary")
    for key in params:
        if key not in allowed:
            raise BatchValidationError(f"{loc}.params.{key}: Extra inputs are not permitted")
    for key in _REQUIRED_PARAMS:
        if key not in params:
            raise BatchValidationError(f"{loc}.params.{key}: Field required")
    if not isinstance(params["model"], str) or not params["model"]:
        raise BatchValidationError(f"{loc}.params.model: Input should be a valid string")
    max_tokens = params["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise BatchValidationError(f"{loc}.params.max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise BatchValidationError(f"{loc}.params.max_tokens: Input should be greater than or equal to 1")
    messages = params["messages"]
    if not isinstance(messages, list):
        raise BatchValidationError(f"{loc}.params.messages: Input should be a valid list")
    if not messages:
        raise BatchValidationError(
            f"{loc}.params.messages: List should have at least 1 item after validation, not 0"
        )
    if params.get("stream"):
        raise BatchValidationError(f"{loc}.params.stream: Streaming is not supported in Message Batches")
    return custom_id, params


def _requests(stream: _Stream, decoder: json.JSONDecoder) -> Iterator[Any]:
    if stream.peek() != "[":
        raise BatchValidationError("requests: Input should be a valid list")
    stream.pos += 1
    if stream.peek() == "]":
        stream.pos += 1
        return
    while True:
        yield stream.value(decoder)[0]
        char = stream.peek()
        stream.pos += 1
        if char == "]":
            return
        if char != ",":
            raise _invalid_json()


def parse_batch_body(raw: IO[bytes] | BufferedIOBase, length: int, *, beta: bool = False) -> RequestIndex:
    """Read ``length`` bytes of a create body from ``raw`` and return its compact index.

    Raises :class:`BatchValidationError` with the API's message; the rest of the body is always read,
    so the HTTP connection can carry the error response.
    """
    stream = _Stream(raw, length)
    try:
        return _parse(stream, BETA_MESSAGES_PARAMS if beta else MESSAGES_PARAMS)
    finally:
        stream.drain()


def _parse(stream: _Stream, allowed: frozenset[str]) -> RequestIndex:
    decoder = json.JSONDecoder()
    index: RequestIndex | None = None
    stream.expect("{")
    if stream.peek() == "}":
        stream.pos += 1
    else:
        while True:
            key, _ = stream.value(decoder)
            if not isinstance(key, str):
                raise _invalid_json()
            stream.expect(":")
            if key != "requests":
                stream.value(decoder)
                raise BatchValidationError(f"{key}: Extra inputs are not permitted")
            index = _index_requests(stream, decoder, allowed)
            char = stream.peek()
            stream.pos += 1
            if char == "}":
                break
            if char != ",":
                raise _invalid_json()
    if stream.peek() != "":
        raise _invalid_json()
    if index is None:
        raise BatchValidationError("requests: Field required")
    return index


def _index_requests(stream: _Stream, decoder: json.JSONDecoder, allowed: frozenset[str]) -> RequestIndex:
    index = RequestIndex()
    seen: dict[str, int] = {}
    count = 0
    for item in _requests(stream, decoder):
        if count < MAX_REQUESTS:
            custom_id, params = _validate_request(count, item, seen, allowed)
            seen[custom_id] = count
            index.add(custom_id, params["model"], params["max_tokens"], estimate_input_tokens(params))
        count += 1
    if count == 0:
        raise BatchValidationError("requests: List should have at least 1 item after validation, not 0")
    if count > MAX_REQUESTS:
        raise BatchValidationError(
            f"requests: List should have at most {MAX_REQUESTS} items after validation, not {count}"
        )
    return index
