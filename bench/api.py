"""The plugin interface: what a pruning method implements and what the harness gives it.

Two levels (design.md):
- `ScoreMethod.score(model, task)` returns one importance per output channel of each prunable
  layer; the harness turns scores into keep-lists that hit the target, does the surgery and
  fine-tunes. Magnitude, random, PLS+VIP and Map-EX are score methods.
- `FullMethod.prune(model, task, target)` returns a smaller model, using the harness's services
  on `task` (training with hooks, evaluation, surgery, MACs) instead of re-implementing them.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

import torch
from torch import nn

from bench.errors import ConfigError


@dataclass(frozen=True)
class Target:
    """A reduction to reach, measured on the physically pruned model."""

    kind: str          # "macs" | "params"
    reduction: float   # 0.5 = remove half
    tolerance: float = 0.015


class Method:
    """Base of every plugin. Subclasses set `name` and take their options as constructor kwargs."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_pretrained: ClassVar[bool] = True   # False: trains from scratch within the total epoch budget
    needs_finetune: ClassVar[bool] = True     # False: the harness skips the final fine-tune

    @classmethod
    def validate_args(cls, args: Mapping[str, Any], where: str = "method") -> None:
        """Reject unknown option names and bad values before any training starts.

        Constructors must stay cheap (store and check options; no data, no training)."""
        sig = inspect.signature(cls.__init__)
        allowed = [p for p in sig.parameters if p != "self"]
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            for k in args:
                if k not in allowed:
                    raise ConfigError(f"{where}.{k}: unknown option of method '{cls.name}'; "
                                      f"allowed: {', '.join(allowed) or '(none)'}")
        try:  # constructors only store and check options, so building one is the value check
            cls(**args)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from e
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: bad option value ({e})") from e

    @classmethod
    def extra_cost_s(cls, spec) -> float | None:
        """Seconds of non-training work per cell on this device (searches, feature extraction),
        for `bench plan`; None = negligible or unknown. Price it with bench.probe.forward_seconds."""
        return None


    @classmethod
    def report_extras(cls, runs: "pandas.DataFrame", out_dir: "Path") -> list["Path"]:
        """Method-specific report files (figures, tables) from this method's finished runs: one row
        per run, stepped metrics in long form in `runs.attrs["curves"]`. Returns the files written
        under `out_dir`. Import pandas / matplotlib inside. Default: nothing."""
        return []


class ScoreMethod(Method):
    kind: ClassVar[str] = "score"
    # True when scores share one scale across layers (VIP): `ranking: global` then removes by one
    # network-wide threshold instead of normalising each unit by its mean score.
    comparable_scores: ClassVar[bool] = False

    def score(self, model: nn.Module, task: "Task") -> dict[str, torch.Tensor]:
        """{unit root layer name: importance per output channel}; higher means keep."""
        raise NotImplementedError


class FullMethod(Method):
    kind: ClassVar[str] = "full"

    def prune(self, model: nn.Module, task: "Task", target: Target) -> nn.Module:
        raise NotImplementedError


class Task:
    """The harness's services for one run. Only train/val data are exposed: test is for final numbers."""

    def __init__(self, *, spec, data, device: str, example: torch.Tensor, logger, trainer,
                 target: Target | None = None):
        self.spec = spec
        self.target = target
        self.data = data
        self.device = device
        self.example = example
        self._logger = logger
        self._trainer = trainer
        self.images_seen = 0        # all training through this task: the budget is counted from it
        self.references: dict[str, nn.Module] = {}  # models the harness evaluates on test after the run

    # -- budget ---------------------------------------------------------------------------------
    @property
    def finetune_epochs(self) -> int:
        return self.spec.finetune.epochs

    @property
    def total_epochs(self) -> int:
        """Pretrain + fine-tune: what a method that trains from scratch may spend."""
        return self.spec.pretrain.epochs + self.spec.finetune.epochs

    @property
    def seed(self) -> int:
        return self.spec.seed

    # -- training and evaluation ----------------------------------------------------------------
    def train(self, model: nn.Module, epochs: int, *, hooks: Sequence = (), make_optimizer: Callable | None = None,
              lr: float | None = None, loss: str = "ce", desc: str = "train", from_scratch: bool = False):
        """Fine-tune recipe (or pretrain recipe when `from_scratch`) with optional hooks; returns FitResult."""
        result = self._trainer(model, epochs, hooks=hooks, make_optimizer=make_optimizer, lr=lr,
                               loss=loss, desc=desc, from_scratch=from_scratch)
        self.images_seen += result.images
        return result

    @property
    def epochs_used(self) -> float:
        """Training spent through this task, in epoch equivalents (images seen / train size)."""
        return self.images_seen / max(len(self.data.train), 1)

    def save_reference(self, key: str, model: nn.Module) -> None:
        """Hand the harness a model to evaluate on test after the run (logged `acc_<key>`), e.g. RLS's
        own unpruned net: methods never see test data."""
        import copy

        self.references[key] = copy.deepcopy(model).cpu()

    def evaluate(self, model: nn.Module, split: str = "val", limit: int | None = None) -> tuple[float, float]:
        """(mean loss, top-1 accuracy) on 'train' or 'val'."""
        from bench.training import evaluate

        if split not in ("train", "val"):
            raise ValueError("methods may evaluate on 'train' or 'val' only; test is for the final numbers")
        part = getattr(self.data, split)
        if limit:
            part = part.subset(limit, self.seed)
        return evaluate(model, part, self.data.info, device=self.device)

    def batches(self, split: str = "train", batch_size: int = 256, *, shuffle: bool = False,
                limit: int | None = None) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        from bench.datasets import batches

        part = getattr(self.data, split)
        if limit:
            part = part.subset(limit, self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        return batches(part, self.data.info, batch_size, shuffle=shuffle, gen=gen, device=self.device)

    # -- structure ------------------------------------------------------------------------------
    def units(self, model: nn.Module, include_coupled: bool | None = None):
        from bench.surgery import find_units

        inc = self.spec.pruning.include_coupled if include_coupled is None else include_coupled
        return find_units(model, self.example, include_coupled=inc)

    def prune_channels(self, model: nn.Module, keep: Mapping[str, Sequence[int]]) -> nn.Module:
        from bench.surgery import prune

        return prune(model, keep, self.example)

    def macs(self, model: nn.Module) -> int:
        from bench.measure import count_macs

        return count_macs(model, self.example.to(next(model.parameters()).device))

    def params(self, model: nn.Module) -> int:
        from bench.measure import count_params

        return count_params(model)

    def plan(self, model: nn.Module, scores: Mapping[str, torch.Tensor], target: Target):
        """Keep-lists meeting `target` from per-unit scores, with the grid's ranking rule."""
        from bench.driver import plan_keep

        return plan_keep(model, self.example, scores, target, self.spec.pruning)

    # -- logging --------------------------------------------------------------------------------
    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self._logger.metric(key, value, step)

    def log_param(self, key: str, value: Any) -> None:
        self._logger.param(key, value)
