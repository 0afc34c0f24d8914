"""Structure checks a maintainer relies on, run by .ci/run:

1. no import cycle between mint_rl's modules (every import counts: top-level, function-local and
   TYPE_CHECKING-only — a lazy import that points back up is still a cycle for a reader);
2. no cycle between packages either: every module folded into its top-level unit (a subpackage
   such as `mint_rl.rl`, `mint_rl.sampler`, the actors, the recipes; or a module directly in
   mint_rl/), the graph has no cycle, so the layers point one way;
3. no function in mint_rl/, actors/, recipes/ longer than MAX_LINES lines (docstring included).

    python .ci/check_structure.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The installed package names of the repository's folders (see pyproject.toml).
PACKAGES = {"mint_rl": ROOT / "mint_rl", "mint_rl.actors": ROOT / "actors",
            "mint_rl.recipes": ROOT / "recipes"}
MAX_LINES = 60


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
            for path in sorted(sub.glob("*.py")):
                base = f"{package}.{sub.name}"
                found[base if path.stem == "__init__" else f"{base}.{path.stem}"] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The mint_rl modules that module `name` imports (a package counts as its __init__)."""
    out = set()
    is_package = path.stem == "__init__"
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One example cycle per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def unit(module: str) -> str:
    """The top-level unit a module folds into: `mint_rl.rl.train` -> `mint_rl.rl`."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """`graph` with every module folded into its unit (a module of mint_rl/ is its own unit)."""
    folded: dict[str, set[str]] = {unit(name): set() for name in graph}
    for name, targets in graph.items():
        folded[unit(name)] |= {unit(t) for t in targets} - {unit(name)}
    return folded


def long_functions(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_LINES:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    return out


def main() -> int:
    found = modules()
    graph = {name: imports(path, name, set(found)) for name, path in found.items()}
    # A package's __init__ re-exporting its modules is not a cycle with them.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    packages = package_graph(graph)
    problems += [f"package cycle: {' <-> '.join(c)}" for c in cycles(packages)]
    for path in found.values():
        problems += long_functions(path)
    print("\n".join(problems) or f"structure ok: {len(found)} modules in {len(packages)} "
          f"packages, no import cycle between modules or packages, no function over "
          f"{MAX_LINES} lines")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
