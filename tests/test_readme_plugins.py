"""The README's "Adding a method" section cannot rot: its code blocks are the example plugins and
the test template verbatim, the examples stay within the promised sizes and import only bench.api
(tests/test_plugin_examples.py runs them through the harness)."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- file: (\S+) -->\n```python\n(.*?)```\n", re.S)
LIMITS = {"tests/plugins/example_score.py": 25, "tests/plugins/example_full.py": 60}


def readme_blocks() -> dict[str, str]:
    return dict(BLOCK.findall((REPO / "README.md").read_text()))


def test_the_readme_shows_the_example_files_verbatim():
    blocks = readme_blocks()
    assert set(blocks) == {*LIMITS, "tests/test_plugin_examples.py"}
    for path, text in blocks.items():
        assert text == (REPO / path).read_text(), f"README block for {path} differs from the file"


def test_the_examples_fit_the_promised_sizes():
    for path, limit in LIMITS.items():
        lines = len((REPO / path).read_text().splitlines())
        assert lines <= limit, f"{path}: {lines} lines, the README promises <= {limit}"


def test_the_examples_import_nothing_from_bench_but_bench_api():
    for path in LIMITS:
        tree = ast.parse((REPO / path).read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m for m in mods if m.split(".")[0] == "bench"} == {"bench.api"}, path
        assert mods <= {"bench.api", "torch", "typing"}, path
