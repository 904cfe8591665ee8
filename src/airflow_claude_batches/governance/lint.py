"""
Find DAG and script code that calls the Message Batches API around the governed service.

::

    python -m airflow_claude_batches.governance.lint dags/ [more paths...]

prints one ``file:line:col: CODE message`` per finding and exits 1 if there is any, 0 if the code is
clean, 2 if a path does not exist. Use it in CI on the DAGs repository and to retire teams' old
scripts; the cluster policy runs it on every DAG file it parses. What it flags:

- ``CB001`` any use of the SDK's Batches resource: ``client.messages.batches``,
  ``client.beta.messages.batches``, the ``Batches``/``AsyncBatches`` classes, the
  ``anthropic.resources.messages.batches`` module (imported, or through ``importlib``);
- ``CB002`` the official provider's ``AnthropicBatchOperator`` (imported or used);
- ``CB003`` the batches endpoint's URL path, ``/v1/messages/batches``, also when built by
  concatenation, an f-string, ``format``, ``%``, ``join`` or a reversed or base64 string;
- ``CB004`` a hook's ``create_batch`` or ``create_batch_body`` (``AnthropicHook`` and ours alike);
- ``CB005`` an import of a helper module (from the file's folder or its parents, or from the same
  ``.zip``) in which one of the above is found.

It reads the code without running it, and follows values through the file: aliases of modules and
objects (``m = client.messages``), ``getattr`` and ``operator.attrgetter`` chains, ``vars(...)[...]``,
``functools.reduce(getattr, ...)``, loops over constant lists and strings given to ``exec``/``eval``.
Python files are parsed, also inside ``.zip`` DAG bundles; a file that does not parse is scanned
line by line instead.

It is a guard rail against drift, not a sandbox: code can always hide a call from a reader (the
Airflow security model trusts DAG authors with worker code). The reconcile DAG's unmanaged-batch
sweep records and alerts on any batch at the API that the ledger does not know, whatever created it.
"""

from __future__ import annotations

import argparse
import ast
import base64
import binascii
import codecs
import functools
import itertools
import os
import re
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Finding", "lint_dag_file", "lint_paths", "lint_source", "main"]

_ENDPOINT = "/v1/messages/batches"
_MESSAGES = {
    "CB001": "uses the Message Batches API directly ({what}); submit with ClaudeBatchSubmitOperator",
    "CB002": "uses AnthropicBatchOperator; submit with ClaudeBatchSubmitOperator",
    "CB003": f"sends HTTP to {_ENDPOINT} ({{what}}); submit with ClaudeBatchSubmitOperator",
    "CB004": "calls {what} on a hook directly; submit with ClaudeBatchSubmitOperator",
    "CB005": "imports {what}, which uses the Message Batches API directly; submit with "
    "ClaudeBatchSubmitOperator",
}
#: The same checks as text, for files that do not parse.
_LINE_PATTERNS = (
    ("CB001", re.compile(r"\bmessages\s*\.\s*batches\b|\.\s*batches\s*\.\s*create\s*\(|\bAsyncBatches\b")),
    ("CB002", re.compile(r"\bAnthropicBatchOperator\b")),
    ("CB003", re.compile(r"messages/batches")),
    ("CB004", re.compile(r"\bcreate_batch(_body)?\b")),
)
#: Methods of the SDK's Batches resource.
_BATCH_METHODS = frozenset({"create", "list", "retrieve", "cancel", "delete", "results"})
_BATCH_CLASSES = frozenset(
    {"Batches", "AsyncBatches", "BatchesWithRawResponse", "BatchesWithStreamingResponse"}
)
#: A part of a string that the lint cannot know (a variable in an f-string, a parameter).
_UNKNOWN = "\x00"
_URL = re.compile(r"messages/+batches|/v1/messages/*\x00")
_MAX_UNROLL = 16
_MAX_FILES = 500


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


# ------------------------------------------------------------------------------- values the lint follows


@dataclass(frozen=True)
class _Sym:
    """An object reached from a name by attribute steps: ``("client", "messages", "batches")``."""

    path: tuple[str, ...]

    def then(self, *parts: str) -> _Sym:
        return _Sym(self.path + parts)


@dataclass(frozen=True)
class _Text:
    """A string as far as it is known; unknown parts are :data:`_UNKNOWN`."""

    value: str


