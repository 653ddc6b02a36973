"""Aggregates, ranking and Pareto view for the report (scipy.stats / scikit-posthocs).

- `aggregate`: mean, sample std (ddof=1), n and the 95 % t half-width per cell and variant;
- `rankings`: Friedman test with the Nemenyi post-hoc test and the critical difference for the
  CD diagram, on independent blocks: one per base (dataset, seed), valued at the design's primary
  contrast, per (dataset, model) and pooled. Blocks that shared a base (one per target of the same
  seed) would count one base's luck several times;
- `pareto_table`: the Pareto view.
The paired comparisons and their verdicts are bench.report.compare's; the statistics of one
comparison bench.report.power's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.checks import failed_checks
from bench.report.compare import MEAN, primary_blocks
from bench.report.load import KEYS, SETTING, target_label
from bench.report.power import ALPHA
from bench.run.config import Design

RANK_DIGITS = 2  # mean ranks and the CD, as the CSV, the diagram's labels and its title all show them
POOLED = "pooled"


@dataclass(frozen=True)
class Metric:
    """One aggregated quantity: a tidy-frame column (display units) and how tables show it."""

    key: str
    label: str          # Markdown / CSV header
    latex: str          # LaTeX header
    better: str | None  # "max", "min" or None (not ranked, e.g. the shared base accuracy)
    digits: int
    signed: bool = False  # a change: always show the sign


METRICS = [
    Metric("acc_base_pct", "Base acc (%)", r"Base acc (\%)", None, 2),
    Metric("acc_final_pct", "Final acc (%)", r"Final acc (\%)", "max", 2),
    Metric("delta_acc_pp", "Δacc (pp)", r"$\Delta$acc (pp)", "max", 2, signed=True),
    # Against the method's own `<method>@no_prune` run, paired by seed (report_load.own_unpruned_pct);
    # shown only where one ran.
    Metric("delta_acc_own_pp", "Δacc vs own unpruned (pp)", r"$\Delta$acc vs own unpruned (pp)", None, 2,
           signed=True),
    Metric("acc_val_final_pct", "Final val acc (%)", r"Final val acc (\%)", None, 2),
    Metric("macs_reduction_pct", "MACs ↓ (%)", r"MACs $\downarrow$ (\%)", "max", 1),
    Metric("params_reduction_pct", "Params ↓ (%)", r"Params $\downarrow$ (\%)", "max", 1),
    Metric("speedup_cpu_b1_x", "CPU b1 speed-up (×)", r"CPU b1 speed-up ($\times$)", "max", 2),
    Metric("speedup_cpu_b64_x", "CPU b64 speed-up (×)", r"CPU b64 speed-up ($\times$)", "max", 2),
    Metric("speedup_gpu_b1_x", "GPU b1 speed-up (×)", r"GPU b1 speed-up ($\times$)", "max", 2),
    Metric("speedup_gpu_b64_x", "GPU b64 speed-up (×)", r"GPU b64 speed-up ($\times$)", "max", 2),
    # Only the total is ranked: a method that trains while pruning has no separate fine-tune.
    Metric("prune_time_s", "Prune time (s)", "Prune time (s)", None, 1),
    Metric("finetune_time_s", "Fine-tune time (s)", "Fine-tune time (s)", None, 1),
    Metric("total_time_s", "Prune + fine-tune (s)", "Prune + fine-tune (s)", "min", 1),
    Metric("epochs_used", "Epochs used", "Epochs used", None, 2),
]
# Shown only where some run logged them (stores written before these existed stay readable).
OPTIONAL_METRICS = {"acc_val_final_pct", "delta_acc_own_pp", "epochs_used"}
GPU_METRICS = {"speedup_gpu_b1_x", "speedup_gpu_b64_x"}
# Aggregated as well (figures, reproduction check) but not table columns.
EXTRA_AGG = ["acc_pruned_pct", "acc_val_pruned_pct", "macs_speedup_x", "params_speedup_x", "macs_pruned",
             "latency_cpu_b1_pruned_ms", "latency_gpu_b1_pruned_ms"]


def summarize(values: Iterable[float]) -> tuple[float, float, int, float]:
    """(mean, sample std, n, 95 % CI half-width via t) of the finite values; NaN where undefined."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return np.nan, np.nan, 0, np.nan
    if n == 1:
        return float(v[0]), np.nan, 1, np.nan
    std = float(v.std(ddof=1))
    return float(v.mean()), std, n, float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n))


