"""The plugin interface: what a pruning method implements and what the harness gives it.

Two levels (docs/architecture.md):
- `ScoreMethod.score(model, task)` returns one importance per output channel of each prunable
  layer; the harness turns scores into keep-lists that hit the target, does the surgery and
  fine-tunes. Magnitude, random, PLS+VIP and Map-EX are score methods.
- `FullMethod.prune(model, task, target)` returns a smaller model, using the harness's services
  on `task` (training with hooks, evaluation, surgery, MACs) instead of re-implementing them.

This module is the plugins' one face and sits between the layers: it imports bench.core (and the
base modules) with plain imports and re-exports what a plugin needs, and nothing of bench.run or
bench.report. So a method that imports it reaches neither the runner's data cache nor an MLflow
client, and `Task` holds only train/val data and a write-only log sink (see `Task`).
"""
from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from bench.core.datasets import DATASETS, SEEN_SPLITS, TEST_REFUSED, DatasetInfo, Split, TrainVal, batches, normalize
from bench.core.driver import plan_keep
from bench.core.measure import count_macs, count_params, cost, widths
from bench.core.merge import check_clusters, cluster_labels, merge
from bench.core.method import KEEP, FullMethod, Method, PaperResult, ScoreMethod, Target
from bench.core.options import Range
from bench.core.probe import forward_seconds, pruned_time_share, step_ratio, unit_count
from bench.core.receptive_field import Geometry, trace
from bench.core.registry import register
from bench.core.spec import PruningConfig, TrainConfig
from bench.core.surgery import CostModel, Unit, find_units, min_keep, output_layer, prune
from bench.core.training import FitContext, Hook, evaluate, lr_factor, sgd
from bench.errors import ConfigError
from bench.utils import eval_mode

# What a plugin may import from here (the names above it uses itself are implementation).
__all__ = [
    "KEEP", "Method", "ScoreMethod", "FullMethod", "Target", "Task", "register", "PaperResult",
    "ConfigError", "Range", "Unit", "output_layer", "min_keep", "Hook", "FitContext", "lr_factor",
    "TrainConfig", "PruningConfig", "Split", "DatasetInfo", "DATASETS", "check_clusters",
    "cluster_labels", "Geometry", "trace", "widths", "eval_mode",
    # pricing for `Method.extra_cost_s` and `Method.train_cost_factor` (bench plan)
    "forward_seconds", "unit_count", "pruned_time_share", "step_ratio",
]

