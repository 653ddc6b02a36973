"""Methods see train and validation only (issue 29): a method that walks everything it can reach,
from its task and from the modules it imports, finds neither the test split nor an MLflow client,
and asking for test is refused.

The walk follows every reference the garbage collector knows (attributes, containers, closure
cells, a function's globals, what an lru_cache holds), into bench and methods modules; the
globals of other modules are not followed: torch or the standard library would lead anywhere
(`sys.modules`), and a method that reaches past its imports on purpose is a matter for review.
"""
from __future__ import annotations

import functools
import gc
import sys
import types
from collections import deque

import numpy as np
import pytest
import torch

from bench.api import FullMethod, Hook
from bench.core.datasets import Data, DatasetInfo, Split, load_test
from bench.core.spec import LatencyConfig, RunSpec, TrainConfig
from bench.run import runner
from bench.run.tracking import STATUS_DONE, Tracker
from tests.conftest import write_noise_npz

OURS = ("bench", "methods")
FOUND: dict[str, list] = {}


def reachable(roots: list, limit: int = 5_000_000) -> dict[str, list]:
    """MLflow clients, dataset bundles holding a test split (`Data`) and uint8 image arrays
    (tensors NCHW, numpy NHWC) reachable from `roots`."""
    foreign = {id(m.__dict__) for m in list(sys.modules.values())
               if isinstance(m, types.ModuleType) and m.__name__.split(".")[0] not in OURS}
    out: dict[str, list] = {"clients": [], "data": [], "images": []}
    seen: set[int] = set()
    todo = deque(roots)
    while todo:
        obj = todo.popleft()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float)):
            continue
        seen.add(id(obj))
        assert len(seen) < limit, "the walk did not end: it escaped into the whole interpreter"
        if isinstance(obj, types.ModuleType) and obj.__name__.split(".")[0] not in OURS:
            continue
        if id(obj) in foreign:  # another module's globals, reached through one of its functions
            continue
        if type(obj).__name__ == "MlflowClient":
            out["clients"].append(obj)
        elif isinstance(obj, Data):
            out["data"].append(obj)
        elif isinstance(obj, torch.Tensor) and obj.dtype == torch.uint8 and obj.dim() == 4:
            out["images"].append(obj)
        elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8 and obj.ndim == 4:
            out["images"].append(torch.from_numpy(obj).permute(0, 3, 1, 2))
        todo.extend(gc.get_referents(obj))
    return out


class Look(Hook):
    """What a training hook reaches through its context."""

    def on_epoch_end(self, ctx):
        FOUND["hook"] = reachable([ctx])


class Spy(FullMethod):
    """Test-only plugin (not registered): trains one epoch with a hook, walks everything it can
    reach, asks for test, and prunes nothing."""

    name = "spy_for_tests"
    needs_finetune = False

    def prune(self, model, task, target):
        import bench.api

        task.train(model, 1, hooks=[Look()], desc="spy")
        task.log_metric("spy.metric", 1.0)  # a write through the sink, so the sink holds something
        FOUND["task"] = reachable([task, self, model, bench.api])
        refused = []
        for ask in (lambda: task.data.test, lambda: task.batches("test"), lambda: task.evaluate(model, "test")):
            try:
                ask()
            except (AttributeError, ValueError) as e:
                refused.append(str(e))
        FOUND["refused"] = refused
        return model


@pytest.fixture
def spied(tmp_path, monkeypatch):
    """One cell of the spy through the real runner and a real MLflow store, on noise images."""
    data_dir = write_noise_npz(tmp_path / "data")
    monkeypatch.setattr(runner, "get_method", lambda name: Spy)
    recipe = TrainConfig(epochs=1, batch_size=64, augment=False)
    spec = RunSpec(method=Spy.name, dataset="mnist", model="lenet5", seed=0, target_kind="macs", target=0.5,
                   pretrain=recipe, finetune=recipe, val_size=100, experiment="spy",
                   latency=LatencyConfig(repeats_b1=1, repeats_b64=1, warmup=0))
    FOUND.clear()
    results = tmp_path / "results"
    assert runner.run_one(spec, data_dir=str(data_dir), results_dir=results, progress=False) == STATUS_DONE
    return spec, data_dir, results


def test_a_method_reaches_neither_the_test_split_nor_an_mlflow_client(spied):
    spec, data_dir, results = spied
    test = load_test("mnist", data_dir, test_subset=spec.test_subset)
    for where in ("task", "hook"):
        found = FOUND[where]
        assert found["clients"] == [], f"{where}: an MLflow client is reachable"
        assert found["data"] == [], f"{where}: a bundle with the test split is reachable"
        assert not any(x.shape == test.x.shape and torch.equal(x, test.x) for x in found["images"]), where
        assert found["images"], f"{where}: the walk saw no images at all (train/val are reachable)"
    assert len(FOUND["refused"]) == 3 and all("test is for the final numbers only" in r for r in FOUND["refused"])
    run = Tracker(results).runs_frame("spy").iloc[0]
    assert run["spy.metric"] == 1.0 and "spy/train_loss" in run  # what the task logged reached MLflow


def test_the_walk_finds_what_it_looks_for():
    """The walk is no stand-in that finds nothing: a client behind a logger, and a test split
    behind an lru_cache's result, are found."""
    from bench.run.tracking import RunLogger

    info = DatasetInfo("mnist", (1, 2, 2), (0.0,), (1.0,), 0, False)
    split = Split(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))

    @functools.lru_cache(maxsize=1)
    def cached() -> Data:
        return Data(info, split, split, split)

    cached()
    holder = types.SimpleNamespace(log=RunLogger(Tracker.__new__(Tracker), "x"), load=cached)
    holder.log.client = type("MlflowClient", (), {})()
    found = reachable([holder])
    assert len(found["clients"]) == 1 and len(found["data"]) == 1
