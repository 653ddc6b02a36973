"""Try-and-learn RL pruning agents (Huang, Zhou, You, Neumann, WACV 2018, arXiv 1801.07365; docs/methods.md §4).

One agent per prunable unit. The agent reads the unit's filters (weights reshaped
N x (C_in*k*k)) and outputs one keep probability per filter; REINFORCE with a mean-reward
baseline over M sampled actions per update, T updates. Reward R = psi * phi with
psi = (b - drop) / b and phi = log(N / kept); drop = accuracy loss in percentage points on a
fixed validation subset, measured by *masking* the unit's output channels (after BN). Final
action: keep filters with p > 0.5; that share of removed filters is the agent's allocation.

Choices the paper does not fix or that this suite adds ([X] in docs/methods.md):
- Agent: a shared row-wise MLP over the (RMS-normalised) filters plus a free per-filter offset,
  instead of the suggested CNN + FC over the N x D array. Both let every filter get its own
  probability; the row-wise MLP is permutation-equivariant and shape-agnostic in N. Adam.
- Advantages are (R - mean R) / std R per update: the mean baseline of the paper, rescaled.
  Without the rescaling, the large negative rewards of early over-pruned samples drove every
  filter (also useless ones) to p ~ 1 before the small gains of dropping useless ones showed.
- Every agent searches on the same unpruned model (deviation: the paper prunes and fine-tunes
  after each layer, front to back), so `drop` bounds each unit's own loss and no unit's
  allocation depends on the order of the search (agents are seeded by unit name).
- Masking is done by re-running only the part of the traced graph (torch.fx) downstream of the
  unit's post-BN outputs, from activations cached once per unit, for all new actions of an update
  in one batch; identical actions are evaluated once (memoised). Same numbers as the pruned net.
- Meeting the grid target: the agents' allocations r_u (removed shares, each at most
  `max_layer_prune`, the floor every path keeps) are scaled jointly, r_u -> min(s * r_u,
  max_layer_prune), with the s that hits the target (`allocation_scores` + the harness planner's
  global threshold). Inside a unit the lowest-probability filters go first (`fill: agent`), or
  the lowest-L1 ones (`fill: l1`, the ablation "same allocation, L1 filling").
- Budget: no training of its own; the harness fine-tunes the pruned net for the whole fine-tune
  budget (`needs_finetune`), so acc_pruned is measured before any fine-tune.
"""
from __future__ import annotations

import math
import time
import zlib
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

from bench.api import FullMethod, PaperResult, Range, Target, Task, register
from methods._fx import bn_chain_end

MIN_SHARE = 1e-3  # allocation of a unit whose agent kept every filter: cut last, if at all


def reward(drop_pp: torch.Tensor, kept: torch.Tensor, n: int, b: float) -> torch.Tensor:
    """R = psi * phi: psi = (b - drop) / b (drop in accuracy points), phi = log(N / kept)."""
    return (b - drop_pp) / b * torch.log(n / kept.double())


def sample_actions(probs: torch.Tensor, m: int, gen: torch.Generator) -> torch.Tensor:
    """M keep-masks ~ Bernoulli(probs); an all-zero draw keeps its most probable filter (no empty layer)."""
    actions = torch.bernoulli(probs.detach().expand(m, -1), generator=gen).bool()
    empty = ~actions.any(1)
    actions[empty, int(probs.argmax())] = True
    return actions


def final_action(probs: torch.Tensor) -> torch.Tensor:
    """Keep where p > 0.5, and at least the most probable filter."""
    keep = probs > 0.5
    keep[int(probs.argmax())] = True
    return keep


