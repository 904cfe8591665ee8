"""
Token prices and spend: an upper-bound estimate before submitting, the actual cost from usage after.

Prices are USD per million tokens at the **standard** (non-batch) rate, as published by Anthropic; the
Message Batches API bills 50% of them (:data:`BATCH_DISCOUNT`), cache writes and reads included. The
governance file can override or add models under ``prices:``.

Estimate rule (:func:`estimate_request_cost`), meant to err high so a budget check never lets through
a job it should have stopped:

- output tokens = ``max_tokens`` (thinking tokens are output and fit inside it);
- input tokens = ``ceil(bytes / 3)`` over the UTF-8 bytes of every string in ``system``, ``messages``
  and ``tools`` (English runs at about 4 bytes a token, CJK at about 3), plus
  :data:`IMAGE_TOKENS` for each image block in place of its data, :data:`MESSAGE_OVERHEAD_TOKENS` per
  message, :data:`TOOLS_OVERHEAD_TOKENS` when tools are given and :data:`REQUEST_OVERHEAD_TOKENS`;
- if the request asks for prompt caching anywhere (``cache_control``), every input token is priced as
  a cache write (the 1-hour rate when a ``ttl`` of ``1h`` appears).

It is not a bound for content the request only points at (documents or images by URL are counted by
their URL text, images by a fixed size) nor for text that tokenizes worse than 3 bytes a token (long
digit runs, random strings); budgets that must hold against such input want headroom.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BATCH_DISCOUNT",
    "DEFAULT_PRICES",
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "REQUEST_OVERHEAD_TOKENS",
    "TOOLS_OVERHEAD_TOKENS",
    "ModelPrice",
    "UnknownModelPrice",
    "actual_cost",
    "estimate_input_tokens",
    "estimate_request_cost",
    "price_for",
]

#: Batch requests cost this fraction of the standard price.
BATCH_DISCOUNT = 0.5
#: Multipliers of the input price that Anthropic applies to prompt-cache traffic.
CACHE_WRITE_MULTIPLIER = 1.25
CACHE_WRITE_1H_MULTIPLIER = 2.0
CACHE_READ_MULTIPLIER = 0.1

BYTES_PER_TOKEN = 3
#: An image counts this many tokens (about a 1.15 megapixel image, the size the API scales down to).
IMAGE_TOKENS = 1_600
MESSAGE_OVERHEAD_TOKENS = 8
#: The tool-use system prompt the API adds when ``tools`` is set (about 350 tokens on Claude 4 models).
TOOLS_OVERHEAD_TOKENS = 400
REQUEST_OVERHEAD_TOKENS = 16

_PER_MILLION = 1_000_000
_DATE_SUFFIX = re.compile(r"-\d{8}$")


class UnknownModelPrice(KeyError, ValueError):
    """No price is known for a model: add it under ``prices:`` in the governance file."""

    def __str__(self) -> str:
        # KeyError would show the message quoted.
        return str(self.args[0]) if self.args else ""


class ModelPrice(BaseModel):
    """
    Standard prices of one model in USD per million tokens.

    Only ``input`` and ``output`` are required; the cache prices follow Anthropic's multipliers of
    the input price unless given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0, description="5-minute prompt-cache writes")
    cache_read: float = Field(ge=0)
    cache_write_1h: float = Field(ge=0, description="1-hour prompt-cache writes")

    @model_validator(mode="before")
    @classmethod
    def _derive_cache_prices(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("input"), int | float):
            base = float(data["input"])
            data = {
                "cache_write": base * CACHE_WRITE_MULTIPLIER,
                "cache_write_1h": base * CACHE_WRITE_1H_MULTIPLIER,
                "cache_read": base * CACHE_READ_MULTIPLIER,
                **data,
            }
        return data


def _price(input_price: float, output_price: float) -> ModelPrice:
    return ModelPrice.model_validate({"input": input_price, "output": output_price})


_OPUS_4_5 = _price(5.0, 25.0)
_OPUS_4 = _price(15.0, 75.0)
_SONNET_4 = _price(3.0, 15.0)

#: Standard prices by model id. Dated snapshots (``claude-sonnet-4-5-20250929``) resolve to their alias.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-opus-4-8": _OPUS_4_5,
    "claude-opus-4-7": _OPUS_4_5,
    "claude-opus-4-6": _OPUS_4_5,
    "claude-opus-4-5": _OPUS_4_5,
    "claude-opus-4-1": _OPUS_4,
    "claude-opus-4": _OPUS_4,
    "claude-opus-4-0": _OPUS_4,
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4": _SONNET_4,
    "claude-sonnet-4-0": _SONNET_4,
    "claude-haiku-4-5": _price(1.0, 5.0),
    "claude-3-5-haiku": _price(0.80, 4.0),
    "claude-3-haiku": _price(0.25, 1.25),
}


