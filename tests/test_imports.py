"""The layers of bench/ point down only, and the plugin surface stays one import. Checked on the
source with `ast`, so nothing is imported to check it.

Rules (docs/architecture.md draws them):
- every module of bench/ sits in one layer of LAYERS, and imports only its own layer and those
  below it: cli -> report -> run -> api -> core -> base. Every import counts, the ones inside
  functions (and under `if TYPE_CHECKING`) too: an import that runs late still ties the layers;
- no import cycle, counting the same imports;
- no lazy re-export table: no module-level `__getattr__`, no dict of names -> bench module paths
  (bench.api re-exports with plain imports);
- at most 10 modules at bench/'s top level: the rest sit in the layer packages;
- plugins (methods/*.py) import only bench.api, helpers methods/_*.py and the allowed libraries.
"""
from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# matplotlib and pandas only for `report_extras`, the report hook (imported inside it)
PLUGIN_LIBS = {"torch", "numpy", "scipy", "sklearn", "threadpoolctl", "torch_pruning", "matplotlib", "pandas"}
# lowest first; a module may import its own layer and the ones below it. "x.*" = the package x and all in it.
LAYERS = [
    ("base", ("bench", "bench.errors", "bench.utils", "bench.interrupts")),
    ("core", ("bench.core.*",)),
    ("api", ("bench.api",)),
    ("run", ("bench.run.*",)),
    ("report", ("bench.report.*",)),
    ("cli", ("bench.cli", "bench.__main__")),
]
TOP_LEVEL_MAX = 10


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path, package: str = "bench") -> dict[str, Path]:
    """Module name -> file of every module of `package` under the checkout `root`."""
    return {module_name(root, p): p for p in sorted((root / package).rglob("*.py")) if "__pycache__" not in p.parts}


def imported(tree: ast.AST, name: str, is_package: bool) -> list[str]:
    """Every module name `tree` imports, anywhere in the file, relative imports resolved; for
    `from X import y` both X and X.y (whichever is a module is kept by the caller)."""
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out += [f"{mod}.{a.name}" for a in node.names] + [mod]
    return out


def graph(root: Path) -> dict[str, set[str]]:
    """bench module -> the bench modules it imports (the deepest module each import names)."""
    mods = modules(root)
    out = {}
    for name, path in mods.items():
        deps = set()
        for dep in imported(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            while dep and dep not in mods:  # bench.core.models.build -> bench.core.models
                dep = dep.rpartition(".")[0]
            if dep and dep != name:
                deps.add(dep)
        # `from bench.core import models` names both bench.core and bench.core.models: keep the module
        out[name] = {d for d in deps if not any(o.startswith(d + ".") for o in deps)}
    return out


def layer_of(module: str) -> tuple[int, str] | None:
    for rank, (layer, members) in enumerate(LAYERS):
        for m in members:
            if module == m.removesuffix(".*") or (m.endswith(".*") and module.startswith(m[:-1])):
                return rank, layer
    return None


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cyc := visit(d)):
                return cyc
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (cyc := visit(n)):
            return cyc
    return None


def reexport_tables(root: Path) -> list[str]:
    """Module-level `__getattr__` or name -> "bench.x" dicts: the lazy re-export bench.api once had."""
    out = []
    for name, path in modules(root).items():
        rel = path.relative_to(root).as_posix()
        for stmt in ast.parse(path.read_text()).body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == "__getattr__":
                out.append(f"re-export table: {rel} defines a module-level __getattr__; import the names plainly")
            value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Dict) and value.values and all(
                    isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.startswith("bench.")
                    for v in value.values):
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
                out.append(f"re-export table: {rel}:{ast.unparse(target)} maps names to bench modules; "
                           f"import the names plainly")
    return out


