"""A new method's test (the template of docs/plugins.md): its scores or model on a real Task, then
one smoke grid through the whole harness. Copy it and import your class instead of the two examples."""
from pathlib import Path

import pytest
import yaml

from bench.core.datasets import Data
from bench.core.models import build
from bench.run import config
from bench.run.grid import run_grid
from bench.run.tracking import Tracker
from tests.conftest import make_task
from tests.plugins.example_full import Gradual
from tests.plugins.example_score import MeanActivation

REPO = Path(__file__).resolve().parents[1]


def test_the_score_method_gives_one_score_per_channel_of_every_unit(mnist_small):
    task = make_task(mnist_small)  # a real Task on small real MNIST; logs to memory, not MLflow
    model = build("lenet5", in_channels=1, input_size=28, num_classes=10)
    scores = MeanActivation(batches=2).score(model, task)
    assert {n: len(s) for n, s in scores.items()} == {n: u.size for n, u in task.units(model).items()}
    assert all((s >= 0).all() for s in scores.values())


def test_the_full_method_logs_each_step_and_reaches_the_target(mnist_small):
    data = Data(mnist_small.info, mnist_small.train.subset(640, 0), mnist_small.val.subset(200, 0), None)
    task = make_task(data, finetune_epochs=2)  # 2 steps: 1 epoch between them, 1 left to the harness
    model = build("lenet5", in_channels=1, input_size=28, num_classes=10)
    small = Gradual(steps=2).prune(model, task, task.target)
    steps = dict(task.memory_logger.metrics["step_reduction"])
    assert steps[1] == pytest.approx(0.25, abs=0.02) and task.target.met(steps[2])
    assert task.target.met(1 - task.cost(small) / task.cost(model)) and task.epochs_used == 1.0


def test_both_run_in_the_smoke_grid_within_target_and_budget(tmp_path, data_dir):
    raw = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    raw["methods"] = {MeanActivation.name: {}, Gradual.name: {"steps": 2}}
    raw["datasets"] = {"mnist": {**raw["datasets"]["mnist"], "train_subset": 1000, "test_subset": 200}}
    raw["val_size"] = 200  # seconds, not accuracy: the test checks target, budget and bookkeeping
    cfg = config.from_dict(raw, name="smoke")
    cfg.results_dir, cfg.data_dir = str(tmp_path), str(data_dir)
    assert run_grid(cfg, progress=False) == {"done": 2}
    runs = Tracker(cfg.results_dir).runs_frame("smoke")
    assert set(runs.method) == {MeanActivation.name, Gradual.name}
    assert (runs.target_met == 1).all() and (runs.budget_met == 1).all()
