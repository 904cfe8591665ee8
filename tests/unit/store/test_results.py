from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from functools import partial

import anthropic
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_claude_batches.exceptions import ForeignResultsError, IncompleteResultsError
from airflow_claude_batches.governance.cost import UnknownModelPrice, actual_cost
from airflow_claude_batches.governance.ids import job_key, namespaced_id
from airflow_claude_batches.hooks.batches import ClaudeBatchesHook
from airflow_claude_batches.store.paths import atomic_write, batch_dir, job_dir, store_root
from airflow_claude_batches.store.results import (
    MANIFEST_FILE,
    RESULT_TYPES,
    ResultsError,
    ResultsManifest,
    persist_batch_results,
    read_manifest,
    read_results,
    verify_results,
    write_keys,
    write_results,
)

TEAM = "marketing"
JOB_ID = "Nightly enrichment 2026-06-06"
JOB_KEY = job_key(JOB_ID)
MODEL = "claude-haiku-4-5"  # $1 / $5 per million standard, half of it in a batch


@pytest.fixture
def root(any_store) -> ObjectStoragePath:
    return any_store


def result_line(index: int, result_type: str, *, team: str = TEAM, job: str = JOB_ID) -> str:
    custom_id = namespaced_id(team, job, index)
    result: dict = {"type": result_type}
    if result_type == "succeeded":
        result["message"] = {
            "id": f"msg_{index}",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": f"answer {index}"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1000, "output_tokens": 200},
        }
    elif result_type == "errored":
        result["error"] = {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "bad"},
            "request_id": f"req_{index}",
        }
    # Spacing unlike json.dumps' default on purpose: the store must keep the bytes as sent.
    return json.dumps({"custom_id": custom_id, "result": result}, separators=(",", ":"))


def mixed_lines(start: int = 0) -> list[str]:
    types = ["succeeded", "succeeded", "errored", "succeeded", "canceled", "expired", "succeeded"]
    return [result_line(start + i, t) for i, t in enumerate(types)]


def store(lines, dest: ObjectStoragePath, batch_id: str = "msgbatch_01", **kwargs):
    return write_results(
        lines,
        dest,
        team=TEAM,
        job_id=JOB_ID,
        job_key=JOB_KEY,
        job_type="enrichment",
        batch_id=batch_id,
        **kwargs,
    )


def names(directory: ObjectStoragePath) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def test_write_results_splits_by_type_and_keeps_bytes(root):
    lines = mixed_lines()
    dest = batch_dir(root, TEAM, JOB_KEY, "msgbatch_01")
    manifest = store(iter(lines), dest, batch_ids=["msgbatch_01", "msgbatch_02"], estimated_cost_usd=1.5)

    assert manifest.counts == {"succeeded": 4, "errored": 1, "canceled": 1, "expired": 1}
    assert manifest.total == 7
    assert manifest.batch_ids == ["msgbatch_01", "msgbatch_02"]
    # 4 x (1000 in x $1 + 200 out x $5) / 1M x 0.5
    assert manifest.actual_cost_usd == pytest.approx(4 * (1000 * 1 + 200 * 5) / 1e6 * 0.5)
    assert manifest.estimated_cost_usd == 1.5
    assert names(dest) == {f"{t}.jsonl" for t in RESULT_TYPES} | {MANIFEST_FILE}
    succeeded = (dest / "succeeded.jsonl").read_bytes()
    assert succeeded == "".join(f"{line}\n" for i, line in enumerate(lines) if i in (0, 1, 3, 6)).encode()
    for result_type in RESULT_TYPES:
        data = ObjectStoragePath(manifest.locations[result_type], conn_id=manifest.conn_id).read_bytes()
        assert manifest.checksums[result_type] == f"sha256:{hashlib.sha256(data).hexdigest()}"
        assert manifest.sizes[result_type] == len(data)
    assert read_manifest(dest) == manifest
    assert verify_results(dest) == manifest


def test_write_results_accepts_bytes_newlines_and_blank_lines(root):
    raw = [result_line(0, "succeeded").encode() + b"\r\n", b"", "\n", result_line(1, "expired") + "\n"]
    dest = batch_dir(root, TEAM, JOB_KEY, "msgbatch_01")
    manifest = store(raw, dest)
    assert manifest.counts == {"succeeded": 1, "errored": 0, "canceled": 0, "expired": 1}
    assert (dest / "expired.jsonl").read_bytes() == (result_line(1, "expired") + "\n").encode()
    assert (dest / "errored.jsonl").read_bytes() == b""


