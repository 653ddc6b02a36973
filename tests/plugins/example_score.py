"""A score method: each channel's mean |activation| on a few training batches (higher = keep)."""
import torch

from bench.api import ScoreMethod, register


@register
class MeanActivation(ScoreMethod):
    name = "example_activation"
    summary = "mean |activation| of each channel on a few training batches"

    def __init__(self, batches: int = 4):  # an option: typed, checked against the config
        self.batches = batches

    @torch.no_grad()
    def score(self, model, task):  # {unit root layer: one score per output channel}
        sums, layers = {}, dict(model.named_modules())
        hooks = [layers[n].register_forward_hook(lambda m, i, out, n=n: sums.__setitem__(
            n, sums.get(n, 0) + out.abs().transpose(0, 1).flatten(1).mean(1))) for n in task.units(model)]
        model.eval()
        for x, _ in task.batches("train", 64, limit=64 * self.batches):
            model(x)
        for h in hooks:
            h.remove()
        return sums
