"""Shared fixtures: the real datasets folder, small real MNIST, and a Task without MLflow."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.api import Target, Task
from bench.config import PruningConfig, RunSpec, TrainConfig
from bench.datasets import Data, load, normalize
from bench.training import fit

REPO = Path(__file__).resolve().parents[1]
os.environ["BENCH_OFFLINE"] = "1"  # tests never download datasets, even on a machine with internet


def real_data_dir() -> Path | None:
    for cand in (os.environ.get("BENCH_DATA"), REPO.parent / "shared" / "datasets"):
        if cand and (Path(cand) / "mnist.npz").exists():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip("real datasets not found: set BENCH_DATA to the folder with mnist.npz / cifar10.npz")
    return d


@pytest.fixture(scope="session")
def mnist_small(data_dir) -> Data:
    """Real MNIST: 6000 train, 1000 val, 2000 test images."""
    return load("mnist", data_dir, val_size=1000, train_subset=6000, test_subset=2000)


class MemoryLogger:
    """Stands in for the MLflow run logger in unit tests."""

    def __init__(self):
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.params: dict[str, str] = {}

    def metric(self, key, value, step=None):
        self.metrics.setdefault(key, []).append((step or 0, float(value)))

    def param(self, key, value):
        self.params[key] = str(value)


def make_task(data: Data, *, method: str = "test", model: str = "lenet5", seed: int = 0,
              target: float = 0.5, pretrain_epochs: int = 1, finetune_epochs: int = 1,
              pruning: PruningConfig = PruningConfig(), batch_size: int = 64) -> Task:
    """A real Task over `data` (training included), logging to memory instead of MLflow."""
    spec = RunSpec(method=method, dataset=data.info.name, model=model, seed=seed, target_kind="macs",
                   target=target, pretrain=TrainConfig(epochs=pretrain_epochs, lr=0.05, batch_size=batch_size,
                                                       augment=False),
                   finetune=TrainConfig(epochs=finetune_epochs, lr=0.01, batch_size=batch_size, augment=False),
                   pruning=pruning)
    logger = MemoryLogger()

    def trainer(m, epochs, *, hooks=(), make_optimizer=None, lr=None, loss="ce", desc="train", from_scratch=False):
        import dataclasses
        cfg = spec.pretrain if from_scratch else spec.finetune
        if lr is not None:
            cfg = dataclasses.replace(cfg, lr=lr)
        return fit(m, data, cfg, seed=seed, epochs=epochs, hooks=hooks, make_optimizer=make_optimizer,
                   loss=loss, device="cpu", progress=False, desc=desc)

    example = normalize(data.train.x[:2], data.info)
    task = Task(spec=spec, data=Data(data.info, data.train, data.val, None), device="cpu", example=example,
                logger=logger, trainer=trainer, target=Target("macs", target))
    task.memory_logger = logger
    return task


@pytest.fixture
def task_for():
    return make_task


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
