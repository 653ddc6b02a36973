"""A full method: L1 filter pruning in `steps` equal steps, training between steps.

Budget: the steps share the fine-tune budget (`task.finetune_epochs`). Every epoch trained through
`task.train` counts; `needs_finetune = True` asks the harness to fine-tune after `prune` with
what is left, so the method never trains past the budget and gets no hidden extra fine-tune.
"""
from typing import Annotated

from bench.api import FullMethod, Range, Target, register


@register
class Gradual(FullMethod):
    name = "example_gradual"
    summary = "L1 filter pruning in equal steps, training between steps"
    needs_pretrained = True  # start from the shared base checkpoint
    needs_finetune = True    # the harness fine-tunes with the rest of the budget

    def __init__(self, steps: Annotated[int, Range(1)] = 2):
        self.steps = steps

    def prune(self, model, task, target):
        base = task.cost(model)  # MACs or params, whichever the target reduces
        between = task.finetune_epochs // self.steps  # epochs after each step but the last
        for k in range(1, self.steps + 1):
            done = 1 - task.cost(model) / base
            goal = Target(target.kind, target.reduction * k / self.steps, target.tolerance)
            layers = dict(model.named_modules())
            scores = {name: sum(layers[m].weight.detach().abs().flatten(1).sum(1) for m in unit.members)
                      for name, unit in task.units(model).items()}
            plan = task.plan(model, scores, goal.relative_to(done))  # keep-lists meeting the step
            model = task.prune_channels(model, plan.keep)
            task.log_metric("step_reduction", 1 - task.cost(model) / base, step=k)
            if k < self.steps and between:
                model = task.train(model, between, desc=f"step{k}").model
        return model
