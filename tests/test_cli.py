"""The command line: method listing, clean one-line errors with exit code 2 on bad input."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=cwd)


def test_methods_lists_each_registered_method_on_one_line_with_its_options():
    out = bench("methods")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    names = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert {"magnitude", "random", "csgd", "rls"} <= set(names)
    assert len(names) == len(set(names))
    assert lines[lines.index(next(x for x in lines if x.startswith("magnitude "))) + 1] == \
        "    strategy: greedy, independent = 'greedy'"
    assert "    epsilon: float > 0 or auto = 'auto'" in lines


def test_unknown_method_is_one_clear_line_and_exit_2(tmp_path):
    out = bench("run", "configs/smoke.yaml", "--methods", "magnitud", "--results-dir", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: method 'magnitud' is not registered; allowed:")
    assert "Traceback" not in out.stderr


def test_bad_config_file_and_bad_seeds(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: {magnitude: {}}\ndatasets: {mnist: {models: [lenet5], pretrain: {epochs: -1}}}\n")
    out = bench("run", str(bad), "--results-dir", str(tmp_path))
    assert out.returncode == 2 and "datasets.mnist.pretrain.epochs: must be >= 0" in out.stderr
    out = bench("run", "configs/smoke.yaml", "--seeds", "one")
    assert out.returncode == 2 and "--seeds takes integers" in out.stderr


def test_missing_dataset_folder_ends_cells_skipped_not_crashed(tmp_path):
    out = bench("run", "configs/smoke.yaml", "--datasets", "mnist", "--methods", "random", "--no-progress",
                "--data-dir", str(tmp_path / "nothing"), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    table = bench("results", "--results-dir", str(tmp_path / "r"))
    assert "skipped: random/mnist/lenet5" in table.stdout and "mnist.npz not found" in table.stdout
