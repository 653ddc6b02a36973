"""The path a newcomer takes with a plugin, end to end through `python -m bench` on a tiny fake
MNIST (random images: seconds, no real data): a plugin file kept outside the checkout runs through
`--plugins`, also in pool workers; an installed package with a broken entry point fails only its
own cells; failure lines name the variant; a traceback goes once its cell succeeds; the results
table shows the budget and target columns. The README's own command runs on the real data."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.spawns  # every test here starts interpreters

REPO = Path(__file__).resolve().parents[1]

GRID = """name: newcomer
seeds: [0]
targets: [macs:0.5]
val_size: 100
latency: {repeats_b1: 1, repeats_b64: 1, warmup: 0}
methods:
  random@mine: {}
  example_activation: {}
  broken: {}
datasets:
  mnist:
    models: [lenet5]
    pretrain: {epochs: 1, lr: 0.05, batch_size: 64, augment: false}
    finetune: {epochs: 1, lr: 0.01, batch_size: 64, augment: false}
"""
BROKEN_EP = "entry point 'broken = broken_plugin:Broken' of broken_plugin 0.1 failed to load: ModuleNotFoundError"


def fake_mnist(path: Path, n_train: int = 400, n_test: int = 100) -> None:
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x_train=rng.integers(0, 256, (n_train, 28, 28, 1), dtype=np.uint8),
                        y_train=rng.integers(0, 10, n_train), x_test=rng.integers(0, 256, (n_test, 28, 28, 1),
                                                                                   dtype=np.uint8),
                        y_test=rng.integers(0, 10, n_test))


def bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Two runs of one grid: first on an unreadable dataset file (every cell fails), then on a
    readable one. Its plugin lives outside the checkout; an installed package's entry point is broken."""
    tmp = tmp_path_factory.mktemp("newcomer")
    plugins = tmp / "my_plugins"
    plugins.mkdir()
    shutil.copy(REPO / "tests/plugins/example_score.py", plugins / "example_score.py")
    site = tmp / "site"
    site.mkdir()
    (site / "broken_plugin.py").write_text("import no_such_module\n")
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken_plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[prunebench.methods]\nbroken = broken_plugin:Broken\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    (tmp / "grid.yaml").write_text(GRID)
    data, results = tmp / "data", tmp / "results"
    data.mkdir()
    args = ("run", str(tmp / "grid.yaml"), "--plugins", str(plugins / "example_score.py"), "--no-progress",
            "--data-dir", str(data), "--results-dir", str(results))
    (data / "mnist.npz").write_bytes(b"not an npz")
    first = bench(*args, env=env)
    tracebacks = sorted(results.glob("runs/*/traceback.txt"))
    fake_mnist(data / "mnist.npz")
    second = bench(*args, env=env)
    table = bench("results", "--results-dir", str(results), env=env)
    return {"first": first, "second": second, "table": table, "tracebacks": tracebacks, "results": results}


def test_failure_lines_name_the_variant(grid):
    first = grid["first"]
    assert first.returncode == 1, first.stderr
    failed = [line for line in first.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3 and any(line.startswith("failed: random@mine/mnist/lenet5 s0 macs-0.5: DataCorrupt:")
                                    for line in failed), first.stderr


def test_a_plugin_outside_the_checkout_runs_through_plugins_in_pool_workers(grid):
    second = grid["second"]
    assert "grid finished: done 2, failed 1" in second.stderr, second.stderr
    table = grid["table"].stdout
    assert any(line.split()[:3] == ["done", "example_activation", "example_activation"]
               for line in table.splitlines()), table


def test_a_broken_entry_point_warns_once_and_fails_only_its_own_cells(grid):
    second = grid["second"]
    warnings = [line for line in second.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {BROKEN_EP}"), second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"failed: broken/mnist/lenet5 s0 macs-0.5: MethodUnavailable: {BROKEN_EP}"), last
    assert any(line.split()[:3] == ["done", "random", "random@mine"] for line in grid["table"].stdout.splitlines())


def test_a_traceback_goes_once_its_cell_succeeds(grid):
    assert len(grid["tracebacks"]) == 3  # every cell failed the first time
    left = sorted(grid["results"].glob("runs/*/traceback.txt"))
    assert len(left) == 1 and "MethodUnavailable" in left[0].read_text()  # the broken method's only


def test_the_results_table_shows_budget_and_target_columns(grid):
    lines = grid["table"].stdout.splitlines()
    header = lines[0].split()
    assert header[-3:] == ["epochs_used", "budget_met", "target_met"], lines[0]
    done = [line.split() for line in lines[1:] if line.split()[0] == "done"]
    assert len(done) == 2 and all(float(row[-3]) > 0 and row[-2] == "yes" for row in done), lines
    assert lines[-1].startswith("failed: broken/mnist/lenet5 s0: MethodUnavailable:")


def test_plugins_come_from_the_environment_too_and_a_bad_entry_is_one_line(tmp_path):
    shutil.copy(REPO / "tests/plugins/example_full.py", tmp_path / "gradual.py")
    out = bench("methods", env={**os.environ, "BENCH_PLUGINS": str(tmp_path / "gradual.py")})
    assert out.returncode == 0 and "example_gradual" in out.stdout, out.stderr
    nope = tmp_path / "nope.py"
    out = bench("methods", "--plugins", str(nope))
    assert out.returncode == 2 and out.stderr.strip() == f"error: --plugins {nope}: no such file or folder"
    (tmp_path / "bad.py").write_text("import no_such_module\n")
    out = bench("methods", "--plugins", str(tmp_path / "bad.py"))
    assert out.returncode == 2 and out.stderr.strip() == \
        f"error: --plugins {tmp_path / 'bad.py'}: ModuleNotFoundError: No module named 'no_such_module'"


def test_the_readme_command_runs_the_example_plugin(tmp_path, data_dir):
    out = bench("run", "configs/smoke.yaml", "--plugins", "tests/plugins", "--methods", "example_activation",
                "--datasets", "mnist", "--no-progress", "--data-dir", str(data_dir), "--results-dir", str(tmp_path))
    assert out.returncode == 0 and "grid finished: done 1" in out.stderr, out.stderr
