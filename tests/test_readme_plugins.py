"""The plugin guide (docs/plugins.md, linked from the README) cannot rot: its code blocks are the
example plugins and the test template verbatim, the examples stay within the promised sizes and
import only bench.api (tests/test_plugin_examples.py runs them through the harness; the guide's
Taylor plugin kept outside the checkout runs in tests/test_readme_commands.py)."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- file: (\S+) -->\n```python\n(.*?)```\n", re.S)
LIMITS = {"tests/plugins/example_score.py": 25, "tests/plugins/example_full.py": 60}


GUIDE = REPO / "docs/plugins.md"


def readme_blocks() -> dict[str, str]:
    return dict(BLOCK.findall(GUIDE.read_text()))


def test_the_readme_shows_the_example_files_verbatim():
    blocks = readme_blocks()
    assert set(blocks) == {*LIMITS, "tests/test_plugin_examples.py"}
    for path, text in blocks.items():
        assert text == (REPO / path).read_text(), f"{GUIDE.name} block for {path} differs from the file"


def test_the_examples_fit_the_promised_sizes():
    for path, limit in LIMITS.items():
        lines = len((REPO / path).read_text().splitlines())
        assert lines <= limit, f"{path}: {lines} lines, the guide promises <= {limit}"


def test_the_examples_import_nothing_from_bench_but_bench_api():
    for path in LIMITS:
        tree = ast.parse((REPO / path).read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m for m in mods if m.split(".")[0] == "bench"} == {"bench.api"}, path
        assert mods <= {"bench.api", "torch", "typing"}, path


def test_the_taylor_example_has_the_size_the_readme_and_guide_state():
    example = re.search(r"<!-- example: ~/my_plugins/taylor.py -->\n```python\n(.*?)```\n", GUIDE.read_text(), re.S)
    lines = len(example.group(1).splitlines())
    assert f"{lines}-line Taylor" in (REPO / "README.md").read_text() and f"in {lines} lines" in GUIDE.read_text()
    tree = ast.parse(example.group(1))
    assert {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} <= {"bench.api", "torch.nn.functional"}
