"""Bad input gets a short, clear error, and nothing reaches the API.

A fuzz of malformed governance files and JSONL request files (fixed seed, so a failure replays):
each ends in the provider's own error, bounded in length, naming where the problem is, with no
batch created at the emulator.
"""

from __future__ import annotations

import json
import random

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_claude_batches.governance.policy import MAX_YAML_DEPTH, PolicyError, load_policy
from airflow_claude_batches.governance.quoting import MAX_QUOTED_CHARS, quote
from airflow_claude_batches.jobs.plan import MAX_JSON_DEPTH
from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from operator_harness import POLICY, execute, make_context, team_dag

#: Longest message a bad input may produce: 20 listed violations of a few hundred characters.
MAX_MESSAGE = 10_000
HUGE = "x" * 3_000_000
HAIKU = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def nested_yaml(depth: int) -> str:
    return "teams: " + "[" * depth + "]" * depth + "\n"


def nested_json(depth: int) -> str:
    return json.dumps({**HAIKU, "metadata": None}).replace("null", "[" * depth + "]" * depth)


def _governance_cases() -> list[tuple[str, str]]:
    """(name, file text): malformed governance files, hand-written then mutated with a fixed seed."""
    cases = [
        ("empty", ""),
        ("a list", "- teams\n- job_types\n"),
        ("a scalar", "42\n"),
        ("bad syntax", "teams: {alpha: [\n"),
        ("tabs", "teams:\n\talpha: {}\n"),
        ("binary", "\x00\x01\x02teams"),
        ("duplicate team", "teams:\n  alpha: {}\n  alpha: {}\njob_types: {}\n"),
        ("deep nesting", nested_yaml(MAX_YAML_DEPTH + 5)),
        ("very deep nesting", nested_yaml(50_000)),
        ("huge key", f"teams:\n  {HUGE}: {{}}\njob_types: {{}}\n"),
        ("huge value", f"teams:\n  alpha: {{pool: {HUGE}}}\njob_types: {{}}\n"),
        ("unknown top key", POLICY + "extra: 1\n"),
        ("source smuggled", POLICY + "source: /etc/passwd\n"),
        ("team name", POLICY.replace("  beta: {", "  Beta_Team: {")),
        ("dags absolute", POLICY.replace('"beta/**"', '"/etc/**"')),
        ("dags parent", POLICY.replace('"beta/**"', '"../alpha/**"')),
        ("dags not a list", POLICY.replace('dags: ["beta/**"]', "dags: 7")),
        ("dags entry", POLICY.replace('"beta/**"', "{repo: x}")),
        ("priority", POLICY.replace("    error_ratio_alert: 0.2\n", "    priority: urgent\n")),
        ("priority contradiction", POLICY + "    time_sensitive: true\n    priority: bulk\n"),
        ("time_sensitive type", POLICY + "    time_sensitive: maybe\n"),
        ("unknown model price", POLICY.replace("claude-haiku-4-5", "claude-unknown-9")),
        ("job type team", POLICY.replace("teams: [alpha]", "teams: [gamma]")),
        ("negative cap", POLICY.replace("max_tokens_cap: 100", "max_tokens_cap: -1")),
        ("cap type", POLICY.replace("max_tokens_cap: 100", "max_tokens_cap: lots")),
        ("shared pool", POLICY.replace("beta: {", "beta: {pool: claude_batches_alpha, ")),
        ("anchors bomb", "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nteams: *c\n"),
        ("python tag", "teams: !!python/object/apply:os.system [echo hi]\n"),
    ]
    rng = random.Random(10)
    lines = POLICY.splitlines()
    junk = ["{", "}", "[", ": :", "- -", "&x", "*y", "!!binary AAA", "'", '"', "\t", "%", "@", "`"]
    while len(cases) < 45:
        mutated = list(lines)
        index = rng.randrange(1, len(mutated))
        mutated[index] = mutated[index][: rng.randrange(len(mutated[index]) + 1)] + rng.choice(junk)
        text = "\n".join(mutated) + "\n"
        if not _parses(text):
            cases.append((f"mutation {len(cases)}", text))
    return cases


def _parses(text: str) -> bool:
    """Whether a mutation happens to still be a valid governance file (those are not bad input)."""
    import os
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        file.write(text)
    try:
        load_policy(file.name)
    except PolicyError:
        return False
    finally:
        os.unlink(file.name)
    return True


GOVERNANCE_CASES = _governance_cases()


