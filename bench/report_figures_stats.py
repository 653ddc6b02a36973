"""Figures of the report's statistics: the critical-difference diagram of the ranking and the
Pareto view (final accuracy against measured latency and against MACs). Same style and colours
as bench.report_figures; each function returns a matplotlib Figure (no pyplot state)."""
from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator

from bench.report_figures import BASE_COLOR, RC, Style, _grid, _legend
from bench.report_load import SETTING
from bench.report_stats import PARETO_COSTS, Ranking


def cd_diagram(rank: Ranking, style: Style) -> Figure | None:
    """scikit-posthocs' critical-difference diagram: mean rank per variant (1 = best final
    accuracy), bars join variants the Nemenyi test does not separate."""
    import scikit_posthocs as sp

    if rank is None or rank.nemenyi_p is None:
        return None
    fig = Figure(figsize=(7.5, 0.45 * len(rank.mean_ranks) + 1.4), layout="constrained")
    ax = fig.subplots()
    sp.critical_difference_diagram(rank.mean_ranks, rank.nemenyi_p, cd=rank.cd, ax=ax,
                                   color_palette={v: style.colors.get(v, BASE_COLOR) for v in rank.mean_ranks.index})
    ax.set_title(f"Mean rank by final accuracy over {rank.blocks} blocks (cell × seed); Friedman "
                 f"p = {rank.friedman_p:.3g}, Nemenyi CD = {rank.cd:.2f}", fontsize=9)
    return fig


def pareto(table: pd.DataFrame, style: Style) -> Figure | None:
    """One row per (experiment, dataset, model), one panel per measured cost: each variant's
    points (one per target, mean over seeds), the Pareto front circled and joined."""
    costs = [c for c in PARETO_COSTS if f"front_{c}" in table]
    if table.empty or not costs:
        return None
    groups = list(table.groupby(SETTING, sort=True))
    fig, axes = _grid(len(groups) * len(costs), len(costs), 4.2, 3.4)
    for i, (setting, g) in enumerate(groups):
        for j, cost in enumerate(costs):
            ax = axes[i * len(costs) + j]
            ax.set_title(style.title(setting))
            for variant, vg in g.groupby("variant"):
                ax.plot(vg[cost], vg["acc_final_pct"], ls="none", marker=style.markers[variant], ms=6,
                        color=style.colors[variant], label=variant)
            front = g[g[f"front_{cost}"]].sort_values(cost)
            ax.plot(front[cost], front["acc_final_pct"], drawstyle="steps-post", color=BASE_COLOR, lw=1, ls="--",
                    label="Pareto front")
            ax.plot(front[cost], front["acc_final_pct"], ls="none", marker="o", ms=11, mfc="none",
                    mec=BASE_COLOR, mew=1.2, label="on the front")
            ax.set_xlabel(PARETO_COSTS[cost])
            ax.set_ylabel("final top-1 test accuracy (%)")
            if np.nanmax(g[cost]) / max(np.nanmin(g[cost]), 1e-12) > 20:
                ax.set_xscale("log")
            if cost == "macs_pruned":  # "150 k", not "150000", and few ticks: counts overlap on a narrow panel
                ax.xaxis.set_major_formatter(EngFormatter())
                if ax.get_xscale() == "linear":
                    ax.xaxis.set_major_locator(MaxNLocator(5))
    _legend(fig, axes)
    return fig


CAPTIONS = {
    "cd_diagram": "Ranking. Critical-difference diagram (Friedman test, Nemenyi post-hoc, α = 0.05): mean "
                  "rank of each variant by final test accuracy over all blocks (cell × seed) where every "
                  "variant finished; a bar joins variants whose ranks are not significantly different.",
    "pareto": "Pareto view. Final test accuracy against the pruned model's MACs and measured latency, one "
              "point per variant and target (mean over seeds); circled and joined: the Pareto front (no "
              "other point is both cheaper and more accurate).",
}


def draw_all(rank: Ranking | None, front: pd.DataFrame, style: Style) -> dict[str, tuple[Figure, str]]:
    """Every statistics figure that has data, drawn in the report's style: name -> (Figure, caption)."""
    with mpl.rc_context(RC):
        figs = {"cd_diagram": cd_diagram(rank, style), "pareto": pareto(front, style)}
    return {k: (f, CAPTIONS[k]) for k, f in figs.items() if f is not None}