def price_for(model: str, overrides: Mapping[str, ModelPrice] | None = None) -> ModelPrice:
    """
    Return the standard price of ``model``: the overrides first, then :data:`DEFAULT_PRICES`.

    An exact id wins; otherwise a dated snapshot id (``-YYYYMMDD`` at the end) resolves to the id
    without the date. Other unknown ids are an error rather than a guess from a look-alike family:
    a wrong price would let a budget through silently.

    :raises UnknownModelPrice: if neither table knows the model.
    """
    candidates = [model]
    undated = _DATE_SUFFIX.sub("", model)
    if undated != model:
        candidates.append(undated)
    for table in (overrides or {}, DEFAULT_PRICES):
        for candidate in candidates:
            if candidate in table:
                return table[candidate]
    raise UnknownModelPrice(
        f"no price known for model {model!r}; add it under 'prices:' in the governance file "
        f"(known: {', '.join(sorted({*DEFAULT_PRICES, *(overrides or {})}))})"
    )


def _content_tokens(value: Any) -> int:
    """Tokens of a JSON-like value: its strings by byte length, each image block a fixed size."""
    stack = [value]
    text_bytes = 0
    tokens = 0
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            text_bytes += len(item) if item.isascii() else len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, Mapping):
            if item.get("type") == "image":
                tokens += IMAGE_TOKENS
            else:
                stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return tokens + math.ceil(text_bytes / BYTES_PER_TOKEN)


def estimate_input_tokens(params: Mapping[str, Any]) -> int:
    """Upper-bound estimate of a request's input tokens (rule in the module docstring)."""
    messages = params.get("messages") or []
    tools = params.get("tools")
    return (
        REQUEST_OVERHEAD_TOKENS
        + MESSAGE_OVERHEAD_TOKENS * (len(messages) if isinstance(messages, list) else 0)
        + (TOOLS_OVERHEAD_TOKENS if tools else 0)
        + _content_tokens([params.get("system"), messages, tools])
    )


def _cache_ttls(value: Any) -> set[str]:
    """The ``cache_control`` TTLs requested anywhere in ``value`` (``"5m"`` when none is given)."""
    ttls: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            control = item.get("cache_control")
            if isinstance(control, Mapping):
                ttls.add(str(control.get("ttl") or "5m"))
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return ttls


def estimate_request_cost(params: Mapping[str, Any], prices: Mapping[str, ModelPrice] | None = None) -> float:
    """
    Upper-bound cost in USD, at batch prices, of one request's Messages ``params``.

    :param prices: overrides of :data:`DEFAULT_PRICES` (the governance file's ``prices:``).
    :raises UnknownModelPrice: for a model without a price.
    :raises ValueError: if ``max_tokens`` is not a positive int (validate requests first).
    """
    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int to estimate a cost, got {max_tokens!r}")
    price = price_for(str(params.get("model")), prices)
    ttls = _cache_ttls(params)
    if "1h" in ttls:
        input_price = max(price.input, price.cache_write_1h)
    elif ttls:
        input_price = max(price.input, price.cache_write)
    else:
        input_price = price.input
    standard = estimate_input_tokens(params) * input_price + max_tokens * price.output
    return standard / _PER_MILLION * BATCH_DISCOUNT


def actual_cost(model: str, usage: Any, prices: Mapping[str, ModelPrice] | None = None) -> float:
    """
    Cost in USD, at batch prices, of one succeeded request from its ``message.usage``.

    ``usage`` is the SDK's ``Usage`` model or its dict form. Cache writes use the 1-hour price for the
    tokens the ``cache_creation`` breakdown puts under ``ephemeral_1h_input_tokens``, the 5-minute
    price for the rest.

    :raises UnknownModelPrice: for a model without a price.
    """
    fields: Mapping[str, Any] = usage.model_dump() if hasattr(usage, "model_dump") else usage
    price = price_for(model, prices)

    def tokens(mapping: Mapping[str, Any] | None, key: str) -> int:
        return int((mapping or {}).get(key) or 0)

    cache_writes = tokens(fields, "cache_creation_input_tokens")
    cache_writes_1h = min(tokens(fields.get("cache_creation"), "ephemeral_1h_input_tokens"), cache_writes)
    standard = (
        tokens(fields, "input_tokens") * price.input
        + tokens(fields, "output_tokens") * price.output
        + (cache_writes - cache_writes_1h) * price.cache_write
        + cache_writes_1h * price.cache_write_1h
        + tokens(fields, "cache_read_input_tokens") * price.cache_read
    )
    return standard / _PER_MILLION * BATCH_DISCOUNT
