"""The comparison report: statistics over seeds, tables that trace back to MLflow, the paper
reproduction check, figures, and honest listing of runs that did not finish."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from matplotlib.lines import Line2D
from scipy import stats

from bench.report import figures as rf
from bench.report import load as report_load, repro as report_repro, stats as report_stats, tables as report_tables
from bench.report.compare import paired_comparisons
from bench.run.tracking import RESULT_COLUMNS


def fake_runs(rows: list[dict]) -> pd.DataFrame:
    """A `Tracker.runs_frame`-shaped frame from a few hand-written runs, through `report_load.tidy`."""
    defaults = {"status": "done", "dataset": "mnist", "model": "lenet5", "seed": 0, "target_kind": "macs",
                "target": 0.5, "acc_base": 0.98, "acc_pruned": 0.9, "acc_final": 0.97, "macs_base": 1000,
                "macs_pruned": 500, "macs_reduction": 0.5, "params_base": 100, "params_pruned": 60,
                "params_reduction": 0.4, "latency_cpu_b1_base_ms": 2.0, "latency_cpu_b1_pruned_ms": 1.0,
                "latency_cpu_b64_base_ms": 20.0, "latency_cpu_b64_pruned_ms": 12.0, "prune_time_s": 1.0,
                "finetune_time_s": 5.0, "error": "", "target_met": 1.0, "experiment_id": "1",
                "pruning.ranking": "per_layer", "pruning.rounds": "1"}
    frame = pd.DataFrame([{**defaults, "run_id": f"r{i}", "mlflow_run_id": f"m{i}", **r} for i, r in enumerate(rows)])
    for c in RESULT_COLUMNS:
        if c not in frame:
            frame[c] = None
    return report_load.tidy(frame, {"1": "exp"})


def test_summarize_is_mean_sample_std_and_t_interval():
    v = [0.91, 0.93, 0.96]
    mean, std, n, ci = report_stats.summarize(v)
    assert (mean, n) == (pytest.approx(np.mean(v)), 3)
    assert std == pytest.approx(np.std(v, ddof=1))
    assert ci == pytest.approx(stats.t.ppf(0.975, 2) * np.std(v, ddof=1) / np.sqrt(3))
    one = report_stats.summarize([0.5, float("nan")])
    assert one[0] == 0.5 and one[2] == 1 and np.isnan(one[1]) and np.isnan(one[3])
    assert report_stats.summarize([])[2] == 0


def test_groups_without_finished_runs_stay_as_missing_cells():
    runs = fake_runs([
        {"method": "magnitude", "seed": 0, "acc_final": 0.96}, {"method": "magnitude", "seed": 1, "acc_final": 0.97},
        {"method": "random", "seed": 0, "status": "failed", "error": "RuntimeError: boom",
         "acc_base": None, "acc_final": None},
        {"method": "random", "seed": 1, "status": "skipped", "error": "no data", "acc_base": None, "acc_final": None},
    ])
    summary = report_stats.aggregate(runs)
    rnd = summary.set_index("method").loc["random"]
    assert (rnd["runs"], rnd["done"]) == (2, 0) and np.isnan(rnd["acc_final_pct_mean"])
    assert "1 failed" in rnd["not_done"] and "1 skipped" in rnd["not_done"]
    table = report_tables.build_tables(summary, runs, with_gpu=False)[0]
    md = table.markdown()
    random_line = next(line for line in md.splitlines() if "| random |" in line)
    assert "–" in random_line and "0/2" in random_line
    mag = summary.set_index("method").loc["magnitude"]
    assert mag["acc_final_pct_mean"] == pytest.approx(96.5)
    assert mag["delta_acc_pp_mean"] == pytest.approx(96.5 - 98.0)


def test_accuracy_is_bold_only_where_the_verdict_against_the_reference_says_better():
    # b beats a on every seed by 2 pp (noise 0.1 pp): its accuracies are bold; its fine-tune time is lower on
    # every seed too, but no verdict speaks for time, so it is not. At target 0.3, c and a differ by noise
    # only, and a lone seed of d is never "best".
    noise = [0.0, 0.001, -0.001]
    runs = fake_runs(
        [{"method": "a", "seed": s, "acc_final": 0.95 + e, "finetune_time_s": 9.0 + s} for s, e in enumerate(noise)]
        + [{"method": "b", "seed": s, "acc_final": 0.97 + e / 2, "finetune_time_s": 3.0 + s}
           for s, e in enumerate(noise)]
        + [{"method": "a", "seed": s, "target": 0.3, "acc_final": 0.96 + e} for s, e in enumerate(noise)]
        + [{"method": "c", "seed": s, "target": 0.3, "acc_final": 0.96 - e} for s, e in enumerate(noise)]
        + [{"method": "d", "target": 0.7, "acc_final": 0.99}, {"method": "a", "target": 0.7, "acc_final": 0.5}])
    paired = paired_comparisons(runs, "a")
    assert set(paired.loc[paired["variant"] == "b", "verdict"]) == {"better"}
    table = report_tables.build_tables(report_stats.aggregate(runs), runs, with_gpu=False, paired=paired)[0]
    best = table.csv_frame().set_index(["target", "variant"])["best"]
    assert set(best[(0.5, "b")].split(";")) == {"acc_final_pct", "delta_acc_pp"}
    assert best[(0.5, "a")] == ""
    assert best[(0.3, "a")] == best[(0.3, "c")] == ""  # inconclusive: nothing bold
    assert best[(0.7, "d")] == ""  # n = 1 cannot be tested
    assert report_tables.build_tables(report_stats.aggregate(runs), runs, with_gpu=False)[0].best == {}
    assert r"\textbf{97.00" in table.latex() and r"\toprule" in table.latex()
    assert "**97.00 ± 0.05**" in table.markdown()


def test_model_labels_get_the_model_defaults():
    assert report_repro.parse_model_label("vgg") == ("vgg", {"depth": 16.0, "width": 1.0})
    assert report_repro.parse_model_label("vgg-depth11-width0.25") == ("vgg", {"depth": 11.0, "width": 0.25})


def test_reproduction_checks_only_full_size_comparable_runs():
    runs = fake_runs([  # L1 on the paper's ResNet-56 at the paper's 27.6 % FLOPs cut, and a narrow VGG-16
        {"method": "magnitude", "dataset": "cifar10", "model": "resnet56", "target": 0.28, "seed": s,
         "macs_reduction": 0.27, "acc_base": 0.93, "acc_final": 0.93 + d} for s, d in ((0, 0.001), (1, 0.003))
    ] + [{"method": "magnitude", "dataset": "cifar10", "model": "vgg-depth16-width0.25", "target": 0.34,
          "macs_reduction": 0.34}])
    rep = report_repro.reproduction(report_stats.aggregate(runs)).set_index("paper_setting")
    row = rep.loc["ResNet-56-B / CIFAR-10"]
    assert row["result"] == "pass" and row["n"] == 2
    assert row["our_delta_pp"] == pytest.approx(0.2) and row["our_macs_red_pct"] == pytest.approx(27.0)
    assert rep.loc["VGG-16-A / CIFAR-10", "result"] == "not covered"  # width 0.25 is not the paper's VGG-16
    assert "not in the suite" in rep.loc["ResNet-50 / ImageNet (it=10)", "note"]
    assert rep.loc["ResNet-110-B / CIFAR-10", "result"] == "not covered"
    assert set(rep.loc[rep["ref"].isin(["1", "1j", "6"]), "result"]) == {"not checked"}
    assert rep.loc["VGG-16 / CIFAR-10", "note"] == "no finished runs of RL agent"  # Huang et al., as quoted

    far = fake_runs([{"method": "magnitude", "dataset": "cifar10", "model": "resnet56", "target": 0.5,
                      "macs_reduction": 0.5}])
    rep = report_repro.reproduction(report_stats.aggregate(far)).set_index("paper_setting")
    assert rep.loc["ResNet-56-B / CIFAR-10", "result"] == "not covered"
    assert "±3 pp" in rep.loc["ResNet-56-B / CIFAR-10", "note"]


# ------------------------------------------------------------ from a real smoke grid


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_dir):
    """Real smoke grid (magnitude + random on MNIST, 2 seeds; SVHN cells end skipped), then the
    report through the CLI."""
    from bench import cli
    from bench.run import config
    from bench.run.grid import run_grid

    root = tmp_path_factory.mktemp("report")
    cfg = config.override(config.load("configs/smoke.yaml"), methods=["magnitude", "random"],
                          datasets=["mnist", "svhn"], seeds=[0, 1])
    mnist = dataclasses.replace(cfg.datasets[0], train_subset=1000, test_subset=500,
                                pretrain=dataclasses.replace(cfg.datasets[0].pretrain, epochs=1))
    cfg = dataclasses.replace(cfg, datasets=[mnist, *cfg.datasets[1:]], val_size=250, data_dir=str(data_dir),
                              results_dir=str(root / "results"))
    counts = run_grid(cfg, progress=False)
    assert counts == {"done": 4, "skipped": 4}, counts
    out = root / "report"
    assert cli.main(["report", "--results-dir", cfg.results_dir, "--experiment", "smoke", "--out", str(out)]) == 0
    return cfg, out


@pytest.mark.slow
def test_report_writes_tables_figures_and_index(smoke):
    _, out = smoke
    for name in ("index.md", "runs.csv", "summary.csv"):
        assert (out / name).stat().st_size > 0
    for stem in ("smoke_mnist_lenet5", "smoke_svhn_vgg-depth11-width0.125", "reproduction"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{stem}.{ext}").exists(), (stem, ext)
    for fig in ("tradeoff", "latency", "widths", "curves"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    assert not (out / "extras").exists()  # no RLS runs: no plugin extras
    index = (out / "index.md").read_text()
    assert "![tradeoff](figures/tradeoff.png)" in index and "8 runs (4 done, 4 skipped)" in index
    rep = pd.read_csv(out / "tables" / "reproduction.csv")
    assert set(rep["result"]) <= {"not covered", "not checked"}  # LeNet-5 on MNIST matches no paper row
    # every finished run recorded its kept channels: magnitude and random compared on both seeds
    overlap = pd.read_csv(out / "tables" / "overlap.csv")
    assert overlap[["variant_a", "variant_b", "n"]].values.tolist() == [["magnitude", "random", 2]]
    assert "## Which channels do variants remove?" in index and "- Code of the finished runs: git commit " in index


@pytest.mark.slow
def test_table_numbers_equal_the_mlflow_metrics(smoke):
    """Recompute every mean/std from MLflow directly (not through runs_frame) with numpy."""
    from mlflow.tracking import MlflowClient

    from bench.run.tracking import tracking_uri

    cfg, out = smoke
    client = MlflowClient(tracking_uri(cfg.results_dir))
    exp = client.get_experiment_by_name("smoke")
    table = pd.read_csv(out / "tables" / "smoke_mnist_lenet5.csv")
    assert sorted(table["variant"]) == ["magnitude", "random"]
    for _, row in table.iterrows():
        runs = client.search_runs([exp.experiment_id], f"tags.method = '{row['method']}' and tags.dataset = 'mnist'")
        m = [r.data.metrics for r in runs]
        assert len(m) == row["done"] == 2
        expect = {
            "acc_final_pct": [100 * x["acc_final"] for x in m],
            "delta_acc_pp": [100 * (x["acc_final"] - x["acc_base"]) for x in m],
            "macs_reduction_pct": [100 * x["macs_reduction"] for x in m],
            "speedup_cpu_b64_x": [x["latency_cpu_b64_base_ms"] / x["latency_cpu_b64_pruned_ms"] for x in m],
            "total_time_s": [x["prune_time_s"] + x["finetune_time_s"] for x in m],
        }
        for key, vals in expect.items():
            assert row[f"{key}_mean"] == pytest.approx(np.mean(vals)), key
            assert row[f"{key}_std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-9), key
            assert row[f"{key}_n"] == 2
        md = (out / "tables" / "smoke_mnist_lenet5.md").read_text()
        assert f"{np.mean(expect['acc_final_pct']):.2f} ± {np.std(expect['acc_final_pct'], ddof=1):.2f}" in md


@pytest.mark.slow
def test_tradeoff_figure_has_one_line_per_method(smoke):
    from bench.report.load import tidy
    from bench.report.sources import merge, open_sources

    cfg, _ = smoke
    runs = tidy(merge(open_sources([cfg.results_dir]), "smoke").frame)
    fig = rf.tradeoff(runs, rf.Style.for_runs(runs))
    mnist = next(ax for ax in fig.axes if ax.get_title().startswith("mnist"))
    labels = [ln.get_label() for ln in mnist.get_lines() if isinstance(ln, Line2D)]
    assert sorted(lab for lab in labels if not lab.startswith("_") and "base" not in lab) == ["L1 magnitude", "Random"]
    assert mnist.get_xlabel() == "MACs reduction (%)" and mnist.get_ylabel() == "Δ top-1 test accuracy vs base (pp)"
    svhn = next(ax for ax in fig.axes if ax.get_title().startswith("svhn"))
    assert "no finished runs" in svhn.texts[0].get_text() and "4 skipped" in svhn.texts[0].get_text()


@pytest.mark.slow
def test_skipped_svhn_cells_are_listed_with_their_reason(smoke):
    _, out = smoke
    index = (out / "index.md").read_text()
    section = index.split("## Runs that did not finish", 1)[1]
    assert "skipped (4)" in section and "svhn.npz not found" in section
    for method in ("magnitude", "random"):
        for seed in (0, 1):
            assert f"{method}/svhn/vgg-depth11-width0.125/MACs −50%/s{seed}" in section
    svhn = (out / "tables" / "smoke_svhn_vgg-depth11-width0.125.md").read_text()
    assert svhn.count("0/2 (2 skipped)") == 2 and "–" in svhn


def test_latency_figure_has_gpu_panels_only_with_gpu_timings_and_a_y_equals_x_line():
    cpu_only = fake_runs([{"method": "magnitude"}, {"method": "random", "latency_cpu_b1_pruned_ms": 1.5}])
    fig = rf.latency(cpu_only, rf.Style.for_runs(cpu_only))
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["CPU, batch 1", "CPU, batch 64"]
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert any("y = x" in ln.get_label() for ln in ax.get_lines())
    gpu = {"latency_gpu_b1_base_ms": 1.0, "latency_gpu_b1_pruned_ms": 0.8,
           "latency_gpu_b64_base_ms": 4.0, "latency_gpu_b64_pruned_ms": 2.5}
    with_gpu = fake_runs([{"method": "magnitude", **gpu}])
    fig = rf.latency(with_gpu, rf.Style.for_runs(with_gpu))
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()][2:] == ["GPU, batch 1", "GPU, batch 64"]
    table = report_tables.build_tables(report_stats.aggregate(with_gpu), with_gpu, with_gpu=True)[0]
    assert "GPU b64 speed-up (×)" in table.markdown() and "1.60" in table.markdown()


def test_reproduction_grades_only_runs_with_the_papers_protocol():
    """PLS+VIP's ResNet-56 row (global threshold, 8 rounds, -52.56 % FLOPs) against a per-layer
    one-shot run, a named variant and a run that follows the paper's protocol."""
    common = {"dataset": "cifar10", "model": "resnet56", "target": 0.53, "macs_reduction": 0.53,
              "acc_base": 0.93, "acc_final": 0.936}
    per_layer = fake_runs([{**common, "method": "pls_vip"}])
    row = report_repro.reproduction(report_stats.aggregate(per_layer)).set_index("paper_setting")
    row = row.loc["ResNet-56 / CIFAR-10 (it=8)"]
    assert row["result"] == "not covered"
    assert row["note"] == ("protocol differs (pls_vip: pruning.ranking=per_layer, paper global, "
                           "pruning.rounds=1, paper 8)")
    variant = fake_runs([{**common, "method": "pls_vip", "variant": "pls_vip@k8",
                          "pruning.ranking": "global", "pruning.rounds": "8"}])
    row = report_repro.reproduction(report_stats.aggregate(variant)).set_index("paper_setting")
    assert row.loc["ResNet-56 / CIFAR-10 (it=8)", "note"] == "protocol differs (pls_vip@k8: variant pls_vip@k8)"
    paper = fake_runs([{**common, "method": "pls_vip", "pruning.ranking": "global", "pruning.rounds": "8"}])
    row = report_repro.reproduction(report_stats.aggregate(paper)).set_index("paper_setting")
    row = row.loc["ResNet-56 / CIFAR-10 (it=8)"]
    assert row["result"] == "pass" and row["variant"] == "pls_vip" and row["our_delta_pp"] == pytest.approx(0.6)


