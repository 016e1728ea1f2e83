"""docs/service.md's error table stays true: every error id the service raises (a literal
``id=`` given to an :class:`ApiError` subclass or to a flow argument's ``ArgumentError``, or the
default) is listed in the row of its HTTP status, so a client written from the docs knows every answer it can get."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from baton.service import errors

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "src/baton/service"

CLASSES: dict[str, type[errors.ApiError]] = {
    name: cls
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, errors.ApiError)
}


def _raised() -> dict[tuple[int, str], list[str]]:
    """(status, id) → where the service raises it, for every call with a literal id."""
    out: dict[tuple[int, str], list[str]] = {}
    for path in sorted(SERVICE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "ArgumentError":  # a flow argument the API answers with 422
                status, default = 422, "invalid-argument"
            else:
                cls = CLASSES.get(name or "")
                if cls is None or cls is errors.ApiError:
                    continue
                status, default = cls.status, cls.default_id
            given = [k.value for k in node.keywords if k.arg == "id"]
            if given and not isinstance(given[0], ast.Constant):
                continue  # an id passed through (the core's codes, a conversion's): not literal
            ident = given[0].value if given else default
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            out.setdefault((status, str(ident)), []).append(where)
    return out


def _documented() -> dict[int, set[str]]:
    """status → the ids its row of the error table names."""
    text = (ROOT / "docs/service.md").read_text()
    table = text.split("**Errors** always have the body", 1)[1].split("\n\n", 2)[1]
    out: dict[int, set[str]] = {}
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        statuses = [int(s) for s in re.findall(r"\b[1-5]\d\d\b", cells[0])]
        ids = set(re.findall(r"`([a-z][a-z-]*)`", cells[-1]))
        for status in statuses:
            out.setdefault(status, set()).update(ids)
    return out


def test_every_error_id_the_service_raises_is_in_the_docs_table() -> None:
    documented = _documented()
    missing = [
        f"{status} {ident} (raised at {', '.join(where)})"
        for (status, ident), where in sorted(_raised().items())
        if ident not in documented.get(status, set())
    ]
    assert not missing, "not in docs/service.md's error table:\n  " + "\n  ".join(missing)


def test_the_scan_finds_the_ids() -> None:
    raised = _raised()
    assert (409, "already-exists") in raised and (403, "user-not-in-scope") in raised
    assert (422, "bad-agent-state") in raised and (422, "unknown-prompt") in raised
    assert {403, 404, 409, 422} <= set(_documented())
