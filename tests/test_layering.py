"""The package structure holds: no import cycles, the funnel named in one module, Dagster only where it belongs.

Imports are read with ``ast`` (module-level and function-level alike, so a cycle hidden inside a function still
counts); ``if TYPE_CHECKING:`` blocks are ignored.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synqa_dagster"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """The synqa_dagster modules ``module`` imports (anywhere in it), plus ``dagster`` when it imports Dagster."""
    path = MODULES[module]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in child.names]
            else:
                visit(child)
                continue
            for name in names:
                if name == "dagster" or name.startswith("dagster.") or name.startswith("dagster_"):
                    found.add("dagster")
                elif name.startswith("synqa_dagster") and (target := _resolve(name)) and target != module:
                    found.add(target)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles() -> list[list[str]]:
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v] - {"dagster"}:
            if w not in index:
                strong(w)
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
                out.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles_between_modules():
    assert _cycles() == []


def test_the_import_reader_sees_a_cycle(monkeypatch):
    """The cycle check itself can fail: two modules importing each other are reported."""
    monkeypatch.setitem(GRAPH, "synqa_dagster.stages", GRAPH["synqa_dagster.stages"] | {"synqa_dagster.definitions"})
    assert any("synqa_dagster.definitions" in c and "synqa_dagster.stages" in c for c in _cycles())


def test_checks_and_assets_do_not_import_each_other():
    for module, imports in GRAPH.items():
        if module.startswith("synqa_dagster.checks"):
            assert not {i for i in imports if i.startswith("synqa_dagster.assets")}, module
        if module.startswith("synqa_dagster.assets"):
            assert not {i for i in imports if i.startswith("synqa_dagster.checks")}, module


@pytest.mark.parametrize("package", ["gates", "stats", "lineage", "generation", "handover", "review", "corpus", "engine"])
def test_the_pure_packages_are_dagster_free(package):
    for module, imports in GRAPH.items():
        if module.startswith(f"synqa_dagster.{package}"):
            assert "dagster" not in imports, module
    assert "dagster" not in GRAPH["synqa_dagster.stages"] and "dagster" not in GRAPH["synqa_dagster.common"]


def test_only_the_registry_names_the_gate_assets():
    from synqa_dagster.stages import STAGES

    names = {s.asset for s in STAGES if s.asset != s.name}  # "human_review" doubles as a plain word
    for module, path in MODULES.items():
        if module == "synqa_dagster.stages":
            continue
        literals = {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not (literals & names), (module, sorted(literals & names))
