"""Recursive-least-squares (RLS) optimizer for conv / linear networks (docs/methods.md §1).

Each conv (groups=1) and linear layer is treated as a linear map  y = Wᵀu  from an input row u
(a conv's unfolded k_h·k_w·C_in patch, a linear layer's input vector) to its outputs. The layer
keeps P ≈ (I/α + Σ uuᵀ)⁻¹, the inverse input autocorrelation, captured by a forward pre-hook,
and steps  W ← W − η·P·G  with G the loss gradient *summed* over the batch's rows, i.e. SGD with
P as a matrix-valued learning rate. For a single linear layer under ½Σ‖e‖², η = 1 and batch
size 1 this is classical RLS exactly. Parameters RLS does not cover (BN γ/β, biases unless
`bias_in_p`, grouped convs) take a momentum-SGD step.

Provenance (docs/methods.md tags): that RLS keeps one P per layer as a matrix learning rate, the
average approximation, and the forgetting factor are [A] (abstracts of arXiv 2109.03220 and
2201.04813). The equations below are a standard-RLS reconstruction [X]; so are the guards
(symmetrise, diagonal clamp), the `exact` mode, the CE scaling and the first-order fallback.

Per minibatch and layer, average mode [X], N rows, mean row ū (the rank-N increment Σuuᵀ is
replaced by N·ūūᵀ):
    h = P ū;   g = h / (λ/N + ūᵀh);   P ← (P − g hᵀ)/λ;   P ← (P + Pᵀ)/2;   diag(P) ≥ eps
    W ← W − η·P·G,   G = sum_scale · M · ∇_W(batch-mean loss)
Exact mode [X]: P ← (λP⁻¹ + Σuuᵀ)⁻¹ = (λI + P·Σuuᵀ)⁻¹·P (the Woodbury update with the full
rank-N term), d³ per step: for small layers and for checking the average mode.

Gradient scale (why the α of `methods/rls.py` is small): before a direction of the input space
has been excited P = α there, so the step is η·α·M·sum_scale times the batch-mean gradient,
i.e. SGD with that learning rate. With M = 128, α = 1, η = 1 that is lr 128, which diverges
under cross-entropy. The average approximation excites mainly the mean input direction (weight
N per batch; the rest of the input covariance enters with weight 1 per batch), so most
directions stay near α: pick α·η·M·sum_scale ≈ a stable SGD learning rate, and η for the size
of the RLS step along the excited directions, where P no longer depends on α.

The conv mean row needs no unfold of the batch: unfold is linear, so ū is the patch mean of
the batch-summed input, one (1, C, H, W) unfold.

Exact statistics for scoring only (`track_exact=True`, average mode) [X]: besides the average
mode's P, each covered layer accumulates R = λR + Σuuᵀ over every row u of every training batch
(R₀ = I/α, the bias row included when `bias_in_p`), at the same moment P is updated (in `step`,
only when the layer got a gradient), so inv(R) is exactly what the `exact` mode's P would be
under the same λ, α and inputs. R never enters the step: training stays the average mode's.
`get_exact_P` returns inv(R); a channel cut restricts R like P (`shrink_R`). Cost: one unfold of
the batch and one d×d Gram product per layer per step (the exact mode's capture, without its
d³ solve); measured in `methods/rls.py`'s docstring.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("average", "exact")
SHRINKS = ("schur", "submatrix")


def covered_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers RLS preconditions: every nn.Linear and every ungrouped nn.Conv2d, by name."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)}


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """All input rows u of `module` for input `x`: (N, d) without the bias column."""
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            raise ValueError("RLS needs numeric conv padding, not 'same'/'valid'")
        u = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        return u.transpose(1, 2).reshape(-1, u.shape[1])
    return x.reshape(-1, x.shape[-1])


def mean_row(module: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """(Σ_rows u, N) for the average approximation, without materialising the conv's rows."""
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            raise ValueError("RLS needs numeric conv padding, not 'same'/'valid'")
        s = x.sum(0, keepdim=True).to(dtype)
        u = F.unfold(s, module.kernel_size, module.dilation, module.padding, module.stride)
        return u[0].sum(1), x.shape[0] * u.shape[2]
    rows = x.reshape(-1, x.shape[-1])
    return rows.sum(0).to(dtype), rows.shape[0]


