"""The verdict that opens index.md, written from the comparisons (bench.report.compare), the
probability of improvement and the rankings (bench.report.stats).

It claims only what the tests support, in four words: better / worse (adjusted paired t-test),
equivalent (adjusted TOST within the design's margin), inconclusive (with the MDE: the size of
difference the comparison would likely have missed). Primary rows are the claims; secondary rows
only say where a difference lies. A row whose runs failed a precondition check carries the check
and its count inside the claim ("worse; merge_lossless failed in 3/3 runs").
"""
from __future__ import annotations

import pandas as pd

from bench.report.compare import PRIMARY, SECONDARY
from bench.report.power import ALPHA
from bench.report.stats import POOLED, Ranking, contrast_text
from bench.run.config import Design

WORDS = ("better", "worse", "equivalent", "inconclusive")


def from_scratch(runs: pd.DataFrame) -> list[str]:
    """Variants whose method trains from its seeded initialisation (`needs_pretrained = False`,
    e.g. RLS) instead of pruning the trained base; plugins no longer registered are skipped."""
    from bench.core.registry import get_method
    from bench.errors import UnknownMethod

    out = []
    for variant, method in sorted(set(zip(runs["variant"], runs["method"]))):
        try:
            if not get_method(method).needs_pretrained:
                out.append(variant)
        except UnknownMethod:
            continue
    return out


def pairing_sentence(scratch: list[str]) -> str:
    """What a pair of runs shares, true of every row it covers."""
    if not scratch:
        return "Pairs share the seed, and every variant prunes the same trained base per seed."
    names = ", ".join(f"`{v}`" for v in scratch)
    one = len(scratch) == 1
    return (f"Pairs share the seed. Every variant except {names} prunes the same trained base per seed; {names} "
            f"{'trains' if one else 'train'} from the seeded initialisation the base started from, not from the "
            f"base, so {'its' if one else 'their'} pairs share the seed's initialisation, not the trained base.")


def _p_name(r) -> str:
    return "p_Holm" if r["family"] == PRIMARY else "p_Bonf"


def _ci(r) -> str:
    return f"{100 * r['ci_level']:.3g} % simultaneous CI [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"


def _below_resolution(r) -> str:
    """Why an adjusted rejection is not a claim: the difference is within one test image."""
    if r["verdict"] in ("better", "worse") or not r["p_adj"] < ALPHA:
        return ""
    return (f"; the t-test's {_p_name(r)} = {r['p_adj']:.2g} is for a difference of at most one test image "
            f"({r['resolution']:g} pp), which is not claimed")


def claim(r) -> str:
    """One comparison as a sentence: the verdict (with any failed precondition), the difference
    and the number that decided it; inconclusive rows give their MDE."""
    word, n = r["verdict"], int(r["n"])
    head = f"**{word}" + (f"; {r['preconditions']}" if r["preconditions"] else "") + "**"
    diff = f"{r['mean_diff']:+.2f} pp ({_ci(r)})"
    if word in ("better", "worse"):
        text = f"{head}: {diff}, {_p_name(r)} = {r['p_adj']:.2g}, n = {n}"
        if r["p_tost_adj"] < ALPHA:
            text += f"; the difference lies within the ±{r['margin']:g} pp equivalence margin"
    elif word == "equivalent":
        text = (f"{head} within ±{r['margin']:g} pp: {diff}, TOST {_p_name(r)} = {r['p_tost_adj']:.2g}, "
                f"n = {n}")
    elif word == "inconclusive":
        text = (f"{head}: {diff}, n = {n}; a difference under {r['mde']:.2f} pp would likely be missed "
                "(MDE at 80 % power)")
    else:
        return head
    if pd.notna(r["poi"]):
        text += f"; P(improvement) = {r['poi']:.2f} [{r['poi_low']:.2f}, {r['poi_high']:.2f}]"
    return text + _below_resolution(r)


def _short(r) -> str:
    """A secondary row inside a list: variant and difference (and MDE, failed checks)."""
    bits = [f"{r['mean_diff']:+.2f} pp"] if pd.notna(r["mean_diff"]) else []
    if r["verdict"] == "inconclusive":
        bits.append(f"MDE {r['mde']:.2f} pp")
    if r["preconditions"]:
        bits.append(r["preconditions"])
    return f"{r['variant']} ({'; '.join(bits)})" if bits else str(r["variant"])


def comparison_lines(paired: pd.DataFrame) -> list[str]:
    """Primary rows one by one, then the secondary rows grouped by contrast and verdict word."""
    lines = []
    for _, r in paired[paired["family"] == PRIMARY].iterrows():
        lines.append(f"- {r['variant']} vs {r['reference']}, {r['dataset']} / {r['model']}, "
                     f"{contrast_text(r['contrast'])}: {claim(r)}.")
    secondary = paired[paired["family"] == SECONDARY]
    if len(secondary):
        lines += ["", "Secondary (where a difference lies; Bonferroni within each dataset / model):"]
    for (ds, model, contrast), g in secondary.groupby(["dataset", "model", "contrast"], sort=False):
        words = [w for w in WORDS if (g["verdict"] == w).any()] + sorted(set(g["verdict"]) - set(WORDS))
        parts = [f"{w}: " + ", ".join(_short(r) for _, r in g[g["verdict"] == w].iterrows()) for w in words]
        lines.append(f"- {ds} / {model}, {contrast_text(contrast)}: " + "; ".join(parts) + ".")
    return lines


