"""Torch threads and precision are grid settings (issue 28): fixed by the config, part of the run id
when not the default and of the base checkpoint's key always, logged by every run; the cores a grid
happens to get change its speed, never its numbers."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.spec import RunSpec, TrainConfig
from bench.errors import ConfigError
from bench.run import config
from bench.run.baselines import base_key
from bench.run.tracking import Tracker

pytestmark = pytest.mark.spawns  # every test here starts interpreters

REPO = Path(__file__).resolve().parents[1]
SPEC = RunSpec(method="magnitude", dataset="mnist", model="lenet5", seed=0, target_kind="macs", target=0.5)
GRID = {"name": "g", "methods": ["magnitude"], "datasets": {"mnist": {"models": ["lenet5"]}}}


def test_default_threads_keep_the_run_ids_that_runs_had_before_the_field():
    assert "threads" not in SPEC.canonical()  # the committed results ran at 1 thread per cell
    two = dataclasses.replace(SPEC, threads=2)
    assert two.canonical()["threads"] == 2 and two.run_id != SPEC.run_id
    assert two.flat_params()["threads"] == "2"


def test_the_grid_config_fixes_the_threads_of_every_cell():
    assert {s.threads for s in config.from_dict(GRID).expand()} == {1}
    assert {s.threads for s in config.from_dict({**GRID, "threads": 2}).expand()} == {2}
    for bad in (0, -1, 1.5, True, "auto"):
        with pytest.raises(ConfigError, match=r"^threads: expected an integer >= 1"):
            config.from_dict({**GRID, "threads": bad})


def test_base_key_changes_with_threads_and_with_precision():
    bf16 = dataclasses.replace(SPEC, pretrain=TrainConfig(precision="bf16"))
    keys = {base_key(SPEC), base_key(dataclasses.replace(SPEC, threads=2)), base_key(bf16)}
    assert len(keys) == 3
    # what a cell does after the base (fine-tune, method) is no part of it
    after = dataclasses.replace(SPEC, finetune=TrainConfig(precision="bf16"), method="random")
    assert base_key(after) == base_key(SPEC)


def test_cli_threads_replace_the_configs_and_change_the_run_ids(tmp_path, monkeypatch):
    from bench import cli
    from bench.run import grid

    seen = []
    monkeypatch.setattr(grid, "run_grid", lambda cfg, **kw: seen.append(cfg) or {})
    cfg_file = tmp_path / "g.yaml"
    cfg_file.write_text("name: g\nmethods: [magnitude]\ndatasets: {mnist: {models: [lenet5]}}\n")
    assert cli.main(["run", str(cfg_file), "--threads", "2", "--results-dir", str(tmp_path / "r")]) == 0
    assert {s.threads for s in seen[0].expand()} == {2}
    assert cli.main(["run", str(cfg_file), "--threads", "0"]) == 2  # refused before anything runs


AFFINITY_GRID = """
name: affinity
seeds: [0]
targets: [macs:0.5]
val_size: 200
latency: {repeats_b1: 2, repeats_b64: 1, warmup: 0}
methods: {magnitude: {}, random: {}}
datasets:
  mnist:
    models: [lenet5]
    train_subset: 512
    test_subset: 300
    pretrain: {epochs: 1, lr: 0.05, batch_size: 64, augment: false}
    finetune: {epochs: 1, lr: 0.01, batch_size: 64, augment: false}
"""
# `bench run` with no executor flags, confined to some CPUs as taskset would
PINNED = "import os, sys; os.sched_setaffinity(0, {cpus}); from bench.cli import main; sys.exit(main(sys.argv[1:]))"
NUMBERS = ["acc_base", "acc_pruned", "acc_final", "macs_base", "macs_pruned", "params_pruned"]


@pytest.fixture(scope="module")
def pinned_grids(tmp_path_factory, data_dir):
    """The same tiny grid, cold, under a 1-CPU and a 2-CPU affinity mask: CPUs -> (runs, tracker, results dir)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs to compare a 1-CPU and a 2-CPU mask")
    tmp = tmp_path_factory.mktemp("affinity")
    cfg = tmp / "affinity.yaml"
    cfg.write_text(AFFINITY_GRID)
    out = {}
    for mask in ({cpus[0]}, {cpus[0], cpus[1]}):
        results = tmp / f"results-{len(mask)}"
        proc = subprocess.run([sys.executable, "-c", PINNED.format(cpus=mask), "run", str(cfg), "--no-progress",
                               "--results-dir", str(results), "--data-dir", str(data_dir)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        tracker = Tracker(results)
        out[len(mask)] = (tracker.runs_frame("affinity"), tracker, results)
    return out


def test_one_and_two_cpus_give_identical_numbers_and_weights(pinned_grids):
    import torch

    one, two = (pinned_grids[n][0].set_index("method").sort_index() for n in (1, 2))
    assert list(one.index) == ["magnitude", "random"] and (one.status == "done").all() and (two.status == "done").all()
    assert one[NUMBERS].equals(two[NUMBERS])
    # bit for bit: 2 threads instead of 1 move LeNet's weights by ~1e-7 here, too little for the accuracies
    for run_id in one.run_id:
        a, b = (torch.load(pinned_grids[n][2] / "runs" / run_id / "pruned_model.pt", weights_only=False).state_dict()
                for n in (1, 2))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_run_logs_its_threads_and_precision(pinned_grids):
    for df, tracker, _ in pinned_grids.values():
        for run_id in df.mlflow_run_id:
            params = tracker.client.get_run(run_id).data.params
            assert params["threads"] == "1"
            assert params["pretrain.precision"] == "fp32" and params["finetune.precision"] == "fp32"
