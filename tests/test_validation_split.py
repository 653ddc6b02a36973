"""Choices are made on validation data: every run logs validation accuracies, and the test split
is out of reach of anything a method or a training hook sees."""
from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path

import torch

from bench.api import FullMethod
from bench.core.datasets import Split, load_test
from bench.core.registry import register
from bench.core.training import Hook
from bench.run import config, runner
from bench.run.grid import run_grid
from bench.run.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]
SEEN: dict[str, object] = {}


class Capture(Hook):
    def on_fit_start(self, ctx):
        SEEN["ctx_data"] = ctx.data


@register
class PeekForTests(FullMethod):
    """Test-only plugin: keeps what it was given, trains one epoch with a hook, prunes nothing."""

    name = "peek_for_tests"
    needs_finetune = False

    def prune(self, model, task, target):
        SEEN["task"] = task
        task.train(model, 1, hooks=[Capture()], desc="peek")
        return model


def splits_in(obj, seen=None) -> list[Split]:
    """Every Split held by `obj` through attributes, containers and closures of bench objects
    (not through module globals, which any code could import)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (types.ModuleType, type, str, bytes, int, float)):
        return []
    seen.add(id(obj))
    if isinstance(obj, Split):
        return [obj]
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    elif isinstance(obj, types.FunctionType):
        children = [c.cell_contents for c in obj.__closure__ or ()]
    elif type(obj).__module__.startswith(("bench", "tests", "test_")) and hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    else:
        return []
    return [s for c in children for s in splits_in(c, seen)]


def test_runs_log_validation_accuracy_and_never_hand_the_test_split_to_a_method(tmp_path, data_dir):
    cfg = config.override(config.load(REPO / "configs/smoke.yaml"), methods=["peek_for_tests"], datasets=["mnist"])
    mnist = dataclasses.replace(cfg.datasets[0], train_subset=1000, test_subset=500,
                                pretrain=dataclasses.replace(cfg.datasets[0].pretrain, epochs=1))
    cfg = dataclasses.replace(cfg, datasets=[mnist], val_size=250, data_dir=str(data_dir),
                              results_dir=str(tmp_path / "results"))
    assert run_grid(cfg, executor="local", progress=False) == {"done": 1}  # in-process: SEEN is read below
    run = Tracker(cfg.results_dir).runs_frame("smoke").iloc[0]
    for key in ("acc_val_final", "acc_val_pruned"):
        assert 0.5 < run[key] <= 1 and math.isfinite(run[key]), key
    # pruning nothing and no fine-tune: the net right after pruning is the final one
    assert run["acc_val_final"] == run["acc_val_pruned"]

    test = load_test("mnist", str(data_dir), test_subset=500)  # what the runner measured on
    assert len(test) == 500
    task = SEEN["task"]
    assert not hasattr(task.data, "test") and not hasattr(SEEN["ctx_data"], "test")  # asking raises, naming why
    held = splits_in(task) + splits_in(SEEN["ctx_data"])
    assert held and not any(len(s) == len(test) and torch.equal(s.x, test.x) for s in held)  # train/val only
    # the data the runner keeps between cells (per process) is train/val too
    assert all(not hasattr(seen, "test") for seen in [runner._seen_data("mnist", str(data_dir), 250, 1000)])
