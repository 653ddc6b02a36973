"""The command line: method listing, clean one-line errors with exit code 2 on bad input, quiet
pipes, no store made by reading, and a server that stops with its process."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.run.tracking import Tracker

pytestmark = pytest.mark.spawns  # every test here starts interpreters

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
    assert "    epsilon: float > 0 or paper_contraction = 'paper_contraction'" in lines


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
    ("{kind: pool, bogus: 1}", "executor.bogus: unknown option of executor 'pool'; allowed: workers, gpu_ids"),
    ("{kind: local, address: auto}", "executor.address: unknown option of executor 'local'; allowed: workers"),
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


def one_run_store(results: Path) -> None:
    from bench.core.spec import RunSpec

    log = Tracker(results).start(RunSpec(method="random", dataset="mnist", model="lenet5", seed=0,
                                         target_kind="macs", target=0.5))
    log.metrics({"acc_final": 0.9, "epochs_used": 1.0, "budget_met": 1.0, "target_met": 1.0})
    log.finish("done")


def test_piping_results_into_a_reader_that_stops_early_exits_quietly(tmp_path):
    one_run_store(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "bench", "results", "--format", "csv", "--results-dir",
                             str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `| head -0`: the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_results_in_a_folder_without_runs_creates_nothing_there(tmp_path):
    out = bench("results", cwd=tmp_path)  # the default store, ./results
    assert out.returncode == 2 and out.stderr.startswith("error: no MLflow store at results/mlflow.db"), out.stderr
    assert list(tmp_path.iterdir()) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            out[int(d.name)] = (int(fields[1]), fields[0])
    return out


def _descendants(pid: int) -> set[int]:
    procs, found, todo = _processes(), set(), [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, (pp, _) in procs.items() if pp == parent]
        found.update(kids)
        todo += kids
    return found


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_stops_the_mlflow_server_and_frees_its_port(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench", "server", "--port", str(port), "--results-dir",
                             str(tmp_path)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:  # answering HTTP: uvicorn's workers are up
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, "the server exited before it answered"
        server = {proc.pid} | _descendants(proc.pid)
        assert len(server) > 1  # MLflow starts uvicorn, which starts workers
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        deadline = time.time() + 60
        while time.time() < deadline and (_answers(port) or server & {p for p, (_, st) in _processes().items()
                                                                         if st != "Z"}):
            time.sleep(0.5)
        left = server & {p for p, (_, st) in _processes().items() if st != "Z"}
        assert not left and not _answers(port), f"still running: {sorted(left)}"
    finally:  # whatever is left of the test's own process group (the server was started in it)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
