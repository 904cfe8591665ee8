"""Fixtures for the emulator tests: official SDK clients and an OpenAPI validator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path("/work/shared/spec/anthropic-openapi.yaml")
_SPEC_URI = "urn:anthropic-openapi"


def make_requests(n: int, prefix: str = "r", max_tokens: int = 64, **params: Any) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}{i:05d}",
            "params": {
                "model": "claude-sonnet-4-5",
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": f"Classify ticket {i}: " + "words " * (i % 7)}],
                **params,
            },
        }
        for i in range(n)
    ]


@pytest.fixture
def client(emu) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key)


@pytest.fixture
async def aclient(emu) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=emu.base_url, api_key=emu.api_key) as client:
        yield client


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    # The file is JSON text (JSON is YAML); json is much faster than a YAML parser on 700 schemas.
    return json.loads(SPEC_PATH.read_text())


@pytest.fixture(scope="session")
def validate(spec) -> Callable[[str, Any], None]:
    """``validate("MessageBatch", payload)`` against ``#/components/schemas/MessageBatch``."""
    registry = Registry().with_resource(
        _SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    validators: dict[str, Draft202012Validator] = {}

    def check(component: str, payload: Any) -> None:
        assert component in spec["components"]["schemas"], component
        if component not in validators:
            validators[component] = Draft202012Validator(
                {"$ref": f"{_SPEC_URI}#/components/schemas/{component}"},
                registry=registry,
                format_checker=FormatChecker(),
            )
        validators[component].validate(payload)

    return check
