"""Centripetal SGD (Ding et al., CVPR 2019, arXiv 1904.03837; methods.md §3).

1. Widths: one uniform width fraction for all units, the one whose analytic cost
   (`bench.surgery.CostModel`) is nearest the grid target; if channel rounding leaves it outside
   the tolerance, single channels are added/removed greedily until it is inside (deviation: the
   paper sets widths by hand, e.g. 5/8 of every layer).
2. Clusters: k-means (seeded) on each unit's flattened filters, or `even` consecutive groups.
   A coupled residual unit gets one clustering over the concatenated rows of all its members,
   which is the paper's pacesetter/follower constraint. Which units exist follows the grid
   (`task.units`: residual groups only with `pruning.include_coupled`).
3. Training: every step, the gradient of each clustered kernel becomes
   mean_H ∂L/∂W + η·W_i + ε·(W_i − mean_H W) (weight decay η folded in, the optimizer's own decay
   off for these tensors); BN γ/β and biases get the same with 0.1·ε and no decay; then the
   recipe's momentum SGD step. Members of a cluster receive identical task gradients, so their
   spread only contracts: it is logged as `csgd/cluster_dist` (Σ‖W_i − mean_H W‖² over kernels)
   and `csgd/cluster_dist_affine` (biases, BN).
4. Merge (`bench.merge`): one channel per cluster, consumers' input slices summed — lossless once
   the clusters are identical, so `needs_finetune = False`.

Budget: the centripetal training *is* the fine-tune. It starts from the shared pretrained base and
runs `task.finetune_epochs` epochs of the fine-tune recipe, so C-SGD spends pretrain + fine-tune
epochs like every other method (the paper trains 600 CIFAR epochs; this cut is reported).

ε: the paper's 3e-3 (ResNet-56 / CIFAR-10, methods.md §3) by default. Within a cluster the spread
d obeys d ← d − lr_t(η + ε)d (plus momentum), so after training it has shrunk by about
exp(−ε·Σ_t lr_t / (1 − momentum)); the paper's 600 epochs make that astronomically small, a
budget of a few epochs does not, and then the merge is lossy. Every run therefore logs the
within-cluster distance just before the merge (`csgd.cluster_dist_before_merge_max` / `_mean`:
per cluster, RMS distance of the members to their mean divided by the mean's norm; 0 = identical).
`epsilon: auto` (variant `csgd@fast_eps`) sizes ε to the budget instead: the slowest tied tensors
(biases and BN at `bias_factor`·ε) shrink their spread 1000× (kernels: far more), capped at
lr·ε ≤ 0.5 — 90-540× the paper's ε on the quick/paper presets, so clusters collapse within steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Callable, Literal, Mapping

import numpy as np
import torch
from torch import nn

from bench.api import (FitContext, FullMethod, Hook, Range, Target, Task, TrainConfig, Unit, check_clusters,
                       cluster_labels, lr_factor, register)

PAPER_EPSILON = 3e-3  # methods.md §3, ResNet-56 / CIFAR-10
AUTO_SHRINK = 1e3      # spread reduction (norm) that auto-ε aims at for the slowest tied tensors
MAX_LR_EPS = 0.5       # cap on lr·ε: far inside heavy-ball stability (lr·ε < 2(1 + momentum))


def target_widths(model: nn.Module, task: Task, units: Mapping[str, Unit], target: Target) -> dict[str, int]:
    """Kept channels per unit: the harness planner's uniform per-layer cut that meets the target
    (equal scores, so only the widths matter; k-means then decides which filters merge)."""
    flat = {n: torch.zeros(u.size) for n, u in units.items()}
    plan = task.plan(model, flat, target, ranking="per_layer")
    return {n: len(plan.keep.get(n, range(u.size))) for n, u in units.items()}


def cluster_unit(model: nn.Module, unit: Unit, k: int, method: str, seed: int) -> list[list[int]]:
    """`k` clusters of the unit's channels; a coupled unit is clustered on all members' rows at once."""
    if k >= unit.size:
        return [[i] for i in range(unit.size)]
    if method == "even":
        return [c.tolist() for c in np.array_split(np.arange(unit.size), k)]
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    modules = dict(model.named_modules())
    rows = torch.cat([modules[m].weight.detach().flatten(1).double().cpu() for m in unit.members], dim=1).numpy()
    # one thread: sklearn's threaded Lloyd merges per-thread partial sums in whatever order the
    # threads finish, so the same seed could give other clusters (79.54 % vs 79.34 % in issue 20)
    with threadpool_limits(limits=1):
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(rows).labels_
    clusters = [np.flatnonzero(labels == c).tolist() for c in range(k)]
    clusters = [c for c in clusters if c]
    while len(clusters) < k:  # k-means can leave clusters empty when filters coincide: split the largest
        big = max(clusters, key=len)
        clusters.append([big.pop()])
    return check_clusters(clusters, unit.size, where=unit.name)


@dataclass
class _Tied:
    """One parameter tensor whose rows (dim 0) are tied by a unit's clusters."""

    name: str
    labels: torch.Tensor
    counts: torch.Tensor
    eps: float
    decay: float
    kernel: bool
    param: nn.Parameter | None = None

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Each row replaced by its cluster's mean row."""
        sums = torch.zeros((len(self.counts),) + t.shape[1:], dtype=t.dtype, device=t.device)
        sums.index_add_(0, self.labels, t)
        return (sums / self.counts.view(-1, *([1] * (t.dim() - 1))))[self.labels]


