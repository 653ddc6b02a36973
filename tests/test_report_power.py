"""One paired comparison's statistics (bench.report.power) against scipy and statsmodels called
directly, the resolution floor, the power helpers, the Wilcoxon rule and the probability of
improvement; and `bench plan`'s power section (bench.report.plan_power)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from bench.run import config
from bench.report.power import (mde, paired_test, probability_of_improvement, seeds_needed, wilcoxon_min_p,
                                wilcoxon_p)

A = np.array([91.2, 90.4, 92.0, 91.1, 90.7])
B = np.array([90.9, 90.6, 91.2, 90.8, 90.1])


def test_paired_test_is_scipys_t_test_and_statsmodels_tost_above_the_floor():
    t = paired_test(A - B, resolution=0.01, margin=0.5, ci_alpha=0.05 / 3)
    res = stats.ttest_rel(A, B)
    assert t.n == 5 and t.mean == pytest.approx((A - B).mean()) and t.sd == t.sd_used
    assert t.p == pytest.approx(res.pvalue)
    assert (t.ci_low, t.ci_high) == pytest.approx(res.confidence_interval(1 - 0.05 / 3))
    assert t.p_tost == pytest.approx(ttost_paired(A, B, -0.5, 0.5)[0])


def test_a_constant_difference_gets_the_resolution_as_its_spread_not_p_0():
    t = paired_test([-0.01] * 3, resolution=0.01, margin=0.5)
    assert t.sd == 0 and t.sd_used == 0.01
    assert t.p == pytest.approx(stats.ttest_1samp([-0.01 + 0.01, -0.01 - 0.01, -0.01], 0).pvalue)  # sd 0.01, n 3
    assert t.p_tost < 1e-3  # far inside ±0.5 pp
    assert np.isnan(paired_test([1.0], resolution=0.01, margin=0.5).p)  # n = 1: not testable
    with pytest.raises(ValueError, match="resolution"):
        paired_test([1.0, 2.0], resolution=0.0, margin=0.5)


def test_mde_and_seeds_needed_invert_statsmodels_power():
    alpha = 0.05 / 12
    for n in (3, 5, 10):
        effect = mde(n, 0.5, alpha)
        assert TTestPower().power(effect_size=effect / 0.5, nobs=n, alpha=alpha / 2,
                                  alternative="larger") == pytest.approx(0.8, abs=1e-4)
    assert mde(10, 0.5, 0.05) == pytest.approx(0.5 * TTestPower().solve_power(nobs=10, alpha=0.05, power=0.8))
    assert np.isnan(mde(1, 0.5, 0.05))
    need = seeds_needed(1.0, 0.5, alpha)
    assert mde(need, 0.5, alpha) <= 1.0 < mde(need - 1, 0.5, alpha)
    assert seeds_needed(50.0, 0.5, 0.05) == 2


def test_wilcoxon_is_left_out_where_it_can_never_reject():
    assert wilcoxon_min_p(3) == 0.25 and wilcoxon_min_p(9) == pytest.approx(2 / 512)
    d = np.arange(1.0, 10.0)  # n = 9: smallest p 2/512 = 0.0039, just under 0.05 / 12
    assert np.isnan(wilcoxon_p(d[:8], 0.05 / 12)) and np.isnan(wilcoxon_p(d[:5], 0.05))
    assert wilcoxon_p(d, 0.05 / 12) == wilcoxon_p(d, 0.05) == pytest.approx(stats.wilcoxon(d).pvalue)


def test_probability_of_improvement_and_its_stratified_bootstrap():
    wins = np.array([1.0, 0.5, -0.2, 0.3, 0.0, 0.8])  # 4 wins, 1 tie, 1 loss: (4 + 0.5) / 6
    poi, low, high = probability_of_improvement([wins])
    assert poi == pytest.approx(4.5 / 6) and 0 <= low <= poi <= high <= 1
    pooled = probability_of_improvement([wins, -np.ones(5)])  # strata of equal weight
    assert pooled[0] == pytest.approx((4.5 / 6 + 0) / 2)
    assert np.isnan(probability_of_improvement([wins[:4]])[0])  # n < 5


RAW = {"name": "pow", "seeds": [0, 1, 2], "targets": ["macs:0.3", "macs:0.5"], "reference": "magnitude",
       "methods": {"magnitude": {}, "random": {}},
       "design": {"primary": {"cifar10": "macs:0.5"}, "margin_pp": 0.5},
       "datasets": {"mnist": {"models": ["lenet5"], "seeds": [0, 1, 2, 3, 4]},
                    "cifar10": {"models": ["lenet5"], "targets": [{"target": "macs:0.3", "seeds": [0, 1]},
                                                                  "macs:0.5"]}}}


def test_plan_prints_each_primary_comparisons_n_and_mde(tmp_path):
    from bench.report.plan_power import DEFAULT_SD_PP, power_lines

    cfg = config.from_dict(RAW)
    lines = power_lines(cfg, {("mnist", "lenet5", "random"): (0.3, 4)}, mde_pp=1.0)
    assert "Holm over m = 2 (planned at α/m = 0.025)" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    # CIFAR-10's primary is -50 % (3 seeds); MNIST's the mean over its targets (5 seeds)
    assert rows["cifar10"][3:8] == ["macs:0.5", "random", "3", f"{DEFAULT_SD_PP:.2f}", "default"]
    assert float(rows["cifar10"][8]) == pytest.approx(mde(3, DEFAULT_SD_PP, 0.025), abs=0.005)
    assert int(rows["cifar10"][9]) == seeds_needed(1.0, DEFAULT_SD_PP, 0.025)
    assert rows["mnist"][3:9] == ["mean", "random", "5", "0.30", "store", "(n=4)"]
    assert float(rows["mnist"][9]) == pytest.approx(mde(5, 0.3, 0.025), abs=0.005)


def test_plan_reads_the_paired_sd_of_a_finished_primary_comparison(tmp_path):
    from mlflow.entities import Metric, Param

    from bench.report.plan_power import stored_paired_sd
    from bench.run.tracking import Tracker

    cfg = config.from_dict({**RAW, "datasets": {"mnist": RAW["datasets"]["mnist"]}, "design": {}})
    cfg.results_dir = str(tmp_path / "results")
    assert stored_paired_sd(cfg) == {}  # no store
    tracker = Tracker(cfg.results_dir)
    exp = tracker.experiment_id("pow")
    acc = {"magnitude": [0.95, 0.96, 0.97], "random": [0.951, 0.955, 0.972]}  # per seed, at both targets
    for variant, per_seed in acc.items():
        for s, a in enumerate(per_seed):
            for t in (0.3, 0.5):
                run = tracker.client.create_run(exp, tags={"run_id": f"{variant}{s}{t}", "method": variant,
                                                           "variant": variant, "dataset": "mnist",
                                                           "model": "lenet5", "status": "done"})
                tracker.client.log_batch(run.info.run_id, params=[Param("seed", str(s)), Param("target_kind", "macs"),
                                                                  Param("target", str(t))],
                                         metrics=[Metric("acc_final", a, 0, 0), Metric("acc_base", 0.98, 0, 0)])
    diffs = 100 * (np.array(acc["random"]) - np.array(acc["magnitude"]))
    assert stored_paired_sd(cfg) == {("mnist", "lenet5", "random"): (pytest.approx(diffs.std(ddof=1)), 3)}


def test_plan_takes_an_mde_flag():
    from bench.cli import parser

    assert parser().parse_args(["plan", "configs/curves.yaml", "--mde", "0.5"]).mde == 0.5
    assert parser().parse_args(["plan", "configs/curves.yaml"]).mde == 1.0
