"""RLS training + pruning (Yu et al., arXiv 2201.04813; Applied Intelligence 2023; docs/methods.md §1).

The network trains from scratch with the RLS optimizer (`methods/_rls_optim.py`: one inverse
input-autocorrelation P per conv/linear layer used as a matrix learning rate). After
`epochs_before_prune` epochs the input channels of every layer are scored by combining P with
the weights, the lowest `ratio` of each unit is cut, P is shrunk to the kept inputs and training
goes on; the next cut waits until the pruned net has recovered the reference (validation) loss
or accuracy. The whole run spends exactly `task.total_epochs` epochs (= pretrain + fine-tune of
the other methods), so the harness neither pretrains nor fine-tunes for it.

Provenance [A] (abstracts only): RLS-trained net, P-and-W channel scores, layer-wise removal of
a preset ratio, re-prune only after recovery ("test loss back to the last unpruned level"),
adaptive total amount. Ours [X]: every equation and default below, namely
- score (`score='diag'`): s_c = Σ_{j∈J_c} ‖W_{j,:}‖² / P_jj, the OBS saliency with Hessian P⁻¹
  summed over channel c's input rows J_c (k·k rows of a conv, H·W rows of a linear after a
  flatten); `score='block'`: tr(W_Jᵀ P_JJ⁻¹ W_J). A residual group sums over all its consumers.
- P after a cut (`shrink='schur'`): P_KK − P_KD P_DD⁻¹ P_DK = inv(R_KK); or `'submatrix'`: P_KK.
- `mode='target'` (the grid's fairness rule, a deviation from the paper's adaptive amount): the
  cut that would reach the grid's MACs/params target is sized by the harness planner so that the
  measured reduction lands in [target, target + tolerance]; if recovery is too slow, the cut to
  the target is forced at epoch total − `recovery_epochs` regardless; no cut after the target;
  the final net (trained at the target width until the budget ends) is returned.
  `mode='adaptive'` (the paper): cut at every recovery, ignore the target; at the end return the
  last net that met the criterion (`rollback`).
- the recovery test uses the validation split, never test data (docs/methods.md §1).
- raw-input pruning (the paper's FNN features) is not offered: the harness feeds fixed-shape
  images, so the first layer's input channels are never cut.

Default hyper-parameters [X] (the papers' values were not found). With the average
approximation, Σ_t N_t ū_t ū_tᵀ ≈ T·N·μμᵀ + T·Cov(u): P shrinks fast along the mean input μ
and slowly elsewhere (weight 1 per batch against 1/α), staying near α; the step there is SGD
with lr α·η·M (M = batch size; ×½ for MSE), while along the excited directions
P ≈ (Σ N·ūūᵀ)⁻¹ no longer depends on α and η alone scales the RLS step (η = 1: the layer's
least-squares step). λ = 1 (λ < 1 would grow P as α/λᵗ in the never-excited directions, a
rising SGD lr there), E₀ = 2, r = 0.2, η not annealed (`anneal=False`: the recovery after a cut
needs the step). Picked on real MNIST (LeNet-5, 6 epochs at batch 128, cut to -50 % MACs),
final validation accuracy:
- CE (default): α = 3e-4, η = 10 (α·η·128 = 0.38; α = 1e-2, η = 1, i.e. 1.28, diverged within 10
  steps). With α·η = 3e-3 fixed: η = 0.1 / 1 / 10 → 94.96 / 97.80 / 98.00 % with η annealed;
  η = 1 / 10 / 30 → 98.22 / 98.56 / 98.48 % not annealed; with the biases in P 98.38 %.
- MSE: the softmax no longer damps the curvature, so η > 1 overshoots the least-squares step:
  α = 1e-3, η = 1 with the bias in P (97.20 %; 95.62 % with biases on SGD at lr 0.05; η = 2 or
  α = 3e-3 diverged). MSE stays ~1 pp behind CE at this budget.
Those picks were made without weight decay; RLS now trains with the recipe's weight decay (L2 on
every weight, through the P-preconditioned step), as every other method does.
Δacc has two references: the SGD base (harness) and RLS's own net just before its first cut
(`rls.acc_val_unpruned`; its test accuracy is measured by the harness as `acc_rls_unpruned`
from `task.save_reference`), or the `rls@no_prune` variant trained over the same budget.

Why P hardly weighs anything in the plain row: in the average mode P⁻¹ = I/α + Σ_t N_t ū_t ū_tᵀ
sees only batch means, so with α = 3e-4 the diagonal 1/P_jj is nearly the same on every row and
s_c is nearly ‖W‖² (hence `rls@no_p` ≈ `rls`). Every cut therefore logs, for each covered layer,
`rls.invP_diag_spread.<layer>` (step = cut number) = max_j(1/P_jj) / min_j(1/P_jj) over the
layer's weight rows, of the P the score used (1 = uniform: the score ranks as ‖W‖² does; the
first layer's P is logged but never scores anything, its inputs are the image). Where that P is
not the optimizer's (exact_p, no_p) the optimizer's is logged beside it as
`rls.invP_diag_spread_optimizer.<layer>`. LeNet-5 on 6000 real MNIST images, first cut after 2
epochs at batch 64: average-mode spreads 1.07-1.54 per layer, exact 2.6-9.6 (features.3: 1.07
against 9.6).

Ablation variants (configs/ablations.yaml):
- `rls@no_p` (`use_p: false`): the same run scored with P = I.
- `rls@exact_p` (`exact_p: true`): the score uses the true per-patch autocorrelation
  P = inv(R), R = λR + Σ_rows uuᵀ per step from R₀ = I/α (u = every unfolded conv patch or linear
  input row of the batch; the bias row when `bias_in_p`). Training is left exactly the plain
  row's (average mode; R never enters a step), so the ablation isolates the scoring. R is the
  optimizer's `track_exact` statistic: accumulated at the moment P is updated, carried over a cut
  as P is (`shrink_R`: R_KK under the Schur shrink, i.e. inv(R_new) = shrink(inv(R))), saved in
  the optimizer's checkpoint state, with the same forgetting λ and no reset between cuts (λ = 1:
  every batch since the start of training, restricted to the kept inputs). Once no cut can come
  (target reached, or the deadline epoch passed) R is dropped and no longer accumulated. With
  `update: exact` the optimizer's own P is already exact and is used directly. Cost, one unfold
  and one float64 d×d Gram product per covered layer per step (float64: along the directions
  the inputs hardly excite, R stays near 1/α, some 1e-5-1e-6 of its largest eigenvalue after an
  epoch, about what a float32 Gram sum of a batch's rows gets wrong),
  median step time on one AMD EPYC core (1 intra-op thread, torch 2.14, two runs): LeNet-5 /
  MNIST batch 64, average 9.6-11.9 ms -> 41-44 ms (3.7-4.3x; SGD 6.6-9.0 ms, `update: exact`
  52-57 ms); VGG-11 x0.25 / CIFAR-10 batch 128, average 0.19-0.21 s -> 0.68-0.86 s (3.6-4.0x;
  SGD 0.13 s, `update: exact` 1.3-1.4 s). The extra time is spent only until the last cut, on
  the widths of the moment.
- `rls@no_prune` (`prune: false`): RLS over the whole budget (pretrain + fine-tune epochs), no
  cut; returns the unpruned net (the harness then records target_met = 0, as it must).

Precondition (`task.check`): `cuts_after_recovery` = the number of cuts made while the net had
not recovered (only target mode's deadline cut can be one; a deadline cut after recovery is not
counted); it passes at 0. Each cut's `rls/event<k>` param records `forced` and `recovered`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Annotated, Literal

import torch
from torch import nn

from bench.api import (ConfigError, FitContext, FullMethod, Hook, PaperResult, Range, Target, Task, min_keep, register,
                       widths)
from methods._rls_optim import RLS, shrink, shrink_R

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Per-loss defaults of lr (η), alpha (α) and bias_in_p, used where an option is left null (see
# the module docstring): CE is the paper's "combined with a first-order optimizer" mode (biases
# on SGD); MSE is classical RLS (η = 1, the bias an augmented input row of P).
Positive = Annotated[float, Range(0, lo_open=True)]
LOSS_DEFAULTS = {"ce": {"lr": 10.0, "alpha": 3e-4, "bias_in_p": False},
                 "mse": {"lr": 1.0, "alpha": 1e-3, "bias_in_p": True}}


def rows_per_channel(layer: nn.Module, channels: int) -> int:
    """Input rows of P per input channel: k·k for a conv, H·W for a linear after a flatten."""
    d = layer.weight[0].numel()
    if d % channels:
        raise ValueError(f"{d} inputs of {type(layer).__name__} do not split into {channels} channels")
    return d // channels


def channel_scores(weight: torch.Tensor, P: torch.Tensor, channels: int, form: str = "diag") -> torch.Tensor:
    """Importance of each of `channels` input channels of one layer from its weight and P (float64).

    `weight` is the layer's (C_out, C_in, k, k) or (C_out, n_in) tensor; P may carry one extra
    trailing bias row, which is ignored.
    """
    W = weight.detach().reshape(len(weight), -1).to(P.dtype).T  # rows = inputs, as in W ∈ R^{d×C_out}
    d = W.shape[0]
    b = d // channels
    if form == "diag":
        per_row = (W ** 2).sum(1) / P.diagonal()[:d]
        return per_row.reshape(channels, b).sum(1).double().cpu()
    out = torch.empty(channels, dtype=torch.float64)
    for c in range(channels):
        J = slice(c * b, (c + 1) * b)
        WJ = W[J]
        out[c] = float((WJ * torch.linalg.solve(P[J, J], WJ)).sum())
    return out


def scoring_P(opt: RLS, layer: str, use_p: bool = True, exact: bool = False) -> torch.Tensor:
    """The P a score uses for `layer`: the optimizer's (the average mode's in the plain row), the
    exact inverse autocorrelation inv(Σuuᵀ + I/α) (`exact`, the `rls@exact_p` ablation), or I
    (`use_p=False`, the `rls@no_p` ablation)."""
    if not use_p:
        P = opt.get_P(layer)
        return torch.eye(len(P), dtype=P.dtype, device=P.device)
    return opt.get_exact_P(layer) if exact else opt.get_P(layer)


def invP_diag_spread(P: torch.Tensor, d: int) -> float:
    """max_j (1/P_jj) / min_j (1/P_jj) over the d weight rows of P (a bias row is left out): 1 when
    P weighs every row alike, i.e. when the diag score ranks channels exactly as ‖W‖² does."""
    inv = 1 / P.diagonal()[:d].double()
    return float(inv.max() / inv.min())


def unit_scores(model: nn.Module, opt: RLS, units: dict, form: str, use_p: bool = True, exact: bool = False,
                Ps: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """{unit root: per-channel score}, summed over every consumer of the unit (residual groups).
    `use_p=False` scores with P replaced by I (a weight-magnitude score: the `rls@no_p` ablation);
    `exact` with the exact inverse autocorrelation (`scoring_P`); `Ps` gives each layer's P directly."""
    modules = dict(model.named_modules())
    scores = {}
    for name, unit in units.items():
        total = torch.zeros(unit.size, dtype=torch.float64)
        for consumer in unit.consumers:
            if consumer not in opt.layers:
                raise ValueError(f"consumer '{consumer}' of unit '{name}' has no RLS state (grouped conv?)")
            P = Ps[consumer] if Ps is not None else scoring_P(opt, consumer, use_p, exact)
            total += channel_scores(modules[consumer].weight, P, unit.size, form)
        scores[name] = total
    return scores


