"""The layer contract of ``src/ahcl`` (README "Architecture"), read from the code's own imports.

Every ``import`` statement counts: module level, inside functions and under ``TYPE_CHECKING``.
Layers, lowest first; a module may import its own layer and those below, never one above::

    foundation   ahcl._io, ahcl._progress, ahcl._version, ahcl.errors, ahcl._checks
    components   ahcl.data, ahcl.models, ahcl.index, ahcl.eval, ahcl.distributed, ahcl.device
    methods      ahcl.methods
    run          ahcl.run, ahcl.encoder, ahcl.training, ahcl.config, ahcl.sharded, ahcl.bench,
                 ahcl.demo
    interfaces   ahcl.cli, ahcl.serve, ahcl.__main__

Also: no import cycle between modules, none between the top-level parts (``ahcl.data`` ↔
``ahcl.models`` would be one), ``ahcl.index`` and ``ahcl.eval`` need numpy and numba only (the
plots module also matplotlib), nothing imports the lazy facade ``ahcl/__init__.py`` for a name
it re-exports, and function-local imports of the package are few and only at the CLI/server
boundary, where they defer a heavy optional dependency.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("ahcl._io", "ahcl._progress", "ahcl._version", "ahcl.errors", "ahcl._checks")),
    ("components", ("ahcl.data", "ahcl.models", "ahcl.index", "ahcl.eval", "ahcl.distributed",
                    "ahcl.device")),
    ("methods", ("ahcl.methods",)),
    ("run", ("ahcl.run", "ahcl.encoder", "ahcl.training", "ahcl.config", "ahcl.sharded",
             "ahcl.bench", "ahcl.demo")),
    ("interfaces", ("ahcl.cli", "ahcl.serve", "ahcl.__main__")),
]
#: Third-party packages the numpy-only parts may import (beyond the standard library).
# llvmlite is numba's own code generator (the popcount intrinsic of the index kernels).
NUMPY_ONLY = {"ahcl.index": {"numpy", "numba", "llvmlite"}, "ahcl.eval": {"numpy", "numba"}}
EXTRA_THIRD_PARTY = {"ahcl.eval.plots": {"matplotlib"}}
LOCAL_IMPORT_LIMIT = 20
LOCAL_IMPORTS_ALLOWED_IN = ("ahcl.cli", "ahcl.serve")


@dataclass
class Graph:
    """Imports of a package: ``edges[m]`` = package modules ``m`` imports."""

    modules: set[str]
    edges: dict[str, set[str]] = field(default_factory=dict)
    local: list[tuple[str, int, str]] = field(default_factory=list)  # (module, line, target)
    third_party: dict[str, set[str]] = field(default_factory=dict)
    facade: list[tuple[str, int]] = field(default_factory=list)  # `from ahcl import <not a module>`


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _enclosing_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def build_graph(src: Path, package: str) -> Graph:
    """Parse every module of ``src/package`` and resolve its imports to package modules."""
    files = {_module_name(p, src): p for p in (src / package).rglob("*.py")}
    graph = Graph(set(files))
    stdlib = set(sys.stdlib_module_names)
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            found: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    root = alias.name.split(".")[0]
                    if root == package:
                        found.append(_resolve(alias.name, graph.modules))
                    elif root not in stdlib:
                        graph.third_party.setdefault(name, set()).add(root)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                root = base.split(".")[0]
                if root != package:
                    if root and root not in stdlib and root != "__future__":
                        graph.third_party.setdefault(name, set()).add(root)
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in graph.modules:
                        found.append(sub)  # `from pkg import submodule`
                    elif base == package:
                        graph.facade.append((name, node.lineno))
                        found.append(package)
                    else:
                        found.append(_resolve(base, graph.modules))
            else:
                continue
            for target in found:
                if _enclosing_function(node, parents):
                    graph.local.append((name, node.lineno, target))
            targets.update(found)
        graph.edges[name] = {t for t in targets if t != name}
    return graph


def _resolve(dotted: str, modules: set[str]) -> str:
    while dotted not in modules and "." in dotted:
        dotted = dotted.rsplit(".", 1)[0]
    return dotted


def _part(module: str, parts: tuple[str, ...]) -> str | None:
    """The layer part (``ahcl.data``) a module belongs to."""
    return next((p for p in parts if module == p or module.startswith(p + ".")), None)


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]]) -> int | None:
    for i, (_, parts) in enumerate(layers):
        if _part(module, parts) is not None:
            return i
    return None


def layer_violations(graph: Graph, layers: list[tuple[str, tuple[str, ...]]],
                     package: str) -> list[str]:
    """``"a -> b (methods imports run)"`` for every import of a higher layer, and every module
    outside all layers (the facade ``package`` itself is allowed only its version)."""
    out = []
    for module, targets in sorted(graph.edges.items()):
        if module == package:
            continue
        mine = layer_of(module, layers)
        if mine is None:
            out.append(f"{module} is in no layer")
            continue
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if theirs is None or theirs > mine:
                what = layers[theirs][0] if theirs is not None else "no layer"
                out.append(f"{module} -> {target} ({layers[mine][0]} imports {what})")
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def part_edges(graph: Graph, layers: list[tuple[str, tuple[str, ...]]]) -> dict[str, set[str]]:
    """The import graph between layer parts (``ahcl.data`` → ``ahcl.index``, ...)."""
    parts = tuple(p for _, ps in layers for p in ps)
    out: dict[str, set[str]] = {}
    for module, targets in graph.edges.items():
        a = _part(module, parts)
        if a is None:
            continue
        out.setdefault(a, set()).update(b for t in targets
                                        if (b := _part(t, parts)) is not None and b != a)
    return out


def third_party_violations(graph: Graph) -> list[str]:
    out = []
    for module, roots in sorted(graph.third_party.items()):
        for part, allowed in NUMPY_ONLY.items():
            if module == part or module.startswith(part + "."):
                extra = roots - allowed - EXTRA_THIRD_PARTY.get(module, set())
                if extra:
                    out.append(f"{module} imports {', '.join(sorted(extra))}")
    return out


def local_import_violations(graph: Graph) -> list[str]:
    return [f"{m}:{line} imports {t} inside a function" for m, line, t in graph.local
            if not m.startswith(LOCAL_IMPORTS_ALLOWED_IN)]


# ---------------------------------------------------------------------------- the contract
@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(SRC, "ahcl")


def test_every_import_follows_the_layers(graph: Graph) -> None:
    assert layer_violations(graph, LAYERS, "ahcl") == []


def test_no_import_cycles(graph: Graph) -> None:
    assert cycles(graph.edges) == []
    assert cycles(part_edges(graph, LAYERS)) == []


def test_index_and_eval_need_numpy_and_numba_only(graph: Graph) -> None:
    assert third_party_violations(graph) == []


def test_nothing_imports_the_lazy_facade(graph: Graph) -> None:
    assert graph.facade == []
    assert graph.edges["ahcl"] <= {"ahcl._version"}


def test_function_local_imports_only_at_the_boundary(graph: Graph) -> None:
    assert local_import_violations(graph) == []
    assert len(graph.local) <= LOCAL_IMPORT_LIMIT


# ---------------------------------------------------------------------------- the checker itself
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_catches_what_it_must(tmp_path: Path) -> None:
    """A fake package with each kind of defect: the checker must report every one."""
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/errors.py": "",
        "pkg/low/__init__.py": "",
        "pkg/low/a.py": "from pkg.low import b\nimport torch\n",
        "pkg/low/b.py": "def f():\n    from pkg.low import a\n    from pkg.high import h\n",
        "pkg/other/__init__.py": "from pkg.low import a\n",
        "pkg/low/c.py": "from pkg.other import x\n",
        "pkg/other/x.py": "",
        "pkg/high.py": "from pkg import helper_name\nfrom . import errors\n",
    })
    layers = [("base", ("pkg.errors",)), ("low", ("pkg.low", "pkg.other")),
              ("high", ("pkg.high",))]
    g = build_graph(tmp_path, "pkg")
    assert g.edges["pkg.high"] == {"pkg", "pkg.errors"}  # relative import resolved
    assert g.facade == [("pkg.high", 1)]
    violations = layer_violations(g, layers, "pkg")
    assert "pkg.low.b -> pkg.high (low imports high)" in violations
    assert "pkg.high -> pkg (high imports no layer)" in violations
    assert ["pkg.low.a", "pkg.low.b"] in cycles(g.edges)  # through a function-level import
    assert ["pkg.low", "pkg.other"] in cycles(part_edges(g, layers))
    assert {(m, t) for m, _, t in g.local} == {("pkg.low.b", "pkg.low.a"),
                                              ("pkg.low.b", "pkg.high")}
    assert g.third_party["pkg.low.a"] == {"torch"}
