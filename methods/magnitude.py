"""L1-norm filter pruning (Li et al., ICLR 2017, arXiv 1608.08710; docs/methods.md §5a).

Score of filter j = sum of |weights| over its C_in*k*k kernel. For a residual group (coupled
units) the L1 norms of all member layers' filters are summed, so the group keeps one decision.
Strategies (paper): `independent` scores every layer on the original weights; `greedy` ignores
the input kernels that act on maps already removed in the previous layer. Deviation: the paper
removes a fixed count per layer chosen by hand from a sensitivity scan; here the harness sizes
the cut to the grid's MACs target, so greedy is done in two passes (plan with independent scores,
then re-score without the kernels on removed maps, then plan again).
"""
from __future__ import annotations

import torch
from torch import nn

from typing import Literal

from bench.api import PaperResult, ScoreMethod, Task, register


def filter_l1(weight: torch.Tensor, drop_inputs: torch.Tensor | None = None) -> torch.Tensor:
    """L1 norm of each output row of a conv/linear weight, optionally ignoring some input columns."""
    w = weight.detach().abs().flatten(2) if weight.ndim > 2 else weight.detach().abs().unsqueeze(-1)
    if drop_inputs is not None:
        w = w[:, ~drop_inputs]
    return w.sum(dim=(1, 2))


@register
class Magnitude(ScoreMethod):
    name = "magnitude"
    summary = "L1 norm of each filter (Li et al. 2017); data-free"
    display_name = "L1 magnitude"
    paper_results = tuple(  # Li et al. prune once and retrain, each layer by its own rate
        PaperResult("5a", "L1", setting, "cifar10", model, base, pruned, delta, flops, params, source="[R]",
                    protocol=(("pruning.ranking", "per_layer"), ("pruning.rounds", "1")))
        for setting, model, base, pruned, delta, flops, params in (
            ("VGG-16-A / CIFAR-10", ("vgg", (("depth", 16),)), 93.25, 93.40, 0.15, 34.2, 64.0),
            ("ResNet-56-B / CIFAR-10", ("resnet56", ()), 93.04, 93.06, 0.02, 27.6, 13.7),
            ("ResNet-110-B / CIFAR-10", ("resnet110", ()), 93.53, 93.30, -0.23, 38.6, 32.4)))

    def __init__(self, strategy: Literal["greedy", "independent"] = "greedy"):
        self.strategy = strategy

    def _scores(self, model: nn.Module, units, removed: dict[str, set[int]] | None = None) -> dict[str, torch.Tensor]:
        modules = dict(model.named_modules())
        producer_of: dict[str, str] = {}
        for u in units.values():
            for c in u.consumers:
                producer_of[c] = u.name
        scores = {}
        for name, unit in units.items():
            total = torch.zeros(unit.size, dtype=torch.float64)
            for member in unit.members:
                w = modules[member].weight
                drop = None
                src = producer_of.get(member)
                if removed and src in removed and removed[src]:
                    in_dim = w.shape[1]
                    block = in_dim // units[src].size  # >1 for a linear layer after flatten
                    ch = torch.arange(in_dim) // block
                    drop = torch.isin(ch, torch.tensor(sorted(removed[src])))
                total += filter_l1(w, drop).double().cpu()
            scores[name] = total
        return scores

    def score(self, model: nn.Module, task: Task) -> dict[str, torch.Tensor]:
        units = task.units(model)
        scores = self._scores(model, units)
        if self.strategy == "greedy" and task.target is not None:
            plan = task.plan(model, scores, task.target)
            removed = {n: set(range(units[n].size)) - set(k) for n, k in plan.keep.items()}
            scores = self._scores(model, units, removed)
        return scores
