"""`bench plan`: exact cell/base counts, done detection and comparison from a tiny store, cells
without data left unpriced, the cost model's arithmetic, the probe's warm-up and median, and the
wall-time model."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.core import probe as probe_module
from bench.core.probe import Probe, median_times
from bench.run import config
from bench.run.baselines import base_key, base_path
from bench.run.plan import CellCost, estimate_cell, make_plan, render, simulate_wall
from bench.run.tracking import STATUS_DONE, Tracker

RAW = {"name": "tinyplan", "seeds": [0, 1], "targets": ["macs:0.3", "macs:0.5"], "val_size": 1000,
       "methods": {"magnitude": {}, "random": {}},
       "datasets": {"mnist": {"models": ["lenet5"], "train_subset": 512, "test_subset": 256,
                              "pretrain": {"epochs": 2, "batch_size": 64, "augment": False},
                              "finetune": {"epochs": 1, "batch_size": 64, "augment": False}}}}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data folder holding mnist.npz only (the plan checks that the file exists, nothing more)."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "mnist.npz").write_bytes(b"")
    monkeypatch.setenv("BENCH_DATA", str(d))
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    return d


@pytest.fixture
def cfg(tmp_path, data_dir):
    c = config.from_dict(RAW)
    c.results_dir = str(tmp_path / "results")
    return c


def test_plan_counts_cells_bases_and_compares_finished_cells(cfg):
    specs = cfg.expand()
    assert make_plan(cfg).done == {}  # no store yet: nothing done, and no store is created
    first = specs[0]
    log = Tracker(cfg.results_dir).start(first)
    log.metrics({"prune_time_s": 1.0, "finetune_time_s": 2.5})
    log.finish(STATUS_DONE)
    path = base_path(first, cfg.results_dir)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # a cached base is a file under results/baselines
    plan = make_plan(cfg)
    assert len(plan.specs) == 8 and len(plan.bases) == 2  # 2 methods x 2 targets x 2 seeds; 1 base per seed
    assert set(plan.done) == {first.run_id} and plan.cached_bases == {base_key(first)}
    assert plan.done[first.run_id].method_s == 3.5  # prune + fine-tune time as the run logged them
    text = render(plan, executor="local", workers=1)
    assert "8 cells, 2 distinct base checkpoints" in text
    assert "done: 1/8 cells in the store; bases cached: 1/2" in text
    assert "remaining: 7 cells, 1 bases to train" in text
    row = next(line for line in text.splitlines() if line.strip().startswith(first.variant) and "3.5s" in line)
    est = plan.cell_cost[first.run_id].train_s + plan.cell_cost[first.run_id].extra_s
    assert f"{3.5 / est:.2f}x" in row  # measured / estimated for the finished cell
    lenet = plan.probes[("lenet5", "mnist", 64, "fp32")]
    assert lenet.measured_batch == 64 and lenet.step_img_s > 0  # a small model is timed at its own batch


def test_cells_without_their_dataset_file_are_not_priced(tmp_path, data_dir, monkeypatch):
    raw = {**RAW, "datasets": {**RAW["datasets"], "svhn": {**RAW["datasets"]["mnist"], "models": ["lenet5"]}}}
    c = config.from_dict(raw)
    c.results_dir = str(tmp_path / "results")
    plan = make_plan(c)
    assert len(plan.specs) == 16 and set(plan.missing_data) == {"svhn"}
    assert len(plan.remaining()) == 8 and len(plan.unpriced()) == 8
    assert all(s.dataset == "mnist" for s in plan.remaining())
    text = render(plan, executor="local", workers=1)
    assert f"not priced: 8 svhn cells ({data_dir / 'svhn.npz'} missing: its cells will try the official download" in text
    assert "remaining: 8 cells, 2 bases to train" in text
    mnist = sum(plan.cell_cost[s.run_id].total_s for s in plan.remaining())
    mnist += sum(v for k, v in plan.base_cost.items() if k in {base_key(s) for s in plan.remaining()})
    svhn = sum(plan.cell_cost[s.run_id].total_s for s in plan.unpriced())
    assert svhn > 0 and plan.remaining_s() == pytest.approx(mnist)  # costed, but not in the total
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    assert "BENCH_OFFLINE=1: its cells will be skipped" in make_plan(c).missing_data["svhn"]


def _probe(step: float, fwd: float, b1: float) -> Probe:
    return Probe(step, fwd, b1, 64, 64, "cpu")


def test_cell_cost_follows_the_budget_and_the_harness_passes(cfg, monkeypatch):
    """Hand-derived: mnist train subset 512 at batch 64 (8 steps), val 1000, test 256, 1 epoch."""
    spec = next(s for s in cfg.expand() if s.method == "magnitude")
    full, pruned = _probe(1e-3, 1e-4, 1e-3), _probe(5e-4, 5e-5, 8e-4)
    c = estimate_cell(spec, full, full, pruned)
    assert c.train_s == pytest.approx(512 * 5e-4 + 1000 * 5e-5)  # one fine-tune epoch of the pruned net
    tests = 256 * 2 * 5e-5                                         # pruned before and after; the base's is cached
    vals = 1000 * 2 * 5e-5                                         # acc_val_pruned, acc_val_final
    latency = 33 * 8e-4 + 13 * 64 * 5e-5  # measure_record: 30 + 3 warm-up at b1, 10 + 3 at b64; pruned only, the base's is cached
    assert c.eval_s == pytest.approx(tests + vals + latency) and c.extra_s == 0 and c.extra_source == "none"
    # a method training from scratch spends pretrain + fine-tune epochs on the full net, x its factor
    from methods.rls import RLSPrune

    monkeypatch.setattr(RLSPrune, "train_cost_factor", classmethod(lambda cls, spec: 2.0))
    rls = dataclasses.replace(spec, method="rls", variant="rls")
    c = estimate_cell(rls, full, full, pruned)
    assert c.train_s == pytest.approx(3 * (2.0 * 512 * 1e-3 + 1000 * 1e-4)) and c.train_factor == 2.0


class _Script:
    """A fake clock: each call of a timed function advances it by the next scripted duration."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def clock(self) -> float:
        return self.now

    def fn(self) -> None:
        self.now += self.durations[self.calls]
        self.calls += 1