def _jsonl_cases() -> list[tuple[str, list[str] | bytes]]:
    """(name, lines or raw bytes): malformed request files."""
    good = json.dumps(HAIKU)
    cases: list[tuple[str, list[str] | bytes]] = [
        ("not json", ["{not json"]),
        ("truncated", [good[:-5]]),
        ("a list", ["[1, 2, 3]"]),
        ("a number", ["42"]),
        ("a string", ['"hello"']),
        ("null", ["null"]),
        ("deep nesting", [nested_json(MAX_JSON_DEPTH + 1)]),
        ("very deep nesting", [nested_json(100_000)]),
        ("huge model", [json.dumps({**HAIKU, "model": HUGE})]),
        ("huge field name", [json.dumps({**HAIKU, HUGE: 1})]),
        ("many unknown fields", [json.dumps({**HAIKU, **{f"f{i}": i for i in range(500)}})]),
        ("huge max_tokens", [json.dumps({**HAIKU, "max_tokens": 10**400})]),
        ("max_tokens string", [json.dumps({**HAIKU, "max_tokens": HUGE})]),
        ("bool max_tokens", [json.dumps({**HAIKU, "max_tokens": True})]),
        ("messages empty", [json.dumps({**HAIKU, "messages": []})]),
        ("messages dict", [json.dumps({**HAIKU, "messages": {"a": 1}})]),
        ("custom_id", [json.dumps({**HAIKU, "custom_id": "mine"})]),
        ("custom_id record", [json.dumps({"key": "k", "custom_id": "x", "params": HAIKU})]),
        ("params not dict", [json.dumps({"key": "k", "params": [1]})]),
        ("model number", [json.dumps({**HAIKU, "model": 4.5})]),
        ("model dict", [json.dumps({**HAIKU, "model": {"name": HUGE}})]),
        ("only blank lines", ["", "   ", ""]),
        ("nan", ['{"model": NaN}']),
        ("binary", b"\x00\xff\xfe\x80garbage\n"),
        ("latin-1", b'{"model": "caf\xe9"}\n'),
        ("bom then junk", b"\xef\xbb\xbf{oops}\n"),
        ("one bad among good", [good, good, "{", good]),
        ("too many bad lines", ["{"] * 50),
        ("over max_requests", [good] * 1001),
        ("over the cap", [json.dumps({**HAIKU, "max_tokens": 60_000, "model": "claude-opus-4-5"})]),
    ]
    rng = random.Random(20)
    while len(cases) < 40:
        cut = rng.randrange(1, len(good) - 1)
        cases.append((f"cut at {cut}", [good[:cut] + rng.choice(["", "}", "]", ",", '"'])]))
    return cases


JSONL_CASES = _jsonl_cases()


def test_the_fuzz_has_at_least_60_cases():
    assert len(GOVERNANCE_CASES) + len(JSONL_CASES) >= 60


def _bounded(message: str) -> None:
    assert len(message) < MAX_MESSAGE, len(message)
    assert "Traceback" not in message and "x" * (MAX_QUOTED_CHARS + 10) not in message


@pytest.mark.parametrize(("name", "text"), GOVERNANCE_CASES, ids=[c[0] for c in GOVERNANCE_CASES])
def test_a_malformed_governance_file_is_refused_clearly_and_nothing_is_sent(
    api, store, tmp_path, monkeypatch, name, text
):
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", str(path))
    with pytest.raises(PolicyError) as error:
        load_policy()
    _bounded(str(error.value))
    assert str(path) in str(error.value)
    with team_dag("alpha"):
        task = ClaudeBatchSubmitOperator(task_id="t", team="alpha", job_type="enrich", requests=[HAIKU])
    with pytest.raises(AirflowFailException, match="Nothing was sent") as refused:
        execute(task, make_context())
    _bounded(str(refused.value))
    assert api.stats()["calls"]["create"] == 0


@pytest.mark.parametrize(("name", "content"), JSONL_CASES, ids=[c[0] for c in JSONL_CASES])
def test_a_malformed_requests_file_is_refused_clearly_and_nothing_is_sent(
    api, policy_file, store, tmp_path, name, content
):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else "\n".join(content).encode() + b"\n")
    with team_dag("alpha"):
        task = ClaudeBatchSubmitOperator(task_id="t", team="alpha", job_type="enrich", requests=path.as_uri())
    with pytest.raises(AirflowFailException, match="nothing was sent") as error:
        execute(task, make_context())
    _bounded(str(error.value))
    assert api.stats()["calls"]["create"] == 0


@pytest.mark.parametrize(
    ("where", "expected"),
    [("missing.jsonl", "does not exist"), (".", "is a directory, not a JSONL file")],
)
def test_an_unreadable_requests_uri_is_one_paragraph(api, policy_file, store, tmp_path, where, expected):
    uri = (tmp_path / where).resolve().as_uri()
    with team_dag("alpha"):
        task = ClaudeBatchSubmitOperator(task_id="t", team="alpha", job_type="enrich", requests=uri)
    with pytest.raises(AirflowFailException) as error:
        execute(task, make_context())
    message = str(error.value)
    assert f"The requests file '{uri}' {expected}." in message
    assert message.endswith("Nothing was sent.") and "\n" not in message
    assert api.stats()["calls"]["create"] == 0


def test_quote_keeps_about_200_characters_and_says_how_long():
    assert quote("claude") == "'claude'"
    quoted = quote(HUGE)
    assert len(quoted) < MAX_QUOTED_CHARS + 40 and quoted.endswith("... (3000000 characters)")
    assert len(quote({"a": [HUGE] * 100, "b": {"c": {"d": {"e": 1}}}})) <= 2 * MAX_QUOTED_CHARS + 3
