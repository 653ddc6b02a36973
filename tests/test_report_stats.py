"""Paired comparisons under the design, their verdicts, ranking, Pareto view and the index's
verdict, on a tiny synthetic MLflow store whose numbers are chosen by hand and checked against
scipy and statsmodels called directly."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.weightstats import ttost_paired

from bench import cli
from bench.report.compare import MEAN, compare, paired_comparisons
from bench.report.power import mde
from bench.report.stats import pareto_front, rankings
from bench.report.verdict import claim, from_scratch, pairing_sentence, verdict
from bench.run.config import Design
from bench.run.tracking import Tracker

SEEDS = (0, 1, 2)
TARGETS = (0.3, 0.5)
BASE = {0: 0.980, 1: 0.975, 2: 0.985}  # each seed's shared base
# final accuracy per (variant, target, seed): `better` gains 3 pp on every seed; `twin` repeats magnitude
# within 0.01-0.02 pp; `noisy` scatters around magnitude; `tiny` loses one test image (0.01 pp) on every seed.
MAG = {(t, s): BASE[s] - 0.01 - 0.02 * t + 0.001 * s for t in TARGETS for s in SEEDS}
NOISE = {0: 0.004, 1: -0.006, 2: 0.001}
TWIN = {0: 0.0001, 1: -0.0002, 2: 0.0001}
FINAL = {"magnitude": MAG,
         "twin": {k: v + TWIN[k[1]] for k, v in MAG.items()},
         "better": {k: v + 0.03 + 0.001 * k[1] for k, v in MAG.items()},
         "noisy": {k: v + NOISE[k[1]] for k, v in MAG.items()},
         "tiny": {k: v - 0.0001 for k, v in MAG.items()}}


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


def per_seed(variant: str, contrast: str) -> np.ndarray:
    """A variant's final accuracy (%) per seed at a contrast: a target, or the mean over the targets."""
    targets = TARGETS if contrast == MEAN else [float(contrast.split(":")[1])]
    return 100 * np.array([np.mean([FINAL[variant][(t, s)] for t in targets]) for s in SEEDS])


