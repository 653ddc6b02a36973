"""The method contract: what a pruning method is (`Method`, `ScoreMethod`, `FullMethod`), the
target it prunes to (`Target`), the score that keeps a unit whole (`KEEP`) and the published
numbers a method is graded against (`PaperResult`).

Plugins see these through bench.api; they live in the core because the registry and the score
driver below the api need them too (a registry that imported bench.api, which imports the
registry, was the cycle issue 29 found). `Task`, the harness's services for one run, stays in
bench.api.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import nn

from bench.core.options import validate
from bench.errors import ConfigError

# `task: "Task"` below names bench.api.Task, which is built on this module: a string, never imported here.


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


# A unit's score that leaves it whole: `scores[name] = KEEP`. Leaving a unit out of the scores is an
# error instead, so that a forgotten unit never silently stays whole while the others are cut harder.
KEEP: Any = _Keep()


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


@dataclass(frozen=True)
class PaperResult:
    """One published row that the report grades the declaring method's runs against
    (docs/methods.md §7). `delta_pp` = pruned - baseline accuracy in percentage points.

    `protocol` lists the logged run settings the paper fixes, e.g. PLS+VIP's global threshold
    over K rounds; `model` is (bench.core.models name, args) of the paper's network, None when the
    suite has no such network or dataset."""

    ref: str                         # the row's number in docs/methods.md §7
    method: str                      # the paper's name for its method, as the table prints it
    setting: str
    dataset: str | None
    model: tuple[str, tuple] | None
    base: float | None = None
    pruned: float | None = None
    delta_pp: float | None = None
    flops_pct: float | None = None
    params_pct: float | None = None
    source: str = ""
    note: str = ""
    protocol: tuple[tuple[str, str], ...] = ()  # (logged run param, the paper's value)
    label: str = ""  # graded against the variant `<method>@<label>` (the grid's run of this protocol)


class Method:
    """Base of every plugin. Subclasses set `name` and declare their options as typed keyword
    parameters of `__init__` with defaults (`Literal` choices, `Annotated[float, Range(...)]`
    bounds); the harness validates config values against them before building the method.

    The report reads `display_name`, `variant_labels` and `paper_results` from the class that
    sets them, never from a base class: a subclass is another method, with its own name and papers."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_pretrained: ClassVar[bool] = True   # False: trains from scratch within the total epoch budget
    needs_finetune: ClassVar[bool] = True     # False: prune() spends the fine-tune budget itself
    # The method's own defaults for the grid's pruning settings; precedence:
    # grid `pruning:` < pruning_defaults < a variant's `pruning:`.
    pruning_defaults: ClassVar[dict] = {}
    display_name: ClassVar[str] = ""               # the report's name for the method; "" = `name`
    variant_labels: ClassVar[dict[str, str]] = {}  # variant label -> the report's words: {"no_p": "P = I"}
    paper_results: ClassVar[tuple[PaperResult, ...]] = ()  # the published rows its runs are graded against

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def checked(self, *args, **kw):  # options are checked wherever a method is built
            bound = inspect.signature(init).bind(self, *args, **kw).arguments
            validate(cls, {k: v for k, v in list(bound.items())[1:]}, type(self).name or cls.__name__)
            init(self, *args, **kw)
        cls.__init__ = checked

    @classmethod
    def declared(cls, attr: str) -> Any:
        """The report metadata `attr` (display_name, variant_labels, paper_results) as this very
        class sets it, else Method's empty default: it is not inherited."""
        return vars(cls).get(attr, getattr(Method, attr))

    @classmethod
    def validate_args(cls, args: Mapping[str, Any], where: str | None = None) -> None:
        """Reject unknown option names and bad values before any training starts.

        Constructors must stay cheap (store options; no data, no training): building one runs the
        cross-option checks a type cannot express."""
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
        for `bench plan`; None = negligible or unknown. Price it with bench.api.forward_seconds."""
        return None

    @classmethod
    def train_cost_factor(cls, spec) -> float:
        """For `bench plan`: the method's training time over plain SGD epochs of the model it
        trains (the unpruned net when it trains from scratch or the full model), e.g. a costlier
        optimizer step or a net that shrinks while training. Probe it with bench.api.step_ratio
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