def test_read_results_joins_keys_across_batches(root):
    job = job_dir(root, TEAM, JOB_KEY)
    assert write_keys(job, [f"row-{i}" if i != 3 else None for i in range(14)]) == 13
    store(mixed_lines(0), job / "msgbatch_01", batch_ids=["msgbatch_01", "msgbatch_02"])
    store(
        mixed_lines(7), job / "msgbatch_02", batch_id="msgbatch_02", batch_ids=["msgbatch_01", "msgbatch_02"]
    )

    records = list(read_results(job))
    assert sorted(r.index for r in records) == list(range(14))
    by_index = {r.index: r for r in records}
    assert by_index[0].key == "row-0"
    assert by_index[3].key is None
    assert by_index[9].result_type == "errored"
    assert by_index[9].result["error"]["error"]["type"] == "invalid_request_error"
    assert {(r.team, r.job_id, r.job_key) for r in records} == {(TEAM, JOB_ID, JOB_KEY)}
    assert by_index[13].custom_id == namespaced_id(TEAM, JOB_ID, 13)
    assert by_index[13].result["message"]["content"][0]["text"] == "answer 13"

    one_batch = list(read_results(job / "msgbatch_02", types=["succeeded"]))
    assert sorted(r.index for r in one_batch) == [7, 8, 10, 13]
    assert all(r.key == f"row-{r.index}" for r in one_batch)


def test_read_results_without_keys_file(root):
    dest = batch_dir(root, TEAM, JOB_KEY, "msgbatch_01")
    store(mixed_lines(), dest)
    assert {r.key for r in read_results(dest)} == {None}


def test_read_results_skips_incomplete_batch_and_rejects_missing(root):
    job = job_dir(root, TEAM, JOB_KEY)
    store(mixed_lines(), job / "msgbatch_01")
    half = job / "msgbatch_02" / "succeeded.jsonl"  # files without a manifest: an interrupted write
    half.parent.mkdir(parents=True, exist_ok=True)
    half.write_text(result_line(20, "succeeded") + "\n")

    assert len(list(read_results(job))) == 7
    with pytest.raises(ResultsError, match="no results stored"):
        list(read_results(job_dir(root, TEAM, "other-job")))
    with pytest.raises(ResultsError, match="unknown result type"):
        list(read_results(job, types=["done"]))


def failing_after(lines: list[str], n: int) -> Iterator[str]:
    yield from lines[:n]
    raise ConnectionError("stream cut")


def test_failed_stream_leaves_no_file_and_keeps_previous_results(root):
    dest = batch_dir(root, TEAM, JOB_KEY, "msgbatch_01")
    with pytest.raises(ConnectionError):
        store(failing_after(mixed_lines(), 4), dest)
    assert names(dest) == set()  # neither result files nor temporaries nor a manifest

    first = store(mixed_lines(), dest)
    with pytest.raises(ConnectionError):
        store(failing_after(mixed_lines(100), 3), dest)
    assert names(dest) == {f"{t}.jsonl" for t in RESULT_TYPES} | {MANIFEST_FILE}
    assert verify_results(dest) == first


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (json.dumps({"custom_id": namespaced_id(TEAM, JOB_ID, 9), "result": {"type": "pending"}}), "unknown"),
        (json.dumps({"custom_id": namespaced_id(TEAM, JOB_ID, 9)}), "unknown result type None"),
        ('{"custom_id": ', "not JSON"),
        (result_line(9, "succeeded", team="support"), "belongs to team 'support'"),
        (result_line(9, "succeeded", job="another job"), "not to team 'marketing'"),
        (json.dumps({"custom_id": "row-9", "result": {"type": "expired"}}), "custom_id 'row-9'"),
        (json.dumps({"custom_id": namespaced_id(TEAM, JOB_ID, 9), "result": {"type": "succeeded"}}), "usage"),
    ],
)
def test_bad_line_fails_closed(tmp_path, bad_line, message):
    root = ObjectStoragePath(f"file://{tmp_path}")
    dest = batch_dir(root, TEAM, JOB_KEY, "msgbatch_01")
    with pytest.raises(ResultsError, match=message) as err:
        store([*mixed_lines(), bad_line], dest)
    assert "line 8" in str(err.value)
    assert names(dest) == set()


