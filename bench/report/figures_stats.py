"""Figures of the report's statistics: the critical-difference diagram of the ranking and the
Pareto view (final accuracy against measured latency and against MACs), registered in
bench.report.figures' registry after its own figures. Same style, colours and display names; each
function returns a matplotlib Figure (no pyplot state)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, MaxNLocator

from bench.report.figures import (BASE_COLOR, UNMET_STYLE, Style, _grid, _legend, figure, mark_off_scale,
                                  view_limits)
from bench.report.load import CELL, SETTING
from bench.report.stats import PARETO_COSTS, RANK_DIGITS, Ranking

# "At least as cheap" within 1 %: points of one cell meet the same target to channel granularity,
# and latencies are medians of noisy repeats; a 0.5 % cheaper rival should still count.
COST_TOL = 0.01
DOMINATED_LABEL = "hollow: dominated (as cheap and significantly more accurate, paired)"


@figure("cd_diagram",
        "Ranking. Critical-difference diagrams (Friedman test, Nemenyi post-hoc, α = 0.05), pooled "
        "and per dataset × model: mean rank of each variant by final test accuracy over independent "
        "blocks (one per base, valued at the design's primary contrast) where every variant "
        "finished; a bar joins variants whose ranks are not significantly different.")
def cd_diagram(ranks: Mapping[str, Ranking] | None, style: Style) -> Figure | None:
    """scikit-posthocs' critical-difference diagram, one panel per ranking scope (pooled first,
    then each dataset x model): mean rank per variant (1 = best final accuracy), bars join variants
    the Nemenyi test does not separate. Ranks and the CD are printed at RANK_DIGITS everywhere; the
    CD bar is drawn here so that its label is the title's number."""
    import scikit_posthocs as sp

    drawn = [r for r in (ranks or {}).values() if r.nemenyi_p is not None]
    if not drawn:
        return None
    heights = [0.45 * len(r.mean_ranks) + 1.4 for r in drawn]
    fig = Figure(figsize=(7.5, sum(heights)), layout="constrained")
    for ax, r in zip(fig.subplots(len(drawn), 1, squeeze=False, height_ratios=heights).ravel(), drawn):
        names = {v: style.label(v) for v in r.mean_ranks.index}
        mean_ranks = r.mean_ranks.rename(index=names)
        fmt = f"{{rank:.{RANK_DIGITS}f}}"
        cd = f"{r.cd:.{RANK_DIGITS}f}"
        sp.critical_difference_diagram(mean_ranks, r.nemenyi_p.rename(index=names, columns=names), ax=ax,
                                       label_fmt_left=f"{{label}} ({fmt})", label_fmt_right=f"({fmt}) {{label}}",
                                       color_palette={names[v]: style.colors.get(v, BASE_COLOR) for v in names})
        # Above the rank tick labels (about 0.7 in per unit: a panel's height follows its variants)
        ax.plot([mean_ranks.min(), mean_ranks.min() + r.cd], [0.8, 0.8], color=BASE_COLOR, lw=2)
        ax.text(mean_ranks.min() + r.cd / 2, 0.9, f"CD = {cd}", ha="center", va="bottom")
        ax.set_ylim(top=1.4)
        ax.set_title(f"{r.scope} ({r.contrast}): mean rank by final accuracy over {r.blocks} blocks; "
                     f"Friedman p = {r.friedman_p:.3g}, Nemenyi CD = {cd}", fontsize=9)
    return fig