class Centripetal(Hook):
    """The C-SGD gradient transform (methods.md §3 step 2) plus convergence logging."""

    def __init__(self, tied: list[_Tied], log: Callable[[str, float, int], None], log_every: int = 20):
        self.tied = tied
        self.log = log
        self.log_every = log_every
        self.first: float | None = None
        self.last: float | None = None
        self.logged_step = -1

    @property
    def names(self) -> set[str]:
        return {t.name for t in self.tied}

    @torch.no_grad()
    def distances(self) -> tuple[float, float]:
        """(Σ‖W_i − mean_H W‖² over kernels, the same over biases and BN γ/β)."""
        kern = aff = 0.0
        for t in self.tied:
            d = float((t.param - t.mean(t.param)).pow(2).sum())
            if t.kernel:
                kern += d
            else:
                aff += d
        return kern, aff

    def _log(self, step: int) -> None:
        if step == self.logged_step:
            return
        self.logged_step = step
        kern, aff = self.distances()
        self.first = kern if self.first is None else self.first
        self.last = kern
        self.log("csgd/cluster_dist", kern, step)
        self.log("csgd/cluster_dist_affine", aff, step)

    def on_fit_start(self, ctx: FitContext) -> None:
        params = dict(ctx.model.named_parameters())
        for t in self.tied:
            t.param = params[t.name]
            t.labels, t.counts = t.labels.to(t.param.device), t.counts.to(t.param.device, t.param.dtype)
        if self.first is None:  # not when resuming: the first attempt logged this step
            self._log(ctx.step)

    def state_dict(self) -> dict:
        """Where convergence logging stands; the clusters are recomputed, identically, on resume."""
        return {"first": self.first, "last": self.last, "logged_step": self.logged_step}

    def load_state_dict(self, state: dict) -> None:
        self.first, self.last, self.logged_step = state["first"], state["last"], state["logged_step"]

    @torch.no_grad()
    def transform_grads(self, ctx: FitContext) -> None:
        for t in self.tied:
            p, g = t.param, t.param.grad
            if g is None:
                continue
            new = t.mean(g).add_(p - t.mean(p), alpha=t.eps)
            if t.decay:
                new.add_(p, alpha=t.decay)
            g.copy_(new)

    @torch.no_grad()
    def relative_spreads(self, model: nn.Module) -> torch.Tensor:
        """Per cluster (>= 2 members) of every tied kernel: RMS distance of the members to the
        cluster mean over the mean's norm; 0 when the merge is exactly lossless."""
        out, params = [], dict(model.named_parameters())
        for t in self.tied:
            if not t.kernel:
                continue
            w = params[t.name].flatten(1)
            labels, counts = t.labels.to(w.device), t.counts.to(w.device, w.dtype)
            mean = (torch.zeros(len(counts), w.shape[1], dtype=w.dtype, device=w.device)
                    .index_add_(0, labels, w) / counts[:, None])[labels]
            sq = torch.zeros(len(counts), dtype=w.dtype, device=w.device).index_add_(
                0, labels, (w - mean).pow(2).sum(1))
            centre = torch.zeros_like(sq).index_add_(0, labels, mean.pow(2).sum(1)) / counts
            big = counts > 1
            out.append(((sq[big] / counts[big]).sqrt() / centre[big].sqrt().clamp_min(1e-12)).double().cpu())
        return torch.cat(out) if out else torch.zeros(1, dtype=torch.float64)

    def on_step_end(self, ctx: FitContext) -> None:
        if (ctx.step + 1) % self.log_every == 0:
            self._log(ctx.step + 1)

    def on_fit_end(self, ctx: FitContext) -> None:
        self._log(ctx.step)


