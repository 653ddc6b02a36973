"""Every method through the real runner: same seed gives the same numbers, and a kill -9 in any
training phase, then a rerun, gives exactly the record of a run that was never killed."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.core.measure import count_macs
from bench.run import config
from bench.run.grid import run_grid
from bench.run.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "tiny.yaml"
METHODS = ("magnitude", "random", "pls_vip", "feature_map", "rls", "csgd", "rl_agent")
NUMBERS = ["acc_base", "acc_pruned", "acc_final", "macs_pruned", "params_pruned", "target_achieved"]


def tiny(results, data_dir, methods=METHODS):
    cfg = config.override(config.load(TINY), methods=list(methods))
    cfg.results_dir, cfg.data_dir = str(results), str(data_dir)
    return cfg


def record(results, method):
    """(numbers, every metric's full history, params, pruned weights) of the one done run of `method`."""
    tracker = Tracker(results)
    df = tracker.runs_frame("tiny")
    row = df[df.method == method]
    assert len(row) == 1 and row.status.iloc[0] == "done", row[["status", "error"]]
    run = tracker.client.get_run(row.mlflow_run_id.iloc[0])
    history = {k: [(m.step, m.value) for m in tracker.client.get_metric_history(run.info.run_id, k)]
               for k in run.data.metrics if not k.endswith("_ms") and not k.endswith("_s")}
    history = {k: sorted(v) for k, v in history.items() if not k.endswith("/search_s")}
    params = {k: v for k, v in run.data.params.items() if k != "base_checkpoint"}
    model = torch.load(Path(results) / "runs" / row.run_id.iloc[0] / "pruned_model.pt", weights_only=False)
    return row.iloc[0], history, params, model


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """One uninterrupted run of every method on the tiny grid."""
    results = tmp_path_factory.mktemp("reference")
    counts = run_grid(tiny(results, data_dir), progress=False)
    assert counts == {"done": len(METHODS)}
    return results


def assert_same_run(results, reference, method):
    row, history, params, model = record(results, method)
    ref_row, ref_history, ref_params, ref_model = record(reference, method)
    assert row[NUMBERS].tolist() == ref_row[NUMBERS].tolist()
    assert history == ref_history  # the method's own metrics (rls/*, csgd/*, rl/*) and every curve
    assert params == ref_params
    ref_state = ref_model.state_dict()
    assert list(model.state_dict()) == list(ref_state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    return row, ref_row


def test_every_method_runs_through_the_real_runner_and_logs_the_macs_of_its_saved_model(reference):
    df = Tracker(reference).runs_frame("tiny")
    assert sorted(df.method) == sorted(METHODS) and (df.status == "done").all()
    example = torch.zeros(1, 1, 28, 28)
    for _, row in df.iterrows():
        saved = torch.load(reference / "runs" / row.run_id / "pruned_model.pt", weights_only=False)
        assert row.macs_pruned == count_macs(saved.eval(), example), row.method
        assert row.macs_base == 416_520
        assert abs(row.target_achieved - 0.5) <= 0.015, row.method
    # what each full method logs of its own, and the paths only full methods take
    metrics = set(df.columns)
    assert {"rls/prune_events", "csgd/cluster_dist_ratio", "rl/search_s"} <= metrics
    rls = df[df.method == "rls"].iloc[0]
    assert rls.finetune_time_s == 0 and rls.prune_time_s > 0  # trains from scratch, skips the fine-tune


def test_every_done_run_records_its_kept_channels_preconditions_and_provenance(reference):
    df = Tracker(reference).runs_frame("tiny")
    assert df.preconditions_met.notna().all() and df.preconditions_met.isin([0.0, 1.0]).all()
    assert (df.git_commit.str.len() == 40).all() and df.git_dirty.isin(["true", "false"]).all()
    assert (df.threads.astype(int) >= 1).all()
    for _, row in df.iterrows():
        kept = json.loads((reference / "runs" / row.run_id / "kept_channels.json").read_text())
        saved = torch.load(reference / "runs" / row.run_id / "pruned_model.pt", weights_only=False)
        modules = dict(saved.named_modules())
        assert kept["kept"], row.method  # every method cut something
        for layer, channels in kept["kept"].items():  # indices of the base, one per channel left
            assert channels == sorted(set(channels)) and channels[-1] < kept["base_widths"][layer]
            width = modules[layer].out_channels if hasattr(modules[layer], "out_channels") else modules[layer].out_features
            assert len(channels) == width, (row.method, layer)


def test_same_seed_gives_identical_numbers_models_and_records(reference, tmp_path, data_dir):
    """Two cold runs of the same grid: nothing differs, k-means clustering of C-SGD included."""
    counts = run_grid(tiny(tmp_path, data_dir), progress=False)
    assert counts == {"done": len(METHODS)}
    for method in METHODS:
        assert_same_run(tmp_path, reference, method)


@pytest.mark.parametrize("method, phase, step", [
    ("magnitude", "pretrain", 14),           # epoch 2 of 3 of the shared base
    ("rls", "rls rls", 23),                  # epoch 3 of 5 of RLS's from-scratch training, after a cut
    ("csgd", "csgd centripetal", 13),        # epoch 2 of 2 of the centripetal training
    ("magnitude", "magnitude finetune", 13),  # epoch 2 of 2 of the fine-tune
])
def test_kill_9_mid_phase_then_rerun_equals_an_uninterrupted_run(reference, tmp_path, data_dir, method, phase, step):
    # in-process (local executor): the kill hook SIGKILLs the process that trains, which under the
    # default pool is a worker, reported as a failed cell instead of a killed run
    cmd = [sys.executable, "-m", "bench", "run", str(TINY), "--methods", method, "--no-progress", "--executor", "local",
           "--results-dir", str(tmp_path), "--data-dir", str(data_dir)]
    env = {**os.environ, "BENCH_TEST_SIGKILL_AT": f"{phase}:{step}"}
    killed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list(Tracker(tmp_path).runs_frame("tiny").status) == ["running"]  # what kill -9 leaves
    assert list(tmp_path.glob("**/*.ckpt"))  # the phase had written an epoch checkpoint
    phase_time, ckpts = ("finetune_time_s", "finetune.ckpt") if "finetune" in phase else ("prune_time_s", "train*.ckpt")
    before_kill = sum(torch.load(p, weights_only=False)["seconds"] for p in tmp_path.glob(f"runs/*/stage-*/{ckpts}"))
    env.pop("BENCH_TEST_SIGKILL_AT")
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    row, ref_row = assert_same_run(tmp_path, reference, method)  # every cell exactly once, same record
    if phase != "pretrain":  # training time from before the kill counts, not only the rerun's
        assert before_kill > 0 and row[phase_time] > before_kill
    assert not list(tmp_path.glob("runs/*/stage-*"))  # a done cell leaves no stage behind
