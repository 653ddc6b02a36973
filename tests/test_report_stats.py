"""Paired statistics, ranking, Pareto view and verdict of the report, on a tiny synthetic MLflow
store whose numbers are chosen by hand and checked against scipy called directly."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import cli
from bench.report_stats import pareto_front, paired_test
from bench.tracking import Tracker

SEEDS = (0, 1, 2)
TARGETS = (0.3, 0.5)
BASE = {0: 0.980, 1: 0.975, 2: 0.985}  # each seed's shared base
# final accuracy per (variant, target, seed): `better` gains 3 pp on every seed; `twin` repeats
# magnitude exactly; `noisy` scatters around magnitude.
MAG = {(t, s): BASE[s] - 0.01 - 0.02 * t + 0.001 * s for t in TARGETS for s in SEEDS}
NOISE = {0: 0.004, 1: -0.006, 2: 0.001}
FINAL = {"magnitude": MAG, "twin": dict(MAG),
         "better": {k: v + 0.03 + 0.001 * k[1] for k, v in MAG.items()},
         "noisy": {k: v + NOISE[k[1]] for k, v in MAG.items()}}


def log_run(client, exp_id: str, variant: str, method: str, seed: int, target: float, metrics: dict) -> str:
    from mlflow.entities import Metric, Param

    run = client.create_run(exp_id, tags={"run_id": f"{variant}-{seed}-{target}", "method": method,
                                          "variant": variant, "dataset": "mnist", "model": "lenet5",
                                          "status": "done", "seed": str(seed)})
    params = {"seed": seed, "target_kind": "macs", "target": target, "pruning.ranking": "per_layer",
              "pruning.rounds": 1}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    return run.info.run_id


def metrics_of(variant: str, seed: int, target: float) -> dict:
    acc = FINAL[variant][(target, seed)]
    macs = 1000 * (1 - target)
    return {"acc_base": BASE[seed], "acc_pruned": acc - 0.2, "acc_final": acc, "acc_val_final": acc,
            "acc_val_pruned": acc - 0.2, "macs_base": 1000, "macs_pruned": macs, "macs_reduction": target,
            "params_base": 100, "params_pruned": 60, "params_reduction": 0.4,
            "latency_cpu_b1_base_ms": 2.0, "latency_cpu_b1_pruned_ms": 2.0 * (1 - target) + 0.01 * len(variant),
            "latency_cpu_b64_base_ms": 20.0, "latency_cpu_b64_pruned_ms": 12.0, "prune_time_s": 1.0,
            "finetune_time_s": 5.0, "target_met": 1.0}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    tracker = Tracker(root / "results")
    exp = tracker.experiment_id("syn")
    for variant in FINAL:
        for s in SEEDS:
            for t in TARGETS:
                log_run(tracker.client, exp, variant, "magnitude" if variant == "twin" else variant, s, t,
                        metrics_of(variant, s, t))
    out = root / "report"
    assert cli.main(["report", "--results-dir", str(root / "results"), "--experiment", "syn", "--out", str(out),
                     "--reference", "magnitude"]) == 0
    return out


def per_seed(variant: str, target: float) -> np.ndarray:
    return 100 * np.array([FINAL[variant][(target, s)] for s in SEEDS])


def test_paired_comparison_matches_scipy_and_holm(report):
    paired = pd.read_csv(report / "tables" / "paired.csv")
    assert set(paired["reference"]) == {"magnitude"} and len(paired) == 3 * len(TARGETS)
    for _, r in paired.iterrows():
        a, b = per_seed(r["variant"], r["target"]), per_seed("magnitude", r["target"])
        assert r["n"] == 3 and r["mean_diff"] == pytest.approx((a - b).mean())
        if r["variant"] != "twin":
            res = stats.ttest_rel(a, b)
            ci = res.confidence_interval(0.95)
            assert r["p_t"] == pytest.approx(res.pvalue) and (r["ci_low"], r["ci_high"]) == pytest.approx(ci)
    # Holm by hand over the table's six comparisons: sorted p times (m - i), running max, capped at 1
    p = paired["p_t"].to_numpy()
    order = np.argsort(p)
    adj = np.minimum(1, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    expect = np.empty_like(adj)
    expect[order] = adj
    assert paired["p_holm"].to_numpy() == pytest.approx(expect)
    better = paired[paired["variant"] == "better"]
    assert (better["p_holm"] < 0.05).all() and set(better["verdict"]) == {"better"}
    twin = paired[paired["variant"] == "twin"]
    assert (twin["mean_diff"] == 0).all() and (twin["p_t"] == 1).all()
    assert set(twin["verdict"]) == {"not distinguishable at n=3"}
    assert set(paired.loc[paired["variant"] == "noisy", "verdict"]) == {"not distinguishable at n=3"}


def test_verdict_opens_the_index_and_claims_only_what_the_tests_support(report):
    index = (report / "index.md").read_text()
    head = index.split("## How this was made")[0]
    assert head.splitlines()[2] == "## Verdict"
    assert "**better is better than magnitude** on mnist / lenet5, MACs −30%" in head
    assert "Not distinguishable from magnitude on mnist / lenet5, MACs −50%: noisy (at n=3), twin (at n=3)." in head
    for loser in ("noisy", "twin", "magnitude"):
        assert f"**{loser} is" not in head
    ranking = pd.read_csv(report / "tables" / "ranking.csv")
    wide = pd.DataFrame({v: np.concatenate([per_seed(v, t) for t in TARGETS]) for v in FINAL})
    assert ranking["friedman_p"].iloc[0] == pytest.approx(stats.friedmanchisquare(*wide.T.to_numpy()).pvalue)
    assert ranking["variant"].iloc[0] == "better" and ranking["blocks"].iloc[0] == 6
    assert "Friedman test rejects equal ranks" in head


def test_cd_diagram_and_pareto_figures_are_written(report):
    for name in ("cd_diagram", "pareto", "tradeoff"):
        for ext in ("png", "pdf"):
            assert (report / "figures" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
    front = pd.read_csv(report / "tables" / "pareto.csv")
    # at each target `better` is the most accurate; on MACs (equal across variants) it alone is on the front
    assert set(front.loc[front["front_macs_pruned"], "variant"]) == {"better"}


def test_final_accuracy_is_bold_only_where_significant(report):
    lines = (report / "tables" / "syn_mnist_lenet5.md").read_text().splitlines()
    col = [c.strip() for c in lines[0].split("|")].index("Final acc (%)")
    rows = [[c.strip() for c in line.split("|")] for line in lines[2:]]
    assert [r[2] for r in rows if r[col].startswith("**")] == ["better", "better"]  # one per target
    # the CPU speed-up of `twin` is higher by the same margin on every seed (p = 0): bold there
    speed = [c.strip() for c in lines[0].split("|")].index("CPU b1 speed-up (×)")
    assert {r[2] for r in rows if r[speed].startswith("**")} == {"twin"}


def test_pareto_front_and_paired_edge_cases_by_hand():
    # (cost, accuracy): (1, 90) and (2, 95) are on the front; (2, 80) and (3, 95) are dominated
    assert pareto_front([1, 2, 2, 3, np.nan], [90, 95, 80, 95, 99]).tolist() == [True, True, False, False, False]
    same = paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (same["mean_diff"], same["p_t"], same["n"]) == (0.0, 1.0, 3)
    assert np.isnan(paired_test([1.0], [0.0])["p_t"])  # n = 1: not testable
    six = paired_test(np.arange(6) + 1.0, np.zeros(6))
    assert six["p_wilcoxon"] == pytest.approx(stats.wilcoxon(np.arange(6) + 1.0).pvalue)


# -- ablations, budget and fallback markers, the second Δacc reference --------------------------------
ABL_NOISE = {0: 0.003, 1: -0.004, 2: 0.002}
ABL = {  # final accuracy per (variant, seed) at MACs -50 %
    "magnitude": {s: MAG[(0.5, s)] for s in SEEDS},
    "rls": {s: MAG[(0.5, s)] + 0.01 for s in SEEDS},
    "rls@no_p": {s: MAG[(0.5, s)] - 0.01 + ABL_NOISE[s] for s in SEEDS},
    "feature_map": {s: MAG[(0.5, s)] for s in SEEDS},
    "feature_map@activation": {s: MAG[(0.5, s)] - 0.002 * (s + 1) for s in SEEDS},
}
RLS_OWN = {s: BASE[s] + 0.002 for s in SEEDS}  # RLS's own unpruned net


@pytest.fixture(scope="module")
def ablation_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("abl")
    tracker = Tracker(root / "results")
    exp = tracker.experiment_id("abl")
    for variant, finals in ABL.items():
        for s in SEEDS:
            m = {**metrics_of("magnitude", s, 0.5), "acc_final": finals[s], "epochs_used": 2.0, "budget_met": 1.0}
            if variant == "rls@no_p" and s == 1:
                m.update(epochs_used=2.5, budget_met=0.0)  # trained past its budget
            if variant == "rls":
                m["acc_rls_unpruned"] = RLS_OWN[s]
            if variant.startswith("feature_map"):
                m["feature_map.fallback_share"] = 1.0 if variant.endswith("@activation") else 0.1
            log_run(tracker.client, exp, variant, variant.split("@")[0], s, 0.5, m)
    out = root / "report"
    assert cli.main(["report", "--results-dir", str(root / "results"), "--experiment", "abl", "--out", str(out)]) == 0
    return out


def test_ablation_table_pairs_each_variant_with_its_plain_method(ablation_report):
    abl = pd.read_csv(ablation_report / "ablations.csv")
    assert sorted(zip(abl["variant"], abl["reference"])) == [("feature_map@activation", "feature_map"),
                                                              ("rls@no_p", "rls")]
    for _, r in abl.iterrows():
        a = 100 * np.array([ABL[r["variant"]][s] for s in SEEDS])
        b = 100 * np.array([ABL[r["reference"]][s] for s in SEEDS])
        res = stats.ttest_rel(a, b)
        assert r["n"] == 3 and r["mean_diff"] == pytest.approx((a - b).mean())
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(res.confidence_interval(0.95))
        assert r["p_t"] == pytest.approx(res.pvalue)
    p = abl["p_t"].to_numpy()  # Holm over the two pairs: the smaller p doubled, the larger kept (running max)
    lo, hi = sorted(p)
    assert sorted(abl["p_holm"]) == pytest.approx(sorted([min(1, 2 * lo), max(min(1, 2 * lo), hi)]))
    md = (ablation_report / "ablations.md").read_text()
    assert md.startswith("# Does each mechanism matter?") and "| rls@no_p | rls | 3 |" in md
    assert "## Ablations: variant vs its plain method" in (ablation_report / "index.md").read_text()


def _table_rows(path) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Header, {variant label: cells} and the footnotes of a Markdown table file."""
    lines = path.read_text().splitlines()
    body = [line for line in lines[2:] if line.startswith("|")]
    header = [c.strip() for c in lines[0].split("|")]
    rows = {cells[2]: cells for cells in ([c.strip() for c in line.split("|")] for line in body)}
    return header, rows, [line for line in lines[2:] if line and not line.startswith("|")]


