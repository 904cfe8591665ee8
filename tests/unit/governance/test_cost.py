from __future__ import annotations

import math

import pytest
from anthropic.types import Usage
from pydantic import ValidationError

from airflow_claude_batches.governance.cost import (
    BATCH_DISCOUNT,
    DEFAULT_PRICES,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    TOOLS_OVERHEAD_TOKENS,
    ModelPrice,
    UnknownModelPrice,
    actual_cost,
    estimate_input_tokens,
    estimate_request_cost,
    price_for,
)

HAIKU = "claude-haiku-4-5"


def request(content, max_tokens=100, **extra):
    return {
        "model": HAIKU,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


class TestModelPrice:
    def test_cache_prices_follow_the_input_price(self):
        price = ModelPrice.model_validate({"input": 4, "output": 20})
        assert price.cache_write == pytest.approx(5.0)
        assert price.cache_write_1h == pytest.approx(8.0)
        assert price.cache_read == pytest.approx(0.4)

    def test_explicit_cache_prices_win(self):
        price = ModelPrice.model_validate({"input": 4, "output": 20, "cache_write": 1, "cache_read": 0})
        assert (price.cache_write, price.cache_read) == (1, 0)

    @pytest.mark.parametrize(
        "data",
        [{"output": 5}, {"input": 1}, {"input": -1, "output": 5}, {"input": 1, "output": 5, "extra": 1}],
    )
    def test_rejects_bad_prices(self, data):
        with pytest.raises(ValidationError):
            ModelPrice.model_validate(data)


class TestPriceFor:
    @pytest.mark.parametrize(
        ("model", "expected"),
        [
            ("claude-opus-4-5", (5, 25)),
            ("claude-opus-4-5-20251101", (5, 25)),
            ("claude-opus-4-6", (5, 25)),
            ("claude-opus-4-7", (5, 25)),
            ("claude-opus-4-1-20250805", (15, 75)),
            ("claude-opus-4-20250514", (15, 75)),
            ("claude-opus-4-0", (15, 75)),
            ("claude-sonnet-4-5-20250929", (3, 15)),
            ("claude-sonnet-4-20250514", (3, 15)),
            ("claude-haiku-4-5", (1, 5)),
            ("claude-haiku-4-5-20251001", (1, 5)),
            ("claude-3-5-haiku-20241022", (0.8, 4)),
        ],
    )
    def test_known_models(self, model, expected):
        price = price_for(model)
        assert (price.input, price.output) == pytest.approx(expected)

    def test_cache_prices_of_defaults(self):
        price = price_for("claude-sonnet-4-5")
        assert (price.cache_write, price.cache_read) == pytest.approx((3.75, 0.3))

    @pytest.mark.parametrize(
        "model", ["gpt-4", "claude-opus-4-10", "claude-sonnet-4-5-x", "claude-sonnet-4-5-2025"]
    )
    def test_unknown_model_is_an_error_not_a_guess(self, model):
        with pytest.raises(UnknownModelPrice, match=f"no price known for model '{model}'.*prices:"):
            price_for(model)

    def test_unknown_model_error_is_a_key_and_value_error(self):
        with pytest.raises(KeyError):
            price_for("nope")
        with pytest.raises(ValueError):
            price_for("nope")

    def test_overrides_win_and_add_models(self):
        cheap = ModelPrice.model_validate({"input": 0.5, "output": 1})
        overrides = {"claude-haiku-4-5": cheap, "claude-next": cheap}
        assert price_for("claude-haiku-4-5-20251001", overrides) is cheap
        assert price_for("claude-next", overrides) is cheap
        assert price_for("claude-sonnet-4-5", overrides) == DEFAULT_PRICES["claude-sonnet-4-5"]


class TestEstimate:
    def test_counts_utf8_bytes_over_three(self):
        base = REQUEST_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS
        # The role string "user" (4 bytes) is counted too: a few bytes of slack, on the safe side.
        assert estimate_input_tokens(request("a" * 296)) == base + 100
        assert estimate_input_tokens(request("é" * 148)) == base + 100  # 2 bytes each
        assert estimate_input_tokens(request("日" * 99)) == base + math.ceil((297 + 4) / 3)

    def test_counts_system_tools_and_every_message(self):
        params = request("x" * 3, system=[{"type": "text", "text": "s" * 300}])
        params["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "y" * 30}]})
        plain = estimate_input_tokens(params)
        assert plain >= REQUEST_OVERHEAD_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS + (3 + 300 + 30) // 3
        params["tools"] = [{"name": "lookup", "description": "d" * 300, "input_schema": {"type": "object"}}]
        assert estimate_input_tokens(params) >= plain + TOOLS_OVERHEAD_TOKENS + 100

    def test_image_counts_a_fixed_size_not_its_data(self):
        image = {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "A" * 3_000_000},
        }
        tokens = estimate_input_tokens(request([image, {"type": "text", "text": "describe"}]))
        assert IMAGE_TOKENS <= tokens < IMAGE_TOKENS + 100

    def test_cost_is_batch_price_with_output_at_max_tokens(self):
        params = request("a" * 296, max_tokens=1000)
        input_tokens = estimate_input_tokens(params)
        expected = (input_tokens * 1.0 + 1000 * 5.0) / 1e6 * BATCH_DISCOUNT
        assert estimate_request_cost(params) == pytest.approx(expected)

    def test_is_an_upper_bound_of_a_plausible_actual(self):
        params = request("The quick brown fox jumps over the lazy dog. " * 50, max_tokens=500)
        # English runs near 4 bytes a token; the answer can't exceed max_tokens.
        usage = {"input_tokens": len(params["messages"][0]["content"]) // 4, "output_tokens": 500}
        assert estimate_request_cost(params) > actual_cost(HAIKU, usage)

    @pytest.mark.parametrize(
        ("cache_control", "multiplier"),
        [(None, 1.0), ({"type": "ephemeral"}, 1.25), ({"type": "ephemeral", "ttl": "1h"}, 2.0)],
    )
    def test_prompt_caching_prices_input_as_cache_writes(self, cache_control, multiplier):
        block = {"type": "text", "text": "a" * 3000}
        if cache_control:
            block["cache_control"] = cache_control
        params = request([block], max_tokens=1)
        expected = (estimate_input_tokens(params) * 1.0 * multiplier + 1 * 5.0) / 1e6 * BATCH_DISCOUNT
        assert estimate_request_cost(params) == pytest.approx(expected)

    def test_top_level_cache_control_counts(self):
        assert estimate_request_cost(
            request("a", cache_control={"type": "ephemeral"})
        ) > estimate_request_cost(request("a"))

    def test_uses_price_overrides(self):
        overrides = {HAIKU: ModelPrice.model_validate({"input": 100, "output": 100})}
        assert estimate_request_cost(request("a"), overrides) > 10 * estimate_request_cost(request("a"))

    @pytest.mark.parametrize("max_tokens", [None, 0, -5, "100", 1.5, True])
    def test_rejects_bad_max_tokens(self, max_tokens):
        params = request("a")
        params["max_tokens"] = max_tokens
        with pytest.raises(ValueError, match="max_tokens must be a positive int"):
            estimate_request_cost(params)

    def test_rejects_unknown_model(self):
        with pytest.raises(UnknownModelPrice):
            estimate_request_cost({**request("a"), "model": "mystery"})


class TestActualCost:
    def test_from_a_dict(self):
        usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
        assert actual_cost("claude-sonnet-4-5-20250929", usage) == pytest.approx((3 + 15) * 0.5)

    def test_cache_tokens(self):
        usage = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 1_000_000,
            "cache_read_input_tokens": 1_000_000,
        }
        assert actual_cost("claude-sonnet-4-5", usage) == pytest.approx((3.75 + 0.3) * 0.5)

    def test_one_hour_cache_writes_from_the_breakdown(self):
        usage = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 3_000_000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 2_000_000,
                "ephemeral_1h_input_tokens": 1_000_000,
            },
        }
        assert actual_cost("claude-sonnet-4-5", usage) == pytest.approx((2 * 3.75 + 6.0) * 0.5)

    def test_from_the_sdk_usage_model_with_nulls(self):
        usage = Usage(
            input_tokens=2_000,
            output_tokens=500,
            cache_creation_input_tokens=None,
            cache_read_input_tokens=None,
            cache_creation=None,
        )
        assert actual_cost(HAIKU, usage) == pytest.approx((2_000 * 1 + 500 * 5) / 1e6 * 0.5)

    def test_uses_price_overrides(self):
        overrides = {"claude-next": ModelPrice.model_validate({"input": 2, "output": 4})}
        assert actual_cost("claude-next", {"input_tokens": 10**6, "output_tokens": 10**6}, overrides) == 3.0

    def test_unknown_model(self):
        with pytest.raises(UnknownModelPrice, match="mystery"):
            actual_cost("mystery", {"input_tokens": 1, "output_tokens": 1})
