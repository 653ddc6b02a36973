"""Paired comparisons under the grid's pre-registered design (`bench.run.config.Design`, issue 27):
which comparison is primary, how each family is adjusted, and each row's verdict.

Pairing: the variants of a (dataset, model, target) cell run on the same seeds, so per-seed
differences cancel seed-to-seed variation. Methods that prune the trained base share that base
per seed; a method that trains from scratch (`needs_pretrained = False`, RLS) shares the seed's
initialisation, the one the base started from, not the base itself.

Contrasts: each target (`macs:0.5`), and, where the design makes it primary, `mean` = each
seed's mean over the targets of the (dataset, model); a seed counts there only where both
variants finished every target.

Families (α = 0.05):
- primary: the design's primary contrast, one comparison per variant and (dataset, model), one
  family per experiment. Holm over its t-test p-values and, separately, over its TOST p-values.
  CIs are Bonferroni-simultaneous at 1 − α/m, so a CI that excludes 0 is always a Holm rejection.
- secondary: every other contrast of a (dataset, model), one family per (dataset, model), with
  Bonferroni: p_adj = min(1, m·p) and the CI at 1 − α/m agree exactly (p_adj < α iff the CI
  excludes 0). Secondary rows locate a difference; the claims are the primary ones.
The MDE (80 % power) is taken at α/m of the row's family, Holm's strictest step: conservative.

Verdicts: better / worse = the adjusted t-test rejects and |mean difference| is more than one
test image (the resolution: a one-image difference on every seed is the measurement's grain, not
a finding); equivalent = the adjusted TOST rejects |difference| >= margin; otherwise
inconclusive, with its MDE. The paired sd is floored at the resolution (bench.report.power).
A row whose runs failed a precondition check carries it (`preconditions`), so every verdict on
it is read with the check beside it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from bench.core.datasets import DATASETS
from bench.report.checks import failed_checks
from bench.report.load import SETTING
from bench.run.config import DEFAULT_REFERENCE, Design, target_label
from bench.report.power import (ALPHA, POI_MIN_N, mde, paired_test, probability_of_improvement,
                                wilcoxon_p)

MEAN = "mean"                 # the contrast "each seed's mean over the targets"
PRIMARY, SECONDARY = "primary", "secondary"
PAIRED_COLUMNS = SETTING + [
    "contrast", "target_kind", "target", "family", "variant", "reference", "metric", "n", "mean_diff", "sd",
    "sd_used", "resolution", "margin", "alpha_adj", "ci_level", "ci_low", "ci_high", "p_t", "p_adj", "p_tost",
    "p_tost_adj", "mde", "p_wilcoxon", "poi", "poi_low", "poi_high", "verdict", "preconditions"]


def resolution_pp(runs: pd.DataFrame) -> float:
    """One test image in percentage points, 100 / N, for the runs of one dataset; N is the
    official test split (its registry entry; 10,000 for a dataset no longer registered), cut to
    `test_subset` where runs used one (the coarsest if they differ)."""
    info = DATASETS.get(runs["dataset"].iloc[0])
    full = info.test_images if info else 10_000
    subsets = pd.to_numeric(runs["test_subset"], errors="coerce").dropna() if "test_subset" in runs else []
    n = min([full, *[int(s) for s in subsets]])
    return 100.0 / n


def contrast_tables(done: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    """contrast -> seed x variant table of one (dataset, model)'s finished runs: one per target,
    plus `mean` when there are several targets."""
    tables = {target_label(k, t): g.pivot_table(index="seed", columns="variant", values=metric, aggfunc="mean")
              for (k, t), g in done.groupby(["target_kind", "target"], sort=True)}
    if len(tables) > 1:
        stack = pd.concat(tables, names=["contrast", "seed"]).groupby(level="seed")
        tables = {MEAN: stack.mean().where(stack.count() == len(tables)), **tables}
    return tables


def primary_contrast(design: Design, dataset: str, contrasts: list[str]) -> str | None:
    """The design's primary contrast of `dataset` among those that ran (a lone target stands for
    the mean); None when it did not run."""
    want = design.primary_of(dataset)
    targets = [c for c in contrasts if c != MEAN]
    if want == MEAN and len(targets) == 1:
        return targets[0]
    return want if want in contrasts else None


@dataclass
class _Pair:
    """One comparison before its family is known: the per-seed differences and the runs behind them."""

    key: dict
    family: str
    diffs: np.ndarray
    resolution: float
    note: str


def _pairs(runs: pd.DataFrame, reference_of: Callable[[str], str | None], design: Design, metric: str
           ) -> list[_Pair]:
    done = runs[runs["status"] == "done"]
    out = []
    for setting, g in done.groupby(SETTING, sort=True):
        tables = contrast_tables(g, metric)
        primary = primary_contrast(design, setting[1], list(tables))
        resolution = resolution_pp(g)
        for contrast, table in tables.items():
            if contrast == MEAN and primary != MEAN:  # the mean over targets is a contrast only when pre-registered
                continue
            in_contrast = g if contrast == MEAN else g[[target_label(k, t) == contrast
                                                        for k, t in zip(g["target_kind"], g["target"])]]
            for v in table.columns:
                ref = reference_of(v)
                if ref is None or ref == v or ref not in table:
                    continue
                pair = table[[v, ref]].dropna()
                if pair.empty:
                    continue
                behind = in_contrast[in_contrast["seed"].isin(pair.index)]
                note = failed_checks(behind[behind["variant"] == v])
                ref_note = failed_checks(behind[behind["variant"] == ref])
                kind, target = (MEAN, np.nan) if contrast == MEAN else (in_contrast["target_kind"].iloc[0],
                                                                        in_contrast["target"].iloc[0])
                key = {**dict(zip(SETTING, setting)), "contrast": contrast, "target_kind": kind, "target": target,
                       "variant": v, "reference": ref, "metric": metric}
                out.append(_Pair(key, PRIMARY if contrast == primary else SECONDARY,
                                 (pair[v] - pair[ref]).to_numpy(), resolution,
                                 "; ".join(filter(None, [note, ref_note and f"{ref}: {ref_note}"]))))
    return out


def _adjust(p: pd.Series, method: str) -> pd.Series:
    """statsmodels' multiple-testing adjustment over the finite p-values; NaN stays NaN."""
    from statsmodels.stats.multitest import multipletests

    out = pd.Series(np.nan, index=p.index)
    ok = p.notna()
    if ok.any():
        out[ok] = multipletests(p[ok].to_numpy(), alpha=ALPHA, method=method)[1]
    return out


