"""Shared fixtures: the real datasets folder, small real MNIST, and a Task without MLflow.

Tests that need the real datasets are marked `slow`: a plain `pytest` or `tox` runs the rest in
minutes; with `CI` set the same commands run everything. Where the datasets are not found they are fetched once into the
user cache, unless BENCH_OFFLINE=1; with `CI` set, a test that still has no data fails, so a CI
run can never pass by skipping the integration layer.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from bench.api import Target, Task
from bench.core.datasets import Data, default_data_dir, load, load_arrays, normalize
from bench.core.spec import PruningConfig, RunSpec, TrainConfig
from bench.errors import BenchError

REPO = Path(__file__).resolve().parents[1]
NEEDED = ("mnist", "cifar10")
USER_OFFLINE = os.environ.get("BENCH_OFFLINE") == "1"
os.environ["BENCH_OFFLINE"] = "1"  # no test downloads by accident; the data_dir fixture fetches on purpose


def real_data_dir() -> Path | None:
    for cand in (os.environ.get("BENCH_DATA"), REPO.parent / "shared" / "datasets", default_data_dir()):
        if cand and all((Path(cand) / f"{n}.npz").exists() for n in NEEDED):
            return Path(cand)
    return None


def fetch_into_cache() -> Path:
    """The official MNIST and CIFAR-10, downloaded once into the user cache as npz."""
    os.environ.pop("BENCH_OFFLINE")
    try:
        for name in NEEDED:
            load_arrays(name, default_data_dir())
    finally:
        os.environ["BENCH_OFFLINE"] = "1"
    return default_data_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = real_data_dir()
    why = "real datasets not found: set BENCH_DATA to the folder with mnist.npz and cifar10.npz"
    if d is None and not USER_OFFLINE:
        try:
            d = fetch_into_cache()
        except BenchError as e:
            why = f"{why} (download failed: {e})"
    if d is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)
    return d


FAST_TIER = "not data and not spawns and not slow"  # pyproject addopts


def pytest_configure(config):
    """CI runs every tier with the README's plain test command: the default fast-tier `-m` is
    lifted when `CI` is set, so no tier is ever left out there."""
    if os.environ.get("CI") and config.option.markexpr == FAST_TIER:
        config.option.markexpr = ""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    """Tiers follow what a test needs: the `data` mark goes to tests that take the real datasets
    from this file's `data_dir`, not to any fixture of that name (tests/test_plan.py has a
    synthetic one); `spawns` and `slow` are marked where the tests are written."""
    for item in items:
        defs = item._fixtureinfo.name2fixturedefs.get("data_dir", ())
        if defs and defs[-1].func.__module__ == __name__:
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def noise_mnist() -> Data:
    """Random images in MNIST's shape and normalisation: for tests that need data of the right
    shape (training mechanics, scores' arithmetic), not real digits, so they run without the files."""
    from bench.core.datasets import DATASETS, Split

    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen),
                     torch.randint(0, 10, (n,), generator=gen))
    return Data(DATASETS["mnist"], split(1024), split(256), split(256))


def write_noise_npz(folder: Path, name: str = "mnist", train: int = 400, test: int = 150, seed: int = 0) -> Path:
    """`<folder>/<name>.npz` of random images in the dataset's shape: a data folder for running
    cells through the real runner where what they learn is not under test."""
    import numpy as np

    from bench.core.datasets import DATASETS

    c, h, w = DATASETS[name].shape
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", x_train=rng.integers(0, 256, (train, h, w, c), dtype=np.uint8),
             y_train=rng.integers(0, 10, train), x_test=rng.integers(0, 256, (test, h, w, c), dtype=np.uint8),
             y_test=rng.integers(0, 10, test))
    return folder


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

    def curve(self, prefix, history):
        for h in history:
            for k, v in h.items():
                if k != "epoch":
                    self.metric(f"{prefix}/{k}", v, h["epoch"])


def make_task(data: Data, *, method: str = "test", model: str = "lenet5", seed: int = 0,
              target: float = 0.5, pretrain_epochs: int = 1, finetune_epochs: int = 1,
              pruning: PruningConfig = PruningConfig(), batch_size: int = 64) -> Task:
    """A real Task over `data`, training with the runner's own `Task.train` (epoch checkpoints
    included, in a fresh temporary folder), logging to memory instead of MLflow."""
    spec = RunSpec(method=method, dataset=data.info.name, model=model, seed=seed, target_kind="macs",
                   target=target, pretrain=TrainConfig(epochs=pretrain_epochs, lr=0.05, batch_size=batch_size,
                                                       augment=False),
                   finetune=TrainConfig(epochs=finetune_epochs, lr=0.01, batch_size=batch_size, augment=False),
                   pruning=pruning)
    from bench.run.stage import Trainer

    logger = MemoryLogger()
    trainer = Trainer(spec, data, "cpu", logger, False, Path(tempfile.mkdtemp(prefix="prunebench-task-")))

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