def test_rls_prune_events_come_from_the_plugins_report_extras_hook(tmp_path):
    from methods.rls import RLSPrune

    runs = fake_runs([{"method": "rls", "seed": s, "rls.acc_val_unpruned": 0.95} for s in (0, 1)])
    runs.attrs["curves"] = pd.DataFrame(
        [(f"m{s}", "rls/val_acc", e, 0.9 + 0.01 * e, 10) for s in (0, 1) for e in range(1, 7)]
        + [("m0", "rls/prune_epoch", 1, 2.0, 10), ("m0", "rls/prune_epoch", 2, 4.0, 10),
           ("m0", "rls/val_acc_after_prune", 1, 0.5, 10), ("m1", "rls/prune_epoch", 1, 3.0, 10)],
        columns=["mlflow_run_id", "key", "step", "value", "timestamp"])
    paths = RLSPrune.report_extras(runs, tmp_path / "extras")
    assert [p.name for p in paths] == ["rls_curves.png", "rls_curves.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    empty = fake_runs([{"method": "rls"}])
    empty.attrs["curves"] = runs.attrs["curves"].iloc[:0]
    assert RLSPrune.report_extras(empty, tmp_path / "none") == [] and not (tmp_path / "none").exists()
    from bench.api import ScoreMethod
    assert ScoreMethod.report_extras(runs, tmp_path) == []  # the default hook writes nothing


def test_rls_extras_tabulate_the_spread_of_inverse_p_each_run_scored_with(tmp_path):
    from methods.rls import RLSPrune

    key, key3 = "rls.invP_diag_spread.features.0", "rls.invP_diag_spread.features.3"
    runs = fake_runs([{"method": "rls", "variant": v, "seed": s, key: x, key3: 1.0}
                      for v, s, x in (("rls", 0, 1.1), ("rls", 1, 1.3), ("rls@exact_p", 0, 9.0))])
    # as the report passes them: several layers, and the runs' curves riding in attrs (a DataFrame)
    runs.attrs["curves"] = pd.DataFrame([("m0", "rls/val_acc", 1, 0.9, 10)],
                                        columns=["mlflow_run_id", "key", "step", "value", "timestamp"])
    *_, md, csv = RLSPrune.report_extras(runs, tmp_path / "extras")
    table = pd.read_csv(csv)
    table = table[table["layer"] == "features.0"].set_index("variant")
    assert table.loc["rls", ["runs", "mean", "min", "max"]].tolist() == pytest.approx([2, 1.2, 1.1, 1.3])
    assert table.loc["rls@exact_p", "layer"] == "features.0" and table.loc["rls@exact_p", "max"] == 9.0
    assert "| rls | features.0 | 2 | 1.20 | 1.10 | 1.30 |" in md.read_text()


def test_pls_vip_vgg16_rows_are_graded_by_the_variant_that_runs_their_rounds():
    """The README's VGG-16 rows (K = 5 at -67.25 %, K = 9 at -90.66 % FLOPs) beside the plain K = 8:
    `pls_vip@it5` with 5 global rounds grades the K = 5 row; the plain pls_vip at that target does not."""
    common = {"method": "pls_vip", "dataset": "cifar10", "model": "vgg", "target": 0.65, "macs_reduction": 0.66,
              "acc_base": 0.93, "acc_final": 0.935, "pruning.ranking": "global"}
    runs = fake_runs([{**common, "variant": "pls_vip@it5", "pruning.rounds": "5"},
                      {**common, "pruning.rounds": "8"}])
    rep = report_repro.reproduction(report_stats.aggregate(runs))
    row = rep[rep["paper_setting"] == "VGG-16 / CIFAR-10 (it=5)"]
    assert row["variant"].tolist() == ["pls_vip@it5"] and row["result"].tolist() == ["pass"]  # +0.50 vs +0.63 pp
    assert row["paper_delta_pp"].iloc[0] == 0.63 and row["paper_flops_red_pct"].iloc[0] == 67.25
    k9 = rep.set_index("paper_setting").loc["VGG-16 / CIFAR-10 (it=9)"]
    assert (k9["paper_delta_pp"], k9["paper_flops_red_pct"]) == (-1.50, 90.66) and k9["result"] == "not covered"


def test_paper_preset_has_a_target_for_every_gradable_paper_row():
    """`bench plan configs/paper.yaml` names the target that grades each paper row; the rows no
    target can grade (ImageNet, ResNet-110, no published numbers) say why."""
    from bench.run import config

    lines = report_repro.plan_lines(config.load("configs/paper.yaml").expand())
    assert lines[0].startswith(f"paper rows (docs/methods.md §7): 7 of {len(report_repro.paper_results())} graded")
    graded = [line for line in lines[1:] if ": graded by " in line]
    assert len(graded) == 7
    assert any("VGG-16 / CIFAR-10 (it=5), −67.25 % FLOPs: graded by pls_vip@it5 at MACs −65%" in g for g in graded)
    assert any("RL agent: VGG-16 / CIFAR-10, −64.7 % FLOPs: graded by rl_agent at MACs −65%" in g for g in graded)
    rest = [line for line in lines[1:] if ": graded by " not in line]
    assert all(("imagenet is not in the suite" in r or "no resnet110" in r or "not gradable" in r) for r in rest)


def test_failed_preconditions_are_footnoted_with_their_check_values_and_rule():
    lossy = [{"method": "csgd", "variant": "csgd@literal_eps", "seed": s, "check.merge_lossless": v,
              "check.merge_lossless.passed": 0.0, "check.merge_lossless.rule": "relative spread ≤ 1e-3",
              "preconditions_met": 0.0} for s, v in enumerate((0.47, 0.561, 0.5))]
    fine = [{"method": "csgd", "seed": s, "check.merge_lossless": 1e-5, "check.merge_lossless.passed": 1.0,
             "check.merge_lossless.rule": "relative spread ≤ 1e-3", "preconditions_met": 1.0} for s in range(3)]
    runs = fake_runs(lossy + fine + [{"method": "magnitude", "seed": s} for s in range(3)])
    table = report_tables.build_tables(report_stats.aggregate(runs), runs, with_gpu=False)[0]
    md = table.markdown()
    assert "| csgd@literal_eps ✗1 |" in md and "| csgd |" in md and "✗2" not in md
    assert ("✗1 Precondition failed (csgd@literal_eps, MACs −50%): merge_lossless failed in 3/3 runs "
            "(value 0.47–0.56; rule relative spread ≤ 1e-3).") in md
    assert r"csgd@literal\_eps$^{\times 1}$" in table.latex() and "†" not in md
    csv = table.csv_frame().set_index("variant")["checks_failed"]
    assert csv["csgd"] == "" and csv["csgd@literal_eps"].startswith("merge_lossless failed in 3/3 runs")


def test_own_unpruned_reference_is_the_no_prune_run_of_the_same_seed():
    """Δacc vs own unpruned = final − `rls@no_prune`'s final on the same seed (any target); without
    a no_prune run it is missing and the table says so, never the net saved before the first cut."""
    no_prune = {0: 0.90, 1: 0.92}
    runs = fake_runs([{"method": "rls", "variant": "rls@no_prune", "seed": s, "target": 0.3, "acc_final": a}
                      for s, a in no_prune.items()]
                     + [{"method": "rls", "seed": s, "acc_final": 0.95 - s / 100, "acc_rls_unpruned": 0.5}
                        for s in no_prune]
                     + [{"method": "magnitude", "seed": 0}])
    own = runs.set_index(["variant", "seed"])["delta_acc_own_pp"]
    assert own[("rls", 0)] == pytest.approx(5.0) and own[("rls", 1)] == pytest.approx(2.0)
    assert np.isnan(own[("rls@no_prune", 0)]) and np.isnan(own[("magnitude", 0)])
    assert report_load.lacking_own_reference(runs) == []

    alone = fake_runs([{"method": "rls", "seed": s, "acc_rls_unpruned": 0.5} for s in (0, 1)])
    assert alone["delta_acc_own_pp"].isna().all() and report_load.lacking_own_reference(alone) == ["rls"]
    table = report_tables.build_tables(report_stats.aggregate(alone), alone, with_gpu=False)[0]
    assert "No finished `rls@no_prune` run here" in table.markdown()


def test_code_versions_name_each_commit_with_its_state_and_count():
    runs = fake_runs([{"method": "magnitude", "seed": s, "git_commit": "0123456789abcdef", "git_dirty": d}
                      for s, d in enumerate(("false", "false", "true"))] + [{"method": "random"}]
                     + [{"method": "random", "seed": 1, "status": "skipped", "git_commit": "fedcba"}])  # not counted
    assert report_load.code_versions(runs) == (
        "Code of the finished runs: 1 runs with no commit recorded; git commit 0123456789ab (clean): 2 runs; "
        "git commit 0123456789ab (uncommitted changes): 1 runs.")


def test_channel_overlap_of_a_hand_made_pair():
    """Base widths conv 4, conv 6, fc 10 (never cut). A keeps conv0 {0, 1} and conv1 {0, 1, 2}: it
    removes (0, 2), (0, 3), (1, 3), (1, 4), (1, 5). B keeps conv0 {1, 2}, conv1 {0, 1, 2, 3}: it removes
    (0, 0), (0, 3), (1, 4), (1, 5). Shared 3 of the 6 removed by either: 0.5. Chance: per layer
    k_a k_b / n = 2·2/4 + 3·2/6 = 2 expected shared of 5 + 4 − 2 = 7: 2/7."""
    from bench.report import overlap as ro

    widths = {"conv0": 4, "conv1": 6, "fc": 10}
    a = {"base_widths": widths, "kept": {"conv0": [0, 1], "conv1": [0, 1, 2]}}
    b = {"base_widths": widths, "kept": {"conv0": [1, 2], "conv1": [0, 1, 2, 3]}}
    ra, w = ro.removed_channels(a)
    rb, _ = ro.removed_channels(b)
    assert ro.jaccard(ra, rb) == pytest.approx(0.5) and ro.chance_jaccard(ra, rb, w) == pytest.approx(2 / 7)
    # through the report: seed 1 chooses identically (1.0), so the mean over seeds is 0.75; a run that
    # removed nothing (no_prune) is left out
    runs = fake_runs([{"method": "rls", "variant": "rls@no_p", "seed": 0}, {"method": "rls", "seed": 0},
                      {"method": "rls", "variant": "rls@no_p", "seed": 1}, {"method": "rls", "seed": 1},
                      {"method": "rls", "variant": "rls@no_prune", "seed": 1}])
    ids = runs.set_index(["variant", "seed"])["mlflow_run_id"]
    kept = {ids[("rls@no_p", 0)]: a, ids[("rls", 0)]: b, ids[("rls@no_p", 1)]: a, ids[("rls", 1)]: a,
            ids[("rls@no_prune", 1)]: {"base_widths": widths, "kept": {}}}
    table = ro.overlap_table(ro.overlap_pairs(runs, kept))
    row = table.iloc[0]
    assert len(table) == 1 and (row["variant_a"], row["variant_b"], row["n"]) == ("rls", "rls@no_p", 2)
    assert row["jaccard_mean"] == pytest.approx(0.75) and row["jaccard_sd"] == pytest.approx(np.std([0.5, 1], ddof=1))
    md = ro.overlap_markdown(table, ["x: KeyError"])
    assert "| rls | 0.75 ± 0.35 (" in md and "| | rls@no_p |" in md and "(left out): x: KeyError" in md


def test_a_plugin_brings_its_own_display_name_and_paper_rows(monkeypatch):
    """Paper numbers and display names sit on the method class: a new plugin's row is graded and
    its name shown with no harness edit; a subclass (another method) inherits neither."""
    from bench.api import PaperResult, ScoreMethod
    from bench.core import registry
    from bench.report.names import display_name

    class Sharp(ScoreMethod):
        name = "sharp"
        display_name = "Sharp"
        variant_labels = {"big": "big step"}
        paper_results = (PaperResult("9", "Sharp", "LeNet-5 / MNIST", "mnist", ("lenet5", ()), delta_pp=-0.5,
                                     flops_pct=50.0, source="[T]"),)

    class Blunt(Sharp):
        name = "blunt"

    registry.discover()
    monkeypatch.setitem(registry._REGISTRY, "sharp", Sharp)
    monkeypatch.setitem(registry._REGISTRY, "blunt", Blunt)
    assert display_name("sharp@big") == "Sharp (big step)" and display_name("blunt@big") == "blunt (big)"
    runs = fake_runs([{"method": m, "seed": s, "acc_final": 0.976} for m in ("sharp", "blunt") for s in (0, 1)])
    rep = report_repro.reproduction(report_stats.aggregate(runs))
    assert rep.loc[rep["paper_method"] == "Sharp", ["method", "result"]].values.tolist() == [["sharp", "pass"]]
    assert rep["ref"].iloc[-1] == "9"  # after the rows of docs/methods.md §7, in their order


def test_a_table_whose_runs_differ_in_threads_or_precision_says_so():
    """Thread count and precision change the numbers; a table mixing them must say so, and one
    that does not must stay quiet (a segment's CSV gives threads as 1.0, a store as "1")."""
    same = fake_runs([{"method": m, "seed": s, "threads": t, "pretrain.precision": "fp32",
                       "finetune.precision": "fp32"} for m in ("magnitude", "random") for s, t in ((0, "1"), (1, 1.0))])
    table = report_tables.build_tables(report_stats.aggregate(same), same, with_gpu=False)[0]
    assert table.mixed == "" and "Mixed settings" not in table.markdown()
    mixed = fake_runs([{"method": "magnitude", "seed": 0, "threads": "2", "finetune.precision": "bf16"},
                       {"method": "magnitude", "seed": 1, "threads": "1", "finetune.precision": "fp32"},
                       {"method": "random", "seed": 0, "threads": None, "finetune.precision": "fp32"}])
    table = report_tables.build_tables(report_stats.aggregate(mixed), mixed, with_gpu=False)[0]
    assert table.mixed == ("torch threads 1 (1 runs), 2 (1 runs), unrecorded (1 runs); "
                           "fine-tune precision bf16 (1 runs), fp32 (2 runs)")
    assert "Mixed settings: torch threads 1 (1 runs)" in table.markdown() and "Mixed settings" in table.latex()