def transfer_state(old: RLS, new: RLS, old_model: nn.Module, new_model: nn.Module, units: dict,
                   keep: dict[str, list[int]], method: str) -> None:
    """Carry the optimizer state over a channel cut: P of every consumer of a cut unit shrinks to
    its kept input rows; momentum buffers of per-channel (1-D) params are sliced, others whose
    shape changed restart at zero."""
    consumer_of: dict[str, str] = {}
    for name in keep:
        for c in units[name].consumers:
            if c in consumer_of:
                raise ValueError(f"layer '{c}' reads two cut units; RLS shrink supports one")
            consumer_of[c] = name
    old_mods = dict(old_model.named_modules())
    for layer in new.layers:
        P = old.get_P(layer)
        src = consumer_of.get(layer)
        if src is not None:
            b = rows_per_channel(old_mods[layer], units[src].size)
            kept = torch.tensor(keep[src]).repeat_interleave(b) * b + torch.arange(b).repeat(len(keep[src]))
            extra = torch.arange(old_mods[layer].weight[0].numel(), len(P))  # bias row, if in P
            rows = torch.cat([kept, extra])
            P = shrink(P, rows, method)
        new.set_P(layer, P)
        if new.track_exact:  # the exact autocorrelation follows the cut as P does
            R = old.get_R(layer)
            new.set_R(layer, shrink_R(R, rows, method) if src is not None else R)
    owner = {m: n for n in keep for m in units[n].members + units[n].others}
    old_params = dict(old_model.named_parameters())
    for pname, p in new_model.named_parameters():
        q = old_params[pname]
        buf = old.state.get(q, {}).get("momentum_buffer")
        if buf is None:
            continue
        if buf.shape == p.shape:
            new.state[p]["momentum_buffer"] = buf.clone()
        elif buf.ndim == 1 and pname.rsplit(".", 1)[0] in owner:
            new.state[p]["momentum_buffer"] = buf[torch.tensor(keep[owner[pname.rsplit(".", 1)[0]]])].clone()


