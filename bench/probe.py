"""Timed probe for `bench plan`: a few real training steps and forwards of a model on this device.

Synthetic tensors of the dataset's shape stand in for data (a step's cost does not depend on
pixel values), so the probe needs no dataset. A step of VGG-16 at batch 128 takes seconds on a
CPU, so there a large model is timed at a small batch and its per-image time carried to the
recipe's batch (said so in the result); a small model (LeNet-5), whose step is dominated by fixed
overhead, is timed at the recipe's batch. On a GPU a small batch would underuse the device, so
there the recipe's batch is always measured.

Why warm-up and medians: the first steps of a fresh model pay for allocator growth and oneDNN
kernel selection (LeNet-5 at batch 64 once read 5.6 ms/image from a single step against
0.64 ms/image warmed up), and a shared machine adds bursts to any one step; the median of a few
warmed-up steps is robust to both. Steps run at the torch thread count the executor will give a
cell, since on CPU per-image time depends on it.
"""
from __future__ import annotations

import contextlib
import functools
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from bench import models
from bench.config import TrainConfig
from bench.measure import count_macs
from bench.training import autocast, sgd, use_channels_last

SMALL_BATCH = 8
FULL_BATCH_MACS = 4e9   # a full batch's forward under this many MACs is cheap enough to measure as it is
WARMUP = 2              # untimed steps before timing (allocators, kernel selection)
STEPS = 5               # timed steps per probe (median); `bench plan --probe-steps` sets it
MIN_STEPS = 3           # ... but a probe stops after MAX_S seconds of timed steps once it has this many
MAX_S = 4.0
clock = time.perf_counter  # a module attribute so tests can script the timer


