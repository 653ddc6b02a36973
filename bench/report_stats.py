"""Statistics for the report, all from scipy.stats / scikit-posthocs / statsmodels.

Why paired: every variant of a (dataset, model, target) cell starts from the same base network
per seed, so seed-to-seed base variation cancels in the per-seed difference. Three levels:
- `aggregate`: mean, sample std (ddof=1), n and the 95 % t half-width per cell and variant;
- `paired_comparisons`: each variant against a reference variant, paired over seeds (mean
  difference, 95 % t CI, paired t-test, Wilcoxon where n allows), Holm-corrected over the
  comparisons of one dataset x model table;
- `ranking`: Friedman test over all blocks (cell x seed) with the Nemenyi post-hoc test and the
  critical difference for the CD diagram.
A difference is called significant only at the corrected p < ALPHA; everything else is "not
distinguishable at n = ...", which is what the verdict says.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from bench.report_load import CELL, KEYS, SETTING

ALPHA = 0.05
# The smallest n whose exact two-sided Wilcoxon p can fall below 0.05 (2 / 2**6 = 0.031).
WILCOXON_MIN_N = 6


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
    # Against the method's own unpruned net (RLS: `acc_rls_unpruned`); shown only where logged.
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
# A method that scores some units by a fallback logs `<method>.fallback_share` (share of the removed
# MACs the fallback decided); a run above this share is labelled in the tables.
FALLBACK_SUFFIX = ".fallback_share"
FALLBACK_MAJORITY = 0.5
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
        shares = [c for c in done.columns if c.endswith(FALLBACK_SUFFIX)]
        share = done[shares].apply(pd.to_numeric, errors="coerce").max(axis=1) if shares else pd.Series(dtype=float)
        row["fallback_majority"] = int((share > FALLBACK_MAJORITY).sum())
        row["method_mode"] = ",".join(sorted(set(g["method_mode"]) - {""}))
        for c in protocol:
            row[c] = ",".join(sorted({str(v) for v in g[c].dropna()}))
        for c in columns:
            mean, std, n, ci = summarize(done[c] if c in done else [])
            row.update({f"{c}_mean": mean, f"{c}_std": std, f"{c}_n": n, f"{c}_ci95": ci})
        rows.append(row)
    return pd.DataFrame(rows)


def _per_seed(done: pd.DataFrame, metric: str) -> pd.DataFrame:
    """seed x variant table of one cell's finished runs."""
    return done.pivot_table(index="seed", columns="variant", values=metric, aggfunc="mean")


def paired_test(a: Iterable[float], b: Iterable[float]) -> dict:
    """a - b over paired observations: n, mean difference, 95 % t CI, paired t-test p and, from
    n = 6 on, the Wilcoxon signed-rank p. Identical pairs give difference 0 and p = 1; a constant
    non-zero difference gives p = 0 (the limit of the t-test as the spread goes to 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    d = a - b
    out = {"n": len(d), "mean_diff": float(d.mean()) if len(d) else np.nan,
           "ci_low": np.nan, "ci_high": np.nan, "p_t": np.nan, "p_wilcoxon": np.nan}
    if len(d) < 2:
        return out
    if np.all(d == d[0]):  # no spread: t is 0/0 (identical runs, p = 1) or infinite (p = 0)
        return {**out, "ci_low": float(d[0]), "ci_high": float(d[0]), "p_t": 1.0 if d[0] == 0 else 0.0,
                "p_wilcoxon": np.nan if len(d) < WILCOXON_MIN_N else 1.0 if d[0] == 0 else float(
                    stats.wilcoxon(a, b).pvalue)}
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_t=float(res.pvalue))
    if len(d) >= WILCOXON_MIN_N:
        out["p_wilcoxon"] = float(stats.wilcoxon(a, b).pvalue)
    return out


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels); NaN entries stay NaN and are not counted."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(list(pvalues), dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out


def verdict_word(n: int, mean_diff: float, p_adj: float) -> str:
    if n < 2 or not np.isfinite(p_adj):
        return f"not testable (n={n})"
    if p_adj < ALPHA:
        return "better" if mean_diff > 0 else "worse"
    return f"not distinguishable at n={n}"


PAIRED_COLUMNS = CELL + ["variant", "reference", "metric", "n", "mean_diff", "ci_low", "ci_high", "p_t", "p_wilcoxon"]


def _pairs(runs: pd.DataFrame, metric: str, reference_of) -> pd.DataFrame:
    """One paired test per cell and variant v whose `reference_of(v)` ran in the same cell (None: skip)."""
    done = runs[runs["status"] == "done"]
    rows = []
    for cell, g in done.groupby(CELL, sort=True):
        table = _per_seed(g, metric)
        for v in table.columns:
            ref = reference_of(v)
            if ref is None or ref == v or ref not in table:
                continue
            pair = table[[v, ref]].dropna()
            rows.append({**dict(zip(CELL, cell)), "variant": v, "reference": ref, "metric": metric,
                         **paired_test(pair[v], pair[ref])})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _with_verdict(out: pd.DataFrame) -> pd.DataFrame:
    out["verdict"] = [verdict_word(n, d, p) for n, d, p in zip(out["n"], out["mean_diff"], out["p_holm"])]
    return out


def paired_comparisons(runs: pd.DataFrame, reference: str = "magnitude", metric: str = "acc_final_pct") -> pd.DataFrame:
    """Every variant against `reference` in each cell, paired over seeds (both finished), with
    Holm correction over all comparisons of one (experiment, dataset, model) table. Cells without
    the reference have no rows. Differences in the metric's units (pp for accuracies)."""
    out = _pairs(runs, metric, lambda v: reference)
    out["p_holm"] = np.nan
    for _, g in out.groupby(SETTING, sort=False):
        out.loc[g.index, "p_holm"] = holm(g["p_t"])
    return _with_verdict(out)


