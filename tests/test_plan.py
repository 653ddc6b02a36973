"""`bench plan`: exact cell/base counts, done detection from a tiny store, and the wall-time model."""
from __future__ import annotations

import dataclasses

import pytest

from bench import config
from bench.baselines import base_key, base_path
from bench.cli import main
from bench.plan import CellCost, make_plan, render, simulate_wall
from bench.tracking import STATUS_DONE, Tracker

RAW = {"name": "tinyplan", "seeds": [0, 1], "targets": ["macs:0.3", "macs:0.5"], "val_size": 1000,
       "methods": {"magnitude": {}, "random": {}},
       "datasets": {"mnist": {"models": ["lenet5"], "train_subset": 512, "test_subset": 256,
                              "pretrain": {"epochs": 2, "batch_size": 64, "augment": False},
                              "finetune": {"epochs": 1, "batch_size": 64, "augment": False}}}}


@pytest.fixture
def cfg(tmp_path):
    c = config.from_dict(RAW)
    c.results_dir = str(tmp_path / "results")
    return c


def test_plan_counts_cells_bases_and_finds_done_cells(cfg):
    specs = cfg.expand()
    assert make_plan(cfg).done == {}  # no store yet: nothing done, and no store is created
    first = specs[0]
    log = Tracker(cfg.results_dir).start(first)
    log.finish(STATUS_DONE)
    path = base_path(first, cfg.results_dir)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # a cached base is a file under results/baselines
    plan = make_plan(cfg)
    assert len(plan.specs) == 8 and len(plan.bases) == 2  # 2 methods x 2 targets x 2 seeds; 1 base per seed
    assert set(plan.done) == {first.run_id} and plan.cached_bases == {base_key(first)}
    text = render(plan, executor="local", workers=1)
    assert "8 cells, 2 distinct base checkpoints" in text
    assert "done: 1/8 cells in the store; bases cached: 1/2" in text
    assert "remaining: 7 cells, 1 bases to train" in text
    assert "estimate vs measured (finished cells" in text and "magnitude" in text
    lenet = plan.probes[("lenet5", "mnist", 64, "fp32")]
    assert lenet.measured_batch == 64 and lenet.step_img_s > 0  # a small model is timed at its own batch


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


def test_plan_cli_prints_the_estimate(tmp_path, capsys):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**RAW, "results_dir": str(tmp_path / "r")}))
    assert main(["plan", str(path), "--executor", "pool", "--workers", "2", "--methods", "magnitude"]) == 0
    out = capsys.readouterr().out
    assert "plan tinyplan: 4 cells, 2 distinct base checkpoints" in out
    assert "with --executor pool --workers 2" in out
