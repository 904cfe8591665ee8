"""The incremental create-body parser, without HTTP: slice boundaries, formatting, compact index."""

from __future__ import annotations

import io
import json

import pytest

from airflow_claude_batches.emulator import parsing
from airflow_claude_batches.emulator.parsing import (
    BatchValidationError,
    estimate_input_tokens,
    parse_batch_body,
)

from .conftest import make_requests


def parse(body: bytes, **kwargs):
    return parse_batch_body(io.BytesIO(body), len(body), **kwargs)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_values_split_across_read_slices_parse_the_same(monkeypatch, chunk):
    requests = make_requests(5, max_tokens=12345)
    requests[2]["params"]["messages"][0]["content"] = "naïve café — 日本語 ✓ " * 3
    body = json.dumps({"requests": requests}, indent=2, ensure_ascii=False).encode()
    monkeypatch.setattr(parsing, "_CHUNK", chunk)

    index = parse(body)

    assert index.custom_ids == [r["custom_id"] for r in requests]
    assert list(index.max_tokens) == [12345] * 5
    assert index.models == ["claude-sonnet-4-5"]
    assert list(index.input_tokens) == [estimate_input_tokens(r["params"]) for r in requests]


def test_the_rest_of_the_body_is_read_even_on_an_early_error(monkeypatch):
    monkeypatch.setattr(parsing, "_CHUNK", 16)
    body = json.dumps({"bogus": 1, "requests": make_requests(50)}).encode()
    stream = io.BytesIO(body)

    with pytest.raises(BatchValidationError, match="bogus: Extra inputs"):
        parse_batch_body(stream, len(body))
    assert stream.tell() == len(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"requests": 5}',
        b'{"requests": [1]',
        b"\xff\xfe",
        b'{"requests": [] ,}',
        b'{"requests": [{}}]}',
    ],
)
def test_malformed_bodies_are_validation_errors(body):
    with pytest.raises(BatchValidationError):
        parse(body)


def test_beta_accepts_beta_only_params():
    body = json.dumps({"requests": make_requests(1, mcp_servers=[])}).encode()
    with pytest.raises(BatchValidationError, match="mcp_servers: Extra inputs"):
        parse(body)
    assert len(parse(body, beta=True)) == 1


def test_input_tokens_grow_with_text_but_ignore_structure():
    small = {"messages": [{"role": "user", "content": "x" * 40}]}
    big = {"messages": [{"role": "user", "content": "x" * 4000}], "system": "be brief"}
    assert estimate_input_tokens(small) < estimate_input_tokens(big)
    assert (
        estimate_input_tokens({"messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]})
        == 4
    )
