"""bf16 training recipe: validated, part of the run id, and a CPU training path that works and
leaves fp32 untouched."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.core import models
from bench.core.datasets import Data
from bench.core.spec import RunSpec, TrainConfig
from bench.core.training import autocast, fit
from bench.errors import ConfigError
from bench.run import config


def _grid(precision):
    return {"methods": {"magnitude": {}}, "datasets": {"mnist": {
        "models": ["lenet5"], "finetune": {"epochs": 1, "precision": precision}}}}


def test_precision_is_validated_and_defaults_to_fp32():
    assert TrainConfig().precision == "fp32"
    cfg = config.from_dict(_grid("bf16"))
    assert cfg.datasets[0].finetune.precision == "bf16" and cfg.datasets[0].pretrain.precision == "fp32"
    with pytest.raises(ConfigError, match=r"datasets.mnist.finetune.precision: 'fp16' is unknown; allowed: fp32, bf16"):
        config.from_dict(_grid("fp16"))


def test_precision_changes_run_id_and_is_a_param():
    a = RunSpec("magnitude", "mnist", "lenet5", 0, "macs", 0.5)
    b = dataclasses.replace(a, finetune=TrainConfig(precision="bf16"))
    assert a.run_id != b.run_id
    assert a.flat_params()["finetune.precision"] == "fp32" and b.flat_params()["finetune.precision"] == "bf16"


def test_cpu_autocast_runs_the_forward_in_bf16():
    conv = torch.nn.Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 5, 5)
    with autocast("cpu", "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert conv(x).dtype == torch.float32


def _train(data, precision):
    torch.manual_seed(0)
    m = models.build("lenet5", 1, 28, 10)
    cfg = TrainConfig(epochs=1, lr=0.1, batch_size=64, augment=False, precision=precision)
    return fit(m, data, cfg, seed=0, device="cpu", progress=False)


def test_cpu_bf16_training_learns_and_keeps_fp32_weights(mnist_small):
    # bf16 on a CPU without bf16 units is slow: 16 steps are enough to see it train
    small = Data(mnist_small.info, mnist_small.train.subset(1024), mnist_small.val.subset(500), None)
    fp32, bf16 = _train(small, "fp32"), _train(small, "bf16")
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    last = bf16.history[-1]
    assert last["val_loss"] < 2.25 and last["val_acc"] > 0.15  # it learns: chance is ln 10 = 2.30 and 0.1
    # same seed and data order: bf16 rounding moves the result a little, not a lot
    assert abs(bf16.history[-1]["val_acc"] - fp32.history[-1]["val_acc"]) < 0.05
    assert any(not torch.equal(p, q) for p, q in zip(fp32.model.parameters(), bf16.model.parameters()))
