"""The distribution declares what the code imports: a missing one breaks a user's install, not ours."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "airflow_claude_batches"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

#: Distributions the code must never import: they come only with the ``[s3]`` extra, through the
#: Amazon provider's filesystem (tests/unit/store/test_filesystems.py runs the core without them).
S3_ONLY = {"apache-airflow-providers-amazon", "s3fs", "boto3", "botocore", "aiobotocore"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def _imported_modules(tree: ast.AST) -> set[str]:
    """Absolute imports anywhere in the module (also inside functions and TYPE_CHECKING blocks)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def imported_distributions(src: Path = SRC) -> dict[str, set[str]]:
    """Each third-party distribution the source imports, with the files that import it."""
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.py")):
        for module in _imported_modules(ast.parse(path.read_text(), str(path))):
            top = module.partition(".")[0]
            if top in sys.stdlib_module_names or top == "airflow_claude_batches":
                continue
            if module.startswith("airflow.providers."):
                # One distribution per provider package: airflow.providers.common.compat -> ...-common-compat.
                parts = module.split(".")[2:]
                parts = parts[:2] if parts[0] == "common" else parts[:1]
                dist = "apache-airflow-providers-" + "-".join(parts)
            elif top == "airflow":
                dist = "apache-airflow"  # core and task SDK, both pinned by apache-airflow itself
            else:
                (dist,) = {d.lower() for d in owners.get(top, [top])}
            found.setdefault(dist.lower().replace("_", "-"), set()).add(str(path.relative_to(src.parent)))
    return found


def test_every_imported_distribution_is_a_core_dependency():
    declared = {_name(r) for r in PYPROJECT["dependencies"]}
    imported = imported_distributions()
    assert {"sqlalchemy", "apache-airflow-providers-common-compat"} <= imported.keys()  # the scan sees
    missing = {dist: sorted(files) for dist, files in imported.items() if dist not in declared}
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def test_nothing_imports_what_only_the_s3_extra_brings():
    imported = imported_distributions()
    assert not S3_ONLY & imported.keys(), {d: imported[d] for d in S3_ONLY & imported.keys()}
    assert not S3_ONLY & {_name(r) for r in PYPROJECT["dependencies"]}


@pytest.mark.parametrize(
    ("extra", "brings"),
    [("s3", "apache-airflow-providers-amazon"), ("postgres", "psycopg2-binary")],
)
def test_the_extras_bring_their_part_and_the_test_extra_has_both(extra, brings):
    extras = PYPROJECT["optional-dependencies"]
    assert brings in {_name(r) for r in extras[extra]}
    (itself,) = [r for r in extras["test"] if _name(r) == PYPROJECT["name"]]
    assert extra in itself.partition("[")[2].rstrip("]").split(",")


def test_the_lock_file_matches_the_declared_dependencies():
    """uv.lock is what scripts/bootstrap.sh installs (uv sync --locked): it names each declared one."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (project,) = [p for p in lock["package"] if p["name"] == PYPROJECT["name"]]
    locked = {d["name"] for d in project["dependencies"]}
    assert {_name(r) for r in PYPROJECT["dependencies"]} <= locked
    assert set(PYPROJECT["optional-dependencies"]) == set(project["optional-dependencies"])


def test_the_scan_finds_a_lazy_import(tmp_path):
    """The check can fail: imports inside functions count, stdlib and the package itself do not."""
    fake = tmp_path / "airflow_claude_batches"
    fake.mkdir()
    (fake / "m.py").write_text(
        "import json\nfrom airflow_claude_batches import ids\n"
        "def f():\n    import hypothesis.strategies\n    from airflow.providers.amazon.aws import fs\n"
    )
    assert imported_distributions(fake) == {
        "hypothesis": {"airflow_claude_batches/m.py"},
        "apache-airflow-providers-amazon": {"airflow_claude_batches/m.py"},
    }