class DetachOptimizer(Hook):
    """Takes the optimizer's input hooks off the final net (`rls@no_prune`, which has no
    PruneOnRecovery to do it): the harness pickles and deep-copies the result."""

    def on_fit_end(self, ctx: FitContext) -> None:
        ctx.optimizer.remove_hooks()


class PruneOnRecovery(Hook):
    """The RLS schedule as a training-loop hook: cut at epoch E₀, then at each recovery."""

    def __init__(self, method: "RLSPrune", task: Task, total_epochs: int):
        self.m, self.task = method, task
        self.target = task.target if method.mode == "target" else None
        self.deadline = max(1, total_epochs - method.recovery_epochs)  # last epoch a cut may happen
        self.first = min(method.epochs_before_prune, self.deadline)
        self.ref: dict | None = None
        self.best: nn.Module | None = None  # adaptive: last net that met the criterion
        self.events = 0
        self.forced_cuts = 0  # cuts made before the net had recovered (target mode's deadline)
        self.reached = False
        self.base_macs: int | None = None
        self.base_cost: float | None = None

    def _cost(self, model: nn.Module) -> float:
        return self.task.cost(model, self.target.kind if self.target else "macs")

    def on_fit_start(self, ctx: FitContext) -> None:
        if self.base_macs is None:  # a resumed fit restored the base of the unpruned net
            self.base_macs = self.task.macs(ctx.model)
            self.base_cost = self._cost(ctx.model)
        self._stop_tracking(ctx, len(ctx.history))  # a resumed fit stops where the killed one had

    _STATE = ("ref", "best", "events", "forced_cuts", "reached", "base_macs", "base_cost")

    def state_dict(self) -> dict:
        """The cut history (P lives in the optimizer's state, saved with it)."""
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            setattr(self, k, state.get(k, 0) if k == "forced_cuts" else state[k])

    def _recovered(self, h: dict) -> bool:
        if self.m.criterion == "val_loss":
            return h["val_loss"] <= self.ref["val_loss"]
        return h["val_acc"] >= self.ref["val_acc"]

    def _stop_tracking(self, ctx: FitContext, epoch: int) -> None:
        """exact_p: once no cut can come any more (target reached, or past the deadline), the exact
        autocorrelation is dropped and no longer accumulated (it only ever serves a score)."""
        if self.m.exact_p and (self.reached or epoch >= self.deadline):
            ctx.optimizer.stop_tracking()

    def on_epoch_end(self, ctx: FitContext) -> None:
        self._on_epoch_end(ctx)
        self._stop_tracking(ctx, ctx.epoch + 1)

    def _on_epoch_end(self, ctx: FitContext) -> None:
        epoch, h = ctx.epoch + 1, ctx.history[-1]
        if epoch < self.first:
            return
        if self.ref is None:  # the net RLS trained, just before its first cut: Δacc's second reference
            self.task.log_metric("rls.acc_val_unpruned", h["val_acc"])
            self.task.log_metric("rls.loss_val_unpruned", h["val_loss"])
            self.task.save_reference("rls_unpruned", self._snapshot(ctx))
            recovered = True
        else:
            recovered = self._recovered(h)
        if recovered:
            self.ref = {"val_loss": h["val_loss"], "val_acc": h["val_acc"]}
            if self.target is None and self.m.rollback:
                self.best = self._snapshot(ctx)
        if self.reached or epoch > self.deadline:
            return
        forced = self.target is not None and epoch == self.deadline  # last chance: cut to the target
        if recovered or forced:
            self._prune(ctx, epoch, forced, recovered)

    def _snapshot(self, ctx: FitContext) -> nn.Module:
        ctx.optimizer.remove_hooks()  # hooks close over the optimizer: keep them off the copy
        snap = copy.deepcopy(ctx.model)
        ctx.optimizer.attach_hooks()
        return snap

    def _plan(self, model: nn.Module, units: dict, scores: dict, forced: bool) -> dict[str, list[int]]:
        """Keep-lists of this cut: `ratio` of each unit, or (target mode) sized to land on the target."""
        pcfg = self.task.spec.pruning
        keep, kept = {}, {}
        if not forced:
            for name, unit in units.items():
                left = unit.size - max(1, round(self.m.ratio * unit.size))
                if pcfg.round_to > 1:  # the grid's SIMD-friendly widths, as the harness planner keeps them
                    left = max(min(pcfg.round_to, unit.size), round(left / pcfg.round_to) * pcfg.round_to)
                n_cut = unit.size - max(left, min_keep(unit.size, pcfg.max_layer_prune))
                if n_cut > 0:
                    order = torch.argsort(scores[name], stable=True)
                    keep[name] = sorted(order[n_cut:].tolist())
                    kept[name] = unit.size - n_cut
        if self.target is None:
            return keep
        measure = self.task.predictor(model, units, self.target.kind)
        now = self._cost(model) / self.base_cost  # fraction of the original cost left
        after = now * measure(kept) / measure({})
        if keep and 1 - after < self.target.reduction - self.target.tolerance:
            return keep
        # Aim at the upper half of the tolerance band, so that "-50 %" never reads 49 %: being a
        # little more pruned can only cost RLS accuracy, never flatter it.
        tol = self.target.tolerance / 2
        step = dataclasses.replace(self.target, reduction=self.target.reduction + tol, tolerance=tol).relative_to(1 - now)
        self.reached = True
        if step.reduction <= 0:
            return {}
        return self.task.plan(model, scores, step).keep

    def _prune(self, ctx: FitContext, epoch: int, forced: bool, recovered: bool = True) -> None:
        model, opt = ctx.model, ctx.optimizer
        units = self.task.units(model)
        Ps = {layer: scoring_P(opt, layer, self.m.use_p, self.m.exact_p) for layer in opt.layers}
        scores = unit_scores(model, opt, units, self.m.score, Ps=Ps)
        keep = self._plan(model, units, scores, forced)
        if not keep:
            return
        self._log_spread(opt, Ps, self.events + 1)
        self.forced_cuts += not recovered
        opt.remove_hooks()
        new_model = self.task.prune_channels(model, keep)
        new_opt = ctx.make_optimizer(new_model)
        transfer_state(opt, new_opt, model, new_model, units, keep, self.m.shrink)
        ctx.model, ctx.optimizer = new_model, new_opt
        self.events += 1
        macs = self.task.macs(new_model)
        cost = self._cost(new_model)
        _, acc = self.task.evaluate(new_model, "val")
        k = self.events
        self.task.log_metric("rls/prune_epoch", epoch, step=k)
        self.task.log_metric("rls/macs", macs, step=k)
        self.task.log_metric("rls/macs_reduction", 1 - macs / self.base_macs, step=k)
        self.task.log_metric("rls/reduction", 1 - cost / self.base_cost, step=k)
        self.task.log_metric("rls/val_acc_after_prune", acc, step=k)
        self.task.log_param(f"rls/event{k}", json.dumps({"epoch": epoch, "forced": forced, "recovered": recovered,
                                                         "macs": macs, "widths": widths(new_model)}))

    def _log_spread(self, opt: RLS, Ps: dict[str, torch.Tensor], k: int) -> None:
        """`rls.invP_diag_spread.<layer>` at step k (the cut): `invP_diag_spread` of the P the score
        of cut k used, for every covered layer (the first layer's is never used: its inputs are the
        image); where that P is not the optimizer's (exact_p, no_p), the optimizer's P's spread as
        `rls.invP_diag_spread_optimizer.<layer>` beside it."""
        other = self.m.exact_p or not self.m.use_p
        for layer, P in Ps.items():
            d = opt.layers[layer].weight[0].numel()
            self.task.log_metric(f"rls.invP_diag_spread.{layer}", invP_diag_spread(P, d), step=k)
            if other:
                self.task.log_metric(f"rls.invP_diag_spread_optimizer.{layer}",
                                     invP_diag_spread(opt.get_P(layer), d), step=k)

    def on_fit_end(self, ctx: FitContext) -> None:
        ctx.optimizer.remove_hooks()
        self.task.log_metric("rls/prune_events", self.events)
        if self.target is None and self.m.rollback and self.best is not None:
            if not self._recovered(ctx.history[-1]) and self.events:
                ctx.model = self.best
                self.task.log_metric("rls/rolled_back", 1.0)


