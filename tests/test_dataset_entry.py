"""Adding a dataset is one registry entry (issue 29): a synthetic 3-class dataset, registered by
one call with its fetcher and default recipes, runs a cell end to end through the real runner on
a model with 3 outputs, and the plan and the report read its sizes from the same entry."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bench.core.datasets import DATASETS, Arrays, DatasetInfo, register_dataset
from bench.core.spec import TrainConfig
from bench.report.compare import resolution_pp
from bench.run import plan
from bench.run.baselines import base_path
from bench.run.config import from_dict
from bench.run.runner import run_one
from bench.run.tracking import STATUS_DONE, Tracker

TRAIN, TEST = 240, 60


def fetch_bands(folder: Path) -> Arrays:
    """Stands in for a download: the arrays in the layout the loader expects (uint8 NHWC images,
    labels 0..2). Class k lights band k of the image, so there is something to learn."""
    rng = np.random.default_rng(0)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
        for k in range(3):
            x[y == k, 10 * k:10 * k + 10] += 180
        return x, y

    (x_train, y_train), (x_test, y_test) = part(TRAIN), part(TEST)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@pytest.fixture
def bands():
    info = register_dataset(DatasetInfo(
        "bands3", (3, 32, 32), (0.3, 0.3, 0.3), (0.3, 0.3, 0.3), 0, False, num_classes=3,
        train_images=TRAIN, test_images=TEST, fetch=fetch_bands,
        pretrain=TrainConfig(epochs=1, batch_size=32, augment=False),
        finetune=TrainConfig(epochs=1, lr=0.01, batch_size=32, augment=False)))
    yield info
    del DATASETS[info.name]


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def test_a_registered_dataset_runs_a_cell_with_its_classes(bands, tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    data, results = tmp_path / "data", tmp_path / "results"
    cfg = from_dict({"name": "bands", "methods": ["magnitude"], "targets": ["macs:0.5"], "val_size": 40,
                     "data_dir": str(data), "results_dir": str(results),
                     "latency": {"repeats_b1": 1, "repeats_b64": 1, "warmup": 0},
                     "datasets": {"bands3": {"models": ["lenet5"]}}})
    spec, = cfg.expand()
    assert (spec.pretrain, spec.finetune) == (bands.pretrain, bands.finetune)  # the entry's recipes
    assert (plan.train_size(spec), plan.test_size(spec)) == (TRAIN - 40, TEST)

    assert run_one(spec, data_dir=str(data), results_dir=results, progress=False) == STATUS_DONE
    assert (data / "bands3.npz").exists()  # fetched once, cached in the loader's format
    base = torch.load(base_path(spec, results), weights_only=False)["model"]
    pruned = torch.load(results / "runs" / spec.run_id / "pruned_model.pt", weights_only=False)
    assert last_linear(base).out_features == last_linear(pruned).out_features == 3
    run = Tracker(results).runs_frame("bands").iloc[0]
    assert run["status"] == STATUS_DONE and 0 <= run["acc_final"] <= 1
    assert resolution_pp(pd.DataFrame({"dataset": ["bands3"]})) == pytest.approx(100 / TEST)


def test_a_malformed_entry_fails_when_registered():
    with pytest.raises(ValueError, match="one value per channel"):
        register_dataset(DatasetInfo("bad", (3, 8, 8), (0.5,), (0.5,), 0, False, train_images=1, test_images=1))
    assert "bad" not in DATASETS
