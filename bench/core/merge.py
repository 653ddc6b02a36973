"""Merge surgery: collapse clusters of channels into one channel each (docs/methods.md §0 `merge`, §3 step 3).

A unit's clusters partition its output channels. For each cluster the first (lowest-index)
channel is kept and becomes the cluster mean of the members' own entries (filter rows, biases,
BN γ/β/running statistics); in every consumer layer, the input slices of all members are summed
into the kept channel's slice (a conv's input channels; a flatten->linear's H·W column block).
The other members are then removed with the ordinary keep-list surgery (`bench.core.surgery.prune`).

When the members of each cluster are identical (what C-SGD trains towards), the merged model
computes exactly the same function: identical channels stay identical through BN, ReLU, pooling
and residual additions, so a consumer's response is the sum of its member slices applied to one
copy. When they are only close, the mean is the least-squares representative (the paper's code
keeps the first member instead; both agree on identical clusters).
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
from torch import nn

from bench.core.surgery import Unit, prune

Clusters = Sequence[Sequence[int]]


def check_clusters(clusters: Clusters, size: int, where: str = "unit") -> list[list[int]]:
    """Sorted clusters (each sorted, ordered by first member) that partition 0..size-1; else ValueError."""
    out = sorted((sorted(int(i) for i in c) for c in clusters), key=lambda c: c[0] if c else -1)
    if any(not c for c in out):
        raise ValueError(f"{where}: a cluster is empty")
    flat = [i for c in out for i in c]
    if sorted(flat) != list(range(size)):
        raise ValueError(f"{where}: clusters must partition channels 0..{size - 1} exactly once each")
    return out


def cluster_labels(clusters: Clusters, size: int) -> torch.Tensor:
    """Cluster index of every channel (clusters as returned by `check_clusters`)."""
    labels = torch.empty(size, dtype=torch.long)
    for k, members in enumerate(clusters):
        labels[list(members)] = k
    return labels


@torch.no_grad()
def _average_rows(t: torch.Tensor, clusters: list[list[int]], dim: int = 0) -> None:
    for c in clusters:
        if len(c) > 1:
            idx = torch.tensor(c, device=t.device)
            t.index_copy_(dim, idx[:1], t.index_select(dim, idx).mean(dim, keepdim=True))


@torch.no_grad()
def _sum_input_slices(weight: torch.Tensor, clusters: list[list[int]], size: int, layer: str) -> None:
    """Add every member's input slice into the kept member's slice (dim 1 of a conv/linear weight)."""
    in_dim = weight.shape[1]
    if in_dim % size:
        raise ValueError(f"consumer '{layer}' has {in_dim} inputs, not a multiple of the unit's {size} channels")
    block = in_dim // size  # H·W columns per channel for a linear layer after flatten; 1 for a conv
    w = weight.unflatten(1, (size, block))  # a view: writes go to `weight`
    for c in clusters:
        if len(c) > 1:
            idx = torch.tensor(c, device=weight.device)
            w[:, c[0]] = w.index_select(1, idx).sum(1)


def merge(model: nn.Module, units: Mapping[str, Unit], clusters: Mapping[str, Clusters],
          example: torch.Tensor) -> nn.Module:
    """A smaller copy of `model` with each listed unit's clusters merged into one channel each.

    `units` come from `bench.core.surgery.find_units`; `clusters[name]` partitions that unit's channels.
    Coupled (residual) units are handled like any other: every member layer and BN is averaged,
    every consumer summed, and torch-pruning removes the duplicates from all coupled layers.
    """
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    keep: dict[str, list[int]] = {}
    for name, raw in clusters.items():
        if name not in units:
            raise KeyError(f"clusters name '{name}', which is not a unit of this model")
        unit = units[name]
        groups = check_clusters(raw, unit.size, where=name)
        if len(groups) == unit.size:
            continue
        for layer in unit.members + unit.others:
            mod = modules[layer]
            for attr in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(mod, attr, None)
                if isinstance(t, torch.Tensor):
                    _average_rows(t.data if isinstance(t, nn.Parameter) else t, groups)
        for layer in unit.consumers:
            _sum_input_slices(modules[layer].weight.data, groups, unit.size, layer)
        keep[name] = [c[0] for c in groups]
    return prune(model, keep, example, inplace=True) if keep else model
