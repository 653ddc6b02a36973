"""PLS + VIP filter pruning (Jordao et al., arXiv 1810.07610; docs/methods.md §2; code arturjordao/PruningNeuralNetworks).

A filter matters when it helps a linear latent model predict the class. Per round (the harness
repeats score -> cut -> fine-tune for `pruning.rounds` = the paper's K iterations):
1. Features: every conv of the network (the paper's "all filters", whether prunable or not) is
   hooked *before* BN; each output channel is reduced to one scalar per image by global max
   (default) or average pooling, inside the hook, so only [batch, channels] ever leaves it and a
   50 000-image sample costs n x F floats, never feature maps. Suite extension [X]: linear units
   (LeNet's fc layers, VGG's hidden fc) contribute their pre-activation outputs as-is. The sample is
   `samples` labelled images of the *training* split (the paper's code uses the whole train set).
2. PLS regression X -> one-hot Y with `components` (h) components, X and Y standardised
   (`PLSRegression(scale=True)`, NIPALS, as in the paper's code).
3. VIP_j = sqrt(F * sum_k S_k (W_jk / |W_k|)^2 / sum_k S_k), S_k = (t_k.t_k)(q_k.q_k): the sum
   of squares of Y that component k explains, spread over the features by their squared
   normalised weights, so mean_j VIP_j^2 = 1 and VIPs are on one network-wide scale.
4. A residual group (`Unit.members` > 1, only with `include_coupled`) shares one decision; its
   score is the group VIP sqrt(mean_m VIP_m^2) over the members' columns, which keeps the VIP
   scale (and the "VIP < 1 = below average" reading) instead of inventing a new one.

Paper protocol by default (`pruning_defaults`, which override the grid's `pruning:`; a variant's
own `pruning:` overrides them, e.g. `pls_vip@per_layer: {pruning: {ranking: per_layer, rounds: 1}}`):
- global threshold (paper step 4: remove every allowed filter with VIP <= theta, network-wide):
  VIPs share one network-wide scale, so the method declares `comparable_scores = True` and the
  driver's `ranking: global` removes channels in raw-VIP order, i.e. by one global threshold theta,
  which the driver picks to hit the MACs/params target (deviation: the paper picks theta for a
  fraction p of *filters*);
- K = `PAPER_ROUNDS` = 8 iterations of (score, cut, fine-tune), the README's iteration count for
  ResNet-56 at ~50 % FLOPs (52.56 % after 8); the harness splits the one fine-tune budget over
  the rounds (`runner.finetune_split`), so K rounds cost what one-shot costs.
Under `per_layer` every unit loses the same share in VIP order. Deviation:
where the paper skips a layer that theta would empty, the driver keeps max(1, (1 - max_layer_prune)
x size) channels of it and goes on removing elsewhere.

Allowed layers: `layers: all` (default) scores every unit the harness lists, so PLS competes on
the same layers as the other methods; `layers: paper` scores conv units only and never the last
conv (the VGG rule of the paper's code); ResNet block-internal convs only is the harness's default
(`include_coupled: false`). Features always include every conv, as in the paper.
"""
from __future__ import annotations

from typing import Annotated, ClassVar, Iterable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from bench.api import PaperResult, Range, ScoreMethod, Task, Unit, eval_mode, output_layer, register

PAPER_ROUNDS = 8  # docs/methods.md §2: K iterations; README row ResNet-56 / CIFAR-10 at 52.56 % FLOPs = iteration 8


def paper_protocol(rounds: int) -> tuple[tuple[str, str], ...]:
    """The logged settings a paper row requires: one network-wide VIP threshold, K rounds."""
    return (("pruning.ranking", "global"), ("pruning.rounds", str(rounds)))


def vip(x_scores: np.ndarray, x_weights: np.ndarray, y_loadings: np.ndarray) -> np.ndarray:
    """VIP of every X column from a fitted PLS model: T [n, h], W [F, h], Q [classes, h] -> [F]."""
    s = (x_scores ** 2).sum(0) * (y_loadings ** 2).sum(0)          # S_k, [h]
    w = x_weights / np.linalg.norm(x_weights, axis=0, keepdims=True)
    return np.sqrt(x_weights.shape[0] * (w ** 2 @ s) / s.sum())


def fit_vip(x: np.ndarray, y: np.ndarray, classes: int, components: int = 2) -> tuple[np.ndarray, float]:
    """PLS of one-hot labels on standardised features -> (VIP per column, share of Y's variance explained).

    The explained share sum_k S_k / |Y_std|^2 is logged per round: near 0, the VIPs rank noise.
    """
    from sklearn.cross_decomposition import PLSRegression  # on use: every worker imports every plugin

    onehot = np.eye(classes, dtype=np.float64)[y]
    h = min(components, x.shape[1], len(y) - 1)  # PLS needs h <= F and h < n
    pls = PLSRegression(n_components=h, scale=True).fit(x, onehot)
    v = vip(pls.x_scores_, pls.x_weights_, pls.y_loadings_)
    s = (pls.x_scores_ ** 2).sum(0) * (pls.y_loadings_ ** 2).sum(0)
    std = onehot.std(0, ddof=1)
    total = float((((onehot - onehot.mean(0)) / np.where(std > 0, std, 1.0)) ** 2).sum())
    return v, float(s.sum()) / total if total else 0.0


