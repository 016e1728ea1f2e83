"""The folder layout draws the layers of docs/design.md, imports point down only, no package
holds an import cycle, and the core never imports inside a function to dodge one."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "baton"

#: layer -> the layers it may import (besides itself). Lower layers know nothing of higher ones.
ALLOWED = {
    "core": set(),  # the core owns the port (core.port) and imports nothing above it
    "switch": {"core.port"},  # adapters implement the core's port: its commands, events, words
    "flows": {"core"},  # flows use the core's API and vocabulary, never an adapter
    "service": {"core", "switch", "flows", "trace"},
    "testing": {"core", "switch", "flows", "trace"},
    "top": {"core", "switch", "flows", "service", "testing", "trace", "demo"},
}


def _layer(module: str) -> str:
    parts = module.split(".")[1:]  # drop "baton"
    if not parts:
        return "top"
    if parts[0] in ("core", "switch", "flows", "service", "testing"):
        return parts[0]
    return "top"


def _allowed(layer: str, target: str) -> bool:
    t = target.split(".")[1:]
    if not t:
        return True
    name = ".".join(t)
    if _layer(target) == layer and layer != "top":
        return True
    return any(name == a or name.startswith(a + ".") for a in ALLOWED[layer])


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return [m for m in out if m == "baton" or m.startswith("baton.")]


def test_imports_point_down_only() -> None:
    bad = []
    for path in SRC.rglob("*.py"):
        module = "baton." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        layer = _layer(module)
        for target in _imports(path):
            if not _allowed(layer, target):
                bad.append(f"{module} ({layer}) imports {target}")
    assert not bad, "\n".join(bad)


def test_the_layout_shows_the_layers() -> None:
    assert {p.name for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("_")} >= {
        "core",
        "switch",
        "flows",
        "service",
        "testing",
    }
    assert {p.name for p in (SRC / "switch").iterdir() if p.is_dir()} >= {"sim", "sip", "media"}


# ---- cycles (docs/design.md, Layers)
#
# What counts: the imports a module runs when it is imported — module level, class bodies, ``try``
# and ordinary ``if`` blocks — but not those under ``if TYPE_CHECKING:``. Those are type-only:
# with ``from __future__ import annotations`` they never run, and they are how Python spells a
# mutual *type* reference (a Meeting names its holder Owner, an Owner the meetings it holds).
# An import inside a function is not part of the graph either — which is why the core, where
# such an import would hide a cycle, may not have one at all (the second test below).


def _module_name(path: Path) -> str:
    module = "baton." + ".".join(path.relative_to(SRC).with_suffix("").parts)
    return module.removesuffix(".__init__")


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The baton modules ``path`` imports when it is imported (see above)."""
    me = _module_name(path)
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
                    for _ in range(node.level - 1):
                        package = package.rsplit(".", 1)[0]
                    base = f"{package}.{base}" if base else package
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    out.add(sub if sub in modules else base)

    visit(ast.parse(path.read_text()).body)
    return {m for m in out if m in modules and m != me}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in SRC.rglob("*.py")}
    names = set(paths)
    return {m: _runtime_imports(p, names) for m, p in paths.items()}


def test_no_package_holds_an_import_cycle() -> None:
    graph = _import_graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_the_core_the_way_python_runs_it() -> None:
    graph = _import_graph()
    assert "baton.core.claims" in graph["baton.core.manager"]  # module level
    assert "baton.core.ledger" in graph["baton.core.claims"]
    assert "baton.core.manager" not in graph["baton.core.claims"]  # under TYPE_CHECKING only


def test_the_core_never_imports_inside_a_function() -> None:
    bad = []
    for path in (SRC / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    targets = [a.name for a in inner.names]
                elif isinstance(inner, ast.ImportFrom) and (inner.module or inner.level):
                    targets = [inner.module or "." * inner.level]
                else:
                    continue
                for target in targets:
                    if target.startswith(("baton", ".")):
                        bad.append(
                            f"{path.relative_to(SRC)}:{inner.lineno} {node.name} imports {target}"
                        )
    assert not bad, "\n".join(bad)


def test_flows_use_the_cores_public_face() -> None:
    """A flow imports ``baton.core`` (the API and the vocabulary) and, for the events it reads,
    ``baton.core.events`` — never the core's inner modules (docs/design.md, the layers)."""
    public = {"baton.core", "baton.core.events"}
    bad = []
    for path in (SRC / "flows").rglob("*.py"):
        for target in _imports(path):
            if target.startswith("baton.core") and target not in public:
                bad.append(f"{path.relative_to(SRC)} imports {target}")
    assert not bad, "\n".join(bad)
