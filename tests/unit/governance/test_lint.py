"""The lint finds direct uses of the Message Batches API and passes our own DAGs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

from airflow_claude_batches.governance.lint import lint_dag_file, lint_paths, lint_source, main

REPO = Path(__file__).resolve().parents[3]
#: DAG files that hide a Message Batches call, one way each (e11 through a helper module).
EVASIONS = Path(__file__).parent / "lint_evasions"
#: The ones the lint cannot see: the call's target only exists at run time.
KNOWN_MISSES = {"e27_path_from_variable.py", "e28_setattr_alias.py"}

OLD_SCRIPT = textwrap.dedent(
    """
    import anthropic
    import requests
    from airflow.providers.anthropic.operators.anthropic import AnthropicBatchOperator

    client = anthropic.Anthropic()
    batch = client.messages.batches.create(requests=[])
    client.beta.messages.batches.list()
    for line in anthropic.Anthropic().messages.batches.results("msgbatch_1"):
        pass
    requests.post("https://api.anthropic.com/v1/messages/batches", json={})
    op = AnthropicBatchOperator(task_id="t", requests=[])
    hook.create_batch([])
    """
)


def test_every_kind_of_direct_use_is_found_with_its_line():
    found = [(f.line, f.code) for f in lint_source(OLD_SCRIPT, "old.py")]
    assert found == [
        (4, "CB002"),
        (7, "CB001"),
        (8, "CB001"),
        (9, "CB001"),
        (11, "CB003"),
        (12, "CB002"),
        (13, "CB004"),
    ]
    (first,) = [f for f in lint_source(OLD_SCRIPT, "old.py") if f.line == 7]
    assert str(first) == (
        "old.py:7:9: CB001 uses the Message Batches API directly (anthropic.Anthropic.messages.batches); "
        "submit with ClaudeBatchSubmitOperator"
    )


def test_governed_code_and_lookalikes_pass():
    source = textwrap.dedent(
        """
        from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
        ClaudeBatchSubmitOperator(task_id="t", team="alpha", job_type="enrich", requests=[])
        client.messages.create(model="m", max_tokens=1, messages=[])  # not a batch
        batches = [1, 2]
        batches.append(3)
        """
    )
    assert lint_source(source) == []


def test_a_file_that_does_not_parse_is_scanned_as_text():
    (finding,) = lint_source("def broken(:\n    c.messages.batches.create(x)\n", "broken.py")
    assert (finding.line, finding.code) == (2, "CB001")


def test_cli_exit_codes_and_output(tmp_path, capsys):
    dags = tmp_path / "dags"
    (dags / "team").mkdir(parents=True)
    (dags / "clean.py").write_text("x = 1\n")
    assert main([str(dags)]) == 0
    (dags / "team" / "legacy.py").write_text(OLD_SCRIPT)
    assert main([str(dags)]) == 1
    out = capsys.readouterr()
    assert f"{dags / 'team' / 'legacy.py'}:7:9: CB001" in out.out
    assert "7 direct use(s) of the Message Batches API in 1 file(s)." in out.err
    assert main([str(tmp_path / "nowhere")]) == 2


def test_our_own_dags_pass_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "airflow_claude_batches.governance.lint", str(REPO / "dags")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_evasive_dag_files_are_caught():
    files = sorted(EVASIONS.glob("e*.py"))
    caught = {f.name for f in files if lint_paths([f])}
    assert len(files) >= 21
    assert caught == {f.name for f in files} - KNOWN_MISSES
    assert len(caught) >= 18


def test_a_helper_modules_call_is_reported_at_the_import_and_in_the_helper():
    findings = lint_paths([EVASIONS / "e11_helper_dag.py"])
    assert [(Path(f.path).name, f.line, f.code) for f in findings] == [("e11_helper_dag.py", 1, "CB005")]
    assert "helpers.batching" in findings[0].message
    helper = lint_paths([EVASIONS / "helpers"])
    assert [(Path(f.path).name, f.code) for f in helper] == [("batching.py", "CB001")]


def test_zip_bundles_are_read_with_their_helpers(tmp_path):
    bundle = tmp_path / "team.zip"
    with zipfile.ZipFile(bundle, "w") as zipped:
        zipped.write(EVASIONS / "e11_helper_dag.py", "nightly.py")
        zipped.write(EVASIONS / "helpers" / "__init__.py", "helpers/__init__.py")
        zipped.write(EVASIONS / "helpers" / "batching.py", "helpers/batching.py")
        zipped.writestr("clean.py", "x = 1\n")
    found = {(f.path, f.code) for f in lint_paths([tmp_path])}
    assert found == {(f"{bundle}/nightly.py", "CB005"), (f"{bundle}/helpers/batching.py", "CB001")}
    assert sorted(f.code for f in lint_dag_file(f"{bundle}/nightly.py")) == ["CB001", "CB005"]


def test_a_dag_file_is_linted_again_when_it_changes(tmp_path):
    shutil.copy(EVASIONS / "e01_alias_module.py", tmp_path / "dag.py")
    assert [f.code for f in lint_dag_file(str(tmp_path / "dag.py"))] == ["CB001"]
    (tmp_path / "dag.py").write_text("x = 1\n# a longer file now\n")
    assert lint_dag_file(str(tmp_path / "dag.py")) == []


def test_long_call_chains_are_read_once():
    """Each receiver is evaluated once: a chain of 200 calls does not take 2**200 steps."""
    assert lint_source("x = a" + ".b()" * 200 + "\n") == []
    assert [f.code for f in lint_source("c" + ".x()" * 100 + ".messages.batches.list()\n")] == ["CB001"]