def holm_by_hand(p: np.ndarray) -> np.ndarray:
    """Sorted p times (m - i), running max, capped at 1."""
    order = np.argsort(p)
    adj = np.minimum(1, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    out = np.empty_like(adj)
    out[order] = adj
    return out


def test_primary_family_is_the_mean_contrast_and_the_targets_are_secondary(report):
    paired = pd.read_csv(report / "tables" / "paired.csv")
    assert set(paired["reference"]) == {"magnitude"}
    primary, secondary = paired[paired["family"] == "primary"], paired[paired["family"] == "secondary"]
    # no `design:` recorded: the default design, primary = each seed's mean over the targets
    assert set(primary["contrast"]) == {MEAN} and sorted(primary["variant"]) == ["better", "noisy", "tiny", "twin"]
    assert set(secondary["contrast"]) == {"macs:0.3", "macs:0.5"} and len(secondary) == 8
    assert (primary["ci_level"] == 1 - 0.05 / 4).all() and (secondary["ci_level"] == 1 - 0.05 / 8).all()
    for _, r in paired.iterrows():
        a, b = per_seed(r["variant"], r["contrast"]), per_seed("magnitude", r["contrast"])
        assert r["n"] == 3 and r["mean_diff"] == pytest.approx((a - b).mean())
        if (a - b).std(ddof=1) > r["resolution"]:  # above the sd floor: scipy's and statsmodels' numbers exactly
            res = stats.ttest_rel(a, b)
            assert r["p_t"] == pytest.approx(res.pvalue)
            assert (r["ci_low"], r["ci_high"]) == pytest.approx(res.confidence_interval(r["ci_level"]))
            assert r["p_tost"] == pytest.approx(ttost_paired(a, b, -0.5, 0.5)[0])
    assert primary["p_adj"].to_numpy() == pytest.approx(holm_by_hand(primary["p_t"].to_numpy()))
    assert primary["p_tost_adj"].to_numpy() == pytest.approx(holm_by_hand(primary["p_tost"].to_numpy()))
    assert secondary["p_adj"].to_numpy() == pytest.approx(np.minimum(1, 8 * secondary["p_t"].to_numpy()))
    # Bonferroni's p and its simultaneous CI agree: p_adj < 0.05 exactly where the CI excludes 0
    excludes = (secondary["ci_low"] > 0) | (secondary["ci_high"] < 0)
    assert ((secondary["p_adj"] < 0.05) == excludes).all()


def test_four_verdicts_each_where_the_numbers_say_so(report):
    paired = pd.read_csv(report / "tables" / "paired.csv").set_index(["variant", "contrast"])
    assert set(paired.loc["better", "verdict"]) == {"better"}
    assert paired.loc[("twin", MEAN), "verdict"] == "equivalent"  # tight spread, within the ±0.5 pp margin
    noisy = paired.loc[("noisy", MEAN)]
    sd = (per_seed("noisy", MEAN) - per_seed("magnitude", MEAN)).std(ddof=1)
    assert noisy["verdict"] == "inconclusive" and noisy["mde"] == pytest.approx(mde(3, sd, 0.05 / 4))
    assert noisy["mde"] > abs(noisy["mean_diff"])
    # one test image (0.01 pp) less on every seed: sd 0 would give p = 0; the floor and the resolution rule
    # make it no finding, and the equivalence test says what it is
    tiny = paired.loc["tiny"]
    assert (tiny["sd"] < 1e-9).all() and (tiny["sd_used"] == 0.01).all() and (tiny["p_t"] > 0).all()
    assert set(tiny["verdict"]) == {"equivalent"}


def test_verdict_opens_the_index_and_claims_only_what_the_tests_support(report):
    index = (report / "index.md").read_text()
    head = index.split("## How this was made")[0]
    assert head.splitlines()[2] == "## Verdict"
    assert "primary contrast mnist / lenet5: mean over targets; equivalence margin ±0.5 pp" in head
    assert "every variant prunes the same trained base per seed" in head
    assert "- better vs magnitude, mnist / lenet5, mean over targets: **better**: +3.10 pp" in head
    assert "- twin vs magnitude, mnist / lenet5, mean over targets: **equivalent** within ±0.5 pp" in head
    noisy = pd.read_csv(report / "tables" / "paired.csv").query("variant == 'noisy' and contrast == 'mean'").iloc[0]
    assert (f"- noisy vs magnitude, mnist / lenet5, mean over targets: **inconclusive**: {noisy['mean_diff']:+.2f} pp"
            in head)
    assert f"a difference under {noisy['mde']:.2f} pp would likely be missed (MDE at 80 % power)" in head
    for loser in ("noisy", "twin", "tiny", "magnitude"):
        assert f"{loser} vs magnitude, mnist / lenet5, mean over targets: **better" not in head
    assert "**worse" not in head
    # ranking on independent blocks: one per seed (the base), at the primary contrast, not one per target
    ranking = pd.read_csv(report / "tables" / "ranking.csv")
    assert set(ranking["scope"]) == {"mnist / lenet5"} and set(ranking["blocks"]) == {3}
    wide = pd.DataFrame({v: per_seed(v, MEAN) for v in FINAL})
    assert ranking["friedman_p"].iloc[0] == pytest.approx(stats.friedmanchisquare(*wide.T.to_numpy()).pvalue)
    assert ranking["variant"].iloc[0] == "better" and ranking["mean_rank"].iloc[0] == 1.0
    assert "- mnist / lenet5: 3 independent blocks (one per seed; value: mean over targets)" in head


def test_cd_diagram_and_pareto_figures_are_written(report):
    for name in ("cd_diagram", "pareto", "tradeoff"):
        for ext in ("png", "pdf"):
            assert (report / "figures" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
    front = pd.read_csv(report / "tables" / "pareto.csv")
    # at each target `better` is the most accurate; on MACs (equal across variants) it alone is on the front
    assert set(front.loc[front["front_macs_pruned"], "variant"]) == {"better"}


def test_final_accuracy_is_bold_only_where_the_verdict_says_better(report):
    lines = (report / "tables" / "syn_mnist_lenet5.md").read_text().splitlines()
    header = [c.strip() for c in lines[0].split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in lines[2:] if line.startswith("|")]
    for col in ("Final acc (%)", "Δacc (pp)"):
        assert [r[2] for r in rows if r[header.index(col)].startswith("**")] == ["better", "better"]  # per target
    # `twin`'s CPU speed-up is higher by the same margin on every seed; no verdict speaks for it: not bold
    assert not any("**" in r[header.index("CPU b1 speed-up (×)")] for r in rows)


def test_pareto_front_by_hand():
    # (cost, accuracy): (1, 90) and (2, 95) are on the front; (2, 80) and (3, 95) are dominated
    assert pareto_front([1, 2, 2, 3, np.nan], [90, 95, 80, 95, 99]).tolist() == [True, True, False, False, False]


# -- ablations, budget and precondition markers, the second Δacc reference ----------------------------
ABL_NOISE = {0: 0.003, 1: -0.004, 2: 0.002}
ABL = {  # final accuracy per (variant, seed) at MACs -50 %
    "magnitude": {s: MAG[(0.5, s)] for s in SEEDS},
    "rls": {s: MAG[(0.5, s)] + 0.01 for s in SEEDS},
    "rls@no_p": {s: MAG[(0.5, s)] - 0.01 + ABL_NOISE[s] for s in SEEDS},
    "feature_map": {s: MAG[(0.5, s)] for s in SEEDS},
    "feature_map@activation": {s: MAG[(0.5, s)] - 0.002 * (s + 1) for s in SEEDS},
}
RLS_OWN = {s: BASE[s] + 0.002 for s in SEEDS}  # RLS's net before its first cut: logged, never a reference
MAPEX_RULE = "fallback decided < 50% of the removed MACs"


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
            if variant == "feature_map":  # Map-EX checks its precondition; seed 2's fallback decided most
                m.update({"check.mapex_decided": 0.6 if s == 2 else 0.1, "check.mapex_decided.passed": float(s != 2)})
            rid = log_run(tracker.client, exp, variant, variant.split("@")[0], s, 0.5, m)
            if variant == "feature_map":
                tracker.client.log_param(rid, "check.mapex_decided.rule", MAPEX_RULE)
    out = root / "report"
    assert cli.main(["report", "--results-dir", str(root / "results"), "--experiment", "abl", "--out", str(out)]) == 0
    return out


def test_ablation_table_pairs_each_variant_with_its_plain_method(ablation_report):
    abl = pd.read_csv(ablation_report / "ablations.csv")
    assert sorted(zip(abl["variant"], abl["reference"])) == [("feature_map@activation", "feature_map"),
                                                              ("rls@no_p", "rls")]
    # one target: it is the primary contrast, and the two ablation pairs are the primary family
    assert set(abl["family"]) == {"primary"} and set(abl["ci_level"]) == {1 - 0.05 / 2}
    for _, r in abl.iterrows():
        a = 100 * np.array([ABL[r["variant"]][s] for s in SEEDS])
        b = 100 * np.array([ABL[r["reference"]][s] for s in SEEDS])
        res = stats.ttest_rel(a, b)
        assert r["n"] == 3 and r["mean_diff"] == pytest.approx((a - b).mean())
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(res.confidence_interval(1 - 0.05 / 2))
        assert r["p_t"] == pytest.approx(res.pvalue)
    assert abl["p_adj"].to_numpy() == pytest.approx(holm_by_hand(abl["p_t"].to_numpy()))
    md = (ablation_report / "ablations.md").read_text()
    assert md.startswith("# Does each mechanism matter?") and "| primary | rls@no_p | rls | 3 |" in md
    index = (ablation_report / "index.md").read_text()
    assert "## Ablations: variant vs its plain method" in index
    head = index.split("## How this was made")[0]
    # the ablation's verdict is about its point: each variant against its plain method
    assert "### Ablations: each variant against its plain method" in head
    assert "- rls@no_p vs rls, mnist / lenet5, MACs −50%: **" in head
    # RLS trains from the seeded initialisation, not from the shared base: the pairing sentence says so
    assert ("Every variant except `rls`, `rls@no_p` prunes the same trained base per seed; `rls`, `rls@no_p` "
            "train from the seeded initialisation the base started from") in head


def _table_rows(path) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Header, {variant label: cells} and the footnotes of a Markdown table file."""
    lines = path.read_text().splitlines()
    body = [line for line in lines[2:] if line.startswith("|")]
    header = [c.strip() for c in lines[0].split("|")]
    rows = {cells[2]: cells for cells in ([c.strip() for c in line.split("|")] for line in body)}
    return header, rows, [line for line in lines[2:] if line and not line.startswith("|")]


def test_tables_mark_budget_and_failed_preconditions_and_need_rls_no_prune(ablation_report):
    header, rows, notes = _table_rows(ablation_report / "tables" / "abl_mnist_lenet5.md")
    assert set(rows) == {"magnitude", "rls", "rls@no_p", "feature_map ✗1", "feature_map@activation"}
    assert (f"✗1 Precondition failed (feature_map, MACs −50%): mapex_decided failed in 1/3 runs (value 0.6; "
            f"rule {MAPEX_RULE}).") in notes
    epochs = header.index("Epochs used")
    assert rows["rls@no_p"][epochs] == "2.17 ± 0.29 ⚠" and rows["rls"][epochs] == "2.00 ± 0.00"
    assert rows["rls@no_p"][header.index("Runs")].endswith("over budget 1/3")
    assert any(n.startswith("⚠ Over budget") for n in notes)
    # no rls@no_prune run: no Δacc vs own unpruned (the net before the first cut is not one), and the table says so
    assert "Δacc vs own unpruned (pp)" not in header
    assert any(n.startswith("No finished `rls@no_prune` run here") for n in notes)
    base = header.index("Δacc (pp)")
    d_base = 100 * np.array([ABL["rls"][s] - BASE[s] for s in SEEDS])
    assert rows["rls"][base].strip("*") == f"{d_base.mean():+.2f} ± {d_base.std(ddof=1):.2f}"
    csv = pd.read_csv(ablation_report / "tables" / "abl_mnist_lenet5.csv").set_index("variant")
    assert csv.loc["rls@no_p", "budget_over"] == 1 and pd.isna(csv.loc["feature_map@activation", "checks_failed"])
    assert csv.loc["feature_map", "checks_failed"].startswith("mapex_decided failed in 1/3 runs")
    tex = (ablation_report / "tables" / "abl_mnist_lenet5.tex").read_text()
    assert r"feature\_map$^{\times 1}$" in tex and r"\textsuperscript{!}" in tex


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
    from bench.errors import ConfigError
    from bench.run import config
    from bench.run.grid import run_grid

    raw = {"name": "g", "methods": {"magnitude": {}, "random": {}}, "reference": "random",
           "datasets": {"mnist": {"models": ["lenet5"]}}, "data_dir": str(tmp_path / "no-data"),
           "results_dir": str(tmp_path / "r")}
    monkeypatch.delenv("BENCH_DATA", raising=False)  # it would beat the config's empty data_dir
    counts = run_grid(config.from_dict(raw), progress=False)  # no data: both cells end skipped at once
    assert counts == {"skipped": 2}
    assert Tracker(tmp_path / "r").reference("g") == "random"
    with pytest.raises(ConfigError, match=r"^reference: 'nope' is not a method of this grid; allowed: magnitude, random$"):
        config.from_dict({**raw, "reference": "nope"})


def frame(rows: list[dict]) -> pd.DataFrame:
    """A tidy runs frame from (variant, seed, target, acc %) rows, MNIST / LeNet-5, all finished."""
    return pd.DataFrame([{"experiment": "e", "dataset": "mnist", "model": "lenet5", "target_kind": "macs",
                          "target": 0.5, "status": "done", "method": r["variant"].split("@")[0], **r} for r in rows])


def test_one_test_image_on_every_seed_is_never_worse_even_at_n_10():
    """At n = 10 a constant −0.01 pp (one MNIST test image) has p = 0.012 with the floored sd: the
    resolution rule keeps it from being called worse, and the claim says why."""
    ref = {s: 99.0 + 0.1 * np.sin(s) for s in range(10)}
    runs = frame([{"variant": "magnitude", "seed": s, "acc_final_pct": a} for s, a in ref.items()]
                 + [{"variant": "tiny", "seed": s, "acc_final_pct": a - 0.01} for s, a in ref.items()])
    r = paired_comparisons(runs, "magnitude").iloc[0]
    assert r["family"] == "primary" and r["n"] == 10 and r["p_adj"] < 0.05 and r["p_wilcoxon"] < 0.05
    assert r["verdict"] == "equivalent"
    assert "is for a difference of at most one test image (0.01 pp), which is not claimed" in claim(r)


def test_a_failed_precondition_is_named_inside_the_claim():
    runs = frame([{"variant": "magnitude", "seed": s, "acc_final_pct": 90.0 + s} for s in range(3)]
                 + [{"variant": "csgd", "seed": s, "acc_final_pct": 80.0 + s + 0.1 * (s == 1),
                     "check.merge_lossless": 0.5, "check.merge_lossless.passed": 0.0,
                     "check.merge_lossless.rule": "≤ 1e-3"} for s in range(3)])
    r = paired_comparisons(runs, "magnitude").iloc[0]
    assert r["verdict"] == "worse" and r["preconditions"].startswith("merge_lossless failed in 3/3 runs")
    assert claim(r).startswith("**worse; merge_lossless failed in 3/3 runs")


def test_an_untestable_variant_is_named_with_its_n_once():
    runs = frame([{"variant": "magnitude", "seed": s, "acc_final_pct": 90.0 + s} for s in range(3)]
                 + [{"variant": "pls_vip", "seed": 0, "acc_final_pct": 91.0}])
    paired = paired_comparisons(runs, "magnitude")
    assert list(paired["verdict"]) == ["not testable (n=1)"]
    lines = verdict(paired, {}, "magnitude")
    assert "- pls_vip vs magnitude, mnist / lenet5, MACs −50%: **not testable (n=1)**." in lines


def test_rankings_use_one_independent_block_per_base_per_dataset_and_pooled():
    """Two datasets, three targets, four seeds: 4 blocks each (never one per target), 8 pooled."""
    rng = np.random.default_rng(0)
    rows = [{"variant": v, "dataset": ds, "seed": s, "target": t, "acc_final_pct": 90 + i + rng.normal(0, 0.3)}
            for ds in ("mnist", "cifar10") for t in (0.3, 0.5, 0.7) for s in range(4)
            for i, v in enumerate(("a", "b", "c"))]
    runs = frame(rows)
    design = Design((("cifar10", "macs:0.5"),))  # mnist: the default, each seed's mean over targets
    ranks = rankings(runs, design)
    assert list(ranks) == ["pooled", "cifar10 / lenet5", "mnist / lenet5"]
    assert [r.blocks for r in ranks.values()] == [8, 4, 4]
    assert ranks["cifar10 / lenet5"].contrast == "MACs −50%"
    assert ranks["mnist / lenet5"].contrast == "mean over targets"
    cifar = runs[(runs["dataset"] == "cifar10") & (runs["target"] == 0.5)].pivot(index="seed", columns="variant",
                                                                                   values="acc_final_pct")
    mnist = runs[runs["dataset"] == "mnist"].pivot_table(index="seed", columns="variant", values="acc_final_pct")
    blocks = pd.concat([cifar, mnist])
    assert ranks["pooled"].friedman_p == pytest.approx(stats.friedmanchisquare(*blocks.T.to_numpy()).pvalue)
    for r in ranks.values():  # one precision for ranks and CD, as the diagram and the CSV show them
        assert (r.mean_ranks == r.mean_ranks.round(2)).all() and r.cd == round(r.cd, 2)


def test_the_pairing_sentence_is_true_of_every_row():
    runs = frame([{"variant": v, "seed": 0, "acc_final_pct": 90.0} for v in ("magnitude", "rls", "rls@no_p")])
    assert from_scratch(runs) == ["rls", "rls@no_p"]
    assert pairing_sentence([]) == "Pairs share the seed, and every variant prunes the same trained base per seed."
    assert "`rls` trains from the seeded initialisation the base started from, not from the base" in pairing_sentence(
        ["rls"])


def test_secondary_rows_are_bonferroni_within_their_dataset_and_the_ablations_own_family():
    rows = [{"variant": v, "seed": s, "target": t, "acc_final_pct": 90 + d * (s + 1) + 0.1 * t}
            for s in range(3) for t in (0.3, 0.5, 0.7) for v, d in (("magnitude", 0), ("x", 0.5), ("x@y", 0.2))]
    runs = frame(rows)
    out = compare(runs, lambda v: "magnitude", Design((("mnist", "macs:0.5"),)))
    assert list(out["family"]) == ["primary"] * 2 + ["secondary"] * 4
    assert list(out["contrast"]) == ["macs:0.5"] * 2 + ["macs:0.3"] * 2 + ["macs:0.7"] * 2
    sec = out[out["family"] == "secondary"]
    assert sec["p_adj"].to_numpy() == pytest.approx(np.minimum(1, 4 * sec["p_t"].to_numpy()))
    assert set(sec["ci_level"]) == {1 - 0.05 / 4} and set(out.loc[out["family"] == "primary", "ci_level"]) == {
        1 - 0.05 / 2}


def test_pareto_macs_tick_labels_do_not_overlap(tmp_path):
    """MNIST's pruned LeNet-5 has 1.2e5-3e5 MACs: plain tick labels ("125000", every 25 000) ran
    into each other in the committed curves report."""
    import matplotlib as mpl

    from bench.report.figures import RC, Style, save
    from bench.report.figures_stats import pareto

    table = pd.DataFrame({"experiment": "e", "dataset": "mnist", "model": "lenet5",
                          "variant": ["a", "b"] * 3, "target_kind": "macs", "target": [0.3, 0.3, 0.5, 0.5, 0.7, 0.7],
                          "acc_final_pct": [99.0, 98.9, 98.8, 98.5, 98.0, 97.0],
                          "macs_pruned": [297e3, 292e3, 214e3, 208e3, 126e3, 123e3],
                          "latency_cpu_b1_pruned_ms": [0.2, 0.21, 0.19, 0.2, 0.18, 0.19]})
    for cost in ("macs_pruned", "latency_cpu_b1_pruned_ms"):
        table[f"front_{cost}"] = pareto_front(table[cost], table["acc_final_pct"])
    with mpl.rc_context(RC):  # as the report draws it
        fig = pareto(table, Style(colors={"a": "C0", "b": "C1"}, markers={"a": "o", "b": "s"}))
    save(fig, tmp_path / "pareto")  # the report's rendering (style, 200 dpi); extents below are of it
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [tick.label1 for tick in ax.xaxis.get_major_ticks() if lo <= tick.get_loc() <= hi]
    boxes = sorted((label.get_window_extent() for label in shown), key=lambda b: b.x0)
    assert len(boxes) >= 2
    gaps = [right.x0 - left.x1 for left, right in zip(boxes, boxes[1:])]
    assert min(gaps) > 10, gaps  # pixels at 200 dpi between neighbouring labels
