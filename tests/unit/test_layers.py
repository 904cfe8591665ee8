"""The package's imports point down: faces → jobs → capacity → store → governance, hooks, alerts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "airflow_claude_batches"
NAME = "airflow_claude_batches"

#: Higher imports lower or equal, never higher. Modules not named here are faces (top).
LAYERS: dict[str, int] = {
    "exceptions": 0,
    "alerts": 0,
    "hooks": 0,
    "emulator": 0,
    "governance": 1,
    "store": 2,
    "capacity": 3,
    "jobs": 4,
}
FACES = 5
#: Public import paths kept for DAGs (DESIGN.md); nothing inside the package may lean on them.
PUBLIC_ALIASES = {f"{NAME}.ids", f"{NAME}.policy"}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], FACES) if len(parts) > 1 else FACES


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(NAME):
            if node.module == NAME:
                found += [(node.lineno, f"{NAME}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith(f"{NAME}.")]
    return found


def _module_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


MODULES = sorted(PACKAGE.rglob("*.py"))


def _upward(path: Path, module: str) -> list[str]:
    return [
        f"line {line}: {module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for line, target in _imports(path)
        if _layer(target) > _layer(module) or target in PUBLIC_ALIASES
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    module = _module_of(path)
    if module not in PUBLIC_ALIASES:
        assert not _upward(path, module), "\n".join(_upward(path, module))


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    """Guard against a check that passes because it parses nothing."""
    module = tmp_path / "policy.py"
    module.write_text(
        "from airflow_claude_batches.governance.ids import namespaced_id\n"
        "from airflow_claude_batches import ids\n"
        "def f():\n    from airflow_claude_batches.jobs.lifecycle import create_batches\n"
    )
    found = _upward(module, f"{NAME}.governance.policy")
    assert [line.split(":")[0] for line in found] == ["line 2", "line 4"]
