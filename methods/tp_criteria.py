"""torch-pruning's importance criteria as score methods: the field's common baselines, computed by
the library the field maintains, through the same harness, target and fine-tune as every method.

Each unit (one keep decision, `task.units`) is scored by a `tp.importance` class applied to the
unit's torch-pruning dependency group. `scope: group` (the library's criterion, DepGraph style)
scores everything the group prunes: the members' output filters, the consumers' input slices and
(except Taylor, see below) the BN scales, reduced over them by `reduction` (tp's `group_reduction`).
`scope: outputs` keeps only the members' output filters, i.e. the per-filter criteria of the
papers: `tp_l1` with `scope: outputs, reduction: sum` gives exactly `magnitude`'s independent
scores (tests/test_tp_criteria.py). tp's per-group normalizers are dropped (normalizer=None):
the harness already ranks per layer, or divides by each unit's mean for global ranking, except
for LAMP, whose normalization is the criterion itself.
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch_pruning as tp
from torch import nn

from bench.api import Range, ScoreMethod, Task, eval_mode, register

Scope = Literal["group", "outputs"]
Reduction = Literal["mean", "sum", "max", "prod", "first"]


class _TpCriterion(ScoreMethod):
    """Shared adapter: one tp.importance object, applied to every unit's dependency group."""

    scope: str = "group"
    scored: str = "conv/linear weights"  # what a unit must have, for the error when it has none

    def importance(self) -> tp.importance.Importance:
        raise NotImplementedError

    def prepare(self, model: nn.Module, task: Task) -> None:
        """Hook for criteria that need gradients before the groups are scored."""

    def score(self, model: nn.Module, task: Task) -> dict[str, torch.Tensor]:
        units = task.units(model)
        modules = dict(model.named_modules())
        names = {m: n for n, m in modules.items()}
        # tracing, like the harness's surgery, sees inference-mode BN; tp traces through autograd
        with eval_mode(model), torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=task.example[:1].to(next(model.parameters()).device), verbose=False)
        self.prepare(model, task)
        imp = self.importance()
        scores = {}
        for name, unit in units.items():
            root = modules[name]
            group = graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels,
                                            list(range(unit.size)))
            if self.scope == "outputs":
                group = _restrict(group, lambda dep: names.get(dep.target.module) in unit.members
                                  and graph.is_out_channel_pruning_fn(dep.handler))
            s = imp(group)
            if s is None:
                raise ValueError(f"{self.name}: unit '{name}' has no {self.scored} to score; "
                                 f"use a model with {self.scored} on every pruned layer")
            scores[name] = s.detach().double().cpu()
        model.zero_grad(set_to_none=True)
        return scores


def _restrict(group: tp.Group, keep) -> tp.Group:
    """The items of `group` whose dependency passes `keep`, each keeping the root indices
    torch-pruning attached to it (they map every item's channels back to the unit's)."""
    sub = tp.Group()
    for item in group.items:
        if keep(item.dep):
            sub.add_dep(item.dep, item.idxs)
            sub[len(sub) - 1] = item
    return sub


@register
class TpL1(_TpCriterion):
    name = "tp_l1"
    summary = "torch-pruning group L1 norm (GroupMagnitudeImportance p=1); data-free"
    display_name = "TP group L1"

    def __init__(self, scope: Scope = "group", reduction: Reduction = "mean"):
        self.scope, self.reduction = scope, reduction

    def importance(self):
        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction=self.reduction, normalizer=None)


@register
class TpL2(TpL1):
    name = "tp_l2"
    summary = "torch-pruning group L2 norm (GroupMagnitudeImportance p=2, squared); data-free"
    display_name = "TP group L2"

    def importance(self):
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction=self.reduction, normalizer=None)


@register
class TpTaylor(_TpCriterion):
    """First-order Taylor (Molchanov et al. 2019): |w * dL/dw| summed per channel, with the gradient
    accumulated over `batches` seeded training batches. The net is in eval mode meanwhile, so
    scoring changes no BN statistic; no weight is updated, so it spends no training budget.
    tp 1.6.1's GroupTaylorImportance skips BatchNorm (it tests for GroupNorm's pruning function),
    so its group holds the conv/linear outputs and the consumers' inputs."""

    name = "tp_taylor"
    summary = "torch-pruning first-order Taylor |w*grad| on training batches (GroupTaylorImportance)"
    display_name = "TP Taylor"

    def __init__(self, scope: Scope = "group", reduction: Reduction = "mean",
                 batches: Annotated[int, Range(1)] = 8, batch_size: Annotated[int, Range(1)] = 64):
        self.scope, self.reduction, self.batches, self.batch_size = scope, reduction, batches, batch_size

    def prepare(self, model: nn.Module, task: Task) -> None:
        model.zero_grad(set_to_none=True)
        with eval_mode(model), torch.enable_grad():
            for x, y in task.batches("train", self.batch_size, shuffle=True,
                                     limit=self.batches * self.batch_size):
                nn.functional.cross_entropy(model(x), y).backward()

    def importance(self):
        return tp.importance.GroupTaylorImportance(group_reduction=self.reduction, normalizer=None)


@register
class TpBNScale(_TpCriterion):
    """Network slimming's criterion (Liu et al. 2017): |gamma| of the BN after each layer, ranked by
    one global threshold over raw values, as the paper does. Without the paper's L1 sparsity
    training: that changes training, not the criterion. A unit without BN fails with its name."""

    name = "tp_bn_scale"
    summary = "torch-pruning BN scale |gamma| (network slimming), one global threshold; needs BN"
    display_name = "TP BN scale"
    comparable_scores = True
    pruning_defaults = {"ranking": "global"}
    scored = "BatchNorm"  # vgg and resnet20 have it; lenet5 does not

    def __init__(self, reduction: Reduction = "mean"):
        self.reduction = reduction

    def importance(self):
        return tp.importance.BNScaleImportance(group_reduction=self.reduction, normalizer=None)


@register
class TpLAMP(_TpCriterion):
    """LAMP (Lee et al. 2021): each unit's squared-L2 scores divided by the sum of those not smaller,
    which makes them comparable across layers, so one global threshold ranks them (the paper's rule)."""

    name = "tp_lamp"
    summary = "torch-pruning LAMP scores (LAMPImportance), one global threshold; data-free"
    display_name = "TP LAMP"
    comparable_scores = True
    pruning_defaults = {"ranking": "global"}

    def __init__(self, scope: Scope = "group", reduction: Reduction = "mean"):
        self.scope, self.reduction = scope, reduction

    def importance(self):
        return tp.importance.LAMPImportance(p=2, group_reduction=self.reduction)