def test_unknown_model_price_fails_closed(tmp_path):
    line = result_line(0, "succeeded").replace(MODEL, "claude-unheard-of")
    dest = batch_dir(ObjectStoragePath(f"file://{tmp_path}"), TEAM, JOB_KEY, "msgbatch_01")
    with pytest.raises(UnknownModelPrice, match="claude-unheard-of"):
        store([line], dest)
    assert names(dest) == set()


def test_price_overrides_are_used(tmp_path):
    from airflow_claude_batches.governance.cost import ModelPrice

    dest = batch_dir(ObjectStoragePath(f"file://{tmp_path}"), TEAM, JOB_KEY, "msgbatch_01")
    prices = {MODEL: ModelPrice(input=10.0, output=10.0)}
    manifest = store([result_line(0, "succeeded")], dest, prices=prices)
    assert manifest.actual_cost_usd == pytest.approx(1200 * 10 / 1e6 * 0.5)


def test_verify_detects_tampering(root):
    dest = batch_dir(root, TEAM, JOB_KEY, "msgbatch_01")
    store(mixed_lines(), dest)
    (dest / "errored.jsonl").write_text(result_line(2, "errored").replace("bad", "BAD") + "\n")
    with pytest.raises(ResultsError, match=r"errored.jsonl.*does not match the manifest"):
        verify_results(dest)
    with pytest.raises(ResultsError, match=r"no manifest\.json"):
        read_manifest(dest.parent / "msgbatch_99")


def test_atomic_write_commits_or_leaves_nothing(root):
    target = root / "a" / "b.json"
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("crash")
    assert names(target.parent) == set()
    with atomic_write(target) as handle:
        handle.write(b"whole")
    assert target.read_bytes() == b"whole"
    assert names(target.parent) == {"b.json"}


@pytest.mark.parametrize(
    ("team", "key", "batch_id", "message"),
    [
        ("Marketing", JOB_KEY, "msgbatch_01", "team 'Marketing'"),
        (TEAM, "../etc", "msgbatch_01", "job key '../etc'"),
        (TEAM, JOB_KEY, "msgbatch/../../x", "batch id"),
        (TEAM, JOB_KEY, "", "batch id ''"),
    ],
)
def test_unsafe_path_segments_are_refused(tmp_path, team, key, batch_id, message):
    with pytest.raises(ResultsError, match=message):
        batch_dir(ObjectStoragePath(f"file://{tmp_path}"), team, key, batch_id)


def test_write_keys_rejects_non_string(tmp_path):
    job = job_dir(ObjectStoragePath(f"file://{tmp_path}"), TEAM, JOB_KEY)
    with pytest.raises(ResultsError, match="index 1 must be a string"):
        write_keys(job, ["a", 2])
    assert names(job) == set()


def test_store_root_defaults_and_config(monkeypatch, airflow_home):
    monkeypatch.delenv("AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT", raising=False)
    monkeypatch.delenv("AIRFLOW__CLAUDE_BATCHES__RESULTS_CONN_ID", raising=False)
    default = store_root()
    assert default.protocol in ("file", "")
    assert default.path.rstrip("/") == f"{airflow_home}/claude_batches"
    assert default.conn_id is None

    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT", "s3://bucket/prefix")
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__RESULTS_CONN_ID", "aws_results")
    configured = store_root()
    assert (configured.protocol, configured.path, configured.conn_id) == (
        "s3",
        "bucket/prefix",
        "aws_results",
    )
    explicit = store_root("file:///tmp/elsewhere", conn_id="x")
    assert (explicit.path, explicit.conn_id) == ("/tmp/elsewhere", "x")


# -- complete results or none: persist_batch_results against the emulator -------------------------

N = 100


