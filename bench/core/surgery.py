"""Physical channel removal on top of torch-pruning's dependency graph.

A *unit* is one pruning decision: the output channels of one conv/linear layer together with
everything coupled to them (its BN, the next layer's input slices, flatten->linear column
blocks, and in ResNets every layer feeding the same residual addition). torch-pruning finds the
coupling by tracing; we never hand-write it. The result of `prune` is an ordinary, smaller
`nn.Module` that pickles and reloads.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from bench.core.measure import count_params, layer_macs
from bench.utils import eval_mode


@dataclass
class Unit:
    """One prunable decision: coupled output channels that share one keep-list."""

    name: str                      # the root layer (first member in module order)
    size: int                      # number of channels
    members: list[str]             # conv/linear layers whose *outputs* are these channels
    consumers: list[str]           # conv/linear layers whose *inputs* are these channels
    others: list[str] = field(default_factory=list)  # BN and other modules sliced along

    @property
    def coupled(self) -> bool:
        """True for residual groups (several layers feed one addition)."""
        return len(self.members) > 1


def output_layer(model: nn.Module) -> str:
    """The classifier: the last conv/linear in module order. Its outputs are never pruned."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return names[-1]


def _graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    # tp traces through autograd; a plugin may call task.units under no_grad
    with eval_mode(model), torch.enable_grad():
        return tp.DependencyGraph().build_dependency(model, example_inputs=example[:1], verbose=False)


def find_units(model: nn.Module, example: torch.Tensor, *, include_coupled: bool = True,
               exclude: Sequence[str] = ()) -> dict[str, Unit]:
    """All prunable units of `model`, keyed by root layer name, in module order.

    `include_coupled=False` drops residual groups: Li et al. prune only the block-internal convs
    of CIFAR ResNets, and so do PLS+VIP and most baselines by default.
    """
    dg = _graph(model, example)
    names = {m: n for n, m in model.named_modules()}
    skip = {output_layer(model), *exclude}
    units: dict[str, Unit] = {}
    seen: set[str] = set()
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)) or name in seen or name in skip:
            continue
        pruner = dg.get_pruner_of_module(mod)
        size = pruner.get_out_channels(mod)
        group = dg.get_pruning_group(mod, pruner.prune_out_channels, list(range(size)))
        members, consumers, others = [], [], []
        for dep, _ in group:
            target = dep.target.module
            tname = names.get(target)
            if tname is None:
                continue
            if isinstance(target, (nn.Conv2d, nn.Linear)):
                (members if dg.is_out_channel_pruning_fn(dep.handler) else consumers).append(tname)
            else:
                others.append(tname)
        members = sorted(set(members), key=list(names.values()).index)
        seen.update(members)
        if skip & set(members):
            continue
        unit = Unit(members[0], size, members, sorted(set(consumers)), sorted(set(others)))
        if unit.coupled and not include_coupled:
            continue
        units[unit.name] = unit
    return units


def prune(model: nn.Module, keep: Mapping[str, Sequence[int]], example: torch.Tensor,
          *, inplace: bool = False) -> nn.Module:
    """Remove every channel of each unit root in `keep` that is not listed; return the smaller model.

    Keep-lists name a unit by its root layer (see `find_units`); channel indices refer to the
    model as given. Coupled layers are pruned together by torch-pruning.
    """
    model = model if inplace else copy.deepcopy(model)
    modules = dict(model.named_modules())
    dg = _graph(model, example)
    lineage = dict(kept_channels(model))
    for name, kept in keep.items():
        if name not in modules:
            raise KeyError(f"keep-list names layer '{name}', which is not in the model")
        mod = modules[name]
        pruner = dg.get_pruner_of_module(mod)
        size = pruner.get_out_channels(mod)
        kept_set = {int(i) for i in kept}
        if not kept_set:
            raise ValueError(f"keep-list for '{name}' is empty; a layer must keep at least one channel")
        if max(kept_set) >= size or min(kept_set) < 0:
            raise ValueError(f"keep-list for '{name}' has indices outside 0..{size - 1}")
        remove = [i for i in range(size) if i not in kept_set]
        if remove:
            dg.get_pruning_group(mod, pruner.prune_out_channels, remove).prune()
        before = lineage.get(name, list(range(size)))
        lineage[name] = [before[i] for i in sorted(kept_set)]
    model.__dict__[KEPT_ATTR] = lineage  # travels with deepcopy and torch.save (staged models)
    return model


KEPT_ATTR = "_bench_kept_channels"


def kept_channels(model: nn.Module) -> dict[str, list[int]]:
    """{unit root: kept output channels, as indices of the model before its first cut} for every
    unit `prune` (or a merge, which keeps each cluster's first member) has cut so far. Rounds
    compose, so two methods' choices on one base can be compared whatever route they took."""
    return model.__dict__.get(KEPT_ATTR, {})


class CostModel:
    """Exact MACs (and near-exact params) of any keep-count assignment, without doing the surgery.

    Each conv/linear's MACs scale with (kept outputs / outputs) x (kept inputs / inputs), where
    the ratios come from the unit that owns its outputs and the unit that feeds its inputs. That
    makes target search a cheap bisection; the final number is always re-measured on the real
    pruned model.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, units: Mapping[str, Unit]):
        self.units = dict(units)
        self.base_macs = layer_macs(model, example)
        modules = dict(model.named_modules())
        self.base_params = {n: sum(p.numel() for p in modules[n].parameters(recurse=False)) for n in modules
                            if any(True for _ in modules[n].parameters(recurse=False))}
        self.total_params = count_params(model)
        self.out_of: dict[str, str] = {}
        self.in_of: dict[str, str] = {}
        for u in self.units.values():
            for m in u.members + u.others:
                self.out_of[m] = u.name
            for m in u.consumers:
                self.in_of[m] = u.name

    def _ratio(self, table: dict[str, str], layer: str, kept: Mapping[str, int]) -> float:
        unit = table.get(layer)
        return 1.0 if unit is None else kept.get(unit, self.units[unit].size) / self.units[unit].size

    def macs(self, kept: Mapping[str, int]) -> float:
        return sum(m * self._ratio(self.out_of, n, kept) * self._ratio(self.in_of, n, kept)
                   for n, m in self.base_macs.items())

    def of(self, kind: str):
        """The predictor of one target kind ("macs" or "params"): keep-counts -> cost."""
        return self.macs if kind == "macs" else self.params

    def params(self, kept: Mapping[str, int]) -> float:
        untouched = self.total_params - sum(self.base_params.values())
        return untouched + sum(p * self._ratio(self.out_of, n, kept) * self._ratio(self.in_of, n, kept)
                               for n, p in self.base_params.items())


def min_keep(size: int, max_prune: float) -> int:
    """At least one channel, and at least (1 - max_prune) of the unit."""
    return max(1, math.ceil(size * (1 - max_prune) - 1e-9))