def test_probe_warms_up_then_takes_the_median(monkeypatch):
    s = _Script([9.0e-3, 5.0e-3] + [0.05, 0.01, 0.02, 0.03, 0.5])  # 2 slow first steps, then a burst
    monkeypatch.setattr(probe_module, "clock", s.clock)
    assert median_times([s.fn], "cpu", steps=5, warmup=2) == [pytest.approx(0.03)]
    assert s.calls == 7  # both warm-up steps ran and were not timed
    # a slow warm-up round (compute-bound) warms up once; a round of over MAX_S after MIN_STEPS stops
    s = _Script([1.0] + [0.9, 0.7, 0.8, 0.1, 0.1])
    monkeypatch.setattr(probe_module, "clock", s.clock)
    assert median_times([s.fn], "cpu", steps=5, warmup=2) == [pytest.approx(0.8)] and s.calls == 4


def test_probe_times_functions_in_turns(monkeypatch):
    """Two models timed in turns: each gets its own median, from alternating calls."""
    s = _Script([0.01, 0.02] * 2 + [0.010, 0.020, 0.012, 0.018, 0.011, 0.030])
    monkeypatch.setattr(probe_module, "clock", s.clock)
    assert median_times([s.fn, s.fn], "cpu", steps=3, warmup=2) == [pytest.approx(0.011), pytest.approx(0.020)]


def test_probe_runs_at_the_grids_threads(cfg):
    import torch

    before = torch.get_num_threads()
    cfg.threads = 2
    plan = make_plan(cfg)
    assert plan.threads == 2 and all(p.threads == 2 for p in plan.probes.values())  # every executor's count
    assert torch.get_num_threads() == before  # restored after probing


def test_wall_time_simulation_follows_base_locks(cfg):
    plan = make_plan(cfg)
    plan.base_cost = {k: 10.0 for k in plan.base_cost}
    plan.cell_cost = {s.run_id: CellCost(0.5, 0.25, 0.25, "none") for s in plan.specs}
    assert simulate_wall(plan, 1, "local") == 2 * 10 + 8 * 1
    # two workers: each trains one base (10 s), then the 8 cells split 4 / 4
    assert simulate_wall(plan, 2, "pool") == 10 + 4
    plan.cached_bases = set(plan.base_cost)
    assert simulate_wall(plan, 2, "pool") == 4


def test_bf16_recipe_is_probed_separately(cfg):
    ds = cfg.datasets[0]
    cfg.datasets = [dataclasses.replace(ds, finetune=dataclasses.replace(ds.finetune, precision="bf16"))]
    keys = set(make_plan(cfg).probes)
    assert keys == {("lenet5", "mnist", 64, "fp32"), ("lenet5", "mnist", 64, "bf16")}


def test_plan_cli_prints_the_estimate(tmp_path, data_dir, capsys):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**RAW, "results_dir": str(tmp_path / "r")}))
    assert main(["plan", str(path), "--executor", "pool", "--workers", "2", "--methods", "magnitude"]) == 0
    out = capsys.readouterr().out
    assert "plan tinyplan: 4 cells, 2 distinct base checkpoints" in out
    assert "with --executor pool --workers 2" in out


@pytest.mark.slow
@pytest.mark.spawns
def test_paper_plan_takes_under_a_minute(tmp_path):
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench", "plan", "configs/paper.yaml", "--results-dir",
                          str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "plan paper: 621 cells, 15 distinct base checkpoints" in out.stdout and "estimate:" in out.stdout
    # a minute on this machine alone; when other jobs share the cores (load above the core count,
    # e.g. a grid beside the suite), the probe's CPU time stretches by that share
    share = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    assert time.perf_counter() - t < 60 * share