def aggregate(runs: pd.DataFrame, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per (experiment, dataset, model, target, variant): counts of runs by status,
    the plugin name, the protocol (`pruning.*` settings as logged) and `<col>_mean/_std/_n/_ci95`
    over the finished runs' seeds. Groups with no finished run keep their row (statistics NaN)."""
    columns = list(columns or [m.key for m in METRICS] + EXTRA_AGG)
    protocol = [c for c in runs.columns if c.startswith("pruning.") or c.startswith("arg.")]
    rows = []
    for key, g in runs.groupby(KEYS, dropna=False, sort=True):
        done = g[g["status"] == "done"]
        row = dict(zip(KEYS, key))
        row["method"] = ",".join(sorted(set(g["method"])))
        row["runs"] = len(g)
        row["done"] = len(done)
        row["seeds"] = ",".join(str(s) for s in sorted(done["seed"].dropna().unique()))
        other = g.loc[g["status"] != "done", "status"].value_counts()
        row["not_done"] = ", ".join(f"{n} {s}" for s, n in other.items())
        row["target_met"] = int(done["target_met"].fillna(0).sum()) if "target_met" in done else 0
        row["budget_over"] = int((done["budget_met"] == 0).sum()) if "budget_met" in done else 0
        row["checks_failed"] = failed_checks(done)  # the method's own preconditions (bench.report.checks)
        row["method_mode"] = ",".join(sorted(set(g["method_mode"]) - {""}))
        for c in protocol:
            row[c] = ",".join(sorted({str(v) for v in g[c].dropna()}))
        for c in columns:
            mean, std, n, ci = summarize(done[c] if c in done else [])
            row.update({f"{c}_mean": mean, f"{c}_std": std, f"{c}_n": n, f"{c}_ci95": ci})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Ranking:
    """Friedman test + Nemenyi post-hoc over independent blocks (one per base: dataset x seed)
    where every variant finished. Mean ranks and the CD are rounded to RANK_DIGITS, so every place
    that shows them agrees."""

    scope: str                      # "mnist / lenet5", or POOLED over the (dataset, model)s
    contrast: str                   # what a block's value is: "MACs −50%", "mean over targets", ...
    metric: str
    blocks: int
    mean_ranks: pd.Series           # 1 = best, ascending
    friedman_p: float
    nemenyi_p: pd.DataFrame | None  # variant x variant
    cd: float                       # critical difference of mean ranks (Nemenyi, ALPHA)
    dropped_blocks: int
    note: str = ""

    def significant_pairs(self) -> list[tuple[str, str]]:
        """(better, worse) pairs the post-hoc test separates; empty unless Friedman rejects."""
        if self.nemenyi_p is None or not self.friedman_p < ALPHA:
            return []
        names = list(self.mean_ranks.index)
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if self.nemenyi_p.loc[a, b] < ALPHA]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"scope": self.scope, "contrast": self.contrast, "variant": self.mean_ranks.index,
                             "mean_rank": self.mean_ranks.values, "blocks": self.blocks,
                             "friedman_p": self.friedman_p, "cd": self.cd})


def contrast_text(contrast: str) -> str:
    """A design contrast for readers: "mean" -> "mean over targets", "macs:0.5" -> "MACs −50%"."""
    if contrast == MEAN:
        return "mean over targets"
    kind, _, amount = contrast.partition(":")
    return target_label(kind, float(amount))