@dataclass(frozen=True)
class Probe:
    """Seconds per image of one training step and one inference forward, at `measured_batch`."""

    step_img_s: float
    forward_img_s: float
    forward_b1_s: float
    measured_batch: int
    batch: int
    device: str
    threads: int = 0
    macs: int = 0           # per image, of the probed model (the pruned copy for a pruned probe)

    @property
    def extrapolated(self) -> bool:
        return self.measured_batch != self.batch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], device: str, steps: int, warmup: int = WARMUP) -> float:
    """Median seconds of `steps` calls of `fn` after `warmup` untimed ones; stops early once
    MIN_STEPS are timed and MAX_S seconds are spent (a slow model on a CPU)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < max(1, steps):
        _sync(device)
        t = clock()
        fn()
        _sync(device)
        times.append(clock() - t)
        if len(times) >= MIN_STEPS and sum(times) > MAX_S:
            break
    return statistics.median(times)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with `n` torch threads (0: leave as is), restoring the previous count after."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _step_fn(model, x, y, opt, device: str, precision: str) -> Callable[[], None]:
    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
    return step


def _forward_fn(model, x, device: str, precision: str) -> Callable[[], None]:
    @torch.inference_mode()
    def forward():
        with autocast(device, precision):
            model(x)
    return forward


def _net(model: str, model_args: tuple, shape: tuple, device: str, reduction: tuple[str, float] | None):
    """A fresh seeded model; with `reduction` (kind, fraction), a copy pruned uniformly per layer
    to it by random scores: the widths a pruned cell fine-tunes, without needing its method."""
    torch.manual_seed(0)
    c, h, w = shape
    net = models.build(model, c, h, **dict(model_args)).to(device)
    example = torch.zeros(2, c, h, w, device=device)
    if reduction and reduction[1] > 0:
        from bench.api import Target
        from bench.driver import prune_to_target
        from bench.surgery import find_units

        gen = torch.Generator().manual_seed(0)
        scores = {n: torch.rand(u.size, generator=gen) for n, u in find_units(net, example).items()}
        net, _ = prune_to_target(net, example, scores, Target(reduction[0], reduction[1]))
        net = net.to(device)
    cl = use_channels_last(net, device)
    if cl:
        net.to(memory_format=torch.channels_last)
    return net, cl, int(count_macs(net, example[:1]))


def probe(model: str, model_args: tuple, shape: tuple[int, int, int], batch: int, precision: str,
          device: str, *, threads: int = 0, reduction: tuple[str, float] | None = None) -> Probe:
    """Time STEPS training steps (after WARMUP) of a fresh `model` on synthetic input, at `threads`
    torch threads (0: the current count); `reduction` probes a uniformly pruned copy. Cached."""
    return _probe(model, tuple(model_args), tuple(shape), batch, precision, device, STEPS, threads, reduction)


@functools.lru_cache(maxsize=None)
def _probe(model: str, model_args: tuple, shape: tuple, batch: int, precision: str, device: str,
           steps: int, threads: int, reduction: tuple[str, float] | None) -> Probe:
    with torch_threads(threads):
        net, cl, macs = _net(model, model_args, shape, device, reduction)
        c, h, w = shape
        cheap = device.startswith("cuda") or macs * batch <= FULL_BATCH_MACS
        measured = batch if cheap else min(batch, SMALL_BATCH)
        x = torch.randn(measured, c, h, w, device=device)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        y = torch.randint(0, 10, (measured,), device=device)
        net.train()
        step = median_time(_step_fn(net, x, y, sgd(net, TrainConfig()), device, precision), device, steps)
        net.eval()
        fwd = median_time(_forward_fn(net, x, device, precision), device, steps, warmup=1)
        b1 = median_time(_forward_fn(net, x[:1], device, "fp32"), device, steps, warmup=1)
        used = torch.get_num_threads()
    return Probe(step / measured, fwd / measured, b1, measured, batch, device, used, macs)


def optimizer_step_ratio(model: str, model_args: tuple, shape: tuple[int, int, int], batch: int,
                         device: str, make_optimizer: Callable, key: str, *, threads: int = 0) -> float:
    """Seconds of a training step with `make_optimizer(model)` over one with the harness's SGD, on
    the same fresh model and input, timed in turns (so load hits both alike); `key` names the
    optimizer for the cache. What a method with its own optimizer (RLS) costs per step."""
    k = (model, tuple(model_args), tuple(shape), batch, device, key, threads, STEPS)
    if k not in _RATIOS:
        _RATIOS[k] = _ratio(model, tuple(model_args), tuple(shape), batch, device, threads, STEPS, make_optimizer)
    return _RATIOS[k]


_RATIOS: dict[tuple, float] = {}


def _ratio(model, model_args, shape, batch, device, threads, steps, make_optimizer) -> float:
    with torch_threads(threads):
        net, cl, macs = _net(model, model_args, shape, device, None)
        c, h, w = shape
        measured = batch if device.startswith("cuda") or macs * batch <= FULL_BATCH_MACS else min(batch, SMALL_BATCH)
        x = torch.randn(measured, c, h, w, device=device)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        y = torch.randint(0, 10, (measured,), device=device)
        net.train()
        fns = [_step_fn(net, x, y, sgd(net, TrainConfig()), device, "fp32"),
               _step_fn(net, x, y, make_optimizer(net), device, "fp32")]
        for fn in fns:
            for _ in range(WARMUP):
                fn()
        pairs = [[median_time(fn, device, 1, warmup=0) for fn in fns] for _ in range(max(MIN_STEPS, steps))]
    return statistics.median(b / a for a, b in pairs)


@functools.lru_cache(maxsize=None)
def unit_count(model: str, model_args: tuple, shape: tuple[int, int, int], include_coupled: bool) -> int:
    """How many prunable units the harness finds in `model` (what per-unit searches loop over)."""
    from bench.surgery import find_units

    c, h, w = shape
    net = models.build(model, c, h, **dict(model_args))
    return len(find_units(net, torch.zeros(1, c, h, w), include_coupled=include_coupled))


THREADS = 0  # torch threads of the cells the plan prices; make_plan sets it from the executor


def spec_probe(spec, recipe: str = "finetune", pruned: bool = False) -> Probe:
    """The probe of a cell's model under one of its recipes (of the pruned-to-target copy if
    `pruned`), on this machine's default device, at the executor's threads."""
    from bench.datasets import DATASETS
    from bench.training import default_device

    r = getattr(spec, recipe)
    return probe(spec.model, spec.model_args, DATASETS[spec.dataset].shape, r.batch_size, r.precision,
                 default_device(), threads=THREADS,
                 reduction=(spec.target_kind, spec.target) if pruned else None)


def forward_seconds(spec, images: float) -> float:
    """Seconds for `images` inference forwards of the cell's unpruned model: the unit in which
    methods' `extra_cost_s` hooks price their non-training work."""
    return images * spec_probe(spec).forward_img_s


def pruned_time_share(spec, recipe: str = "pretrain") -> float:
    """Training-step time of the cell's pruned-to-target model over the unpruned one (probed):
    on small nets well above the MACs share, since per-layer overhead does not shrink."""
    return min(1.0, spec_probe(spec, recipe, pruned=True).step_img_s / spec_probe(spec, recipe).step_img_s)


def step_ratio(spec, make_optimizer: Callable, key: str, recipe: str = "pretrain") -> float:
    """`optimizer_step_ratio` for a cell's model under one of its recipes, at the executor's threads."""
    from bench.datasets import DATASETS
    from bench.training import default_device

    return optimizer_step_ratio(spec.model, spec.model_args, DATASETS[spec.dataset].shape,
                                getattr(spec, recipe).batch_size, default_device(), make_optimizer, key,
                                threads=THREADS)
