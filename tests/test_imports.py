"""The plugin surface stays one import: methods/ use only `bench.api`, which is a leaf, and the
harness has no import cycle. Checked on the source with `ast`, so nothing is imported to check it."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# matplotlib and pandas only for `report_extras`, the report hook (imported inside it)
PLUGIN_LIBS = {"torch", "numpy", "scipy", "sklearn", "threadpoolctl", "torch_pruning", "matplotlib", "pandas"}


def _imports(tree: ast.AST, package: str) -> list[str]:
    out = []
    for node in ast.walk(tree) if not isinstance(tree, list) else tree:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the package
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out += [f"{base}.{a.name}" if base in ("bench", "methods") else base for a in node.names]
    return out


def module_level(tree: ast.Module) -> list[ast.stmt]:
    """Import statements run at import time: top level, including inside top-level if/try blocks."""
    todo, out = list(tree.body), []
    while todo:
        stmt = todo.pop()
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            out.append(stmt)
        elif isinstance(stmt, (ast.If, ast.Try)):
            todo += stmt.body + stmt.orelse + getattr(stmt, "finalbody", []) + \
                [s for h in getattr(stmt, "handlers", []) for s in h.body]
    return out


def bench_graph(root: Path) -> dict[str, set[str]]:
    """bench module -> bench modules it imports at module level."""
    mods = {f"bench.{p.stem}": p for p in (root / "bench").glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name, path in mods.items():
        deps = _imports(module_level(ast.parse(path.read_text())), "bench")
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cyc := visit(d)):
                return cyc
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cyc := visit(n)):
            return cyc
    return None


def problems(root: Path) -> list[str]:
    """Every violation of the plugin-surface rules under `root` (a checkout)."""
    out = []
    graph = bench_graph(root)
    if graph.get("bench.api"):
        out.append(f"bench/api.py imports {sorted(graph['bench.api'])} at module level; it must stay a leaf")
    cycle = find_cycle(graph)
    if cycle:
        out.append("import cycle in bench/: " + " -> ".join(cycle))
    for path in sorted((root / "methods").glob("*.py")):
        for dep in _imports(ast.parse(path.read_text()), "methods"):
            top = dep.split(".")[0]
            if top == "bench" and not (dep == "bench.api" or dep.startswith("bench.api.")):
                out.append(f"methods/{path.name} imports {dep}; plugins import only bench.api")
            elif top == "methods" and not (dep.split(".") + [""])[1].startswith("_"):
                out.append(f"methods/{path.name} imports {dep}; plugins share code only via methods/_*.py")
            elif top not in ("bench", "methods") and top not in PLUGIN_LIBS and top not in sys.stdlib_module_names \
                    and top != "__future__":
                out.append(f"methods/{path.name} imports {top}; allowed: bench.api, {', '.join(sorted(PLUGIN_LIBS))}")
    return out


def test_the_repository_keeps_the_plugin_surface():
    assert problems(REPO) == []


def _copy_tree(tmp_path: Path) -> Path:
    for sub in ("bench", "methods"):
        (tmp_path / sub).mkdir()
        for p in (REPO / sub).glob("*.py"):
            (tmp_path / sub / p.name).write_text(p.read_text())
    return tmp_path


def test_an_injected_back_import_is_a_cycle(tmp_path):
    root = _copy_tree(tmp_path)
    api = root / "bench" / "api.py"
    api.write_text(api.read_text().replace("import torch\n", "import torch\nfrom bench.driver import plan_keep\n", 1))
    found = problems(root)
    assert any("bench/api.py imports ['bench.driver']" in p for p in found)
    assert any(p.startswith("import cycle in bench/: bench.api -> bench.driver -> bench.api") for p in found)


def test_a_lazy_import_inside_a_function_is_no_cycle(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "bench" / "a.py").write_text("def f():\n    from bench.b import g\n")
    (root / "bench" / "b.py").write_text("from bench.a import f\n\ndef g():\n    pass\n")
    assert problems(root) == []
    (root / "bench" / "a.py").write_text("try:\n    from bench.b import g\nexcept ImportError:\n    g = None\n")
    assert "import cycle in bench/: bench.a -> bench.b -> bench.a" in problems(root)


def test_a_plugin_importing_harness_internals_is_reported(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "methods" / "mine.py").write_text("import tqdm\nfrom bench.surgery import prune\nfrom bench import training\n"
                                              "from methods.magnitude import filter_l1\n")
    found = problems(root)
    assert "methods/mine.py imports bench.surgery; plugins import only bench.api" in found
    assert "methods/mine.py imports bench.training; plugins import only bench.api" in found
    assert "methods/mine.py imports methods.magnitude; plugins share code only via methods/_*.py" in found
    assert any(p.startswith("methods/mine.py imports tqdm") for p in found)