def plugin_imports(tree: ast.AST, package: str) -> list[str]:
    """The module each import statement of a plugin names (`from bench import api` names bench.api)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out += [f"{base}.{a.name}" if base in ("bench", "methods") else base for a in node.names]
    return out


def plugin_problems(root: Path) -> list[str]:
    out = []
    for path in sorted((root / "methods").glob("*.py")):
        for dep in plugin_imports(ast.parse(path.read_text()), "methods"):
            top = dep.split(".")[0]
            if top == "bench" and dep != "bench.api":
                out.append(f"methods/{path.name} imports {dep}; plugins import only bench.api")
            elif top == "methods" and not (dep.split(".") + [""])[1].startswith("_"):
                out.append(f"methods/{path.name} imports {dep}; plugins share code only via methods/_*.py")
            elif top not in ("bench", "methods") and top not in PLUGIN_LIBS and top not in sys.stdlib_module_names \
                    and top != "__future__":
                out.append(f"methods/{path.name} imports {top}; allowed: bench.api, {', '.join(sorted(PLUGIN_LIBS))}")
    return out


def problems(root: Path) -> list[str]:
    """Every violation of the layer and plugin-surface rules under `root` (a checkout)."""
    out = []
    g = graph(root)
    for mod in sorted(g):
        here = layer_of(mod)
        if here is None:
            rel = modules(root)[mod].relative_to(root).as_posix()
            out.append(f"{rel} is in no layer (tests/test_imports.py LAYERS)")
            continue
        for dep in sorted(g[mod]):
            there = layer_of(dep)
            if there is not None and there[0] > here[0]:
                out.append(f"upward import: {mod} ({here[1]}) imports {dep} ({there[1]})")
    cycle = find_cycle(g)
    if cycle:
        out.append("import cycle in bench/: " + " -> ".join(cycle))
    out += reexport_tables(root)
    top = sorted(p.name for p in (root / "bench").glob("*.py"))
    if len(top) > TOP_LEVEL_MAX:
        out.append(f"bench/ has {len(top)} modules at its top level ({', '.join(top)}); at most {TOP_LEVEL_MAX}")
    return out + plugin_problems(root)


def test_the_repository_keeps_its_layers_and_the_plugin_surface():
    assert problems(REPO) == []


def _copy_tree(tmp_path: Path) -> Path:
    for sub in ("bench", "methods"):
        shutil.copytree(REPO / sub, tmp_path / sub, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_an_import_inside_a_function_that_closes_a_loop_is_a_cycle(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "bench" / "core" / "a.py").write_text("def f():\n    from bench.core.b import g\n")
    (root / "bench" / "core" / "b.py").write_text("from bench.core.a import f\n\ndef g():\n    pass\n")
    assert problems(root) == ["import cycle in bench/: bench.core.a -> bench.core.b -> bench.core.a"]


def test_an_injected_back_import_is_upward_and_a_cycle(tmp_path):
    root = _copy_tree(tmp_path)
    training = root / "bench" / "core" / "training.py"
    text = training.read_text()
    training.write_text(text.replace("def default_device(", "def _late():\n    from bench.api import Task\n\n\n"
                                     "def default_device(", 1))
    found = problems(root)
    assert "upward import: bench.core.training (core) imports bench.api (api)" in found
    assert any(p.startswith("import cycle in bench/:") and "bench.api" in p and "bench.core.training" in p
               for p in found)


def test_the_run_layer_may_not_import_the_report(tmp_path):
    root = _copy_tree(tmp_path)
    plan = root / "bench" / "run" / "plan.py"
    plan.write_text(plan.read_text() + "\n\ndef _power():\n    from bench.report.plan_power import power_lines\n")
    assert "upward import: bench.run.plan (run) imports bench.report.plan_power (report)" in problems(root)


def test_a_lazy_reexport_table_is_reported(tmp_path):
    root = _copy_tree(tmp_path)
    api = root / "bench" / "api.py"
    api.write_text(api.read_text() + '\n_LAZY = {"Range": "bench.core.options"}\n\n\n'
                   'def __getattr__(name):\n    import importlib\n\n'
                   '    return getattr(importlib.import_module(_LAZY[name]), name)\n')
    found = problems(root)
    assert "re-export table: bench/api.py defines a module-level __getattr__; import the names plainly" in found
    assert "re-export table: bench/api.py:_LAZY maps names to bench modules; import the names plainly" in found


def test_a_module_outside_the_layers_and_a_crowded_top_level_are_reported(tmp_path):
    root = _copy_tree(tmp_path)
    for i in range(TOP_LEVEL_MAX):
        (root / "bench" / f"extra{i}.py").write_text("")
    found = problems(root)
    assert "bench/extra0.py is in no layer (tests/test_imports.py LAYERS)" in found
    assert any(p.startswith("bench/ has ") and p.endswith(f"at most {TOP_LEVEL_MAX}") for p in found)


def test_a_plugin_importing_harness_internals_is_reported(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "methods" / "mine.py").write_text("import tqdm\nfrom bench.core.surgery import prune\n"
                                              "from bench.core import training\n"
                                              "from methods.magnitude import filter_l1\n")
    found = problems(root)
    assert "methods/mine.py imports bench.core.surgery; plugins import only bench.api" in found
    assert "methods/mine.py imports bench.core; plugins import only bench.api" in found
    assert "methods/mine.py imports methods.magnitude; plugins share code only via methods/_*.py" in found
    assert any(p.startswith("methods/mine.py imports tqdm") for p in found)
