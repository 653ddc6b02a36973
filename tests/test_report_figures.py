"""Figures a reviewer accepts (issue 27): Δacc trade-off curves with CI bands cut to possible
values, a far-off method marked at the axis edge instead of squashing the rest, 13 variants apart
by colour and by marker, failed preconditions marked, display names, CD labels at one precision,
and Pareto dominance only by a paired verdict. Synthetic runs; each figure is also rendered to PNG
as the report saves it, so layout errors surface here."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_rgb

from bench.report import figures as rf
from bench.report import figures_stats as rfs
from bench.report.names import display_name, display_names
from bench.report.stats import pareto_table, rankings
from tests.test_report import fake_runs

PLAIN = ["csgd", "feature_map", "magnitude", "pls_vip", "random", "rl_agent", "rls"]
ABLATED = ["csgd@fast_eps", "feature_map@activation", "pls_vip@per_layer", "rl_agent@l1_fill", "rls@exact_p",
           "rls@no_p"]


def grid(deltas: dict[str, dict[float, float]], seeds=(0, 1, 2), base: float = 0.9, **extra) -> pd.DataFrame:
    """Finished runs: variant -> {target: Δacc in pp}, every seed at that Δacc ± 0.2 pp."""
    noise = [0.0, 0.2, -0.2]
    return fake_runs([{"method": v.split("@")[0], "variant": v, "target": t, "macs_reduction": t, "seed": s,
                       "acc_base": base, "acc_final": base + (d + noise[s % 3]) / 100, **extra}
                      for v, by_target in deltas.items() for t, d in by_target.items() for s in seeds])


def panel(fig, title: str = "mnist"):
    return next(ax for ax in fig.axes if ax.get_title().startswith(title))


def legend_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_display_names_come_from_the_method_classes_with_a_fallback():
    assert display_name("magnitude") == "L1 magnitude" and display_name("pls_vip") == "PLS+VIP"
    assert display_name("rls@exact_p") == "RLS (exact P)" and display_name("csgd@fast_eps") == "C-SGD (auto ε)"
    assert display_name("my_plugin@big_lr") == "my_plugin (big lr)"  # unknown: the identifier, readable
    names = display_names(["rls@a_b", "rls@a b", "random"])
    assert names == {"random": "Random", "rls@a b": "RLS (a b) [rls@a b]", "rls@a_b": "RLS (a b) [rls@a_b]"}


def test_tradeoff_is_delta_acc_with_bands_cut_to_possible_values(tmp_path):
    # Base 99 %: Δacc can be at most +1 pp. One seed far below makes the t band reach past it.
    runs = fake_runs([{"method": "magnitude", "target": t, "macs_reduction": t, "seed": s, "acc_base": 0.99,
                       "acc_final": f} for t in (0.3, 0.7) for s, f in enumerate((0.999, 0.999, 0.97))]
                     + [{"method": "random", "dataset": "cifar10", "model": "vgg", "seed": s, "acc_base": 0.99,
                         "acc_final": f} for s, f in enumerate((0.999, 0.999, 0.97))])  # one target: error bar
    fig = rf.tradeoff(runs, rf.Style.for_runs(runs))
    rf.save(fig, tmp_path / "tradeoff")
    ax = panel(fig)
    assert ax.get_ylabel() == "Δ top-1 test accuracy vs base (pp)"
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "L1 magnitude")
    assert line.get_ydata() == pytest.approx([100 * (0.999 + 0.999 + 0.97) / 3 - 99] * 2)
    assert any(ln.get_label().startswith("unpruned base") and set(ln.get_ydata()) == {0} for ln in ax.get_lines())
    band = np.concatenate([p.vertices for c in ax.collections if isinstance(c, PolyCollection) for p in c.get_paths()])
    assert band[:, 1].max() == pytest.approx(1.0)  # 100 − base: the t interval itself reaches +4.1 pp
    assert band[:, 1].min() < -3
    bars = next(c for c in panel(fig, "cifar10").collections if isinstance(c, LineCollection))
    assert max(seg[:, 1].max() for seg in bars.get_segments()) == pytest.approx(1.0)


def test_a_far_off_method_is_marked_at_the_axis_edge_not_squashing_the_rest(tmp_path):
    deltas = {v: {0.3: -0.5 - 0.1 * i, 0.7: -2.0 - 0.3 * i} for i, v in enumerate(PLAIN) if v != "csgd"}
    runs = grid({**deltas, "csgd": {0.3: -1.5, 0.7: -60.0}})
    fig = rf.tradeoff(runs, rf.Style.for_runs(runs))
    rf.save(fig, tmp_path / "tradeoff")
    ax = panel(fig)
    lo, hi = ax.get_ylim()
    assert -10 < lo < -3.8 and hi > 0  # every other mean (down to −3.8 pp) and the base line in view
    assert [t.get_text() for t in ax.texts] == ["−60.0 pp"]
    edge = [ln for ln in ax.get_lines() if ln.get_marker() == "v" and not ln.get_clip_on()]
    assert len(edge) == 1 and edge[0].get_ydata()[0] == lo and edge[0].get_xdata()[0] == pytest.approx(70)
    assert to_rgb(edge[0].get_color()) == to_rgb(rf.Style.for_runs(runs).colors["csgd"])
    csgd = to_rgb(rf.Style.for_runs(runs).colors["csgd"])  # bars where in view, no band flooding the panel
    assert not any(isinstance(c, PolyCollection) and np.allclose(c.get_facecolor()[0][:3], csgd)
                   for c in ax.collections)


def test_thirteen_variants_get_thirteen_colours_and_markers(tmp_path):
    runs = grid({v: {0.5: -1.0 - 0.1 * i} for i, v in enumerate(PLAIN + ABLATED)})
    style = rf.Style.for_runs(runs)
    variants = PLAIN + ABLATED
    assert len({style.colors[v] for v in variants}) == len({style.markers[v] for v in variants}) == 13
    fig = rf.tradeoff(runs, style)
    rf.save(fig, tmp_path / "tradeoff")
    handles = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    pairs = {(to_rgb(handles[display_name(v)].get_color()), handles[display_name(v)].get_marker()) for v in variants}
    assert len(pairs) == 13
    assert "RLS (exact P)" in handles and "rls@exact_p" not in handles
    assert list(handles)[:3] == ["C-SGD", "C-SGD (auto ε)", "L1 magnitude"]  # a method's variants follow it


def _contrast_on_white(color: str) -> float:
    c = np.array(to_rgb(color))
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return 1.05 / (lin @ [0.2126, 0.7152, 0.0722] + 0.05)


def test_palette_and_markers_keep_their_promises():
    assert len(set(rf.PALETTE)) == 16 and min(map(_contrast_on_white, rf.PALETTE)) >= 3.0
    assert len(set(rf.MARKERS)) == 13 and np.gcd(len(rf.PALETTE), len(rf.MARKERS)) == 1
    assert "X" not in rf.MARKERS and "x" not in rf.MARKERS  # x marks a failed precondition


def test_points_whose_runs_failed_a_precondition_carry_a_cross_and_a_legend_entry(tmp_path):
    runs = grid({"magnitude": {0.3: -0.5, 0.7: -2.0}, "feature_map": {0.3: -0.6, 0.7: -2.5}},
                preconditions_met=1.0, latency_cpu_b1_pruned_ms=1.0)
    runs.loc[(runs["variant"] == "feature_map") & (runs["target"] == 0.7) & (runs["seed"] == 1),
             "preconditions_met"] = 0.0
    style = rf.Style.for_runs(runs)
    assert style.unmet == {("exp", "mnist", "lenet5", "macs", 0.7, "feature_map")}
    front = pareto_table(runs)
    figs = {"tradeoff": rf.tradeoff(runs, style), "latency": rf.latency(runs, style),
            "pareto": rfs.pareto(front, style)}
    for name, fig in figs.items():
        rf.save(fig, tmp_path / name)
        crosses = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == rf.UNMET_LABEL]
        assert crosses and all(len(ln.get_xdata()) == 1 for ln in crosses), name
        assert rf.UNMET_LABEL in legend_texts(fig), name
    assert panel(figs["tradeoff"]).get_lines()[-1].get_xdata()[0] == pytest.approx(70)
    clean = grid({"magnitude": {0.5: -0.5}}, preconditions_met=1.0)
    assert rf.UNMET_LABEL not in legend_texts(rf.tradeoff(clean, rf.Style.for_runs(clean)))


def test_cd_diagram_prints_ranks_and_the_cd_at_the_titles_precision(tmp_path):
    # Four variants, clearly ordered on most of six seeds: Friedman rejects, Nemenyi gives a CD.
    deltas = {"magnitude": -0.5, "rls": -0.9, "random": -1.4, "csgd": -3.0}
    runs = fake_runs([{"method": v, "seed": s, "acc_final": 0.9 + (d + 0.3 * ((s * (i + 1)) % 3)) / 100}
                      for i, (v, d) in enumerate(deltas.items()) for s in range(6)])
    ranks = rankings(runs)
    fig = rfs.cd_diagram(ranks, rf.Style.for_runs(runs))
    rf.save(fig, tmp_path / "cd")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    rank_labels = [t for t in texts if not t.startswith("CD")]
    assert len(rank_labels) == 4 and all(re.search(r"\(\d+\.\d\d\)", t) for t in rank_labels)
    assert {re.sub(r"\s*\(\d+\.\d\d\)\s*", "", t) for t in rank_labels} == {"L1 magnitude", "RLS", "Random", "C-SGD"}
    cd = next(t for t in texts if t.startswith("CD = "))
    assert re.fullmatch(r"CD = \d+\.\d\d", cd) and ax.get_title().endswith(f"Nemenyi {cd}")


def test_a_pareto_point_is_dominated_only_by_a_paired_verdict(tmp_path):
    cell = {"experiment": "e", "dataset": "mnist", "model": "lenet5", "target_kind": "macs"}
    points = pd.DataFrame([  # magnitude is the most accurate at 0.5; at 0.3 each point is alone
        {**cell, "target": 0.5, "variant": "magnitude", "macs_pruned": 100.0, "acc_final_pct": 99.0},
        {**cell, "target": 0.5, "variant": "random", "macs_pruned": 100.0, "acc_final_pct": 98.0},
        {**cell, "target": 0.5, "variant": "rls", "macs_pruned": 98.0, "acc_final_pct": 97.0},
        {**cell, "target": 0.5, "variant": "csgd", "macs_pruned": 100.5, "acc_final_pct": 16.0},
        {**cell, "target": 0.3, "variant": "csgd", "macs_pruned": 99.0, "acc_final_pct": 90.0}])
    verdicts = pd.DataFrame([{**cell, "target": t, "variant": v, "reference": "magnitude", "metric": "acc_final_pct",
                              "verdict": w} for t, v, w in [(0.5, "random", "inconclusive"), (0.5, "rls", "worse"),
                                                            (0.5, "csgd", "worse"), (None, "csgd", "worse")]])
    dominated = rfs.paired_dominated(points, "macs_pruned", verdicts)
    # random: a higher mean alone is no verdict; rls: worse, but 2 % cheaper; csgd: worse and as
    # cheap within 1 %; csgd at 0.3: the over-targets verdict is no point's.
    assert dominated.tolist() == [False, False, False, True, False]
    assert not rfs.paired_dominated(points, "macs_pruned", None).any()
    better = verdicts.assign(variant="rls", verdict="better").iloc[[1]]
    same_cost = points.assign(macs_pruned=100.0)
    assert rfs.paired_dominated(same_cost, "macs_pruned", better).tolist()[:3] == [True, False, False]

    style = rf.Style.for_runs(points.assign(status="done"))
    fig = rfs.pareto(points, style, verdicts)
    rf.save(fig, tmp_path / "pareto")
    ax = fig.axes[0]
    hollow = [ln for ln in ax.get_lines() if ln.get_markerfacecolor() == "white" and len(ln.get_xdata())]
    assert [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in hollow] == [(100.5, 16.0)]
    assert rfs.DOMINATED_LABEL in legend_texts(fig) and "Pareto front" not in legend_texts(fig)
    assert ax.get_ylim()[0] > 80 and [t.get_text() for t in ax.texts] == ["16.0 %"]  # far off: marked at the edge


def test_a_figure_is_one_registered_function():
    """The report draws every registered figure, in registration order, with the inputs its
    parameters name; one returning None (no data for it) is left out."""
    assert list(rf.FIGURES) == ["tradeoff", "latency", "widths", "curves", "cd_diagram", "pareto"]
    runs = fake_runs([{"method": "magnitude", "seed": s} for s in range(2)])
    inputs = rf.FigureInputs(runs, pd.DataFrame(), pd.DataFrame(), rf.Style.for_runs(runs))
    seen = {}

    @rf.figure("probe_for_tests", "A test figure.")
    def probe(runs, style, verdicts):
        seen.update(runs=len(runs), verdicts=verdicts)
        return rf.Figure() if verdicts is None else None

    try:
        drawn = rf.draw_all(inputs)
        assert list(drawn) == ["tradeoff", "latency", "probe_for_tests"]  # no widths, curves, ranks, front
        assert drawn["probe_for_tests"][1] == "A test figure." and seen == {"runs": 2, "verdicts": None}
        assert "probe_for_tests" not in rf.draw_all(dataclasses.replace(inputs, verdicts=pd.DataFrame()))
    finally:
        del rf.FIGURES["probe_for_tests"]
    with pytest.raises(TypeError, match="not FigureInputs fields"):
        rf.figure("bad", "")(lambda frame: None)
