"""The command line: method listing, clean one-line errors with exit code 2 on bad input."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.tracking import Tracker

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
    assert "    epsilon: float > 0 or auto = 0.003" in lines


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


def test_failed_cell_is_listed_at_the_end_with_its_reason_and_traceback(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist.npz").write_bytes(b"not an npz")
    results = tmp_path / "r"
    out = bench("run", "configs/smoke.yaml", "--datasets", "mnist", "--methods", "random", "--no-progress",
                "--data-dir", str(data), "--results-dir", str(results))
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("failed: random/mnist/lenet5 s0 macs-0.5: DataCorrupt:"), out.stderr
    tb = last.rsplit("(traceback: ", 1)[1].rstrip(")")
    assert Path(tb).is_file() and "DataCorrupt" in Path(tb).read_text()


def test_skipped_cell_is_listed_at_the_end_with_its_reason(tmp_path):
    out = bench("run", "configs/smoke.yaml", "--datasets", "mnist", "--methods", "random", "--no-progress",
                "--data-dir", str(tmp_path / "nothing"), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("skipped: random/mnist/lenet5 s0 macs-0.5:") and "mnist.npz not found" in last
    assert "traceback" not in last


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers: expected an integer >= 1 (parallel cells), got 0"),
    (["--workers", "-1", "--executor", "pool"], "--workers: expected an integer >= 1 (parallel cells), got -1"),
])
def test_bad_worker_counts_fail_before_any_cell_starts(tmp_path, args, message):
    out = bench("run", "configs/smoke.yaml", "--results-dir", str(tmp_path / "r"), *args)
    assert out.returncode == 2 and out.stderr.strip() == f"error: {message}"
    assert not (tmp_path / "r" / "runs").exists()


@pytest.mark.parametrize("executor, message", [
    ("{kind: pool, bogus: 1}", "executor.bogus: unknown option of executor 'pool'; allowed: workers, threads, gpu_ids"),
    ("{kind: local, address: auto}", "executor.address: unknown option of executor 'local'; allowed: workers, threads"),
    ("{kind: pool, workers: 0}", "executor.workers: expected an integer >= 1 (parallel cells), got 0"),
])
def test_bad_executor_settings_in_the_config_name_the_field_and_allowed_values(tmp_path, executor, message):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text((REPO / "configs/smoke.yaml").read_text() + f"executor: {executor}\n")
    out = bench("run", str(cfg), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and out.stderr.strip() == f"error: {message}", out.stderr
    assert not (tmp_path / "r" / "runs").exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_training_records_the_cell_interrupted_and_exits_128_plus_signal(tmp_path, data_dir, sig, code):
    results = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "configs/smoke.yaml", "--datasets", "mnist",
                             "--methods", "random", "--results-dir", str(results), "--data-dir", str(data_dir)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(results.glob("baselines/*.lock")):
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the pretraining
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "interrupted: finished cells are saved; run the same command again to resume" in err.splitlines()
    df = Tracker(results).runs_frame("smoke")
    assert list(df.status) == ["interrupted"] and "run the grid again" in df.error[0]