def shrink(P: torch.Tensor, keep: torch.Tensor, method: str = "schur") -> torch.Tensor:
    """P restricted to the kept input rows `keep` (sorted indices).

    'schur' (default): P_KK − P_KD P_DD⁻¹ P_DK, which equals inv(R_KK) exactly for R = P⁻¹, so
    training goes on as if the removed inputs had never existed. 'submatrix': P_KK (cheaper;
    equals inv(R_KK) only when the removed inputs were uncorrelated with the kept ones).
    """
    if method not in SHRINKS:
        raise ValueError(f"shrink '{method}' is unknown; allowed: {', '.join(SHRINKS)}")
    keep = keep.to(P.device)
    kk = P[keep][:, keep]
    if method == "submatrix" or len(keep) == P.shape[0]:
        return kk.clone()
    drop = torch.ones(P.shape[0], dtype=torch.bool, device=P.device)
    drop[keep] = False
    kd, dd = P[keep][:, drop], P[drop][:, drop]
    out = kk - kd @ torch.linalg.solve(dd, kd.T)
    return (out + out.T) / 2


def shrink_R(R: torch.Tensor, keep: torch.Tensor, method: str = "schur") -> torch.Tensor:
    """The autocorrelation R = P⁻¹ restricted to the kept rows, so that inv(result) equals
    `shrink(inv(R), keep, method)`: 'schur' is the plain block R_KK (the removed inputs never
    existed); 'submatrix' is inv(inv(R)_KK)."""
    if method not in SHRINKS:
        raise ValueError(f"shrink '{method}' is unknown; allowed: {', '.join(SHRINKS)}")
    keep = keep.to(R.device)
    if method == "schur" or len(keep) == R.shape[0]:
        return R[keep][:, keep].clone()
    out = torch.linalg.inv(inverse_spd(R)[keep][:, keep])
    return (out + out.T) / 2


def inverse_spd(A: torch.Tensor) -> torch.Tensor:
    """Inverse of a symmetric positive-definite matrix (Cholesky; plain inverse if that fails), symmetrised."""
    A = (A + A.T) / 2
    L, info = torch.linalg.cholesky_ex(A)
    out = torch.cholesky_inverse(L) if int(info) == 0 else torch.linalg.inv(A)
    return (out + out.T) / 2