@dataclass(frozen=True)
class _Getter:
    """``operator.attrgetter("a.b")``: calling it on an object walks those attributes."""

    path: tuple[str, ...]


@dataclass(frozen=True)
class _Seq:
    items: tuple[Any, ...]


def _text(value: Any) -> str:
    return value.value if isinstance(value, _Text) else _UNKNOWN


def _known(value: Any) -> str | None:
    """The string if it is fully known."""
    return value.value if isinstance(value, _Text) and _UNKNOWN not in value.value else None


def _codepoint(value: Any) -> bool:
    return isinstance(value, int) and 0 <= value < 0x110000


def _last(value: Any) -> str:
    return value.path[-1] if isinstance(value, _Sym) and value.path else ""


class _Visitor(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: set[Finding] = set()
        self.env: dict[str, Any] = {}
        self.imports: list[tuple[ast.AST, str, int]] = []  # (node, module, level)

    # -------------------------------------------------------------------------------------- findings

    def _add(self, node: ast.AST, code: str, what: str = "") -> None:
        line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1
        if any(f.line == line and f.code == code for f in self.findings):
            return  # one finding per line and kind: a chain is one use
        what = what.replace(_UNKNOWN, "...")
        what = what if len(what) <= 80 else what[:77] + "..."
        self.findings.add(Finding(self.path, line, col, code, _MESSAGES[code].format(what=what)))

    def _check(self, node: ast.AST, value: Any) -> Any:
        if isinstance(value, _Sym):
            parts = value.path
            shown = ".".join(p for p in parts if p != "()")
            pairs = list(itertools.pairwise(parts))
            if (
                ("messages", "batches") in pairs
                or any(p in _BATCH_CLASSES for p in parts)
                or any(a == "batches" and b in _BATCH_METHODS for a, b in pairs)
            ):
                self._add(node, "CB001", shown)
            if "AnthropicBatchOperator" in parts:
                self._add(node, "CB002")
            if parts and parts[-1] in ("create_batch", "create_batch_body"):
                self._add(node, "CB004", parts[-1])
        elif isinstance(value, _Text):
            lowered = value.value.lower()
            if _URL.search(lowered):
                self._add(node, "CB003", value.value)
            elif "messages.batches" in lowered:
                self._add(node, "CB001", value.value)
        return value

    # ------------------------------------------------------------------------------------ evaluation

    def eval(self, node: ast.AST | None) -> Any:
        if node is None:
            return None
        return self._check(node, self._eval(node))

    def _eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return _Text(node.value) if isinstance(node.value, str) else node.value
        if isinstance(node, ast.Name):
            return self.env.get(node.id, _Sym((node.id,)))
        if isinstance(node, ast.Attribute):
            base = self.eval(node.value)
            return base.then(node.attr) if isinstance(base, _Sym) else _Sym(("?", node.attr))
        if isinstance(node, ast.JoinedStr):
            parts = []
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    parts.append(_text(self.eval(part.value)))
                else:
                    parts.append(_text(self.eval(part)))
            return _Text("".join(parts))
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left), self.eval(node.right)
            if isinstance(node.op, ast.Add) and (isinstance(left, _Text) or isinstance(right, _Text)):
                return _Text(_text(left) + _text(right))
            if isinstance(node.op, ast.Mod) and isinstance(left, _Text):
                args = iter(right.items if isinstance(right, _Seq) else (right,))
                return _Text(
                    re.sub(r"%[-#0 +]*\d*(?:\.\d+)?[sdrfx]", lambda _: _text(next(args, None)), left.value)
                )
            return None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self.eval(node.operand)
            return -operand if isinstance(operand, int) else None
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return _Seq(tuple(self.eval(e) for e in node.elts))
        if isinstance(node, ast.Subscript):
            base, index = self.eval(node.value), node.slice
            if isinstance(base, _Text) and isinstance(index, ast.Slice):
                step = self.eval(index.step)
                return _Text(base.value[::-1]) if step == -1 else _Text(_UNKNOWN)
            key = self.eval(index)
            if isinstance(base, _Sym) and (name := _known(key)) is not None:
                return base.then(name)
            return None
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.BoolOp):
            values = [self.eval(v) for v in node.values]
            return next((v for v in values if v is not None), None)
        if isinstance(node, ast.IfExp):
            self.eval(node.test)
            body, orelse = self.eval(node.body), self.eval(node.orelse)
            return body if body is not None else orelse
        if isinstance(node, ast.ListComp | ast.GeneratorExp):
            return self._comprehension(node)
        self.generic_visit(node)
        return None

    def _comprehension(self, node: ast.ListComp | ast.GeneratorExp) -> Any:
        """``chr(c) for c in [...]`` over a constant list: the items, as far as they are known."""
        (gen, *_) = node.generators
        source = self.eval(gen.iter)
        if not (isinstance(gen.target, ast.Name) and isinstance(source, _Seq | _Text)):
            for n in node.generators:
                self.eval(n.iter)
            self.eval(node.elt)
            return None
        items = source.items if isinstance(source, _Seq) else tuple(_Text(c) for c in source.value)
        saved = self.env.get(gen.target.id)
        out = []
        for item in items[:4096]:
            self.env[gen.target.id] = item
            out.append(self._eval(node.elt))
        self.env.pop(gen.target.id, None)
        if saved is not None:
            self.env[gen.target.id] = saved
        return self._check(node, _Seq(tuple(out)))

    def _call(self, node: ast.Call) -> Any:
        receiver = None
        if isinstance(node.func, ast.Attribute):  # evaluate the receiver once: chains stay linear
            receiver = self.eval(node.func.value)
            base = receiver if isinstance(receiver, _Sym) else _Sym(("?",))
            func = self._check(node.func, base.then(node.func.attr))
        else:
            func = self.eval(node.func)
        args = [self.eval(a) for a in node.args]
        for keyword in node.keywords:
            self.eval(keyword.value)
        name = _last(func)
        if name == "getattr" and len(args) >= 2 and (attr := _known(args[1])) is not None:
            obj = args[0] if isinstance(args[0], _Sym) else _Sym(("?",))
            return obj.then(*attr.split("."))
        if name in {"__getattribute__", "__getattr__"} and args and (attr := _known(args[-1])) is not None:
            target = receiver if len(args) == 1 else args[0]
            return (target if isinstance(target, _Sym) else _Sym(("?",))).then(attr)
        if name == "attrgetter" and args and (attr := _known(args[0])) is not None:
            self._check(node, _Sym(("?", *attr.split("."))))
            return _Getter(tuple(attr.split(".")))
        if isinstance(func, _Getter) and args:
            obj = args[0] if isinstance(args[0], _Sym) else _Sym(("?",))
            return obj.then(*func.path)
        if name == "reduce" and len(args) >= 2 and _last(args[0]) == "getattr" and isinstance(args[1], _Seq):
            obj = args[2] if len(args) > 2 and isinstance(args[2], _Sym) else _Sym(("?",))
            return obj.then(*(_known(a) or "?" for a in args[1].items))
        if name in {"import_module", "__import__"} and args and (module := _known(args[0])) is not None:
            return _Sym(tuple(module.split(".")))
        if name in {"vars"} and args:
            return args[0]
        if name in {"exec", "eval", "compile"} and args and (code := _known(args[0])) is not None:
            for finding in lint_source(code, self.path):
                self._add(node, finding.code, finding.message.split("(", 1)[-1].split(")")[0])
            return None
        if name == "chr" and args and _codepoint(args[0]):
            return _Text(chr(args[0]))
        if name == "map" and len(args) == 2 and _last(args[0]) == "chr" and isinstance(args[1], _Seq):
            return _Seq(tuple(_Text(chr(i)) if _codepoint(i) else None for i in args[1].items))
        if name in {"b64decode", "urlsafe_b64decode"} and args and (data := _known(args[0])) is not None:
            try:
                return _Text(
                    base64.b64decode(data, altchars=b"-_" if name.startswith("url") else None).decode()
                )
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
        if name == "decode" and isinstance(receiver, _Text):
            return receiver
        if name == "decode" and len(args) >= 2 and _known(args[1]) in {"rot13", "rot_13"} and _known(args[0]):
            return _Text(codecs.decode(_known(args[0]) or "", "rot13"))
        if isinstance(receiver, _Text):
            return self._string_method(name, receiver, args)
        if name in {"join", "urljoin"} and len(args) >= 2 and any(isinstance(a, _Text) for a in args):
            return _Text("/".join(_text(a).strip("/") for a in args))
        if name in {"str", "bytes"} and args and isinstance(args[0], _Text):
            return args[0]
        return func.then("()") if isinstance(func, _Sym) else None

    @staticmethod
    def _string_method(name: str, receiver: _Text, args: list[Any]) -> Any:
        if name == "join" and args and isinstance(args[0], _Seq):
            return _Text(receiver.value.join(_text(a) for a in args[0].items))
        if name == "format":
            values = iter(args)
            return _Text(re.sub(r"\{[^{}]*\}", lambda _: _text(next(values, None)), receiver.value))
        if name == "replace" and len(args) >= 2 and _known(args[0]) is not None:
            return _Text(receiver.value.replace(_known(args[0]) or "", _text(args[1])))
        if name in {"lower", "upper", "strip", "lstrip", "rstrip", "casefold"}:
            return _Text(getattr(receiver.value, name)())
        if name == "encode":
            return receiver
        return None

    # ------------------------------------------------------------------------------------- statements

    def _bind(self, target: ast.AST, value: Any) -> None:
        if isinstance(target, ast.Name):
            if value is None:
                self.env.pop(target.id, None)
            else:
                self.env[target.id] = value
        elif isinstance(target, ast.Tuple | ast.List):
            items = value.items if isinstance(value, _Seq) else ()
            for index, element in enumerate(target.elts):
                self._bind(element, items[index] if index < len(items) else None)
        else:
            self.eval(target)

    def visit_Assign(self, node: ast.Assign) -> None:
        value = self.eval(node.value)
        for target in node.targets:
            self._bind(target, value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._bind(node.target, self.eval(node.value))

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name) and isinstance(node.op, ast.Add):
            current, added = self.env.get(node.target.id), self.eval(node.value)
            if isinstance(current, _Text) or isinstance(added, _Text):
                self._bind(node.target, self._check(node, _Text(_text(current) + _text(added))))
                return
        self.eval(node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._bind(node.target, self.eval(node.value))

    def visit_Expr(self, node: ast.Expr) -> None:
        self.eval(node.value)

    def visit_Return(self, node: ast.Return) -> None:
        self.eval(node.value)

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            value = self.eval(item.context_expr)
            if item.optional_vars is not None:
                self._bind(item.optional_vars, value)
        for statement in node.body:
            self.visit(statement)

    visit_AsyncWith = visit_With  # type: ignore[assignment]

    def visit_For(self, node: ast.For) -> None:
        source = self.eval(node.iter)
        items = source.items if isinstance(source, _Seq) else (None,)
        for item in items[:_MAX_UNROLL]:  # a loop over a constant list is unrolled
            self._bind(node.target, item)
            for statement in node.body:
                self.visit(statement)
        for statement in node.orelse:
            self.visit(statement)

    visit_AsyncFor = visit_For  # type: ignore[assignment]

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = tuple(alias.name.split("."))
            self._check(node, _Sym(parts))
            if alias.asname:
                self.env[alias.asname] = _Sym(parts)
            else:
                self.env[parts[0]] = _Sym(parts[:1])
            self.imports.append((node, alias.name, 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = tuple((node.module or "").split(".")) if node.module else ()
        for alias in node.names:
            value = _Sym((*module, alias.name))
            self._check(node, value)
            self.env[alias.asname or alias.name] = value
            full = ".".join((*module, alias.name))
            self.imports.append((node, full, node.level))
            if node.module:
                self.imports.append((node, node.module, node.level))

    def generic_visit(self, node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.eval(child)
            else:
                self.visit(child)


# ---------------------------------------------------------------------------------------- sources


def _parse(source: str, path: str) -> tuple[list[Finding], _Visitor | None]:
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return sorted(_lint_lines(source, path)), None
    visitor = _Visitor(path)
    try:
        visitor.visit(tree)
    except RecursionError:
        return sorted(_lint_lines(source, path)), None
    return sorted(visitor.findings), visitor


def lint_source(source: str, path: str = "<string>") -> list[Finding]:
    """The findings in one file's text, sorted by position (helper modules are not followed)."""
    return _parse(source, path)[0]


def _lint_lines(source: str, path: str) -> Iterator[Finding]:
    for number, text in enumerate(source.splitlines(), start=1):
        for code, pattern in _LINE_PATTERNS:
            if match := pattern.search(text):
                what = match.group(0).replace(" ", "").rstrip("(")
                yield Finding(path, number, match.start() + 1, code, _MESSAGES[code].format(what=what))


@dataclass
class _Tree:
    """Python files to lint and where imports of local helper modules resolve to."""

    read: Any  # (key) -> str | None
    label: Any  # (key) -> str
    candidates: Any  # (importer key, module, level) -> Iterator[key]
    cache: dict[Any, list[Finding]] = field(default_factory=dict)

    def lint(self, key: Any, depth: int = 0) -> list[Finding]:
        """The findings in one file and, as CB005 at the import, in the helpers it imports."""
        if key in self.cache:
            return self.cache[key]
        self.cache[key] = []  # an import cycle ends here
        source = self.read(key)
        if source is None:
            return []
        findings, visitor = _parse(source, self.label(key))
        if visitor is not None and depth < 20 and len(self.cache) < _MAX_FILES:
            for node, module, level in visitor.imports:
                for helper in self.candidates(key, module, level):
                    if self.lint(helper, depth + 1):
                        visitor._add(node, "CB005", f"{module} ({self.label(helper)})")
                        break
            findings = sorted(visitor.findings)
        self.cache[key] = findings
        return findings


def _module_files(base: Path, module: str) -> Iterator[Path]:
    relative = Path(*module.split("."))
    yield base / relative.with_suffix(".py")
    yield base / relative / "__init__.py"


def _file_tree(roots: Sequence[Path]) -> _Tree:
    def read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def candidates(importer: Path, module: str, level: int) -> Iterator[Path]:
        if level:
            bases = [importer.parents[level - 1]] if level <= len(importer.parents) else []
        else:
            # Airflow puts the DAG file's bundle (or dags folder) on sys.path: its folder or a parent.
            inside = [r for r in roots if r in importer.parents]
            bases = [importer.parent, *(inside or importer.parents[1:3])]
        for base in bases:
            for candidate in _module_files(base, module):
                if candidate.is_file() and candidate != importer:
                    yield candidate

    return _Tree(read=read, label=str, candidates=candidates)


def _zip_tree(archive: Path) -> tuple[_Tree, list[str]]:
    with zipfile.ZipFile(archive) as zipped:
        sources = {
            name: zipped.read(name).decode("utf-8", errors="replace")
            for name in zipped.namelist()
            if name.endswith(".py") and zipped.getinfo(name).file_size < 50_000_000
        }

    def candidates(importer: str, module: str, level: int) -> Iterator[str]:
        folder = importer.split("/")[:-1]
        base = folder[: len(folder) - level + 1] if level else []
        stem = "/".join([*base, *module.split(".")])
        for name in (f"{stem}.py", f"{stem}/__init__.py"):
            if name in sources and name != importer:
                yield name

    tree = _Tree(read=sources.get, label=lambda name: f"{archive}/{name}", candidates=candidates)
    return tree, sorted(sources)


def lint_paths(paths: Sequence[str | Path]) -> list[Finding]:
    """The findings in every Python file under ``paths`` (files, folders, ``.zip`` bundles)."""
    findings: set[Finding] = set()
    roots = [Path(p).resolve() for p in paths if Path(p).is_dir()]
    files = _file_tree(roots)
    for path in (Path(p) for p in paths):
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in candidates:
            if not file.is_file():
                continue
            if file.suffix == ".zip" and zipfile.is_zipfile(file):
                tree, names = _zip_tree(file)
                for name in names:
                    findings.update(tree.lint(name))
            elif file.suffix == ".py" or not path.is_dir():
                findings.update(files.lint(file.resolve() if path.is_dir() else file))
    return sorted(findings)


@functools.lru_cache(maxsize=256)
def _lint_dag_file(fileloc: str, mtime_ns: int, size: int) -> tuple[Finding, ...]:
    return tuple(lint_paths([fileloc]))


def lint_dag_file(fileloc: str) -> list[Finding]:
    """
    The findings in a DAG file as Airflow loaded it (a ``.py`` file, or a member of a ``.zip``).

    Cached per file, modification time and size: the DAG processor calls it for every DAG it parses.
    """
    path = Path(fileloc)
    while not path.exists() and path.parent != path:
        path = path.parent  # a DAG in a .zip: "bundle.zip/dag.py"
    try:
        stat = os.stat(path)
    except OSError:
        return []
    return list(_lint_dag_file(str(path), stat.st_mtime_ns, stat.st_size))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_claude_batches.governance.lint",
        description="Flag code that calls the Message Batches API without ClaudeBatchSubmitOperator.",
    )
    parser.add_argument("paths", nargs="+", help="DAG folders, Python files or .zip DAG bundles")
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
