"""The house: imports go one way (benchmarks -> glue_tasks -> adaptkit), with no circles inside a
package (a function-level import counts: it is a circle deferred, not removed), and the adapter
core neither imports the CPU speed tools nor exports them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports_of(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that a file imports, anywhere in it."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    parent = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = parent.rsplit(".", node.level - 1)[0] if node.level > 1 else parent
                base = f"{anchor}.{base}" if base else anchor
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == package)
    return found


def graph(package: str) -> dict[str, set[str]]:
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / package).rglob("*.py")}
    return {name: {i for i in imports_of(path, package) if i in files and i != name and i != package}
            for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


@pytest.mark.parametrize("package", ["adaptkit", "glue_tasks"])
def test_no_import_circles(package):
    assert cycles(graph(package)) == []


def test_floors_import_only_downward():
    for path in (ROOT / "adaptkit").rglob("*.py"):
        assert not imports_of(path, "glue_tasks") and not imports_of(path, "benchmarks"), path
    for path in (ROOT / "glue_tasks").rglob("*.py"):
        assert not imports_of(path, "benchmarks"), path


def test_the_adapter_core_leaves_the_cpu_speed_tools_alone():
    import adaptkit
    core = [p for p in (ROOT / "adaptkit").glob("*.py")]
    assert not any(i.startswith("adaptkit.cpu_speed") for p in core for i in imports_of(p, "adaptkit"))
    assert not {"fast_cpu_attention", "fast_cpu_dropout", "reuse_freed_memory"} & set(adaptkit.__all__)