def emulated_batch(api, n: int = N, first: int = 0, foreign: int | None = None) -> tuple[str, dict]:
    """An ended batch of this job's records ``first..first+n-1`` (every 10th errored); its counts."""
    client = anthropic.Anthropic(base_url=api.base_url, api_key=api.api_key)
    requests = [
        {
            "custom_id": namespaced_id("support" if i == foreign else TEAM, JOB_ID, i),
            "params": {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": f"q{i}"}]},
        }
        for i in range(first, first + n)
    ]
    api.set_faults(errored=[{"custom_id_regex": "0$"}])
    batch = client.messages.batches.create(requests=requests)
    api.set_faults()
    api.advance(3)
    counts = client.messages.batches.retrieve(batch.id).request_counts.model_dump()
    assert counts["errored"] == n // 10 and counts["succeeded"] == n - n // 10
    return batch.id, counts


def persist(dest, batch_id: str, counts: dict, *, first: int = 0, n: int = N):
    return persist_batch_results(
        partial(ClaudeBatchesHook().iter_result_lines, batch_id),
        dest,
        team=TEAM,
        job_id=JOB_ID,
        job_key=JOB_KEY,
        job_type="enrichment",
        batch_id=batch_id,
        expected_counts=counts,
        first_index=first,
        request_count=n,
        retry_delay=0,
    )


CUTS = [{"truncate_after_lines": 40}, {"drop_after_lines": 40}]


@pytest.mark.parametrize("cut", CUTS, ids=["truncated", "dropped"])
def test_a_cut_stream_is_downloaded_again_and_stored_whole(api, root, cut):
    batch_id, counts = emulated_batch(api)
    dest = batch_dir(root, TEAM, JOB_KEY, batch_id)
    api.set_faults(results=[{**cut, "times": 1}])

    manifest = persist(dest, batch_id, counts)

    assert manifest.counts == {t: counts[t] for t in RESULT_TYPES} and manifest.total == N
    assert api.stats()["calls"]["results"] == 2
    assert verify_results(dest) == manifest
    assert sorted(r.index for r in read_results(dest)) == list(range(N))


@pytest.mark.parametrize(("cut", "numbers"), [
    (CUTS[0], "results hold 40 of 100 lines"),
    (CUTS[1], "failed after 40 of 100 lines"),
], ids=["truncated", "dropped"])  # fmt: skip
def test_a_stream_cut_every_time_fails_with_the_numbers_and_stores_nothing(api, root, cut, numbers):
    batch_id, counts = emulated_batch(api)
    dest = batch_dir(root, TEAM, JOB_KEY, batch_id)
    api.set_faults(results=[{**cut, "times": 10}])

    with pytest.raises(IncompleteResultsError, match="incomplete after 3 download") as err:
        persist(dest, batch_id, counts)

    assert str(err.value).count(numbers) == 3
    assert "'succeeded': 90, 'errored': 10" in str(err.value)
    assert api.stats()["calls"]["results"] == 3
    assert names(dest) == set()  # neither a manifest nor result files under final names


def test_shuffled_results_give_the_same_manifest_counts(api, tmp_path):
    batch_id, counts = emulated_batch(api)
    root = ObjectStoragePath(f"file://{tmp_path}")
    api.set_faults(results_order="shuffled")

    first = persist(batch_dir(root, TEAM, "first", batch_id), batch_id, counts)
    second = persist(batch_dir(root, TEAM, "second", batch_id), batch_id, counts)

    assert first.counts == second.counts == {t: counts[t] for t in RESULT_TYPES}
    assert first.checksums != second.checksums  # the lines came in another order
    # Summed in line order and rounded to 6 places: the last place may differ with the order.
    assert first.actual_cost_usd == pytest.approx(second.actual_cost_usd, abs=1e-6)


def test_a_result_of_another_job_is_foreign_and_not_downloaded_again(api, tmp_path):
    batch_id, counts = emulated_batch(api, foreign=17)
    dest = batch_dir(ObjectStoragePath(f"file://{tmp_path}"), TEAM, JOB_KEY, batch_id)

    with pytest.raises(ForeignResultsError, match="belongs to team 'support'"):
        persist(dest, batch_id, counts)
    assert api.stats()["calls"]["results"] == 1
    assert names(dest) == set()


def test_a_result_outside_the_batch_index_range_is_foreign(api, tmp_path):
    batch_id, counts = emulated_batch(api, first=100)
    dest = batch_dir(ObjectStoragePath(f"file://{tmp_path}"), TEAM, JOB_KEY, batch_id)

    with pytest.raises(ForeignResultsError, match=r"record index 1\d\d is not one of this batch's records"):
        persist(dest, batch_id, counts, first=0)
    assert names(dest) == set()
    assert persist(dest, batch_id, counts, first=100).total == N


def test_a_repeated_custom_id_is_incomplete(tmp_path):
    lines = [result_line(0, "succeeded"), result_line(1, "succeeded"), result_line(1, "succeeded")]
    dest = batch_dir(ObjectStoragePath(f"file://{tmp_path}"), TEAM, JOB_KEY, "msgbatch_01")
    downloads = []

    def download() -> list[str]:
        downloads.append(1)
        return lines

    with pytest.raises(IncompleteResultsError, match="record index 1 answered twice"):
        persist_batch_results(
            download, dest, team=TEAM, job_id=JOB_ID, job_key=JOB_KEY, job_type="enrichment",
            batch_id="msgbatch_01", expected_counts={"succeeded": 3}, first_index=0, request_count=3,
            retry_delay=0,
        )  # fmt: skip
    assert len(downloads) == 3
    assert names(dest) == set()


@pytest.mark.parametrize(
    "counts",
    [{"processing": N, "succeeded": 0}, {"succeeded": N - 1, "errored": 0}],
    ids=["not-ended", "counts-disagree-with-plan"],
)
def test_counts_that_cannot_be_complete_are_refused_before_downloading(api, tmp_path, counts):
    dest = batch_dir(ObjectStoragePath(f"file://{tmp_path}"), TEAM, JOB_KEY, "msgbatch_01")
    with pytest.raises(ResultsError, match="do not account for its 100 requests"):
        persist(dest, "msgbatch_01", counts)
    assert api.stats()["calls"]["results"] == 0


def test_the_earlier_manifest_is_moved_aside_when_storing_again_fails(api, root):
    batch_id, counts = emulated_batch(api)
    dest = batch_dir(root, TEAM, JOB_KEY, batch_id)
    first = persist(dest, batch_id, counts)
    api.set_faults(results=[{"truncate_after_lines": 99, "times": 3}])

    with pytest.raises(IncompleteResultsError, match="99 of 100 lines"):
        persist(dest, batch_id, counts)

    (aside,) = names(dest) - {f"{t}.jsonl" for t in RESULT_TYPES}
    assert aside.startswith(f"{MANIFEST_FILE}.superseded-")
    with pytest.raises(ResultsError, match=r"no manifest\.json"):
        read_manifest(dest)  # no manifest describes the files: the batch reads as not stored
    assert ResultsManifest.model_validate_json((dest / aside).read_bytes()) == first
    succeeded = (dest / "succeeded.jsonl").read_bytes()  # the failed store committed no file
    assert first.checksums["succeeded"] == f"sha256:{hashlib.sha256(succeeded).hexdigest()}"

    api.set_faults()
    again = persist(dest, batch_id, counts)
    assert names(dest) == {f"{t}.jsonl" for t in RESULT_TYPES} | {MANIFEST_FILE}
    assert verify_results(dest) == again and again.counts == first.counts


def test_actual_cost_prices_each_line_as_actual_cost_does(tmp_path):
    """Usage is summed per model and priced once: the total must equal pricing line by line."""
    usages = [
        {"input_tokens": 10 + i, "output_tokens": 3 * i, "cache_read_input_tokens": i % 5}
        | (
            {"cache_creation_input_tokens": 40, "cache_creation": {"ephemeral_1h_input_tokens": 10 * (i % 7)}}
            if i % 2
            else {}
        )
        for i in range(40)
    ]
    models = ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1"]
    lines = []
    for i, usage in enumerate(usages):
        entry = json.loads(result_line(i, "succeeded"))
        entry["result"]["message"].update(model=models[i % 3], usage=usage)
        lines.append(json.dumps(entry))
    dest = batch_dir(ObjectStoragePath(f"file://{tmp_path}"), TEAM, JOB_KEY, "msgbatch_01")
    manifest = store(lines, dest)
    expected = sum(actual_cost(models[i % 3], usage) for i, usage in enumerate(usages))
    assert manifest.actual_cost_usd == pytest.approx(expected, abs=1e-6)


def test_a_usage_of_the_wrong_type_fails_closed(tmp_path):
    entry = json.loads(result_line(8, "succeeded"))
    entry["result"]["message"]["usage"]["output_tokens"] = "200"
    dest = batch_dir(ObjectStoragePath(f"file://{tmp_path}"), TEAM, JOB_KEY, "msgbatch_01")
    with pytest.raises(ResultsError, match=r"line 8 cannot be stored.*output_tokens"):
        store([*mixed_lines(), json.dumps(entry)], dest)
    assert names(dest) == set()


def test_files_larger_than_a_write_chunk_keep_every_line_in_order(root):
    lines = [result_line(i, "errored") for i in range(8000)]  # ~1.6 MB: crosses the 1 MiB write chunk
    dest = batch_dir(root, TEAM, JOB_KEY, "msgbatch_01")
    manifest = store(lines, dest)
    assert manifest.sizes["errored"] > 2**20
    assert verify_results(dest) == manifest
    stored = (dest / "errored.jsonl").read_bytes().splitlines()
    assert stored == [line.encode() for line in lines]
