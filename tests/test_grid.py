"""The whole path on real (small) MNIST: grid -> MLflow -> results; rerun, kill -9, failures, skips."""
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.api import ScoreMethod
from bench.core.registry import register
from bench.run import config
from bench.run.grid import run_grid
from bench.run.tracking import RESULT_COLUMNS, Tracker

REPO = Path(__file__).resolve().parents[1]


@register
class Explode(ScoreMethod):
    """Test-only plugin: raises inside the pruning phase."""

    name = "explode_for_tests"

    def score(self, model, task):
        raise RuntimeError("injected failure")


def smoke(tmp_path, data_dir, **narrow):
    cfg = config.override(config.load(REPO / "configs/smoke.yaml"), **narrow)
    cfg.results_dir = str(tmp_path / "results")
    cfg.data_dir = str(data_dir)
    return cfg


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("grid")
    cfg = smoke(tmp, data_dir)
    counts = run_grid(cfg, progress=False)
    return cfg, counts


def test_smoke_grid_records_every_cell_with_the_promised_columns(finished_grid):
    cfg, counts = finished_grid
    assert counts == {"done": 2, "skipped": 2}
    df = Tracker(cfg.results_dir).runs_frame("smoke")
    assert set(RESULT_COLUMNS) <= set(df.columns)
    done = df[df.status == "done"]
    assert set(done.method) == {"magnitude", "random"}
    assert (done.acc_base > 0.9).all() and (done.acc_final > 0.9).all()
    assert ((done.macs_reduction - 0.5).abs() <= 0.015).all()
    assert (done.macs_pruned < done.macs_base).all() and (done.params_pruned < done.params_base).all()
    assert (done.acc_base.nunique() == 1)  # one shared base checkpoint for every method
    skipped = df[df.status == "skipped"]
    assert set(skipped.dataset) == {"svhn"} and skipped.error.str.contains("svhn.npz not found").all()


def test_rerun_recomputes_nothing_and_adds_no_runs(finished_grid):
    cfg, _ = finished_grid
    base = next((Path(cfg.results_dir) / "baselines").glob("*.pt"))
    mtime = base.stat().st_mtime
    before = Tracker(cfg.results_dir).runs_frame("smoke")
    t = time.perf_counter()
    counts = run_grid(cfg, progress=False)
    assert counts["cached"] == 2 and counts["done"] == 0
    after = Tracker(cfg.results_dir).runs_frame("smoke")
    assert len(after) == len(before) == 4
    assert sorted(after.run_id) == sorted(before.run_id)
    assert base.stat().st_mtime == mtime
    assert time.perf_counter() - t < 30


def test_results_cli_prints_one_csv_row_per_run(finished_grid):
    cfg, _ = finished_grid
    out = subprocess.run([sys.executable, "-m", "bench", "results", "--format", "csv", "--results-dir", cfg.results_dir],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout.splitlines()
    assert out[0].split(",")[:len(RESULT_COLUMNS)] == RESULT_COLUMNS
    assert len(out) == 5


def test_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path, data_dir):
    cfg = smoke(tmp_path, data_dir, methods=["explode_for_tests", "magnitude"], datasets=["mnist"])
    counts = run_grid(cfg, progress=False)
    assert counts == {"failed": 1, "done": 1}
    df = Tracker(cfg.results_dir).runs_frame("smoke")
    row = df[df.method == "explode_for_tests"].iloc[0]
    assert row.status == "failed" and "RuntimeError: injected failure" in row.error


def test_iterative_rounds_share_the_finetune_budget_instead_of_adding_to_it(tmp_path, data_dir):
    """rounds: 2 with a 2-epoch budget = 1 epoch between rounds + 1 final epoch, not 1 + 2."""
    cfg = smoke(tmp_path, data_dir, methods=["magnitude"], datasets=["mnist"])
    cfg.pruning = dataclasses.replace(cfg.pruning, rounds=2)
    cfg.datasets = [dataclasses.replace(d, finetune=dataclasses.replace(d.finetune, epochs=2)) for d in cfg.datasets]
    assert run_grid(cfg, progress=False) == {"done": 1}
    tracker = Tracker(cfg.results_dir)
    (spec,) = cfg.expand()
    (run,) = tracker.runs_of(spec.experiment, spec.run_id)
    epochs = {name: len(tracker.client.get_metric_history(run.info.run_id, f"{name}/val_acc"))
              for name in ("round1", "finetune")}
    assert epochs == {"round1": 1, "finetune": 1}


@pytest.mark.parametrize("executor", [[], ["--executor", "pool", "--workers", "2"]], ids=["local", "pool"])
def test_kill_9_mid_grid_then_rerun_completes_each_cell_exactly_once(tmp_path, data_dir, executor):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench", "run", "configs/smoke.yaml", "--datasets", "mnist", "--no-progress",
           "--results-dir", str(results), "--data-dir", str(data_dir), *executor]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(results.glob("runs/*/stage-*/pruned_before_finetune.pt")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: the first cell is pruned, not yet finished
    proc.wait()
    killed = Tracker(results).runs_frame("smoke")
    assert len(killed) >= 1 and (killed.status == "running").any()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    df = Tracker(results).runs_frame("smoke")
    assert sorted(df.method) == ["magnitude", "random"]
    assert (df.status == "done").all() and df.run_id.is_unique