def paired_dominated(points: pd.DataFrame, cost: str, verdicts: pd.DataFrame | None) -> np.ndarray:
    """True where another point of the same cell is at least as cheap (within COST_TOL) and the
    paired comparison over seeds calls it significantly more accurate: `verdicts` rows (CELL,
    variant, reference, verdict; `metric` acc_final_pct where given) saying "better" (variant beats
    reference) or "worse" (reference beats variant). A higher mean without such a verdict dominates
    nothing, so without verdicts no point is dominated."""
    out = np.zeros(len(points), dtype=bool)
    if verdicts is None or verdicts.empty:
        return out
    v = verdicts[verdicts["metric"] == "acc_final_pct"] if "metric" in verdicts else verdicts
    v = v.dropna(subset=["target"])  # a contrast over targets (`mean`) is no single point's
    beats = set()  # (*cell, winner, loser)
    for *cell, variant, reference, word in v[CELL + ["variant", "reference", "verdict"]].itertuples(index=False):
        if word == "better":
            beats.add((*cell, variant, reference))
        elif word == "worse":
            beats.add((*cell, reference, variant))
    rows = [(tuple(r[:-2]), r[-2], r[-1]) for r in points[CELL + ["variant", cost]].itertuples(index=False)]
    for i, (cell, loser, c) in enumerate(rows):
        out[i] = any(other == cell and cost_other <= c * (1 + COST_TOL) and (*cell, winner, loser) in beats
                     for other, winner, cost_other in rows)
    return out


@figure("pareto",
        "Pareto view. Final test accuracy against the pruned model's MACs and measured latency, one "
        "point per variant and target (mean over seeds). Hollow: dominated, i.e. another point of the "
        "same cell is as cheap (within 1 %) and the paired comparison over seeds (paired.csv) calls it "
        "significantly more accurate; a higher mean alone dominates nothing. × = a precondition failed "
        "in at least one seed; a far-off accuracy is an arrowhead at the axis edge with its value.")
def pareto(front: pd.DataFrame, style: Style, verdicts: pd.DataFrame | None = None) -> Figure | None:
    """One row per (experiment, dataset, model), one panel per measured cost: each variant's
    points (one per target, mean over seeds); hollow where another point dominates it by the paired
    verdict (paired_dominated). A far-off accuracy is marked at the axis edge."""
    costs = [c for c in PARETO_COSTS if c in front and front[c].notna().any()]
    if front.empty or not costs:
        return None
    groups = list(front.groupby(SETTING, sort=True))
    fig, axes = _grid(len(groups) * len(costs), len(costs), 4.2, 3.4)
    for i, (setting, g) in enumerate(groups):
        ylim = view_limits(g["acc_final_pct"], g["acc_final_pct"], g["acc_final_pct"])
        unmet = np.array([(*k, v) in style.unmet for *k, v in g[CELL + ["variant"]].itertuples(index=False)], bool)
        for j, cost in enumerate(costs):
            ax = axes[i * len(costs) + j]
            ax.set_title(style.title(setting))
            dom = paired_dominated(g, cost, verdicts)
            for variant, vg in style.by_name(g):
                d = dom[g.index.get_indexer(vg.index)]
                kw = {"ls": "none", "marker": style.markers[variant], "ms": 6, "color": style.colors[variant]}
                ax.plot(vg[cost][~d], vg["acc_final_pct"][~d], label=style.label(variant), **kw)
                ax.plot(vg[cost][d], vg["acc_final_pct"][d], mfc="white", **kw)
            if dom.any():
                ax.add_line(Line2D([], [], ls="none", marker="o", mfc="white", color="0.4", label=DOMINATED_LABEL))
            ax.set_xlabel(PARETO_COSTS[cost])
            ax.set_ylabel("final top-1 test accuracy (%)")
            if np.nanmax(g[cost]) / max(np.nanmin(g[cost]), 1e-12) > 20:
                ax.set_xscale("log")
            if cost == "macs_pruned":  # "150 k", not "150000", and few ticks: counts overlap on a narrow panel
                ax.xaxis.set_major_formatter(EngFormatter())
                if ax.get_xscale() == "linear":
                    ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_ylim(*ylim)
            if unmet.any():
                ax.plot(g[cost][unmet], g["acc_final_pct"][unmet].clip(*ylim), **UNMET_STYLE)
            mark_off_scale(ax, [(x, y, style.colors[v]) for x, y, v in zip(g[cost], g["acc_final_pct"], g["variant"])],
                           lambda v: f"{v:.1f} %")
    _legend(fig, axes)
    return fig

