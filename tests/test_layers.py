"""The folder layout draws the layers of docs/design.md, and imports point down only."""

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