class RLS(torch.optim.Optimizer):
    """RLS for the weight of every covered layer, momentum SGD for everything else.

    Takes the model (not a parameter list) because it must hook the layers' inputs. One param
    group per covered layer (`kind='rls'`, `layer=name`, `lr`=η) plus one `kind='sgd'` group,
    so a harness LR schedule that scales every group's `lr` anneals η and the SGD step alike
    (`anneal=False` keeps η fixed). P lives in `state[weight]['P']`, so `state_dict()` saves it.
    Only training-mode forwards with grad enabled update the statistics; `step()` consumes
    them. Call `remove_hooks()` before dropping the optimizer of a model that lives on.
    `weight_decay`: L2 on every multi-dimensional weight (the harness recipe's rule); for RLS
    weights it is added to G before the P-preconditioned step, as SGD adds it to the gradient.
    """

    def __init__(self, model: nn.Module, lr: float = 1.0, *, lam: float = 1.0, alpha: float = 1.0,
                 mode: str = "average", bias_in_p: bool = False, sum_scale: float = 1.0,
                 first_order_lr: float = 0.05, momentum: float = 0.9, nesterov: bool = True,
                 weight_decay: float = 0.0, dtype: torch.dtype = torch.float64, eps: float = 1e-12,
                 anneal: bool = True, layers: Iterable[str] | None = None, track_exact: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode '{mode}' is unknown; allowed: {', '.join(MODES)}")
        if not 0 < lam <= 1:
            raise ValueError(f"lam (forgetting factor) must be in (0, 1], got {lam}")
        if alpha <= 0 or lr <= 0:
            raise ValueError("alpha and lr must be > 0")
        self.mode, self.lam, self.alpha, self.eps, self.dtype = mode, lam, alpha, eps, dtype
        self.bias_in_p, self.sum_scale, self.anneal = bias_in_p, sum_scale, anneal
        self.track_exact = track_exact and mode != "exact"
        found = covered_layers(model)
        names = list(found) if layers is None else list(layers)
        groups, covered = [], set()
        for name in names:
            mod = found[name]
            params = [mod.weight] + ([mod.bias] if bias_in_p and mod.bias is not None else [])
            covered.update(id(p) for p in params)
            groups.append({"params": params, "kind": "rls", "layer": name, "lr": lr, "weight_decay": weight_decay})
        rest = [p for p in model.parameters() if id(p) not in covered and p.requires_grad]
        if rest:
            groups.append({"params": rest, "kind": "sgd", "lr": first_order_lr, "momentum": momentum,
                           "nesterov": nesterov, "weight_decay": weight_decay})
        super().__init__(groups, {"eta": lr})
        self.layers = {name: found[name] for name in names}
        self._stats: dict[str, list] = {}
        self._hooks: list = []
        self.attach_hooks()
        for group in self.param_groups:
            if group["kind"] == "rls":
                w = group["params"][0]
                self.state[w]["P"] = torch.eye(self.dim(group["layer"]), dtype=dtype, device=w.device) * alpha
                if self.track_exact:
                    self.state[w]["R"] = torch.eye(self.dim(group["layer"]), dtype=dtype, device=w.device) / alpha

    # -- statistics -----------------------------------------------------------------------------
    def dim(self, layer: str) -> int:
        """d: rows of P for `layer` (inputs per output, +1 when the bias is inside P)."""
        mod = self.layers[layer]
        d = mod.weight[0].numel()
        return d + int(self.bias_in_p and mod.bias is not None)

    def _capture(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if not (module.training and torch.is_grad_enabled()):
                return
            x = args[0].detach()
            bias = self.bias_in_p and module.bias is not None
            st = self._stats.setdefault(name, [None, 0, 0, None])  # [Σu or Σuuᵀ, N rows, M samples, Σuuᵀ]
            gram = None
            if self.mode == "exact" or self.track_exact:
                u = input_rows(module, x.to(self.dtype))
                if bias:
                    u = torch.cat([u, u.new_ones(len(u), 1)], 1)
                gram = u.T @ u
            if self.mode == "exact":
                inc, n = gram, len(u)
            else:
                s, n = mean_row(module, x, self.dtype)
                inc = torch.cat([s, s.new_full((1,), float(n))]) if bias else s
            st[0] = inc if st[0] is None else st[0] + inc
            st[1] += n
            st[2] += x.shape[0]
            if self.track_exact:
                st[3] = gram if st[3] is None else st[3] + gram
        return hook

    def attach_hooks(self) -> None:
        """(Re-)register the input-capturing forward pre-hooks on the covered layers."""
        self.remove_hooks()
        self._hooks = [mod.register_forward_pre_hook(self._capture(name)) for name, mod in self.layers.items()]

    def remove_hooks(self) -> None:
        """Detach from the model: a model carrying the hooks cannot be pickled or deep-copied cleanly."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # -- P access (for pruning) -----------------------------------------------------------------
    def _group(self, layer: str) -> dict:
        for g in self.param_groups:
            if g.get("layer") == layer:
                return g
        raise KeyError(f"layer '{layer}' is not covered by this RLS optimizer")

    def get_P(self, layer: str) -> torch.Tensor:
        return self.state[self._group(layer)["params"][0]]["P"]

    def get_exact_P(self, layer: str) -> torch.Tensor:
        """(Σuuᵀ + λ-discounted I/α)⁻¹ over every row seen: the exact mode's P, or inv(R) when the
        average mode tracks R (`track_exact`)."""
        if self.mode == "exact":
            return self.get_P(layer)
        return inverse_spd(self.get_R(layer))

    def stop_tracking(self) -> None:
        """Drop R and stop accumulating it (no score will be needed any more): training unchanged."""
        self.track_exact = False
        for group in self.param_groups:
            if group["kind"] == "rls":
                self.state[group["params"][0]].pop("R", None)

    def get_R(self, layer: str) -> torch.Tensor:
        state = self.state[self._group(layer)["params"][0]]
        if "R" not in state:
            raise KeyError(f"layer '{layer}' has no exact autocorrelation: build RLS with track_exact=True")
        return state["R"]

    def set_R(self, layer: str, R: torch.Tensor) -> None:
        w = self._group(layer)["params"][0]
        if R.shape != (self.dim(layer),) * 2:
            raise ValueError(f"R for '{layer}' must be {self.dim(layer)}x{self.dim(layer)}, got {tuple(R.shape)}")
        self.state[w]["R"] = R.to(dtype=self.dtype, device=w.device).clone()

    def set_P(self, layer: str, P: torch.Tensor) -> None:
        w = self._group(layer)["params"][0]
        if P.shape != (self.dim(layer),) * 2:
            raise ValueError(f"P for '{layer}' must be {self.dim(layer)}x{self.dim(layer)}, got {tuple(P.shape)}")
        self.state[w]["P"] = P.to(dtype=self.dtype, device=w.device).clone()

    def load_state_dict(self, state_dict: dict) -> None:
        """torch casts floating state to its parameter's dtype on load; P and R keep their own (float64)."""
        saved = {(i, k): st[k] for i, st in state_dict["state"].items() for k in ("P", "R") if k in st}
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for (i, k), M in saved.items():
            self.state[params[i]][k] = M.to(dtype=self.dtype, device=params[i].device).clone()

    # -- the step -------------------------------------------------------------------------------
    def _update_P(self, P: torch.Tensor, stats: list) -> torch.Tensor:
        acc, n = stats[0], stats[1]
        if self.mode == "exact":
            eye = torch.eye(len(P), dtype=P.dtype, device=P.device)
            P = torch.linalg.solve(self.lam * eye + P @ acc, P)
        else:
            u = acc / n
            h = P @ u
            g = h / (self.lam / n + u @ h)
            P = (P - torch.outer(g, h)) / self.lam
        P = (P + P.T) / 2
        P.diagonal().clamp_(min=self.eps)
        return P

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] == "rls":
                self._rls_step(group)
            else:
                self._sgd_step(group)
        self._stats.clear()
        return loss

    def _rls_step(self, group: dict) -> None:
        w = group["params"][0]
        stats = self._stats.get(group["layer"])
        if w.grad is None or stats is None:
            return
        state = self.state[w]
        state["P"] = P = self._update_P(state["P"], stats)
        if self.track_exact:
            state["R"] = self.lam * state["R"] + stats[3]
        cols = [w.grad.reshape(len(w), -1)]
        if group["weight_decay"]:  # L2 on the weight (not the bias), preconditioned like the loss gradient
            cols[0] = cols[0] + group["weight_decay"] * w.reshape(len(w), -1)
        if len(group["params"]) > 1:
            cols.append(group["params"][1].grad.reshape(-1, 1))
        G = torch.cat(cols, 1).to(P.dtype)
        eta = group["lr"] if self.anneal else group["eta"]
        delta = (G @ P) * (eta * self.sum_scale * stats[2])
        dw = w[0].numel()
        w.sub_(delta[:, :dw].reshape(w.shape).to(w.dtype))
        if len(group["params"]) > 1:
            group["params"][1].sub_(delta[:, dw].to(w.dtype))

    def _sgd_step(self, group: dict) -> None:
        """torch.optim.SGD's update (dampening 0), written out so one optimizer owns all state."""
        for p in group["params"]:
            if p.grad is None:
                continue
            wd = group["weight_decay"] if p.ndim > 1 else 0.0  # the recipe's rule: no decay on BN and biases
            d_p = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
            if group["momentum"]:
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                d_p = d_p.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
            p.add_(d_p, alpha=-group["lr"])
