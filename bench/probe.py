"""Timed probe for `bench plan`: a few real training steps and forwards of a model on this device.

Synthetic tensors of the dataset's shape stand in for data (a step's cost does not depend on
pixel values), so the probe needs no dataset. A step of VGG-16 at batch 128 takes seconds on a
CPU, so there a large model is timed at a small batch and its per-image time carried to the
recipe's batch (said so in the result); a small model (LeNet-5), whose step is dominated by fixed
overhead, is timed at the recipe's batch. On a GPU a small batch would underuse the device, so
there the recipe's batch is always measured.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench import models
from bench.config import TrainConfig
from bench.measure import count_macs
from bench.training import autocast, sgd, use_channels_last

SMALL_BATCH = 8
FULL_BATCH_MACS = 4e9   # a full batch's forward under this many MACs is cheap enough to measure as it is


@dataclass(frozen=True)
class Probe:
    """Seconds per image of one training step and one inference forward, at `measured_batch`."""

    step_img_s: float
    forward_img_s: float
    forward_b1_s: float
    measured_batch: int
    batch: int
    device: str

    @property
    def extrapolated(self) -> bool:
        return self.measured_batch != self.batch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_steps(model, x, y, opt, device: str, precision: str, steps: int) -> float:
    """Best of `steps` timed steps after one warm-up: the minimum is robust to bursts of other load."""
    times = []
    for i in range(steps + 1):  # the first step warms up allocators and kernels
        _sync(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        _sync(device)
        if i:
            times.append(time.perf_counter() - t)
    return min(times)


@torch.inference_mode()
def _time_forward(model, x, device: str, precision: str, repeats: int = 2) -> float:
    """Best of `repeats` forwards (the training steps before it warmed the kernels up)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        with autocast(device, precision):
            model(x)
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


STEPS = 2  # timed steps per probe; `bench plan --probe-steps` sets it


def probe(model: str, model_args: tuple, shape: tuple[int, int, int], batch: int, precision: str,
          device: str) -> Probe:
    """Time STEPS training steps (after one warm-up) of a fresh `model` on synthetic input; cached."""
    return _probe(model, tuple(model_args), tuple(shape), batch, precision, device, STEPS)


@functools.lru_cache(maxsize=None)
def _probe(model: str, model_args: tuple, shape: tuple, batch: int, precision: str, device: str,
           steps: int) -> Probe:
    torch.manual_seed(0)
    c, h, w = shape
    net = models.build(model, c, h, **dict(model_args)).to(device)
    cl = use_channels_last(net, device)
    if cl:
        net.to(memory_format=torch.channels_last)
    opt = sgd(net, TrainConfig())

    def inputs(n: int):
        x = torch.randn(n, c, h, w, device=device)
        return (x.contiguous(memory_format=torch.channels_last) if cl else x), torch.randint(0, 10, (n,), device=device)

    macs = count_macs(net, torch.zeros(1, c, h, w, device=device))
    cheap = device.startswith("cuda") or macs * batch <= FULL_BATCH_MACS
    measured = batch if cheap else min(batch, SMALL_BATCH)
    x, y = inputs(measured)
    net.train()
    step = _time_steps(net, x, y, opt, device, precision, steps)
    net.eval()
    fwd = _time_forward(net, x, device, precision)
    b1 = _time_forward(net, x[:1], device, "fp32")
    return Probe(step / measured, fwd / measured, b1, measured, batch, device)


@functools.lru_cache(maxsize=None)
def unit_count(model: str, model_args: tuple, shape: tuple[int, int, int], include_coupled: bool) -> int:
    """How many prunable units the harness finds in `model` (what per-unit searches loop over)."""
    from bench.surgery import find_units

    c, h, w = shape
    net = models.build(model, c, h, **dict(model_args))
    return len(find_units(net, torch.zeros(1, c, h, w), include_coupled=include_coupled))


def spec_probe(spec) -> Probe:
    """The probe of a cell's model under its fine-tune recipe, on this machine's default device."""
    from bench.datasets import DATASETS
    from bench.training import default_device

    return probe(spec.model, spec.model_args, DATASETS[spec.dataset].shape, spec.finetune.batch_size,
                 spec.finetune.precision, default_device())


def forward_seconds(spec, images: float) -> float:
    """Seconds for `images` inference forwards of the cell's unpruned model: the unit in which
    methods' `extra_cost_s` hooks price their non-training work."""
    return images * spec_probe(spec).forward_img_s
