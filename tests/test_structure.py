"""The house rules that keep factorconv easy to extend, checked on the source: no import cycle (counting the
imports inside functions), no function longer than 80 lines, one module per CLI command, and no list in tests/
that mirrors the registry of operators (a new operator carries its own test knowledge: `example_config`,
`scriptable`)."""

from __future__ import annotations

import ast
from pathlib import Path

import factorconv as fc

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "factorconv"
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> the factorconv modules it imports anywhere in its body (a package import is its __init__)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    graph[name].add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names)
        graph[name] = {m for m in graph[name] if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle() -> None:
    graph = _import_graph()
    assert len(graph) > 80 and graph["factorconv.cli"]  # the walk found the package
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_over_80_lines() -> None:
    long = [f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted(PACKAGE.rglob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_one_module_per_command() -> None:
    from factorconv.cli import COMMANDS, build_parser

    names = {module.__name__.rsplit(".", 1)[1].removesuffix("_cmd") for module in COMMANDS}
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    files = {p.stem.removesuffix("_cmd") for p in (PACKAGE / "cli").glob("*_cmd.py")}
    assert names == set(commands) == files and len(COMMANDS) == len(names)


def test_no_list_in_tests_mirrors_the_operators() -> None:
    """A module-level collection naming half the registered operators or more is a registry a new operator
    would have to join (CONFIGURED_CONVS was one); the registry itself is the list."""
    operators = set(fc.list_convs())
    mirrors = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
                continue
            names = {n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant) and n.value in operators}
            if len(names) * 2 >= len(operators):
                mirrors.append(f"{path.name}:{node.lineno} names {len(names)} operators")
    assert mirrors == []
