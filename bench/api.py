"""The plugin interface: what a pruning method implements and what the harness gives it.

Two levels (docs/architecture.md):
- `ScoreMethod.score(model, task)` returns one importance per output channel of each prunable
  layer; the harness turns scores into keep-lists that hit the target, does the surgery and
  fine-tunes. Magnitude, random, PLS+VIP and Map-EX are score methods.
- `FullMethod.prune(model, task, target)` returns a smaller model, using the harness's services
  on `task` (training with hooks, evaluation, surgery, MACs) instead of re-implementing them.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping, Sequence

import torch
from torch import nn

# bench.api is a leaf: it imports no other bench module at module level (tests/test_imports.py), so
# every harness module may import it and no cycle forms. Harness types and helpers a plugin needs
# are re-exported lazily, on first access, by the module `__getattr__` below.
_LAZY = {
    "ConfigError": "bench.errors",
    "Range": "bench.options",
    "Unit": "bench.surgery", "output_layer": "bench.surgery", "min_keep": "bench.surgery",
    "Hook": "bench.training", "FitContext": "bench.training", "lr_factor": "bench.training",
    "TrainConfig": "bench.config", "PruningConfig": "bench.config",
    "Split": "bench.datasets", "DatasetInfo": "bench.datasets",
    "check_clusters": "bench.merge", "cluster_labels": "bench.merge",
    "Geometry": "bench.receptive_field", "trace": "bench.receptive_field",
    "widths": "bench.measure",
    "DATASETS": "bench.datasets",
    "forward_seconds": "bench.probe", "unit_count": "bench.probe",  # pricing for `extra_cost_s`
    "pruned_time_share": "bench.probe", "step_ratio": "bench.probe",  # ... and `train_cost_factor`
    "eval_mode": "bench.utils",
}


CHECK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


# A unit's score that leaves it whole: `scores[name] = KEEP`. Leaving a unit out of the scores is an
# error instead, so that a forgotten unit never silently stays whole while the others are cut harder.
KEEP: Any = _Keep()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.api' has no attribute '{name}'")


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator that makes a method known by its `name`: `@register class Mine(ScoreMethod)`."""
    from bench.registry import register as _register

    return _register(cls)


@dataclass(frozen=True)
class Target:
    """A reduction to reach, measured on the physically pruned model.

    The one rule for targets: `relative_to` restates it for a model that already has part of the
    base cost removed, and `met`/`reached` say whether an achieved reduction is inside its band."""

    kind: Literal["macs", "params"]
    reduction: float   # 0.5 = remove half
    tolerance: float = 0.015

    def relative_to(self, done: float) -> "Target":
        """The same end point and the same absolute tolerance band, as fractions of a model that
        has `done` (a fraction of the base cost) removed already."""
        rest = 1 - done
        return Target(self.kind, 1 - (1 - self.reduction) / rest, self.tolerance / rest)

    def met(self, achieved: float) -> bool:
        """Inside the tolerance band around the target."""
        return abs(achieved - self.reduction) <= self.tolerance + 1e-12

    def reached(self, achieved: float) -> bool:
        """At or past the lower edge of the band (pruning more would not be needed)."""
        return achieved >= self.reduction - self.tolerance - 1e-12