def collect_features(model: nn.Module, layers: Sequence[str], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     n: int, pooling: str = "max") -> tuple[np.ndarray, np.ndarray, dict[str, slice]]:
    """Globally pooled outputs of `layers` over at most `n` images -> (X [n, F] float32, y [n], columns per layer).

    Each hook reduces its output to [batch, channels] at once (a conv map by max/mean over space, a
    linear output as it is) and writes it into a preallocated buffer, so no feature map outlives
    its layer's forward call -- also why an in-place ReLU after the conv cannot corrupt the value.
    """
    modules = dict(model.named_modules())
    widths = {}
    for name in layers:
        m = modules[name]
        widths[name] = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
    cols, start = {}, 0
    for name in layers:
        cols[name] = slice(start, start + widths[name])
        start += widths[name]
    x = np.empty((n, start), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    row = [0, 0]  # [first, end) rows of the current batch

    def hook(name: str):
        def fn(_module, _inputs, out: torch.Tensor) -> None:
            out = out.detach().float()
            if out.ndim > 2:
                out = out.flatten(2)
                out = out.amax(-1) if pooling == "max" else out.mean(-1)
            x[row[0]:row[1], cols[name]] = out.cpu().numpy()
        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        with eval_mode(model), torch.no_grad():
            for xb, yb in batches:
                if row[1] >= n:
                    break
                row[0], row[1] = row[1], min(n, row[1] + len(yb))
                y[row[0]:row[1]] = yb[: row[1] - row[0]].cpu().numpy()
                model(xb[: row[1] - row[0]])
    finally:
        for h in handles:
            h.remove()
    return x[:row[1]], y[:row[1]], cols


def group_vip(member_vips: Sequence[np.ndarray]) -> np.ndarray:
    """One score per channel for coupled layers: sqrt(mean over members of VIP^2)."""
    return np.sqrt(np.mean(np.stack(member_vips) ** 2, axis=0))


@register
class PLSVIP(ScoreMethod):
    name = "pls_vip"
    summary = "VIP of each filter's pooled activation in a PLS model of the labels (Jordao et al.)"
    display_name = "PLS+VIP"
    variant_labels: ClassVar[dict[str, str]] = {"per_layer": "per layer, one shot"}
    paper_results = (
        PaperResult("2", "PLS+VIP", "ResNet-56 / CIFAR-10 (it=8)", "cifar10", ("resnet56", ()),
                    delta_pp=0.62, flops_pct=52.56, source="[R] README", protocol=paper_protocol(8)),
        PaperResult("2", "PLS+VIP", "ResNet-50 / ImageNet (it=10)", "imagenet", ("resnet50", ()),
                    delta_pp=-1.01, flops_pct=44.50, source="[R] README", protocol=paper_protocol(10)),
        # VGG-16 / CIFAR-10 rows of the official README (github.com/arturjordao/PruningNeuralNetworks,
        # commit 0529168, "Accuracy ↓" -0.63 and 1.50 pp; its first 2018 version, df9c97f, gave 67.28 / 90.69 %)
        *[PaperResult("2", "PLS+VIP", f"VGG-16 / CIFAR-10 (it={k})", "cifar10", ("vgg", (("depth", 16),)),
                      delta_pp=d, flops_pct=f, source="[R] README 0529168", protocol=paper_protocol(k),
                      label=f"it{k}")
          for k, d, f in ((5, 0.63, 67.25), (9, -1.50, 90.66))],
    )
    comparable_scores = True
    pruning_defaults: ClassVar[dict] = {"ranking": "global", "rounds": PAPER_ROUNDS}

    def __init__(self, samples: Annotated[int, Range(2)] = 10000, components: Annotated[int, Range(1)] = 2,
                 pooling: Literal["max", "avg"] = "max", layers: Literal["all", "paper"] = "all",
                 batch_size: Annotated[int, Range(1)] = 256):
        self.samples = samples
        self.components = components
        self.pooling = pooling
        self.layers = layers
        self.batch_size = batch_size
        self._round = 0

    def _allowed(self, model: nn.Module, units: dict[str, Unit]) -> dict[str, Unit]:
        if self.layers == "all":
            return units
        modules = dict(model.named_modules())
        out_name = output_layer(model)
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d) and n != out_name]
        last = convs[-1] if convs else None
        return {n: u for n, u in units.items()
                if all(isinstance(modules[m], nn.Conv2d) for m in u.members) and last not in u.members}

    def score(self, model: nn.Module, task: Task) -> dict[str, torch.Tensor]:
        units = self._allowed(model, task.units(model))
        modules = dict(model.named_modules())
        out_name = output_layer(model)
        linear_members = {m for u in units.values() for m in u.members if isinstance(modules[m], nn.Linear)}
        feature_layers = [n for n, m in modules.items() if n != out_name
                          and (isinstance(m, nn.Conv2d) or n in linear_members)]
        n = min(self.samples, len(task.data.train))
        x, y, cols = collect_features(model, feature_layers, task.batches("train", self.batch_size, limit=n),
                                      n, self.pooling)
        out = modules[out_name]
        classes = out.out_channels if isinstance(out, nn.Conv2d) else out.out_features
        v, explained = fit_vip(x, y, classes, self.components)
        self._round += 1
        task.log_metric("pls_vip_y_explained", explained, step=self._round)
        task.log_metric("pls_vip_samples", float(len(y)), step=self._round)

        scores = {name: torch.from_numpy(group_vip([v[cols[m]] for m in u.members])) for name, u in units.items()}
        return scores

    @classmethod
    def extra_cost_s(cls, spec) -> float | None:
        """Feature extraction for `bench plan`: one forward of `samples` training images per
        scoring round (the PLS fit itself is not priced)."""
        from bench.api import forward_seconds

        m = cls(**dict(spec.method_args))
        return forward_seconds(spec, min(m.samples, spec.train_subset or m.samples) * spec.pruning.rounds)