def tie(model: nn.Module, units: Mapping[str, Unit], clusters: Mapping[str, list[list[int]]], eps: float,
        bias_factor: float, weight_decay: float) -> list[_Tied]:
    """The tensors to transform: member kernels (ε, decay η), member biases and BN γ/β (bias_factor·ε, no decay)."""
    modules = dict(model.named_modules())
    names = {p: n for n, p in model.named_parameters()}
    tied = []
    for name, groups in clusters.items():
        unit = units[name]
        if len(groups) == unit.size:
            continue
        labels = cluster_labels(groups, unit.size)
        counts = torch.bincount(labels, minlength=len(groups))
        for layer in unit.members + unit.others:
            mod = modules[layer]
            for attr in ("weight", "bias"):
                p = getattr(mod, attr, None)
                if not isinstance(p, nn.Parameter):
                    continue
                kernel = attr == "weight" and layer in unit.members
                tied.append(_Tied(names[p], labels, counts, eps if kernel else bias_factor * eps,
                                  weight_decay if kernel else 0.0, kernel))
    return tied


def auto_epsilon(cfg: TrainConfig, lr: float, steps: int, slowest: float) -> float:
    """ε at which the slowest tied tensors (at `slowest`·ε) are predicted to shrink their spread `AUTO_SHRINK`×."""
    lr_sum = lr * sum(lr_factor(cfg, s / steps) for s in range(steps))
    eps = math.log(AUTO_SHRINK) * (1 - cfg.momentum) / (slowest * max(lr_sum, 1e-12))
    return min(eps, MAX_LR_EPS / lr)


@register
class CSGD(FullMethod):
    name = "csgd"
    summary = "Centripetal SGD (Ding 2019): pull clustered filters together while training, then merge losslessly"
    needs_finetune = False

    def __init__(self, epsilon: Annotated[float, Range(0, lo_open=True)] | Literal["auto"] = PAPER_EPSILON,
                 clustering: Literal["kmeans", "even"] = "kmeans", bias_factor: Annotated[float, Range(0)] = 0.1,
                 lr: Annotated[float, Range(0, lo_open=True)] | None = None, log_every: Annotated[int, Range(1)] = 20):
        self.epsilon = epsilon
        self.clustering = clustering
        self.bias_factor = float(bias_factor)
        self.lr = lr
        self.log_every = log_every

    def plan_clusters(self, model: nn.Module, task: Task, target: Target) -> tuple[dict[str, Unit], dict]:
        """The units of the grid's pruning config and their clusters sized to meet `target`."""
        units = task.units(model)
        measure = task.predictor(model, units, target.kind)
        widths = target_widths(model, task, units, target)
        task.log_param("csgd.predicted_reduction", round(1 - measure(widths) / measure({}), 4))
        task.log_param("csgd.widths", {n: f"{widths[n]}/{u.size}" for n, u in units.items()})
        return units, {n: cluster_unit(model, u, widths[n], self.clustering, task.seed) for n, u in units.items()}

    def train(self, model: nn.Module, task: Task, units: Mapping[str, Unit],
              clusters: Mapping[str, list[list[int]]]) -> tuple[nn.Module, Centripetal]:
        """`task.finetune_epochs` epochs of the fine-tune recipe with the centripetal transform."""
        cfg = task.spec.finetune
        lr = self.lr or cfg.lr
        epochs = task.finetune_epochs
        steps = epochs * max(1, len(task.data.train) // cfg.batch_size)
        slowest = min(1.0, self.bias_factor) if self.bias_factor > 0 else 1.0
        eps = auto_epsilon(cfg, lr, steps, slowest) if self.epsilon == "auto" else float(self.epsilon)
        task.log_param("csgd.epsilon_used", eps)
        hook = Centripetal(tie(model, units, clusters, eps, self.bias_factor, cfg.weight_decay),
                           task.log_metric, self.log_every)

        def make_optimizer(m: nn.Module) -> torch.optim.Optimizer:
            # Tied tensors: decay is inside the transform. Others: the harness's usual split.
            groups: dict[str, list] = {"tied": [], "decay": [], "no_decay": []}
            for n, p in m.named_parameters():
                groups["tied" if n in hook.names else "decay" if p.ndim > 1 else "no_decay"].append(p)
            wd = {"tied": 0.0, "decay": cfg.weight_decay, "no_decay": 0.0}
            return torch.optim.SGD([{"params": ps, "weight_decay": wd[k]} for k, ps in groups.items() if ps],
                                   lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)

        if epochs > 0 and hook.tied:
            model = task.train(model, epochs, hooks=[hook], make_optimizer=make_optimizer, lr=lr,
                               desc="centripetal").model
            if hook.first:
                task.log_metric("csgd/cluster_dist_ratio", hook.last / hook.first)
        return model, hook

    def prune(self, model: nn.Module, task: Task, target: Target) -> nn.Module:
        units, clusters = self.plan_clusters(model, task, target)
        model, hook = self.train(model, task, units, clusters)
        spreads = hook.relative_spreads(model)
        task.log_metric("csgd.cluster_dist_before_merge_max", float(spreads.max()))
        task.log_metric("csgd.cluster_dist_before_merge_mean", float(spreads.mean()))
        return task.merge_channels(model, units, clusters)
