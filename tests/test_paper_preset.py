"""Paper preset sanity on CPU: every model and method of configs/paper.yaml runs end to end.

The grid is configs/paper.yaml as loaded, shrunk in code (16 train / val / test images, one epoch,
batch 16, one seed, its largest target, one latency pass), so the test follows the preset as it changes. Each (dataset, model)
runs every method of the preset through the public grid API: base training, pruning (residual
groups of ResNet-56 as the preset sets them, and once more with them coupled in), fine-tuning,
measurement, MLflow. A path that breaks at paper scale breaks here, before it meets a GPU.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.core.registry import get_method
from bench.run import config
from bench.run.grid import run_grid
from bench.run.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]
PAPER = config.load(REPO / "configs" / "paper.yaml")

# Searches and samples cut to a few steps; an option a method no longer declares fails the test.
SMALL = {"rl_agent": {"samples": 2, "updates": 1, "eval_size": 10},
         "pls_vip": {"samples": 16, "batch_size": 16},
         "feature_map": {"images": 16, "min_images": 4, "batch_size": 16},
         "rls": {"epochs_before_prune": 1},
         # k-means of VGG-16's 512-filter layers takes minutes on a CPU; tests/test_csgd.py and
         # tests/test_resume.py run it, here the clusters only have to exist
         "csgd": {"clustering": "even"}}
SUBSET = 16  # train, val and test images (one batch): a forward and a backward through every layer is what is checked


def _small_args(method: str, args: dict) -> dict:
    cls = get_method(method.split("@")[0])
    out = {**args, **SMALL.get(cls.name, {})}
    cls.validate_args(out)
    return out


def shrunk(entry: config.DatasetEntry, model: tuple, results: Path, data_dir: Path,
           include_coupled: bool | None = None) -> config.GridConfig:
    cfg = config.load(REPO / "configs" / "paper.yaml")
    tiny = {"epochs": 1, "batch_size": 16}
    # targets=None: the dataset's own targets (CIFAR-10's paper-row targets) give way to the largest grid one below
    cfg.datasets = [dataclasses.replace(entry, models=[model], train_subset=SUBSET, test_subset=SUBSET, targets=None,
                                        pretrain=dataclasses.replace(entry.pretrain, **tiny),
                                        finetune=dataclasses.replace(entry.finetune, **tiny))]
    cfg.methods = {m: _small_args(m, a) for m, a in cfg.methods.items()}
    cfg.seeds, cfg.targets, cfg.val_size = [0], [max(cfg.targets, key=lambda t: t[1])], SUBSET
    cfg.latency = config.LatencyConfig(repeats_b1=1, repeats_b64=1, warmup=0)
    if include_coupled is not None:
        cfg.pruning = dataclasses.replace(cfg.pruning, include_coupled=include_coupled)
    cfg.results_dir, cfg.data_dir = str(results), str(data_dir)
    return cfg


def _cases():
    """Every (dataset, model) of the preset, first dataset per model (svhn shares CIFAR's shapes and
    is not in the offline mirror), plus ResNet-56 with residual groups pruned too."""
    seen, cases = set(), []
    for entry in PAPER.datasets:
        for model in entry.models:
            if model not in seen:
                seen.add(model)
                cases.append(pytest.param(entry, model, None, id=f"{entry.name}-{model[0]}"))
                if model[0].startswith("resnet") and not PAPER.pruning.include_coupled:
                    cases.append(pytest.param(entry, model, True, id=f"{entry.name}-{model[0]}-coupled"))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("entry,model,coupled", _cases())
def test_every_method_of_the_paper_preset_runs_on_this_model(entry, model, coupled, tmp_path, data_dir, monkeypatch):
    if not (data_dir / f"{entry.name}.npz").exists():
        pytest.fail(f"{entry.name}.npz is missing from {data_dir}: the paper preset cannot be checked")
    monkeypatch.setenv("BENCH_DATA", str(data_dir))
    cfg = shrunk(entry, model, tmp_path / "results", data_dir, coupled)
    counts = run_grid(cfg, executor="local", progress=False)
    df = Tracker(cfg.results_dir).runs_frame(cfg.name)
    errors = {r.method: r.error for r in df.itertuples() if r.status != "done"}
    assert counts == {"done": len(PAPER.methods)}, errors
    assert set(df.method) == {m.split("@")[0] for m in PAPER.methods}
    assert (df.macs_pruned < df.macs_base).all()  # every method really removed channels
    if coupled:
        assert all(s.pruning.include_coupled for s in cfg.expand())


def test_the_preset_covers_vgg16_and_resnet56_and_shrinking_keeps_its_recipes(tmp_path):
    models = {m for d in PAPER.datasets for m, _ in d.models}
    assert {"vgg", "resnet56", "lenet5"} <= models
    entry = next(d for d in PAPER.datasets if d.name == "cifar10")
    cfg = shrunk(entry, ("resnet56", ()), tmp_path, tmp_path)
    specs = cfg.expand()
    assert len(specs) == len(PAPER.methods) and {s.model for s in specs} == {"resnet56"}
    s = specs[0]
    assert (s.pretrain.lr, s.pretrain.schedule, s.finetune.lr) == (entry.pretrain.lr, entry.pretrain.schedule,
                                                                   entry.finetune.lr)
    assert s.pretrain.epochs == s.finetune.epochs == 1 and s.train_subset == SUBSET and s.pruning == PAPER.pruning