def verdict_word(n: int, mean_diff: float, p_adj: float, p_tost_adj: float, resolution: float) -> str:
    """better / worse / equivalent / inconclusive (see the module docstring); n < 2: not testable."""
    if n < 2 or not np.isfinite(p_adj):
        return f"not testable (n={n})"
    if p_adj < ALPHA and abs(mean_diff) > resolution * (1 + 1e-6):
        return "better" if mean_diff > 0 else "worse"
    return "equivalent" if p_tost_adj < ALPHA else "inconclusive"


def compare(runs: pd.DataFrame, reference_of: Callable[[str], str | None], design: Design | None = None,
            metric: str = "acc_final_pct") -> pd.DataFrame:
    """Every variant v against `reference_of(v)` (None: skip) in every contrast where both
    finished on a shared seed, with families, adjusted p, CI, TOST, MDE, PoI and verdict."""
    design = design or Design()
    pairs = _pairs(runs, reference_of, design, metric)
    # the family of each pair: primary per experiment, secondary per (experiment, dataset, model)
    fam = [(p.key["experiment"],) if p.family == PRIMARY else tuple(p.key[k] for k in SETTING) for p in pairs]
    size = Counter(f for p, f in zip(pairs, fam) if len(p.diffs) >= 2)  # m: the family's testable pairs
    rows = []
    for p, f in zip(pairs, fam):
        alpha = ALPHA / max(1, size[f])
        t = paired_test(p.diffs, resolution=p.resolution, margin=design.margin_pp, ci_alpha=alpha)
        poi = probability_of_improvement([p.diffs]) if t.n >= POI_MIN_N else (np.nan,) * 3
        rows.append({**p.key, "family": p.family, "n": t.n, "mean_diff": t.mean, "sd": t.sd, "sd_used": t.sd_used,
                     "resolution": p.resolution, "margin": design.margin_pp, "alpha_adj": alpha,
                     "ci_level": 1 - alpha, "ci_low": t.ci_low, "ci_high": t.ci_high, "p_t": t.p, "p_tost": t.p_tost,
                     "mde": mde(t.n, t.sd_used, alpha), "p_wilcoxon": wilcoxon_p(p.diffs, alpha), "poi": poi[0],
                     "poi_low": poi[1], "poi_high": poi[2], "preconditions": p.note})
    out = pd.DataFrame(rows, columns=[c for c in PAIRED_COLUMNS if c not in ("p_adj", "p_tost_adj", "verdict")])
    out["p_adj"], out["p_tost_adj"] = np.nan, np.nan
    for f in dict.fromkeys(fam):
        idx = out.index[[g == f for g in fam]]
        method = "holm" if len(f) == 1 else "bonferroni"  # primary families are keyed by experiment alone
        out.loc[idx, "p_adj"] = _adjust(out.loc[idx, "p_t"], method)
        out.loc[idx, "p_tost_adj"] = _adjust(out.loc[idx, "p_tost"], method)
    out["verdict"] = [verdict_word(*r) for r in zip(out["n"], out["mean_diff"], out["p_adj"], out["p_tost_adj"],
                                                    out["resolution"])]
    order = out.assign(_f=out["family"] != PRIMARY, _m=out["contrast"] != MEAN)
    order = order.sort_values(SETTING + ["_f", "_m", "target_kind", "target", "variant"], kind="stable")
    return out.loc[order.index, PAIRED_COLUMNS].reset_index(drop=True)