def rank_blocks(wide: pd.DataFrame, scope: str, contrast: str, metric: str) -> Ranking | None:
    """Rank the columns of `wide` (one row per block, higher is better) in the blocks where all of
    them have a value. None with fewer than 2 variants; p NaN (and a note) with < 3 variants or
    < 2 blocks, where the Friedman test is undefined."""
    import scikit_posthocs as sp

    if wide.shape[1] < 2:
        return None
    full = wide.dropna()
    k, n = full.shape[1], len(full)
    mean_ranks = full.rank(axis=1, ascending=False).mean().round(RANK_DIGITS).sort_values(kind="stable")
    if k < 3 or n < 2:
        why = f"Friedman needs ≥ 3 variants and ≥ 2 complete blocks (have {k} and {n})"
        return Ranking(scope, contrast, metric, n, mean_ranks, np.nan, None, np.nan, len(wide) - n, why)
    try:
        p = float(stats.friedmanchisquare(*[full[c] for c in full.columns]).pvalue)
    except ValueError:  # every block ties completely
        p = 1.0
    p = 1.0 if not np.isfinite(p) else p
    nem = sp.posthoc_nemenyi_friedman(full.to_numpy())
    nem.index = nem.columns = list(full.columns)
    q = stats.studentized_range.ppf(1 - ALPHA, k, np.inf) / np.sqrt(2)
    cd = round(float(q * np.sqrt(k * (k + 1) / (6 * n))), RANK_DIGITS)
    return Ranking(scope, contrast, metric, n, mean_ranks, p, nem.loc[mean_ranks.index, mean_ranks.index], cd,
                   len(wide) - n)


def rankings(runs: pd.DataFrame, design: Design | None = None, metric: str = "acc_final_pct") -> dict[str, Ranking]:
    """scope -> Ranking by `metric` (higher is better): POOLED over every (dataset, model) first
    when there are several, then each one. A block is one seed of one (dataset, model), valued at
    the design's primary contrast (bench.report.compare.primary_blocks)."""
    blocks = primary_blocks(runs, design, metric)
    several_exps = len({s[0] for s in blocks}) > 1
    scoped = {(f"{s[0]}: " if several_exps else "") + f"{s[1]} / {s[2]}": (contrast_text(c), t)
              for s, (c, t) in blocks.items()}
    if len(scoped) > 1:
        pooled = pd.concat({k: t for k, (_, t) in scoped.items()}, names=["scope", "seed"])
        scoped = {POOLED: ("primary contrast of each", pooled), **scoped}
    out = {scope: rank_blocks(t, scope, c, metric) for scope, (c, t) in scoped.items()}
    return {k: r for k, r in out.items() if r is not None}


def pareto_front(cost: Iterable[float], value: Iterable[float]) -> np.ndarray:
    """True where no other point has cost <= and value >= with one strictly better (lower cost,
    higher accuracy); NaN points are never on the front."""
    c, v = np.asarray(list(cost), dtype=float), np.asarray(list(value), dtype=float)
    ok = np.isfinite(c) & np.isfinite(v)
    front = np.zeros(len(c), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i]))
        front[i] = not dominated.any()
    return front


PARETO_COSTS = {"macs_pruned": "MACs of the pruned model", "latency_cpu_b1_pruned_ms": "CPU latency, batch 1 (ms)",
                "latency_gpu_b1_pruned_ms": "GPU latency, batch 1 (ms)"}


def pareto_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (setting, variant, target) of final accuracy and each measured cost,
    with `front_<cost>` = on the Pareto front of its (experiment, dataset, model)."""
    done = runs[runs["status"] == "done"]
    cols = ["acc_final_pct"] + [c for c in PARETO_COSTS if c in done and done[c].notna().any()]
    means = done.groupby(SETTING + ["variant", "target_kind", "target"], sort=True)[cols].mean().reset_index()
    for c in cols[1:]:
        means[f"front_{c}"] = False
        for _, g in means.groupby(SETTING):
            means.loc[g.index, f"front_{c}"] = pareto_front(g[c], g["acc_final_pct"])
    return means