def test_tables_mark_budget_fallback_and_show_both_delta_references(ablation_report):
    header, rows, notes = _table_rows(ablation_report / "tables" / "abl_mnist_lenet5.md")
    assert set(rows) == {"magnitude", "rls", "rls@no_p", "feature_map", "feature_map@activation†"}
    assert any(n.startswith("† Fallback scoring (mean activation) decided more than 50%") for n in notes)
    epochs = header.index("Epochs used")
    assert rows["rls@no_p"][epochs] == "2.17 ± 0.29 ⚠" and rows["rls"][epochs] == "2.00 ± 0.00"
    assert rows["rls@no_p"][header.index("Runs")].endswith("over budget 1/3")
    assert any(n.startswith("⚠ Over budget") for n in notes)
    own, base = header.index("Δacc vs own unpruned (pp)"), header.index("Δacc (pp)")
    d_own = 100 * np.array([ABL["rls"][s] - RLS_OWN[s] for s in SEEDS])
    d_base = 100 * np.array([ABL["rls"][s] - BASE[s] for s in SEEDS])
    assert rows["rls"][own] == f"{d_own.mean():+.2f} ± {d_own.std(ddof=1):.2f}"
    assert rows["rls"][base].strip("*") == f"{d_base.mean():+.2f} ± {d_base.std(ddof=1):.2f}"
    assert rows["magnitude"][own] == "–"
    csv = pd.read_csv(ablation_report / "tables" / "abl_mnist_lenet5.csv").set_index("variant")
    assert csv.loc["rls@no_p", "budget_over"] == 1 and csv.loc["feature_map@activation", "fallback_majority"] == 3
    assert csv.loc["feature_map", "fallback_majority"] == 0
    tex = (ablation_report / "tables" / "abl_mnist_lenet5.tex").read_text()
    assert r"feature\_map@activation$^\dagger$" in tex and r"\textsuperscript{!}" in tex


