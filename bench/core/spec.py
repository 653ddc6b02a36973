"""What one grid cell is: its training recipes, pruning settings and latency passes, and the frozen
`RunSpec` whose canonical JSON hash is the run id.

These are data types every layer shares (training reads a `TrainConfig`, the driver a
`PruningConfig`, a plugin its `task.spec`), so they live in the core; turning a YAML grid into
them is bench.run.config's job, which the core never imports.
The run id hashes only what changes the result (method, data, model, seed, target, recipes),
not where files live, so a rerun of the same spec is recognised wherever it runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

TARGET_KINDS = ("macs", "params")
RANKINGS = ("per_layer", "global")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """One training recipe, used for pretraining and for fine-tuning."""

    epochs: int = 1
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "cosine"
    augment: bool = True
    precision: str = "fp32"         # bf16: autocast forward/loss in bfloat16 (CUDA, and CPUs that support it)


@dataclass(frozen=True)
class PruningConfig:
    """How the harness turns a score method's scores into keep-lists (docs/methods.md §0)."""

    ranking: str = "per_layer"      # per_layer: same fraction per unit; global: normalised scores across units
    rounds: int = 1                 # 1 = one-shot; K = iterative, K x (prune to k/K of the target, fine-tune)
    include_coupled: bool = False   # prune residual groups too (Li et al. prune block-internal convs only)
    max_layer_prune: float = 0.9    # never remove more than this fraction of one unit
    tolerance: float = 0.015        # |achieved - target| allowed, as a fraction
    round_to: int = 1               # keep unit widths a multiple of this (8 suits SIMD kernels)


@dataclass(frozen=True)
class LatencyConfig:
    """The CPU latency passes of every run: timed forwards per batch size, after `warmup` untimed ones.

    The defaults are what reported numbers use; fewer repeats make a smoke run or a test cheap
    (its latencies are then noisy, and the run id differs so they never mix with real ones)."""

    repeats_b1: int = 30
    repeats_b64: int = 10
    warmup: int = 3

    def repeats(self) -> dict[int, int]:
        """Batch size -> timed forwards."""
        return {1: self.repeats_b1, 64: self.repeats_b64}


@dataclass(frozen=True)
class RunSpec:
    """One grid cell. Frozen and hashable: its canonical JSON hash is the run id."""

    method: str                      # the plugin name
    dataset: str
    model: str
    seed: int
    target_kind: str
    target: float
    method_args: tuple = ()          # sorted (key, value) pairs
    model_args: tuple = ()
    pretrain: TrainConfig = TrainConfig()
    finetune: TrainConfig = TrainConfig()
    pruning: PruningConfig = PruningConfig()
    val_size: int = 5000
    train_subset: int | None = None
    test_subset: int | None = None
    experiment: str = "default"
    variant: str = ""                # the `methods:` key, "name" or "name@label"; "" = the plain method
    latency: LatencyConfig = LatencyConfig()
    threads: int = 1                 # torch intra-op threads: their count changes the float sums, so the numbers

    def __post_init__(self):
        if not self.variant:
            object.__setattr__(self, "variant", self.method)

    def canonical(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method_args"] = dict(self.method_args)
        d["model_args"] = dict(self.model_args)
        if self.variant == self.method:  # plain rows keep the run ids they had before variants existed
            del d["variant"]
        if self.latency == LatencyConfig():  # likewise runs measured with the default passes
            del d["latency"]
        if self.threads == 1:  # and runs at the default thread count (what the pool always gave them)
            del d["threads"]
        return d

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def model_label(self) -> str:
        args = dict(self.model_args)
        return self.model + "".join(f"-{k}{v}" for k, v in sorted(args.items()))

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.dataset}/{self.model_label}/{self.target_kind}-{self.target:g}/s{self.seed}"

    def flat_params(self) -> dict[str, str]:
        """The spec as flat MLflow params (a.b.c = value)."""
        out: dict[str, str] = {}

        def walk(prefix: str, v: Any):
            if isinstance(v, dict):
                for k, sub in v.items():
                    walk(f"{prefix}.{k}" if prefix else k, sub)
            else:
                out[prefix] = str(v)
        walk("", self.canonical())
        out["variant"] = self.variant
        return out