class Agent(nn.Module):
    """Keep logits for N filters: a row-wise MLP over the normalised filters plus per-filter offsets."""

    def __init__(self, filters: torch.Tensor, init_keep: float, hidden: int = 32):
        super().__init__()
        rms = filters.pow(2).mean().sqrt().clamp_min(1e-12)
        self.register_buffer("x", filters / rms)
        self.body = nn.Sequential(nn.Linear(filters.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.body[2].weight)  # every filter starts at init_keep
        nn.init.constant_(self.body[2].bias, math.log(init_keep / (1 - init_keep)))
        self.offset = nn.Parameter(torch.zeros(filters.shape[0]))

    def forward(self) -> torch.Tensor:
        return self.body(self.x).squeeze(1) + self.offset


def mask_points(model: nn.Module, gm: fx.GraphModule, unit) -> list[fx.Node]:
    """For each member layer of the unit, the last node of its conv/linear -> BN chain."""
    return [bn_chain_end(gm, m) for m in unit.members]


class MaskedEval:
    """Accuracies of `model` with some output channels of one unit zeroed, on fixed cached batches.

    The graph is traced once; activations not downstream of the unit are computed once and
    cached, so an evaluation only runs the suffix of the network. Several actions are evaluated
    in one suffix pass (the batch holds one copy of the images per action), up to `max_bytes`
    of cached activations per pass.
    """

    def __init__(self, model: nn.Module, unit, xs: list[torch.Tensor], ys: list[torch.Tensor],
                 max_bytes: int = 2 ** 27):
        model.eval()
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as e:  # noqa: BLE001 - any tracing failure means the same thing here
            raise RuntimeError(f"rl_agent needs a torch.fx-traceable model ({type(model).__name__}): {e}") from e
        self.points = mask_points(model, self.gm, unit)
        nodes = list(self.gm.graph.nodes)
        down: set[fx.Node] = set()
        for n in nodes:
            if any(a in down or a in self.points for a in n.all_input_nodes):
                down.add(n)
        self.suffix = [n for n in nodes if n in down]
        cached = {a for n in self.suffix for a in n.all_input_nodes if a not in down} | (set(self.points) - down)
        self.ys = ys
        self.caches: list[dict[fx.Node, object]] = []
        self.interp = fx.Interpreter(self.gm)
        with torch.inference_mode():
            for x in xs:
                env = self.interp.env = {}
                for n in nodes:
                    if n in down:
                        continue
                    env[n] = self.interp.run_node(n) if n.op != "placeholder" else x
                    if n in cached:  # clone: a later in-place op (ReLU) must not change what we cached
                        env[n] = env[n].clone() if isinstance(env[n], torch.Tensor) else env[n]
                self.caches.append({n: env[n] for n in cached})
        per_copy = max(sum(v.numel() * v.element_size() for v in c.values() if isinstance(v, torch.Tensor))
                       for c in self.caches)
        self.chunk = max(1, max_bytes // max(per_copy, 1))

    @torch.inference_mode()
    def accuracy(self, keeps: torch.Tensor) -> torch.Tensor:
        """Top-1 accuracy for each row of `keeps` (K x C, False = channel zeroed)."""
        correct = torch.zeros(len(keeps), dtype=torch.float64)
        for cache, y in zip(self.caches, self.ys):
            b = len(y)
            for start in range(0, len(keeps), self.chunk):
                chunk = keeps[start:start + self.chunk]
                k = len(chunk)
                env = {n: self._repeat(v, k, b) for n, v in cache.items() if n not in self.points}
                for p in self.points:
                    if p in cache:
                        env[p] = self._mask(cache[p].unsqueeze(0), chunk)
                self.interp.env = env
                out = None
                for n in self.suffix:
                    out = env[n] = self.interp.run_node(n)
                    if n in self.points:  # a member fed by another member (residual chain): masked here
                        out = env[n] = self._mask(out.unflatten(0, (k, b)), chunk)
                hits = out.unflatten(0, (k, b)).argmax(-1) == y
                correct[start:start + k] += hits.sum(1).double().cpu()
        return correct / sum(len(y) for y in self.ys)

    @staticmethod
    def _repeat(v: object, k: int, b: int) -> object:
        """k copies of a cached batch activation along the batch dimension (one per action)."""
        if k == 1 or not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != b:
            return v
        return v.unsqueeze(0).expand(k, *v.shape).flatten(0, 1)

    @staticmethod
    def _mask(v: torch.Tensor, keeps: torch.Tensor) -> torch.Tensor:
        """v: (k, b, C, ...) -> (k*b, C, ...) with copy i's channels zeroed where keeps[i] is False."""
        m = keeps.to(v.device, v.dtype).view(keeps.shape[0], 1, keeps.shape[1], *([1] * (v.ndim - 3)))
        return (v * m).flatten(0, 1)


def unit_filters(model: nn.Module, unit) -> torch.Tensor:
    """N x D: each member's weights with one row per output channel, members side by side."""
    mods = dict(model.named_modules())
    return torch.cat([mods[m].weight.detach().flatten(1).float().cpu() for m in unit.members], dim=1)


@register
class RLAgent(FullMethod):
    name = "rl_agent"
    summary = "per-layer REINFORCE agents, reward (b-drop)/b*log(N/kept) (Huang et al. 2018)"
    display_name = "RL agent"
    variant_labels = {"l1_fill": "L1 fill"}
    # Huang et al.'s own table n/f; the PLS+VIP README (commit 0529168, and df9c97f) quotes it: "Accuracy ↓" 1.90 pp
    paper_results = (PaperResult("4", "RL agent", "VGG-16 / CIFAR-10", "cifar10", ("vgg", (("depth", 16),)),
                                 delta_pp=-1.90, flops_pct=64.70, source="[R] PLS+VIP README 0529168, as quoted"),)
    needs_finetune = True  # the harness fine-tunes the pruned net with the whole fine-tune budget

    def __init__(self, b: Annotated[float, Range(0, lo_open=True)] = 2.0,  # accuracy points
                 samples: Annotated[int, Range(2)] = 16, updates: Annotated[int, Range(1)] = 40,
                 lr: Annotated[float, Range(0, lo_open=True)] = 0.05,
                 init_keep: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 0.9,
                 eval_size: Annotated[int, Range(10)] = 1000,
                 fill: Literal["agent", "l1"] = "agent"):
        self.b, self.samples, self.updates, self.lr = float(b), samples, updates, float(lr)
        self.init_keep, self.eval_size, self.fill = float(init_keep), eval_size, fill

    # -- the search for one unit ---------------------------------------------------------------
    def search(self, model: nn.Module, unit, task: Task, xs: list[torch.Tensor], ys: list[torch.Tensor],
               seed: int) -> tuple[torch.Tensor, float]:
        """Train the unit's agent; returns (keep probabilities, reference accuracy of the unmasked model)."""
        ev = MaskedEval(model, unit, xs, ys)
        n = unit.size
        ref = float(ev.accuracy(torch.ones(1, n, dtype=torch.bool))[0])
        memo: dict[bytes, float] = {}  # evaluation is deterministic: each distinct action once
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            agent = Agent(unit_filters(model, unit), self.init_keep)
        opt = torch.optim.Adam(agent.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(seed)
        for t in range(self.updates):
            logits = agent()
            actions = sample_actions(torch.sigmoid(logits), self.samples, gen)
            keys = [a.numpy().tobytes() for a in actions]
            new = {k: i for i, k in enumerate(keys) if k not in memo}
            if new:
                memo.update(zip(new, ev.accuracy(actions[list(new.values())]).tolist()))
            accs = [memo[k] for k in keys]
            drop = (ref - torch.tensor(accs, dtype=torch.float64)) * 100
            r = reward(drop, actions.sum(1), n, self.b)
            logp = -F.binary_cross_entropy_with_logits(logits.expand(self.samples, -1), actions.float(),
                                                       reduction="none").sum(1)
            adv = (r - r.mean()) / (r.std() + 1e-8)  # mean baseline; /std keeps rare small gains visible
            loss = -(adv.float() * logp).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            task.log_metric(f"rl/{unit.name}/reward", float(r.mean()), t)
        with torch.no_grad():
            probs = torch.sigmoid(agent())
        task.log_metric(f"rl/{unit.name}/evaluations", len(memo))
        return probs, ref

    # -- the whole method ----------------------------------------------------------------------
    def prune(self, model: nn.Module, task: Task, target: Target) -> nn.Module:
        """Every unit's agent searches on the unpruned model; their allocations are scaled jointly to
        the target (`allocation_scores`) and filled by agent probability or L1; the harness fine-tunes."""
        t0 = time.perf_counter()
        val = task.data.val.subset(self.eval_size, task.seed)
        xs = [task.normalize(val.x[i:i + 1000]) for i in range(0, len(val), 1000)]
        ys = [val.y[i:i + 1000].to(task.device) for i in range(0, len(val), 1000)]
        units = task.units(model)
        maxp = task.spec.pruning.max_layer_prune
        removed, order = {}, {}
        for name in sorted(units):  # each search sees the same unpruned model: no unit waits for another
            unit = units[name]
            s0 = time.perf_counter()
            probs, ref = self.search(model, unit, task, xs, ys, task.seed + zlib.crc32(name.encode()) % 10_000)
            keep = final_action(probs)
            removed[name] = min(maxp, 1 - float(keep.sum()) / unit.size)  # the agent's allocation, floor kept
            order[name] = probs if self.fill == "agent" else _l1(model, unit)
            task.log_param(f"rl/{name}/agent_kept", f"{int(keep.sum())}/{unit.size}")
            task.log_metric(f"rl/{name}/ref_acc", ref)
            task.log_metric(f"rl/{name}/search_s", time.perf_counter() - s0)
        scores = allocation_scores(removed, order)
        plan = task.plan(model, scores, target, comparable=True, ranking="global")
        for name, unit in units.items():
            task.log_param(f"rl/{name}/kept", f"{len(plan.keep.get(name, range(unit.size)))}/{unit.size}")
        task.log_param("rl/fill", self.fill)
        task.log_metric("rl/search_s", time.perf_counter() - t0)
        return task.prune_channels(model, plan.keep)

    @classmethod
    def extra_cost_s(cls, spec) -> float | None:
        """Search cost for `bench plan`: per unit, `updates` x `samples` masked evaluations of
        `eval_size` images through about half the network (the suffix after the unit). Memoised
        repeats make this an upper bound."""
        from bench.api import DATASETS, forward_seconds, unit_count

        m = cls(**dict(spec.method_args))
        units = unit_count(spec.model, spec.model_args, DATASETS[spec.dataset], spec.pruning.include_coupled)
        return forward_seconds(spec, units * m.updates * m.samples * min(m.eval_size, spec.val_size) * 0.5)


def _l1(model: nn.Module, unit) -> torch.Tensor:
    """L1 norm of each channel's filters, summed over the unit's members (the `fill: l1` ablation)."""
    return unit_filters(model, unit).abs().sum(1)


def allocation_scores(removed: dict[str, float], order: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scores under which one global threshold removes the share s * removed[u] of every unit u:
    the k-th channel to go (by `order`, low first) of unit u scores k / (N_u * r_u), so lowering the
    threshold scales all agents' allocations jointly. r_u >= MIN_SHARE keeps a unit whose agent
    kept everything last in line (removed only if the target cannot be met otherwise)."""
    out = {}
    for name, o in order.items():
        n, r = len(o), max(removed[name], MIN_SHARE)
        rank = torch.empty(n, dtype=torch.float64)
        rank[torch.argsort(o.double(), stable=True)] = torch.arange(1, n + 1, dtype=torch.float64)
        out[name] = rank / (n * r)
    return out