# -- the reference as a grid setting ---------------------------------------------------------------
def test_report_compares_with_the_reference_the_grid_recorded(tmp_path):
    tracker = Tracker(tmp_path / "results")
    exp = tracker.experiment_id("syn")
    for variant in ("magnitude", "better", "noisy"):
        for s in SEEDS:
            log_run(tracker.client, exp, variant, variant, s, 0.5, metrics_of(variant, s, 0.5))
    tracker.set_reference("syn", "noisy")  # what `reference: noisy` in the grid's config leaves
    assert cli.main(["report", "--results-dir", str(tmp_path / "results"), "--experiment", "syn",
                     "--out", str(tmp_path / "out")]) == 0
    paired = pd.read_csv(tmp_path / "out" / "tables" / "paired.csv")
    assert set(paired["reference"]) == {"noisy"} and set(paired["variant"]) == {"magnitude", "better"}
    assert cli.main(["report", "--results-dir", str(tmp_path / "results"), "--experiment", "syn",
                     "--out", str(tmp_path / "out2"), "--reference", "magnitude"]) == 0  # the flag wins
    assert set(pd.read_csv(tmp_path / "out2" / "tables" / "paired.csv")["reference"]) == {"magnitude"}


def test_a_grid_run_records_its_reference_and_an_unknown_one_is_refused(tmp_path, monkeypatch):
    from bench import config
    from bench.errors import ConfigError
    from bench.grid import run_grid

    raw = {"name": "g", "methods": {"magnitude": {}, "random": {}}, "reference": "random",
           "datasets": {"mnist": {"models": ["lenet5"]}}, "data_dir": str(tmp_path / "no-data"),
           "results_dir": str(tmp_path / "r")}
    monkeypatch.delenv("BENCH_DATA", raising=False)  # it would beat the config's empty data_dir
    counts = run_grid(config.from_dict(raw), progress=False)  # no data: both cells end skipped at once
    assert counts == {"skipped": 2}
    assert Tracker(tmp_path / "r").reference("g") == "random"
    with pytest.raises(ConfigError, match=r"^reference: 'nope' is not a method of this grid; allowed: magnitude, random$"):
        config.from_dict({**raw, "reference": "nope"})