@register
class RLSPrune(FullMethod):
    """Options (all [X] defaults, see the module docstring and docs/methods.md §1):
    mode target|adaptive; loss ce|mse; lr (η), lam (λ), alpha (α, P₀ = αI), bias_in_p (null: per
    loss, LOSS_DEFAULTS); update average|exact;
    epochs_before_prune (E₀); ratio (r, per unit per cut); criterion val_loss|val_acc;
    score diag|block; shrink schur|submatrix; recovery_epochs (target mode: epochs left after the
    forced cut); rollback (adaptive mode); dtype float64|float32; eps (P diagonal
    floor); anneal (η follows the harness LR schedule); sgd_lr (first-order params; None = the
    pretrain recipe's lr); use_p (False: score with P = I, the `rls@no_p` ablation); exact_p (True:
    score with the exact inv(Σuuᵀ + I/α), tracked beside the average mode's P, which alone
    trains: the `rls@exact_p` ablation); prune (False: train the whole budget without cuts, the
    `rls@no_prune` reference).
    Weight decay: the pretrain recipe's (5e-4), on every weight, as for every other method.
    """

    name = "rls"
    summary = "RLS training from scratch; prune input channels by ||W||^2/P_jj on recovery (Yu et al. 2022)"
    display_name = "RLS"
    variant_labels = {"exact_p": "exact P", "no_p": "P = I", "no_prune": "no pruning"}
    paper_results = (
        PaperResult("1", "RLS", "arXiv: MNIST / CIFAR-10 / SVHN (models n/f)", None, None, source="[A]",
                    note="qualitative only (\"small or no acc. loss\"); numbers n/f"),
        PaperResult("1j", "RLS (journal)", "VGG-16, ResNet-50 / CIFAR-10/100; 3-layer FNN / MNIST", None, None,
                    source="[A]", note="numbers n/f"),
    )
    needs_pretrained = False
    needs_finetune = False

    def __init__(self, mode: Literal["target", "adaptive"] = "target", loss: Literal["ce", "mse"] = "ce",
                 lr: Positive | None = None, lam: Annotated[float, Range(0, 1, lo_open=True)] = 1.0,
                 alpha: Positive | None = None, update: Literal["average", "exact"] = "average",
                 epochs_before_prune: Annotated[int, Range(1)] = 2,
                 ratio: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 0.2,  # of a unit per cut
                 criterion: Literal["val_loss", "val_acc"] = "val_loss", score: Literal["diag", "block"] = "diag",
                 shrink: Literal["schur", "submatrix"] = "schur", recovery_epochs: Annotated[int, Range(0)] = 1,
                 rollback: bool = True, bias_in_p: bool | None = None,
                 dtype: Literal["float64", "float32"] = "float64", eps: Positive = 1e-12, anneal: bool = False,
                 sgd_lr: Positive | None = None, use_p: bool = True, exact_p: bool = False, prune: bool = True):
        defaults = LOSS_DEFAULTS[loss]
        lr = defaults["lr"] if lr is None else lr
        alpha = defaults["alpha"] if alpha is None else alpha
        bias_in_p = defaults["bias_in_p"] if bias_in_p is None else bias_in_p
        self.mode, self.loss, self.lr, self.lam, self.alpha, self.update = mode, loss, lr, lam, alpha, update
        self.epochs_before_prune, self.ratio, self.criterion = epochs_before_prune, ratio, criterion
        self.score, self.shrink, self.recovery_epochs, self.rollback = score, shrink, recovery_epochs, rollback
        self.bias_in_p, self.dtype, self.eps, self.anneal, self.sgd_lr = bias_in_p, dtype, eps, anneal, sgd_lr
        if exact_p and not use_p:
            raise ConfigError("rls.exact_p: true scores with the exact P, use_p: false with none; set one of them")
        self.use_p, self.exact_p, self.do_prune = use_p, exact_p, prune

    def make_optimizer(self, task: Task):
        """The optimizer factory the training loop calls (again after every cut)."""
        cfg = task.spec.pretrain

        def make(model: nn.Module) -> RLS:
            # G is the gradient of the *summed* loss; the suite's MSE is mean-over-batch Σe², so ½
            # turns it into classical RLS's ½Σ‖e‖² (docs/methods.md §1).
            return RLS(model, self.lr, lam=self.lam, alpha=self.alpha, mode=self.update, bias_in_p=self.bias_in_p,
                       sum_scale=0.5 if self.loss == "mse" else 1.0, first_order_lr=self.sgd_lr or cfg.lr,
                       momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                       weight_decay=cfg.weight_decay,
                       dtype=DTYPES[self.dtype], eps=self.eps, anneal=self.anneal,
                       track_exact=self.exact_p and self.do_prune)
        return make

    def prune(self, model: nn.Module, task: Task, target: Target) -> nn.Module:
        task.log_param("rls/mode", self.mode)
        for key in ("lr", "alpha", "bias_in_p"):  # as resolved from the per-loss defaults
            task.log_param(f"rls/{key}", getattr(self, key))
        total = task.total_epochs
        hooks = [PruneOnRecovery(self, task, total)] if self.do_prune else [DetachOptimizer()]
        result = task.train(model, total, hooks=hooks, make_optimizer=self.make_optimizer(task), loss=self.loss,
                            desc="rls", from_scratch=True)
        if not self.do_prune:  # rls@no_prune: the final net is RLS's own unpruned reference
            task.log_metric("rls.acc_val_unpruned", result.history[-1]["val_acc"])
            task.log_metric("rls/prune_events", 0)
        # The paper re-prunes only after recovery; target mode's deadline cut may come before it.
        forced = hooks[0].forced_cuts if self.do_prune else 0
        task.check("cuts_after_recovery", forced, forced == 0, "every cut after recovery (forced cuts = 0)")
        return result.model

    # -- report (bench.api.Method.report_extras) ---------------------------------------------------
    @classmethod
    def train_cost_factor(cls, spec) -> float:
        """For `bench plan`: an RLS step over an SGD step (probed in turns on the unpruned net), and
        the net at full size for `epochs_before_prune` epochs, then at the target's probed time
        share (the cuts come one recovery apart, so the few epochs in between are counted small)."""
        from types import SimpleNamespace

        from bench.api import pruned_time_share, step_ratio

        m = cls(**dict(spec.method_args))
        total = spec.pretrain.epochs + spec.finetune.epochs
        full = min(total, m.epochs_before_prune) if m.do_prune else total
        share = pruned_time_share(spec) if m.do_prune else 1.0
        ratio = step_ratio(spec, m.make_optimizer(SimpleNamespace(spec=spec)), f"rls{sorted(spec.method_args)}")
        return ratio * (full + (total - full) * share) / total

    @classmethod
    def report_extras(cls, runs, out_dir):
        """The RLS curves figure and the table of how far P's weighting is from uniform."""
        return cls._curves_figure(runs, out_dir) + cls._spread_table(runs, out_dir)

    SPREAD = "rls.invP_diag_spread."

    @classmethod
    def _spread_table(cls, runs, out_dir):
        """`rls_invP_spread.md/.csv`: per variant and covered layer, max/min of 1/P_jj over the
        layer's weight rows in the P the score used at each run's last cut (1 = every row weighed
        alike, so the score ranks channels exactly as ‖W‖² does). Under the plain row's average
        approximation P⁻¹ = I/α + Σ N·ūūᵀ sees batch means only, so it is near 1 by construction;
        `rls@exact_p` scores with the per-patch autocorrelation instead."""
        import pandas as pd

        cols = [c for c in runs.columns if c.startswith(cls.SPREAD) and runs[c].notna().any()]
        if not cols:
            return []
        frame = runs.loc[:, ["variant", "dataset", "model", *cols]]
        frame.attrs = {}  # melt concatenates the columns, and pandas compares attrs: the curves frame can't
        long = frame.melt(id_vars=["variant", "dataset", "model"], value_vars=cols, var_name="layer",
                          value_name="spread").dropna()
        long["layer"] = long["layer"].str.removeprefix(cls.SPREAD)
        table = (long.groupby(["dataset", "model", "variant", "layer"], sort=True)["spread"]
                 .agg(runs="count", mean="mean", min="min", max="max").reset_index())
        out_dir.mkdir(parents=True, exist_ok=True)
        csv, md = out_dir / "rls_invP_spread.csv", out_dir / "rls_invP_spread.md"
        table.to_csv(csv, index=False)
        lines = ["Spread of 1/P_jj (max / min over a layer's weight rows) in the P each RLS run scored with at "
                 "its last cut; 1 = uniform weighting (the score then ranks channels as ‖W‖² does). The plain "
                 "`rls` row's average approximation is near-uniform by construction; `rls@no_p` scores with "
                 "P = I (1 exactly).", "",
                 "| Dataset / model | Variant | Layer | Runs | Mean | Min | Max |", "|---|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r.dataset} / {r.model} | {r.variant} | {r.layer} | {r.runs} | {r.mean:.2f} | {r.min:.2f} | "
                  f"{r.max:.2f} |" for r in table.itertuples()]
        md.write_text("\n".join(lines) + "\n")
        return [md, csv]

    @classmethod
    def _curves_figure(cls, runs, out_dir):
        """`rls_curves.png/.pdf`: validation accuracy per epoch of each run's RLS training with its
        prune events, one panel per dataset x model x target. Event k is logged at step k as
        `rls/prune_epoch` (the 1-based epoch at whose end it cut) and `rls/val_acc_after_prune`;
        reference lines: the RLS-trained net before its first cut and the SGD base (validation)."""
        import numpy as np
        from matplotlib.figure import Figure

        curves = runs.attrs.get("curves")
        if curves is None or curves.empty or runs.empty:
            return []
        cells = list(runs.groupby(["dataset", "model", "target_kind", "target"], sort=True))
        ncols, nrows = min(2, len(cells)), -(-len(cells) // 2)
        fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax in axes[len(cells):]:
            ax.set_visible(False)
        color, dashes = "#0072B2", ["-", "--", "-.", ":"]
        for ax, ((ds, model, kind, target), g) in zip(axes, cells):
            ax.set_title(f"{ds} / {model}, {kind} −{target * 100:g}%", fontsize=10)
            for i, (_, r) in enumerate(g.sort_values(["variant", "seed"]).iterrows()):
                c = curves[curves["mlflow_run_id"] == r["mlflow_run_id"]]
                acc = c[c["key"] == "rls/val_acc"].sort_values("step")
                if acc.empty:
                    continue
                ax.plot(acc["step"], 100 * acc["value"], color=color, ls=dashes[i % 4],
                        label=f"{r['variant']} seed {r['seed']}")
                after = c[c["key"] == "rls/val_acc_after_prune"].set_index("step")["value"]
                for k, epoch in c[c["key"] == "rls/prune_epoch"].set_index("step")["value"].items():
                    y = 100 * after[k] if k in after.index else np.interp(epoch, acc["step"], 100 * acc["value"])
                    ax.axvline(epoch, color=color, alpha=0.35, lw=1)
                    ax.plot([epoch], [y], "v", color="black", ms=6, label="prune event (acc. right after the cut)")
            for col, label, ls in (("rls.acc_val_unpruned", "RLS-trained net before the first cut (val)", "--"),
                                   ("pretrain/val_acc", "SGD base (val)", ":")):
                if col in g and g[col].notna().any():
                    ax.axhline(100 * float(g[col].mean()), color="0.45", ls=ls, lw=1, label=label)
            ax.set_xlabel("epoch of RLS training")
            ax.set_ylabel("validation accuracy (%)")
        seen = {}
        for ax in axes:
            for h, label in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(label, h)
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=2, frameon=False)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / f"rls_curves.{ext}" for ext in ("png", "pdf")]
        for p in paths:
            fig.savefig(p, dpi=200, bbox_inches="tight")
        return paths
