"""`bench plan`'s forecast from the report's side, printed below bench.run.plan's costs: which paper
rows the grid grades (bench.report.repro), and the power section: for each primary comparison of
the grid's design (each variant against the reference, per dataset and model), the planned n, the
MDE it gives at 80 % power and Holm's strictest α (α/m over the primary family), and the seeds
needed for a chosen MDE. It lives in the report layer because it reads stored runs with the
report's statistics; the run layer never imports the report.

Why before running: a comparison with too few seeds can only end "inconclusive". The spread comes
from the grid's own store where a primary comparison has finished (its paired sd, floored at one
test image as the report floors it), else from DEFAULT_SD_PP, and the text says which.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from bench.report.compare import MEAN, PRIMARY, paired_comparisons
from bench.report.power import ALPHA, POWER, mde, seeds_needed
from bench.report.repro import plan_lines
from bench.run.config import GridConfig, target_label

DEFAULT_SD_PP = 0.5  # paired sd (pp) assumed without a stored run: the curves grid's typical 0.25-0.6 pp


def stored_paired_sd(cfg: GridConfig) -> dict[tuple[str, str, str], tuple[float, int]]:
    """(dataset, model label, variant) -> (paired sd used by the report in pp, its n) of every
    primary comparison with n >= 2 in the grid's store; empty without a store or runs."""
    from bench.report.load import tidy
    from bench.run.tracking import Tracker, may_hold_runs

    if not may_hold_runs(cfg.results_dir):
        return {}
    tracker = Tracker(cfg.results_dir)
    frame = tracker.runs_frame(cfg.name)
    if frame.empty:
        return {}
    runs = tidy(frame, {e.experiment_id: e.name for e in tracker.client.search_experiments()})
    paired = paired_comparisons(runs, cfg.reference, cfg.design)
    rows = paired[(paired["family"] == PRIMARY) & (paired["n"] >= 2)]
    return {(r.dataset, r.model, r.variant): (float(r.sd_used), int(r.n)) for r in rows.itertuples()}


def _primary_n(seeds: dict[str, set[int]], primary: str) -> tuple[str, int]:
    """(contrast, planned n) of one dataset and model, from the seeds each target runs."""
    if primary == MEAN and len(seeds) > 1:
        return MEAN, len(set.intersection(*seeds.values()))
    if primary == MEAN:
        primary = next(iter(seeds))
    return primary, len(seeds.get(primary, ()))


def power_lines(cfg: GridConfig, stored: dict[tuple[str, str, str], tuple[float, int]], mde_pp: float = 1.0
                ) -> list[str]:
    """The power section's lines (see the module docstring)."""
    specs = cfg.expand()
    variants = sorted({s.variant for s in specs} - {cfg.reference})
    if cfg.reference not in {s.variant for s in specs}:
        return [f"power: the reference {cfg.reference} does not run in this grid: no paired comparison to plan"]
    seeds: dict[tuple[str, str], dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for s in specs:
        seeds[s.dataset, s.model_label][target_label(s.target_kind, s.target)].add(s.seed)
    m = len(variants) * len(seeds)
    if m == 0:
        return ["power: a single variant, nothing to compare"]
    alpha = ALPHA / m
    lines = [f"power of the primary comparisons: each variant vs {cfg.reference}, Holm over m = {m} "
             f"(planned at α/m = {alpha:.2g}), {POWER * 100:.0f} % power, equivalence margin "
             f"±{cfg.design.margin_pp:g} pp:",
             f"  {'dataset / model':<34} {'contrast':<9} {'variant':<20} {'n':>3} {'sd (pp)':>8}  {'sd from':<15} "
             f"{'MDE (pp)':>8} {f'n for {mde_pp:g} pp':>13}"]
    for (dataset, model), by_target in sorted(seeds.items()):
        contrast, n = _primary_n(by_target, cfg.design.primary_of(dataset))
        for v in variants:
            sd, k = stored.get((dataset, model, v), (DEFAULT_SD_PP, 0))
            need, detect = seeds_needed(mde_pp, sd, alpha), mde(n, sd, alpha)
            need_text, detect_text = "-" if need is None else str(need), f"{detect:.2f}" if np.isfinite(detect) else "-"
            lines.append(f"  {dataset + ' / ' + model:<34} {contrast:<9} {v:<20} {n:>3} {sd:>8.2f}  "
                         f"{f'store (n={k})' if k else 'default':<15} {detect_text:>8} {need_text:>13}")
    lines.append(f"  (MDE: the true paired difference detected with {POWER * 100:.0f} % power at n; a smaller one "
                 "would likely end inconclusive. sd: the paired sd of the stored primary comparison, floored at one "
                 f"test image, else the default {DEFAULT_SD_PP:g} pp; `--mde` sets the target of the last column)")
    return lines


def forecast_lines(cfg: GridConfig, mde_pp: float = 1.0) -> list[str]:
    """What `bench plan` prints after the costs: the paper rows the grid's targets grade, then the
    power of its primary comparisons (with the paired sd of the grid's own store where it has one)."""
    return plan_lines(cfg.expand()) + power_lines(cfg, stored_paired_sd(cfg), mde_pp)