def test_verdict_names_an_untestable_variant_with_its_n_once():
    """A variant with one finished seed is 'not testable (n=1)': listed against the reference with
    its n in one pair of parentheses (the partial curves report printed '((n=1))')."""
    from bench.report_index import verdict

    paired = pd.DataFrame([
        {"dataset": "mnist", "model": "lenet5", "target_kind": "macs", "target": 0.3, "variant": "pls_vip",
         "verdict": "not testable (n=1)"},
        {"dataset": "mnist", "model": "lenet5", "target_kind": "macs", "target": 0.3, "variant": "rls",
         "verdict": "not distinguishable at n=3"}])
    lines = verdict(paired, None, "magnitude")
    assert "- Not testable against magnitude on mnist / lenet5, MACs −30%: pls_vip (n=1)." in lines
    assert "- Not distinguishable from magnitude on mnist / lenet5, MACs −30%: rls (at n=3)." in lines


def test_pareto_macs_tick_labels_do_not_overlap(tmp_path):
    """MNIST's pruned LeNet-5 has 1.2e5-3e5 MACs: plain tick labels ("125000", every 25 000) ran
    into each other in the committed curves report."""
    from bench.report_figures import Style, save
    from bench.report_figures_stats import draw_all

    table = pd.DataFrame({"experiment": "e", "dataset": "mnist", "model": "lenet5",
                          "variant": ["a", "b"] * 3, "target_kind": "macs", "target": [0.3, 0.3, 0.5, 0.5, 0.7, 0.7],
                          "acc_final_pct": [99.0, 98.9, 98.8, 98.5, 98.0, 97.0],
                          "macs_pruned": [297e3, 292e3, 214e3, 208e3, 126e3, 123e3],
                          "latency_cpu_b1_pruned_ms": [0.2, 0.21, 0.19, 0.2, 0.18, 0.19]})
    for cost in ("macs_pruned", "latency_cpu_b1_pruned_ms"):
        table[f"front_{cost}"] = pareto_front(table[cost], table["acc_final_pct"])
    fig, _ = draw_all(None, table, Style(colors={"a": "C0", "b": "C1"}, markers={"a": "o", "b": "s"}))["pareto"]
    save(fig, tmp_path / "pareto")  # the report's rendering (style, 200 dpi); extents below are of it
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [tick.label1 for tick in ax.xaxis.get_major_ticks() if lo <= tick.get_loc() <= hi]
    boxes = sorted((label.get_window_extent() for label in shown), key=lambda b: b.x0)
    assert len(boxes) >= 2
    gaps = [right.x0 - left.x1 for left, right in zip(boxes, boxes[1:])]
    assert min(gaps) > 10, gaps  # pixels at 200 dpi between neighbouring labels
