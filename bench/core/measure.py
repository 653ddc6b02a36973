"""What the benchmark reports about a model: MACs, params, latency, per-layer widths.

MACs follow docs/methods.md §0 (and Li et al. / the PLS code): conv + linear only, per image,
C_out * C_in/groups * k_h * k_w * H_out * W_out; BN, ReLU, pooling and biases excluded. They are
counted with forward hooks on the real (physically pruned) model, never derived from masks.
"""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
from torch import nn

from bench.utils import eval_mode


def layer_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """MACs per conv/linear layer for one image of `example`'s shape."""
    out: dict[str, int] = {}
    hooks = []

    def hook(name):
        def fn(mod, inp, outp):
            if isinstance(mod, nn.Conv2d):
                kh, kw = mod.kernel_size
                out[name] = mod.out_channels * (mod.in_channels // mod.groups) * kh * kw * outp.shape[-2] * outp.shape[-1]
            else:
                rows = outp.numel() // outp.shape[0] // mod.out_features
                out[name] = mod.in_features * mod.out_features * rows
        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook(name)))
    try:
        with eval_mode(model), torch.no_grad():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return out


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    return sum(layer_macs(model, example).values())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def widths(model: nn.Module) -> dict[str, int]:
    """Output width (filters / features) of every conv and linear layer, in module order."""
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def cost(model: nn.Module, example: torch.Tensor, kind: str) -> int:
    """The quantity a target of `kind` ("macs" or "params") reduces: the one place that branches on it."""
    return count_macs(model, example) if kind == "macs" else count_params(model)


def paired_latency_ms(models: Sequence[nn.Module], example: torch.Tensor, batch: int, *, repeats: int = 20,
                      warmup: int = 3, device: str = "cpu") -> list[float]:
    """Median wall time of one forward pass at `batch` per model, in milliseconds.

    The models take turns, one pass each per repeat, so a burst of load on a shared machine hits
    all of them alike and their ratio (pruned vs base speed-up) stays meaningful.
    """
    models = [m.eval().to(device) for m in models]
    x = example[:1].to(device).expand(batch, *example.shape[1:]).contiguous()
    timer = _cuda_timer if device.startswith("cuda") else _wall_timer
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for model, out in zip(models, times):
                ms = timer(model, x)
                if i >= warmup:
                    out.append(ms)
    return [statistics.median(t) for t in times]


def _wall_timer(model: nn.Module, x: torch.Tensor) -> float:
    t = time.perf_counter()
    model(x)
    return (time.perf_counter() - t) * 1000


def _cuda_timer(model: nn.Module, x: torch.Tensor) -> float:
    """GPU time of one forward between CUDA events: kernels run asynchronously, so a host clock
    would time the launches; synchronising before starts from an idle device."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    model(x)
    end.record()
    end.synchronize()
    return start.elapsed_time(end)
