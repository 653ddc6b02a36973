"""Score-method driver: per-channel scores -> keep-lists that hit a MACs/params target.

Both rankings reduce to one removal order over all (unit, channel) pairs, then a bisection on
how long a prefix of that order to remove, using the exact analytic cost model:
- per_layer: channels leave in order of their rank *fraction* inside their unit, so every unit
  loses the same share (± one channel) — Li et al.'s uniform per-layer rate;
- global: channels leave in order of score divided by their unit's mean score, so scores of
  layers with different scales are comparable.
With `round_to: 8` channels leave in blocks that keep every width a multiple of 8, which CPU/GPU
kernels run faster (benchmarks/latency.py measures both).
The plan is then applied to a copy and the achieved reduction re-measured on the real model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from bench.core.measure import cost
from bench.core.method import KEEP, Target
from bench.core.spec import PruningConfig
from bench.core.surgery import CostModel, find_units, min_keep, prune


@dataclass
class Plan:
    keep: dict[str, list[int]]
    predicted_reduction: float


def _removal_order(units, scores, ranking: str, max_prune: float, round_to: int,
                   comparable: bool = False) -> list[tuple[str, list[int]]]:
    """Blocks of channels in the order they leave. A block is one channel, or with `round_to` > 1
    as many as keep the unit's width a multiple of `round_to` (SIMD-friendly widths)."""
    keys: list[tuple[float, float, str, list[int]]] = []
    for name, unit in units.items():
        s = scores[name].detach().double().cpu().flatten()
        if len(s) != unit.size:
            raise ValueError(f"scores for '{name}' have {len(s)} entries, the unit has {unit.size} channels")
        order = torch.argsort(s, stable=True).tolist()  # least important first
        floor = min_keep(unit.size, max_prune)
        if round_to > 1:
            floor = max(min(round_to, unit.size), -(-floor // round_to) * round_to)
        removable = order[:max(0, unit.size - floor)]
        first = (unit.size % round_to) or round_to if round_to > 1 else 1
        sizes = [first] + [round_to if round_to > 1 else 1] * len(removable)
        scale = 1.0 if comparable else (float(s.abs().mean()) or 1.0)
        vals = s.tolist()  # one channel's score without a tensor op per channel (VGG-16: 4 000 of them)
        done = 0
        for size in sizes:
            block = removable[done:done + size]
            if len(block) < size:
                break
            done += size
            mean = vals[block[0]] if size == 1 else float(s[block].mean())
            primary = done / unit.size if ranking == "per_layer" else mean / scale
            keys.append((primary, mean, name, block))
    keys.sort(key=lambda k: (k[0], k[1]))
    return [(name, block) for _, _, name, block in keys]


def plan_keep(model: nn.Module, example: torch.Tensor, scores: Mapping[str, torch.Tensor], target: Target,
              cfg: PruningConfig = PruningConfig(), comparable: bool = False) -> Plan:
    """Keep-lists removing the least important channels first, sized so that the predicted
    reduction is as close to `target` as channel granularity allows.

    Every unit that `cfg` prunes needs a score, or `KEEP` to stay whole: a unit left out is an
    error, not a silent "keep" that makes the others lose more. Residual groups have scores only
    if a method gives them (they count as pruned when `cfg.include_coupled`).
    `comparable`: the scores already share one network-wide scale (e.g. VIP), so global ranking
    uses them raw, i.e. one global threshold, instead of dividing by each unit's mean."""
    every = find_units(model, example, include_coupled=True)
    unknown = sorted(set(scores) - set(every))
    if unknown:
        raise ValueError(f"scores name '{unknown[0]}', which is not a prunable unit root of this model")
    missing = [n for n, u in every.items() if n not in scores and (cfg.include_coupled or not u.coupled)]
    if missing:
        raise ValueError(f"scores leave out unit(s) {', '.join(missing)}: score every unit of task.units(model), "
                         f"or give KEEP (from bench.api) to leave one whole")
    units = {n: u for n, u in every.items() if n in scores and scores[n] is not KEEP}
    cost = CostModel(model, example, units)
    measure = cost.of(target.kind)
    full = measure({})
    order = _removal_order(units, scores, cfg.ranking, cfg.max_layer_prune, cfg.round_to, comparable)

    def counts(blocks) -> dict[str, int]:
        kept = {n: u.size for n, u in units.items()}
        for name, block in blocks:
            kept[name] -= len(block)
        return kept

    def reduction(k: int) -> float:
        return 1 - measure(counts(order[:k])) / full

    lo, hi = 0, len(order)
    while lo < hi:  # smallest prefix whose reduction reaches the target
        mid = (lo + hi) // 2
        if reduction(mid) >= target.reduction:
            hi = mid
        else:
            lo = mid + 1
    k = lo
    if k > 0 and abs(reduction(k - 1) - target.reduction) < abs(reduction(k) - target.reduction):
        k -= 1
    chosen = list(order[:k])
    if abs(reduction(k) - target.reduction) > target.tolerance and lo > 0:
        # One block of a narrow, expensive layer (one of LeNet's 6 conv1 filters = 14 % of its MACs)
        # can jump over the tolerance band. Stop just below the target, then keep walking the same
        # order and take only blocks whose removal stays inside the band.
        chosen = list(order[:lo - 1])
        kept = counts(chosen)
        passed: set[str] = set()  # a unit whose block was passed over keeps its later, more important ones
        for name, block in order[lo - 1:]:
            if name in passed:
                continue
            kept[name] -= len(block)
            red = 1 - measure(kept) / full
            if red > target.reduction + target.tolerance:
                kept[name] += len(block)
                passed.add(name)
                continue
            chosen.append((name, block))
            if red >= target.reduction - target.tolerance:
                break
    removed: dict[str, set[int]] = {n: set() for n in units}
    for name, block in chosen:
        removed[name].update(block)
    keep = {n: [c for c in range(u.size) if c not in removed[n]] for n, u in units.items() if removed[n]}
    return Plan(keep, 1 - measure({n: units[n].size - len(r) for n, r in removed.items()}) / full)


def achieved_reduction(base: nn.Module, pruned: nn.Module, example: torch.Tensor, kind: str) -> float:
    return 1 - cost(pruned, example, kind) / cost(base, example, kind)


def prune_to_target(model: nn.Module, example: torch.Tensor, scores: Mapping[str, torch.Tensor],
                    target: Target, cfg: PruningConfig = PruningConfig(),
                    comparable: bool = False) -> tuple[nn.Module, float]:
    """Plan, cut, and re-measure: (smaller model, achieved reduction relative to `model`)."""
    plan = plan_keep(model, example, scores, target, cfg, comparable)
    pruned = prune(model, plan.keep, example)
    return pruned, achieved_reduction(model, pruned, example, target.kind)