class Method:
    """Base of every plugin. Subclasses set `name` and declare their options as typed keyword
    parameters of `__init__` with defaults (`Literal` choices, `Annotated[float, Range(...)]`
    bounds); the harness validates config values against them before building the method."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_pretrained: ClassVar[bool] = True   # False: trains from scratch within the total epoch budget
    needs_finetune: ClassVar[bool] = True     # False: prune() spends the fine-tune budget itself
    # The method's own defaults for the grid's pruning settings; precedence:
    # grid `pruning:` < pruning_defaults < a variant's `pruning:`.
    pruning_defaults: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def checked(self, *args, **kw):  # options are checked wherever a method is built
            from bench.options import validate

            bound = inspect.signature(init).bind(self, *args, **kw).arguments
            validate(cls, {k: v for k, v in list(bound.items())[1:]}, type(self).name or cls.__name__)
            init(self, *args, **kw)
        cls.__init__ = checked

    @classmethod
    def validate_args(cls, args: Mapping[str, Any], where: str | None = None) -> None:
        """Reject unknown option names and bad values before any training starts.

        Constructors must stay cheap (store options; no data, no training): building one runs the
        cross-option checks a type cannot express."""
        from bench.errors import ConfigError
        from bench.options import validate

        where = where or cls.name
        validate(cls, args, where)
        try:
            cls(**args)
        except ConfigError as e:  # cross-option checks name the option already: "csgd.x: ..."
            raise ConfigError(f"{where.rpartition('.')[0] + '.' if '.' in where else ''}{e}") from e
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: bad option value ({e})") from e

    @classmethod
    def extra_cost_s(cls, spec) -> float | None:
        """Seconds of non-training work per cell on this device (searches, feature extraction),
        for `bench plan`; None = negligible or unknown. Price it with bench.probe.forward_seconds."""
        return None

    @classmethod
    def train_cost_factor(cls, spec) -> float:
        """For `bench plan`: the method's training time over plain SGD epochs of the model it
        trains (the unpruned net when it trains from scratch or the full model), e.g. a costlier
        optimizer step or a net that shrinks while training. Probe it with bench.probe.step_ratio
        and pruned_time_share. Default 1."""
        return 1.0

    @classmethod
    def report_extras(cls, runs: Any, out_dir: Path) -> list[Path]:
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
        """{unit root layer name: importance per output channel}; higher means keep. Every unit of
        `task.units(model)` needs an entry (the planner names any left out); `KEEP` leaves one whole."""
        raise NotImplementedError


class FullMethod(Method):
    kind: ClassVar[str] = "full"

    def prune(self, model: nn.Module, task: "Task", target: Target) -> nn.Module:
        raise NotImplementedError


class Task:
    """The harness's services for one run. Only train/val data are exposed: test is for final numbers.

    Data: `batches`, `normalize`, `data.train/.val` (raw uint8 `Split`s; `data.test` raises),
    `evaluate`. Training: `train` (hooks, optimizer factory, LR), `optimizer`. Structure: `units`,
    `plan`, `prune_channels`, `merge_channels`. Cost: `cost`, `predictor`, `macs`, `params`."""

    def __init__(self, *, spec, data, device: str, example: torch.Tensor, logger, trainer,
                 target: Target | None = None):
        from bench.datasets import TrainVal

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
        import copy

        self.references[key] = copy.deepcopy(model).cpu()

    def evaluate(self, model: nn.Module, split: str = "val", limit: int | None = None) -> tuple[float, float]:
        """(mean loss, top-1 accuracy) on 'train' or 'val'."""
        from bench.training import evaluate

        part = self._split(split)
        if limit:
            part = part.subset(limit, self.seed)
        return evaluate(model, part, self.data.info, device=self.device)

    def batches(self, split: str = "train", batch_size: int = 256, *, shuffle: bool = False,
                limit: int | None = None, augment: bool = False, drop_last: bool = False,
                generator: torch.Generator | None = None) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised (x, y) batches on the run's device. Pass one `generator` to successive calls
        for a fresh seeded order per pass (default: the same seeded order every call)."""
        from bench.datasets import batches

        part = self._split(split)
        if limit:
            part = part.subset(limit, self.seed)
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        return batches(part, self.data.info, batch_size, shuffle=shuffle,
                       augment_data=augment, gen=gen, device=self.device, drop_last=drop_last)

    def _split(self, split: str):
        if split not in ("train", "val"):
            from bench.datasets import SEEN_SPLITS, TEST_REFUSED

            raise ValueError(f"split {split!r}: {TEST_REFUSED if split == 'test' else SEEN_SPLITS}")
        return getattr(self.data, split)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw uint8 images (e.g. `task.data.train.x[idx]`) -> the network's input, on the run's device."""
        from bench.datasets import normalize

        return normalize(x.to(self.device), self.data.info)

    def optimizer(self, model: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
        """The fine-tune recipe's SGD over `model` (no weight decay on BN/biases), for methods that
        run their own steps; build parameter groups yourself and pass `make_optimizer` to `train`
        when you need different ones."""
        from bench.training import sgd

        return sgd(model, self.spec.finetune, lr)

    # -- structure ------------------------------------------------------------------------------
    def units(self, model: nn.Module, include_coupled: bool | None = None):
        """{root layer name: Unit} of `model`; each Unit lists its member, consumer and other layers."""
        from bench.surgery import find_units

        inc = self.spec.pruning.include_coupled if include_coupled is None else include_coupled
        return find_units(model, self.example, include_coupled=inc)

    def prune_channels(self, model: nn.Module, keep: Mapping[str, Sequence[int]]) -> nn.Module:
        from bench.surgery import prune

        return prune(model, keep, self.example.to(next(model.parameters()).device))

    def merge_channels(self, model: nn.Module, units: Mapping[str, Any],
                       clusters: Mapping[str, Sequence[Sequence[int]]]) -> nn.Module:
        """One channel per cluster of each unit, consumers' input slices summed (C-SGD's merge)."""
        from bench.merge import merge

        return merge(model, units, clusters, self.example.to(next(model.parameters()).device))

    def macs(self, model: nn.Module) -> int:
        from bench.measure import count_macs

        return count_macs(model, self.example.to(next(model.parameters()).device))

    def params(self, model: nn.Module) -> int:
        from bench.measure import count_params

        return count_params(model)

    def cost(self, model: nn.Module, kind: str | None = None) -> int:
        """What the target reduces (MACs or params, `kind` defaulting to the run's target kind)."""
        from bench.measure import cost

        return cost(model, self.example.to(next(model.parameters()).device), kind or self.spec.target_kind)

    def predictor(self, model: nn.Module, units: Mapping[str, Any] | None = None,
                  kind: str | None = None) -> Callable[[Mapping[str, int]], float]:
        """Predicted cost of `model` with {unit: kept channels} (missing units whole), without surgery."""
        from bench.surgery import CostModel

        units = self.units(model) if units is None else units
        return CostModel(model, self.example.to(next(model.parameters()).device), units).of(
            kind or self.spec.target_kind)

    def plan(self, model: nn.Module, scores: Mapping[str, torch.Tensor], target: Target | None = None,
             *, comparable: bool = False, **pruning):
        """Keep-lists meeting `target` (default: the run's) from per-unit scores (every unit, or
        `KEEP`), with the grid's pruning settings; keyword overrides replace some of them (e.g.
        `ranking="per_layer"`)."""
        from bench.driver import plan_keep

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