def ablation_comparisons(runs: pd.DataFrame, metric: str = "acc_final_pct") -> pd.DataFrame:
    """Each variant `X@label` against its plain method `X` in every cell where both ran, paired
    over seeds: does the mechanism the variant removes or changes matter? Holm correction over all
    pairs of the table (one family of questions, whatever the cell)."""
    out = _pairs(runs, metric, lambda v: v.split("@", 1)[0] if "@" in v else None)
    out["p_holm"] = holm(out["p_t"])
    return _with_verdict(out)


def significant_best(cell_runs: pd.DataFrame, metric: str, better: str) -> str | None:
    """The variant with the best mean in one cell, if a paired t-test over seeds says it beats
    the runner-up (p < ALPHA); None otherwise (a tie, n < 2, or not significant)."""
    table = _per_seed(cell_runs[cell_runs["status"] == "done"], metric).dropna(axis=1, how="all")
    if table.shape[1] < 2:
        return None
    order = table.mean().sort_values(ascending=(better == "min"))
    top, second = order.index[0], order.index[1]
    if order.iloc[0] == order.iloc[1]:
        return None
    pair = table[[top, second]].dropna()
    res = paired_test(pair[top], pair[second])
    sign = 1 if better == "max" else -1
    return top if res["p_t"] < ALPHA and sign * res["mean_diff"] > 0 else None


@dataclass
class Ranking:
    """Friedman test + Nemenyi post-hoc over blocks (cell x seed) where every variant finished."""

    metric: str
    blocks: int
    mean_ranks: pd.Series          # 1 = best, ascending
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
        return pd.DataFrame({"variant": self.mean_ranks.index, "mean_rank": self.mean_ranks.values,
                             "blocks": self.blocks, "friedman_p": self.friedman_p, "cd": self.cd})


def ranking(runs: pd.DataFrame, metric: str = "acc_final_pct") -> Ranking | None:
    """Rank variants by `metric` (higher is better) in every block = (cell, seed) where all of
    them finished. None with fewer than 2 variants; p NaN (and a note) with < 3 variants or < 2
    blocks, where the Friedman test is undefined."""
    import scikit_posthocs as sp

    done = runs[runs["status"] == "done"]
    if done["variant"].nunique() < 2:
        return None
    wide = done.pivot_table(index=CELL + ["seed"], columns="variant", values=metric, aggfunc="mean")
    full = wide.dropna()
    ranks = full.rank(axis=1, ascending=False)
    k, n = full.shape[1], len(full)
    mean_ranks = ranks.mean().sort_values()
    if k < 3 or n < 2:
        why = f"Friedman needs ≥ 3 variants and ≥ 2 complete blocks (have {k} and {n})"
        return Ranking(metric, n, mean_ranks, np.nan, None, np.nan, len(wide) - n, why)
    try:
        p = float(stats.friedmanchisquare(*[full[c] for c in full.columns]).pvalue)
    except ValueError:  # every block ties completely
        p = 1.0
    p = 1.0 if not np.isfinite(p) else p
    nem = sp.posthoc_nemenyi_friedman(full.to_numpy())
    nem.index = nem.columns = list(full.columns)
    q = stats.studentized_range.ppf(1 - ALPHA, k, np.inf) / np.sqrt(2)
    cd = float(q * np.sqrt(k * (k + 1) / (6 * n)))
    return Ranking(metric, n, mean_ranks, p, nem.loc[mean_ranks.index, mean_ranks.index], cd, len(wide) - n)


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
