"""Timed probe for `bench plan`: a few real training steps and forwards of a model on this device.

Synthetic tensors of the dataset's shape and classes (its registry entry) stand in for data (a
step's cost does not depend on pixel values), so the probe needs no dataset file. A step of
VGG-16 at batch 128 takes seconds on a CPU, so there a large model is timed at a small batch and
its per-image time carried to the recipe's batch (said so in the result); a small model (LeNet-5),
whose step is dominated by fixed overhead, is timed at the recipe's batch. On a GPU a small batch would underuse the device, so
there the recipe's batch is always measured.

Why warm-up and medians: the first steps of a fresh model pay for allocator growth and oneDNN
kernel selection (LeNet-5 at batch 64 once read 5.6 ms/image from a single step against
0.64 ms/image warmed up), and a shared machine adds bursts to any one step; the median of a few
warmed-up steps is robust to both. Steps run at the torch thread count the executor will give a
cell, since on CPU per-image time depends on it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from bench.core import models
from bench.core.datasets import DATASETS, DatasetInfo
from bench.core.measure import count_macs
from bench.core.spec import TrainConfig
from bench.core.training import autocast, sgd, use_channels_last

SMALL_BATCH = 8
FULL_BATCH_MACS = 4e9   # a full batch's forward under this many MACs is cheap enough to measure as it is
WARMUP = 2              # untimed steps before timing (allocators, kernel selection)
STEPS = 5               # timed steps per probe (median); `bench plan --probe-steps` sets it
MIN_STEPS = 3           # ... but a probe stops after MAX_S seconds of timed steps once it has this many
MAX_S = 1.5
SLOW_S = 0.25           # a warm-up round this slow is compute-bound: one is enough
clock = time.perf_counter  # a module attribute so tests can script the timer
# What a probe needs of a dataset: (C, H, W) and the classes. Datasets alike in both share probes.
IO = tuple[tuple[int, int, int], int]


def _io(info: DatasetInfo) -> IO:
    return tuple(info.shape), info.num_classes


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


def median_times(fns: list[Callable[[], object]], device: str, steps: int, warmup: int = WARMUP) -> list[float]:
    """Median seconds of each of `fns` over `steps` rounds after `warmup` untimed ones; the fns
    take turns within a round, so a burst of load hits all alike and their ratios hold. Stops
    early once MIN_STEPS rounds are timed and MAX_S seconds spent (or after one round of over
    3 x MAX_S: an RLS step of VGG-16 on a CPU takes seconds), and warms up once only when a
    round takes over SLOW_S (a slow model on a CPU: the first-call overhead is lost in its compute)."""
    for _ in range(warmup):
        t = clock()
        for fn in fns:
            fn()
        if clock() - t > SLOW_S:
            break
    times: list[list[float]] = [[] for _ in fns]
    spent = 0.0
    while len(times[0]) < max(1, steps):
        for fn, out in zip(fns, times):
            _sync(device)
            t = clock()
            fn()
            _sync(device)
            out.append(clock() - t)
            spent += out[-1]
        if spent > MAX_S and (len(times[0]) >= MIN_STEPS or spent > 3 * MAX_S):
            break
    return [statistics.median(t) for t in times]


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


def _net(model: str, model_args: tuple, io: IO, device: str, reduction: tuple[str, float] | None):
    """A fresh seeded model; with `reduction` (kind, fraction), a copy pruned uniformly per layer
    to it by random scores: the widths a pruned cell fine-tunes, without needing its method."""
    torch.manual_seed(0)
    (c, h, w), classes = io
    net = models.build(model, c, h, classes, **dict(model_args)).to(device)
    example = torch.zeros(2, c, h, w, device=device)
    if reduction and reduction[1] > 0:
        from bench.core.driver import prune_to_target
        from bench.core.method import Target
        from bench.core.surgery import find_units

        gen = torch.Generator().manual_seed(0)
        scores = {n: torch.rand(u.size, generator=gen) for n, u in find_units(net, example).items()}
        net, _ = prune_to_target(net, example, scores, Target(reduction[0], reduction[1]))
        net = net.to(device)
    cl = use_channels_last(net, device)
    if cl:
        net.to(memory_format=torch.channels_last)
    return net, cl, int(count_macs(net, example[:1]))


def probe(model: str, model_args: tuple, info: DatasetInfo, batch: int, precision: str,
          device: str, *, threads: int = 0, reduction: tuple[str, float] | None = None) -> Probe:
    """Time STEPS training steps (after WARMUP) of a fresh `model` on synthetic input, at `threads`
    torch threads (0: the current count); `reduction` (kind, fraction) probes a uniformly pruned
    copy (see probe_pruned, which times several reductions at once). Cached."""
    key = (model, tuple(model_args), _io(info), batch, precision, device, STEPS, threads)
    if reduction is None:
        return _probe(*key)
    if (key, reduction) not in _PRUNED:
        probe_pruned(model, model_args, info, batch, precision, device, threads=threads, reductions=(reduction,))
    return _PRUNED[key, reduction]


_PRUNED: dict[tuple, Probe] = {}


def probe_pruned(model: str, model_args: tuple, info: DatasetInfo, batch: int, precision: str,
                 device: str, *, threads: int = 0, reductions: tuple[tuple[str, float], ...]) -> None:
    """Probe uniformly pruned copies of `model` for each of `reductions` (into probe's cache).

    The copies are timed in turns with the unpruned model and priced as the unpruned probe times
    their ratio, so pruned and unpruned figures differ by the model, not by when the load on a
    shared machine peaked; timing all reductions in one go times the unpruned model once."""
    key = (model, tuple(model_args), _io(info), batch, precision, device, STEPS, threads)
    todo = [r for r in dict.fromkeys(reductions) if (key, r) not in _PRUNED]
    if not todo:
        return
    base = _probe(*key)
    with torch_threads(threads):
        nets = [_net(model, tuple(model_args), _io(info), device, r) for r in (None, *todo)]
        x, y = _inputs(_io(info), base.measured_batch, device)
        xs = [x.contiguous(memory_format=torch.channels_last) if cl else x for _, cl, _ in nets]
        for net, _, _ in nets:
            net.train()
        step = median_times([_step_fn(n, xi, y, sgd(n, TrainConfig()), device, precision)
                             for (n, _, _), xi in zip(nets, xs)], device, STEPS)
        for net, _, _ in nets:
            net.eval()
        fwd = median_times([_forward_fn(n, xi, device, precision) for (n, _, _), xi in zip(nets, xs)],
                           device, STEPS, warmup=1)
    for r, (_, _, macs), s_i, f_i in zip(todo, nets[1:], step[1:], fwd[1:]):
        # batch-1 latency is overhead-bound; it is carried over at the forward's ratio (a few passes per cell)
        _PRUNED[key, r] = dataclasses.replace(base, step_img_s=base.step_img_s * s_i / step[0],
                                              forward_img_s=base.forward_img_s * f_i / fwd[0],
                                              forward_b1_s=base.forward_b1_s * f_i / fwd[0], macs=macs)


def _inputs(io: IO, n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    shape, classes = io
    return torch.randn(n, *shape, device=device), torch.randint(0, classes, (n,), device=device)


def _measured_batch(macs: int, batch: int, device: str) -> int:
    cheap = device.startswith("cuda") or macs * batch <= FULL_BATCH_MACS
    return batch if cheap else min(batch, SMALL_BATCH)


def _training_setup(model: str, model_args: tuple, io: IO, batch: int, device: str):
    """A fresh net in train mode and a synthetic batch at the size the probe times."""
    net, cl, macs = _net(model, model_args, io, device, None)
    measured = _measured_batch(macs, batch, device)
    x, y = _inputs(io, measured, device)
    x = x.contiguous(memory_format=torch.channels_last) if cl else x
    net.train()
    return net, macs, measured, x, y


@functools.lru_cache(maxsize=None)
def _probe(model: str, model_args: tuple, io: IO, batch: int, precision: str, device: str,
           steps: int, threads: int) -> Probe:
    with torch_threads(threads):
        net, macs, measured, x, y = _training_setup(model, model_args, io, batch, device)
        step, = median_times([_step_fn(net, x, y, sgd(net, TrainConfig()), device, precision)], device, steps)
        net.eval()
        fwd, = median_times([_forward_fn(net, x, device, precision)], device, steps, warmup=1)
        b1, = median_times([_forward_fn(net, x[:1], device, "fp32")], device, steps, warmup=1)
        used = torch.get_num_threads()
    return Probe(step / measured, fwd / measured, b1, measured, batch, device, used, macs)


def optimizer_step_ratio(model: str, model_args: tuple, info: DatasetInfo, batch: int,
                         device: str, make_optimizer: Callable, key: str, *, threads: int = 0) -> float:
    """Seconds of a training step with `make_optimizer(model)` over one with the harness's SGD, on
    the same fresh model and input, timed in turns (so load hits both alike); `key` names the
    optimizer for the cache. What a method with its own optimizer (RLS) costs per step. A large
    model on a CPU is timed at SMALL_BATCH, and the extra taken as a per-step cost (RLS's update of
    P is O(n^2) per layer whatever the batch) when carried to `batch`."""
    k = (model, tuple(model_args), _io(info), batch, device, key, threads, STEPS)
    if k not in _RATIOS:
        _RATIOS[k] = _ratio(model, tuple(model_args), _io(info), batch, device, threads, STEPS, make_optimizer)
    return _RATIOS[k]


_RATIOS: dict[tuple, float] = {}


def _ratio(model, model_args, io, batch, device, threads, steps, make_optimizer) -> float:
    with torch_threads(threads):
        net, macs, measured, x, y = _training_setup(model, model_args, io, batch, device)
        sgd_s, own_s = median_times([_step_fn(net, x, y, sgd(net, TrainConfig()), device, "fp32"),
                                     _step_fn(net, x, y, make_optimizer(net), device, "fp32")], device, steps)
    # timed at a smaller batch: the optimizer's extra work is per step, the SGD step's per image
    return 1 + (own_s / sgd_s - 1) * measured / batch


@functools.lru_cache(maxsize=None)
def unit_count(model: str, model_args: tuple, info: DatasetInfo, include_coupled: bool) -> int:
    """How many prunable units the harness finds in `model` built for dataset `info` (what
    per-unit searches loop over)."""
    from bench.core.surgery import find_units

    net = models.build_for(model, info, model_args)
    return len(find_units(net, torch.zeros(1, *info.shape), include_coupled=include_coupled))


THREADS = 0  # torch threads of the cells the plan prices; make_plan sets it from the executor


def spec_probe(spec, recipe: str = "finetune", pruned: bool = False) -> Probe:
    """The probe of a cell's model under one of its recipes (of the pruned-to-target copy if
    `pruned`), on this machine's default device, at the executor's threads."""
    from bench.core.training import default_device

    r = getattr(spec, recipe)
    return probe(spec.model, spec.model_args, DATASETS[spec.dataset], r.batch_size, r.precision,
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
    from bench.core.training import default_device

    return optimizer_step_ratio(spec.model, spec.model_args, DATASETS[spec.dataset],
                                getattr(spec, recipe).batch_size, default_device(), make_optimizer, key,
                                threads=THREADS)
