"""docs/ cannot drift from the code: the configuration page is generated from the provider info."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from airflow_claude_batches import get_provider_info

REPO = Path(__file__).resolve().parents[2]
SECTION = "claude_batches"


def _config_docs():
    spec = importlib.util.spec_from_file_location("config_docs", REPO / "scripts" / "config_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options_read_by_the_code() -> dict[str, str]:
    """Each ``conf.get*("claude_batches", "option")`` in src (section as literal or CONFIG_SECTION)."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith("get")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                continue
            section = node.args[0]
            if (isinstance(section, ast.Constant) and section.value == SECTION) or (
                isinstance(section, ast.Name) and section.id == "CONFIG_SECTION"
            ):
                found[node.args[1].value] = f"{path.relative_to(REPO)}:{node.lineno}"
    return found


def test_the_configuration_page_is_generated_from_the_provider_info():
    docs = _config_docs()
    assert docs.main(["--check"]) == 0, "docs/configuration.md is stale: run python scripts/config_docs.py"
    page = docs.PAGE.read_text()
    for option in get_provider_info()["config"][SECTION]["options"]:
        assert f"## `{option}`" in page


def test_the_check_fails_on_a_page_that_misses_an_option(monkeypatch):
    docs = _config_docs()
    info = get_provider_info()
    options = info["config"][SECTION]["options"]
    options["new_option"] = {**options["policy_file"], "description": "Added without regenerating."}
    monkeypatch.setattr(docs, "get_provider_info", lambda: info)
    assert docs.main(["--check"]) == 1


def test_every_option_the_code_reads_is_declared():
    read = options_read_by_the_code()
    assert {"policy_file", "ledger_conn_id", "create_reconcile_seconds"} <= read.keys()  # the scan sees
    declared = get_provider_info()["config"][SECTION]["options"]
    assert not {o: where for o, where in read.items() if o not in declared}, "read but not declared"


def test_the_changelog_starts_with_the_version_being_built():
    import tomllib

    import airflow_claude_batches

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    first = next(
        line for line in (REPO / "docs" / "changelog.md").read_text().splitlines() if line[:3] == "## "
    )
    assert first == f"## {version}"
    assert airflow_claude_batches.__version__ == version == get_provider_info()["versions"][0]
