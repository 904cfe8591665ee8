"""
Find DAG and script code that calls the Message Batches API around the governed service.

::

    python -m airflow_claude_batches.lint dags/ [more paths...]

prints one ``file:line:col: CODE message`` per finding and exits 1 if there is any, 0 if the code is
clean, 2 if a path does not exist. Use it in CI on the DAGs repository and to retire teams' old
scripts. What it flags (by reading the code, without running it):

- ``CB001`` the SDK's batches resource: ``client.messages.batches.create(...)``,
  ``client.beta.messages.batches.list()``, any ``.batches.create(...)``;
- ``CB002`` the official provider's ``AnthropicBatchOperator`` (imported or used);
- ``CB003`` raw HTTP to the batches endpoint: any string holding ``/v1/messages/batches``;
- ``CB004`` a hook's ``create_batch(...)`` called directly (``AnthropicHook`` and ours alike).

``ClaudeBatchSubmitOperator`` is the one way to submit: it enforces the policy, budgets, admission
and the ledger that these calls skip. Python files are parsed; a file that does not parse is
scanned line by line for the same names instead.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "lint_paths", "lint_source", "main"]

_ENDPOINT = "/v1/messages/batches"
_MESSAGES = {
    "CB001": "calls the Message Batches API directly ({what}); submit with ClaudeBatchSubmitOperator",
    "CB002": "uses AnthropicBatchOperator; submit with ClaudeBatchSubmitOperator",
    "CB003": f"sends raw HTTP to {_ENDPOINT}; submit with ClaudeBatchSubmitOperator",
    "CB004": "calls {what} on a hook directly; submit with ClaudeBatchSubmitOperator",
}
#: The same checks as text, for files that do not parse.
_LINE_PATTERNS = (
    ("CB001", re.compile(r"\bmessages\s*\.\s*batches\b|\.\s*batches\s*\.\s*create\s*\(")),
    ("CB002", re.compile(r"\bAnthropicBatchOperator\b")),
    ("CB003", re.compile(re.escape(_ENDPOINT))),
    ("CB004", re.compile(r"\.\s*create_batch\s*\(")),
)


@dataclass(frozen=True, order=True)
class Finding:
    """One direct use of the API, at a place in a file."""

    path: str
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"


def _dotted(node: ast.expr) -> list[str]:
    """``a.b.c`` as ``["a", "b", "c"]`` (a call or subscript inside the chain shows as ``()``)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        else:
            parts.append("()")
            node = node.func if isinstance(node, ast.Call) else node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return parts[::-1]


class _Visitor(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: set[Finding] = set()

    def _add(self, node: ast.AST, code: str, what: str = "") -> None:
        line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1
        self.findings.add(Finding(self.path, line, col, code, _MESSAGES[code].format(what=what)))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = _dotted(node)
        pairs = list(itertools.pairwise(parts))
        if ("messages", "batches") in pairs or ("batches", "create") in pairs:
            self._add(node, "CB001", ".".join(p for p in parts if p != "()"))
            return  # one finding per chain, not one per link
        if node.attr == "AnthropicBatchOperator":
            self._add(node, "CB002")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.func.attr == "create_batch":
            self._add(node, "CB004", "create_batch()")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "AnthropicBatchOperator":
            self._add(node, "CB002")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if any(alias.name == "AnthropicBatchOperator" for alias in node.names):
            self._add(node, "CB002")

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and _ENDPOINT in node.value:
            self._add(node, "CB003")


def lint_source(source: str, path: str = "<string>") -> list[Finding]:
    """The findings in one file's text, sorted by position."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError:
        return sorted(_lint_lines(source, path))
    visitor = _Visitor(path)
    visitor.visit(tree)
    return sorted(visitor.findings)


def _lint_lines(source: str, path: str) -> Iterator[Finding]:
    for number, text in enumerate(source.splitlines(), start=1):
        for code, pattern in _LINE_PATTERNS:
            if match := pattern.search(text):
                what = match.group(0).replace(" ", "").rstrip("(")
                yield Finding(path, number, match.start() + 1, code, _MESSAGES[code].format(what=what))


def _python_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if p.is_file())
        else:
            yield path


def lint_paths(paths: Sequence[str | Path]) -> list[Finding]:
    """The findings in every Python file under ``paths`` (files or directories)."""
    findings: list[Finding] = []
    for file in _python_files([Path(p) for p in paths]):
        findings.extend(lint_source(file.read_text(encoding="utf-8", errors="replace"), str(file)))
    return findings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_claude_batches.lint",
        description="Flag code that calls the Message Batches API without ClaudeBatchSubmitOperator.",
    )
    parser.add_argument("paths", nargs="+", help="DAG folders or Python files to check")
    args = parser.parse_args(argv)
    if missing := [p for p in args.paths if not Path(p).exists()]:
        print(f"no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    findings = lint_paths(args.paths)
    for finding in findings:
        print(finding)
    if findings:
        files = len({f.path for f in findings})
        summary = f"{len(findings)} direct use(s) of the Message Batches API in {files} file(s)."
        print(summary, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