def _design_sentence(paired: pd.DataFrame, design: Design, reference: str) -> str:
    primary = paired[paired["family"] == PRIMARY]
    settings = paired[["dataset", "model"]].drop_duplicates().itertuples(index=False)
    shown = []
    for ds, model in settings:
        mine = primary[(primary["dataset"] == ds) & (primary["model"] == model)]
        shown.append(f"{ds} / {model}: " + (contrast_text(mine["contrast"].iloc[0]) if len(mine) else
                                            f"{contrast_text(design.primary_of(ds))} (not run: every row there "
                                            "is secondary)"))
    m = int((primary["n"] >= 2).sum())
    return (f"Generated from the statistics below (α = {ALPHA}) under the grid's pre-registered design: reference "
            f"`{reference}`; primary contrast {'; '.join(shown)}; equivalence margin ±{design.margin_pp:g} pp. "
            f"The primary family (one comparison per variant and dataset, m = {m}) is Holm-adjusted for the paired "
            f"t-test (better / worse) and, separately, for the equivalence test (equivalent: the difference lies "
            f"within ±{design.margin_pp:g} pp); its CIs are simultaneous at 1 − α/m. Every other contrast is "
            "secondary, Bonferroni within its dataset / model. A difference of at most one test image (the "
            "accuracy's resolution) is never called better or worse. Inconclusive rows give their MDE: the "
            "difference the comparison would detect with 80 % power at its adjusted α.")


def ranking_lines(ranks: dict[str, Ranking]) -> list[str]:
    """One line per ranking scope: what a block is, and what the Friedman / Nemenyi tests support."""
    if not ranks:
        return ["- Ranking: fewer than two variants at a primary contrast, nothing to rank."]
    lines = []
    for scope, rank in ranks.items():
        what = ("one per dataset and seed, each at its primary contrast" if scope == POOLED
                else f"one per seed; value: {rank.contrast}")
        lead = f"- {scope}: {rank.blocks} independent blocks ({what})"
        if rank.nemenyi_p is None:
            lines.append(f"{lead}; not tested: {rank.note}.")
        elif rank.friedman_p < ALPHA:
            pairs = rank.significant_pairs()
            sep = ("; ".join(f"{a} ranks above {b}" for a, b in pairs) if pairs
                   else "no pair (the post-hoc test is weaker)")
            lines.append(f"{lead}: the Friedman test rejects equal ranks (p = {rank.friedman_p:.2g}); Nemenyi "
                         f"(CD = {rank.cd:.2f}) separates: {sep}. Every other pair is not distinguishable.")
        else:
            lines.append(f"{lead}: the Friedman test does not reject equal ranks (p = {rank.friedman_p:.2g}); the "
                         "mean ranks in the CD diagram are descriptive only.")
    return lines


def improvement_lines(improvement: pd.DataFrame) -> list[str]:
    """The pooled probability of improvement per variant (the per-dataset ones are in the claims)."""
    pooled = improvement[improvement["scope"] == "pooled"]
    if pooled.empty:
        return []
    items = ", ".join(f"{r['variant']} {r['poi']:.2f} [{r['poi_low']:.2f}, {r['poi_high']:.2f}]"
                      for _, r in pooled.iterrows())
    return [f"- P(improvement over {pooled['reference'].iloc[0]}) pooled over the datasets' primary contrasts "
            f"(stratified bootstrap, 95 %): {items}."]


def verdict(paired: pd.DataFrame, ranks: dict[str, Ranking], reference: str, *, design: Design | None = None,
            ablations: pd.DataFrame | None = None, improvement: pd.DataFrame | None = None,
            scratch: list[str] = ()) -> list[str]:
    """The verdict's lines: the design, the claims against the reference, the ablations' claims
    against their plain methods, the probability of improvement and the rankings."""
    design = design or Design()
    lines = ["## Verdict", ""]
    if paired.empty:
        lines += [f"- No paired comparison: the reference `{reference}` has no finished run in a cell with other "
                  "variants (choose one with `--reference`).", ""]
    else:
        lines += [_design_sentence(paired, design, reference) + " " + pairing_sentence(list(scratch)), "",
                  f"### Against `{reference}`", ""] + comparison_lines(paired) + [""]
    if ablations is not None and len(ablations):
        lines += ["### Ablations: each variant against its plain method", "",
                  "Same design, own families: does the mechanism the variant removes or changes matter?", ""]
        lines += comparison_lines(ablations) + [""]
    lines += ["### Ranking", ""] + (improvement_lines(improvement) if improvement is not None else [])
    lines += ranking_lines(ranks)
    return lines + [""]