CHECK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class Task:
    """The harness's services for one run. Only train/val data are exposed: test is for final numbers.

    Data: `batches`, `normalize`, `data.train/.val` (raw uint8 `Split`s; `data.test` raises),
    `evaluate`. Training: `train` (hooks, optimizer factory, LR), `optimizer`. Structure: `units`,
    `plan`, `prune_channels`, `merge_channels`. Cost: `cost`, `predictor`, `macs`, `params`.

    What a task holds leads to neither test data nor an MLflow client, whatever a method walks
    (attributes, closures, globals): `logger` is a write-only sink (`metric`, `param`; in a run
    bench.run.stage.LogSink, which the runner forwards to MLflow) and `trainer` runs `train` on
    the train/val splits alone (tests/test_isolation.py)."""

    def __init__(self, *, spec, data, device: str, example: torch.Tensor, logger, trainer,
                 target: Target | None = None):
        self.spec = spec
        self.target = target
        self.data = TrainVal(data.info, data.train, data.val)  # whatever `data` holds, never test
        self.device = device
        self.example = example
        self._logger = logger
        self._trainer = trainer
        self.images_seen = 0        # all training through this task: the budget is counted from it
        self.references: dict[str, nn.Module] = {}  # models the harness evaluates on test after the run
        self.checks: dict[str, bool] = {}           # precondition name -> passed (see `check`)

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
        """Fine-tune recipe (or pretrain recipe when `from_scratch`) with optional hooks; returns FitResult.

        Whole epochs only: training checkpoints, calls hooks and schedules the LR per epoch. The budget
        is still counted in epoch equivalents (`epochs_used`), which a final fine-tune tops up."""
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs < 0 \
                or not float(epochs).is_integer():
            raise ValueError(f"task.train: epochs must be a whole number >= 0, got {epochs!r}; split a budget in "
                             f"whole epochs (e.g. task.finetune_epochs // steps) and leave the rest to the "
                             f"harness's final fine-tune (needs_finetune = True)")
        result = self._trainer(model, int(epochs), hooks=hooks, make_optimizer=make_optimizer, lr=lr,
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
        self.references[key] = copy.deepcopy(model).cpu()

    def evaluate(self, model: nn.Module, split: str = "val", limit: int | None = None) -> tuple[float, float]:
        """(mean loss, top-1 accuracy) on 'train' or 'val'."""
        part = self._split(split)
        if limit:
            part = part.subset(limit, self.seed)
        return evaluate(model, part, self.data.info, device=self.device)

    def batches(self, split: str = "train", batch_size: int = 256, *, shuffle: bool = False,
                limit: int | None = None, augment: bool = False, drop_last: bool = False,
                generator: torch.Generator | None = None) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised (x, y) batches on the run's device. Pass one `generator` to successive calls
        for a fresh seeded order per pass (default: the same seeded order every call)."""
        part = self._split(split)
        if limit:
            part = part.subset(limit, self.seed)
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        return batches(part, self.data.info, batch_size, shuffle=shuffle,
                       augment_data=augment, gen=gen, device=self.device, drop_last=drop_last)

    def _split(self, split: str):
        if split not in ("train", "val"):
            raise ValueError(f"split {split!r}: {TEST_REFUSED if split == 'test' else SEEN_SPLITS}")
        return getattr(self.data, split)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw uint8 images (e.g. `task.data.train.x[idx]`) -> the network's input, on the run's device."""
        return normalize(x.to(self.device), self.data.info)

    def optimizer(self, model: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
        """The fine-tune recipe's SGD over `model` (no weight decay on BN/biases), for methods that
        run their own steps; build parameter groups yourself and pass `make_optimizer` to `train`
        when you need different ones."""
        return sgd(model, self.spec.finetune, lr)

    # -- structure ------------------------------------------------------------------------------
    def units(self, model: nn.Module, include_coupled: bool | None = None):
        """{root layer name: Unit} of `model`; each Unit lists its member, consumer and other layers."""
        inc = self.spec.pruning.include_coupled if include_coupled is None else include_coupled
        return find_units(model, self.example, include_coupled=inc)

    def prune_channels(self, model: nn.Module, keep: Mapping[str, Sequence[int]]) -> nn.Module:
        return prune(model, keep, self.example.to(next(model.parameters()).device))

    def merge_channels(self, model: nn.Module, units: Mapping[str, Any],
                       clusters: Mapping[str, Sequence[Sequence[int]]]) -> nn.Module:
        """One channel per cluster of each unit, consumers' input slices summed (C-SGD's merge)."""
        return merge(model, units, clusters, self.example.to(next(model.parameters()).device))

    def macs(self, model: nn.Module) -> int:
        return count_macs(model, self.example.to(next(model.parameters()).device))

    def params(self, model: nn.Module) -> int:
        return count_params(model)

    def cost(self, model: nn.Module, kind: str | None = None) -> int:
        """What the target reduces (MACs or params, `kind` defaulting to the run's target kind)."""
        return cost(model, self.example.to(next(model.parameters()).device), kind or self.spec.target_kind)

    def predictor(self, model: nn.Module, units: Mapping[str, Any] | None = None,
                  kind: str | None = None) -> Callable[[Mapping[str, int]], float]:
        """Predicted cost of `model` with {unit: kept channels} (missing units whole), without surgery."""
        units = self.units(model) if units is None else units
        return CostModel(model, self.example.to(next(model.parameters()).device), units).of(
            kind or self.spec.target_kind)

    def plan(self, model: nn.Module, scores: Mapping[str, torch.Tensor], target: Target | None = None,
             *, comparable: bool = False, **pruning):
        """Keep-lists meeting `target` (default: the run's) from per-unit scores (every unit, or
        `KEEP`), with the grid's pruning settings; keyword overrides replace some of them (e.g.
        `ranking="per_layer"`)."""
        cfg = dataclasses.replace(self.spec.pruning, **pruning) if pruning else self.spec.pruning
        return plan_keep(model, self.example.to(next(model.parameters()).device), scores,
                         target or self.target, cfg, comparable)

    # -- logging --------------------------------------------------------------------------------
    def check(self, name: str, value: float, passed: bool, rule: str, *, step: int | None = None) -> None:
        """Record a precondition of the method's own protocol, checked on this run's outcome (e.g.
        C-SGD: the merge was lossless). Logged as metrics `check.<name>` (the value) and
        `check.<name>.passed` (0/1) and param `check.<name>.rule`; the run's `preconditions_met`
        is 1 only if every check passed, and the report footnotes runs where one failed. Checking
        again (a later round, with its `step`) replaces the earlier outcome."""
        if not CHECK_NAME.fullmatch(name):
            raise ValueError(f"check name {name!r}: use letters, digits and underscores only")
        self.checks[name] = bool(passed)
        self.log_metric(f"check.{name}", float(value), step)
        self.log_metric(f"check.{name}.passed", float(bool(passed)), step)
        self.log_param(f"check.{name}.rule", rule)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self._logger.metric(key, value, step)

    def log_param(self, key: str, value: Any) -> None:
        self._logger.param(key, value)