def paired_comparisons(runs: pd.DataFrame, reference: str = DEFAULT_REFERENCE, design: Design | None = None,
                       metric: str = "acc_final_pct") -> pd.DataFrame:
    """Every variant against the grid's reference, paired over seeds (see the module docstring)."""
    return compare(runs, lambda v: reference, design, metric)


def plain_of(variant: str) -> str | None:
    """The plain method a variant `X@label` is an ablation of; None for a plain method."""
    return variant.split("@", 1)[0] if "@" in variant else None


def ablation_comparisons(runs: pd.DataFrame, design: Design | None = None,
                         metric: str = "acc_final_pct") -> pd.DataFrame:
    """Each variant `X@label` against its plain method `X`, paired over seeds, with the same
    design: does the mechanism the variant removes or changes matter? The ablation pairs form
    their own families (primary per experiment, secondary per dataset and model)."""
    return compare(runs, plain_of, design, metric)


def primary_blocks(runs: pd.DataFrame, design: Design | None = None, metric: str = "acc_final_pct"
                   ) -> dict[tuple, tuple[str, pd.DataFrame]]:
    """(experiment, dataset, model) -> (primary contrast, seed x variant table of it): one block per
    base (dataset, seed), so no two blocks of a ranking share one."""
    design = design or Design()
    done = runs[runs["status"] == "done"]
    out = {}
    for setting, g in done.groupby(SETTING, sort=True):
        tables = contrast_tables(g, metric)
        primary = primary_contrast(design, setting[1], list(tables))
        if primary is not None:
            out[setting] = (primary, tables[primary])
    return out


def improvement(runs: pd.DataFrame, reference: str = DEFAULT_REFERENCE, design: Design | None = None,
                metric: str = "acc_final_pct") -> pd.DataFrame:
    """Probability of improvement over the reference at the primary contrast, per (dataset, model)
    and pooled over them (strata of equal weight), with stratified-bootstrap 95 % CIs; only strata
    with >= POI_MIN_N seeds count."""
    pairs = [p for p in _pairs(runs, lambda v: reference, design or Design(), metric)
             if p.family == PRIMARY and len(p.diffs) >= POI_MIN_N]
    groups: dict[tuple[str, str], list[_Pair]] = {}
    for p in pairs:
        groups.setdefault((p.key["experiment"], p.key["variant"]), []).append(p)
    rows = []
    for (exp, variant), group in sorted(groups.items()):
        scopes = [(f"{p.key['dataset']} / {p.key['model']}", [p]) for p in group]
        if len(group) > 1:
            scopes.append(("pooled", group))
        for scope, ps in scopes:
            poi, low, high = probability_of_improvement([p.diffs for p in ps])
            rows.append({"experiment": exp, "scope": scope, "variant": variant, "reference": reference,
                         "strata": len(ps), "n": sum(len(p.diffs) for p in ps), "poi": poi, "poi_low": low,
                         "poi_high": high})
    return pd.DataFrame(rows, columns=["experiment", "scope", "variant", "reference", "strata", "n", "poi",
                                       "poi_low", "poi_high"])
