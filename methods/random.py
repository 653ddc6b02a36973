"""Random filter scores: the floor every pruning benchmark needs.

A method that cannot beat random channel selection at the same MACs and fine-tune budget
is not pruning anything meaningful. Seeded by the run seed, so reruns are identical.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.api import ScoreMethod, Task, register


@register
class Random(ScoreMethod):
    name = "random"
    summary = "uniformly random filter scores (seeded): the baseline floor"
    display_name = "Random"

    def score(self, model: nn.Module, task: Task) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(task.seed)
        return {name: torch.rand(unit.size, generator=gen) for name, unit in task.units(model).items()}
