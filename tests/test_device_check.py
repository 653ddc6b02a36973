"""benchmarks/device_check.py: the CPU path end to end, and the GPU checks' logic on CPU (a GPU
check that cannot fail would be worthless, so each one is shown failing on bad reports)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is a folder of scripts, not an installed package
from bench.core.datasets import load  # noqa: E402
from benchmarks import device_check as dc  # noqa: E402


def test_cpu_only_machine_runs_the_cpu_part_writes_json_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU path, also on a GPU machine
    out = tmp_path / "dc.json"
    assert dc.main(["--out", str(out), "--cpu-steps", "2", "--repeats", "1", "--probe-steps", "1"]) == 0
    assert "the GPU part needs a CUDA GPU and none is visible" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["cuda_available"] is False and report["gpu"] is None
    tp = report["cpu"]["throughput"][0]
    assert tp["case"] == "lenet5" and tp["device"] == "cpu" and tp["steps"] == 2
    fp32, bf16 = tp["images_per_s"]["fp32"], tp["images_per_s"]["bf16"]
    assert fp32 > 0 and bf16 > 0 and tp["bf16_over_fp32"] == pytest.approx(bf16 / fp32)
    plan = report["cpu"]["plan"]
    # smoke.yaml: 2 methods x (mnist/lenet5 + svhn/vgg11) x 1 seed x 1 target; one base per model
    assert plan["cells"] == 4 and plan["bases"] == 2 and plan["estimate_s"] > 0
    assert {(p["model"], p["dataset"]) for p in plan["probes"]} == {("lenet5", "mnist"),
                                                                     ("vgg-depth11-width0.125", "svhn")}
    assert "plan smoke: 4 cells, 2 distinct base checkpoints" in plan["text"]


def _run(label, status, device="NVIDIA H200", error=""):
    return {"label": label, "status": status, "device": device, "error": error}


def test_runs_must_have_logged_the_gpu():
    ok = dc.check_runs_on_gpu([_run("a", "done"), _run("b", "skipped", device=None)], "NVIDIA H200")
    assert ok["ok"] and ok["done"] == 1 and ok["skipped"] == 1
    on_cpu = dc.check_runs_on_gpu([_run("a", "done"), _run("b", "done", device="cpu")], "NVIDIA H200")
    assert not on_cpu["ok"] and on_cpu["problems"] == ["b: device 'cpu'"]
    failed = dc.check_runs_on_gpu([_run("a", "done"), _run("c", "failed", error="OOM")], "NVIDIA H200")
    assert failed["problems"] == ["failed c: OOM"]
    assert dc.check_runs_on_gpu([_run("b", "skipped")], "NVIDIA H200")["problems"] == ["no run finished"]


def _pin(pid, visible, uuid, count=1):
    return {"pid": pid, "visible": visible, "count": count, "uuid": uuid}


def test_pinning_check_wants_one_distinct_gpu_per_worker():
    assert dc.check_pinning([_pin(1, "0", "GPU-a"), _pin(2, "1", "GPU-b")], 2)["ok"]
    shared = dc.check_pinning([_pin(1, "0", "GPU-a"), _pin(2, "0", "GPU-a")], 2)
    assert shared["problems"] == ["two workers share a GPU"]
    unpinned = dc.check_pinning([_pin(1, None, "GPU-a", count=2), _pin(2, None, "GPU-a", count=2)], 2)
    assert "worker 1 sees 2 GPUs (CUDA_VISIBLE_DEVICES=None)" in unpinned["problems"]
    assert dc.check_pinning([_pin(1, "0", "GPU-a")], 2)["problems"] == ["1 workers reported, expected 2"]


def test_pool_workers_report_their_pin_and_a_cpu_machine_fails_the_check(tmp_path):
    """The real pool and the real report cell: workers pinned to ids 3 and 5 report them; on a
    machine where those ids name no GPU the check fails instead of passing vacuously."""
    from types import SimpleNamespace

    from bench.run.executors import PoolExecutor

    jobs = [SimpleNamespace(folder=str(tmp_path), workers=2) for _ in range(2)]
    reports = [json.loads(s) for _, s in PoolExecutor(workers=2, gpu_ids=["3", "5"], cell=dc.pin_report).run(jobs)]
    assert sorted(r["visible"] for r in reports) == ["3", "5"] and len({r["pid"] for r in reports}) == 2
    if not torch.cuda.is_available():
        res = dc.check_pinning(reports, 2)
        assert len(res["problems"]) == 2 and all(" sees 0 GPUs (CUDA_VISIBLE_DEVICES=" in p for p in res["problems"])


def test_paper_cell_is_resnet56_cifar10_from_paper_yaml_cut_down(tmp_path):
    from bench.run import config

    paper = config.load(REPO / "configs" / "paper.yaml")
    cfg = dc.paper_cell_config(tmp_path, "/data", "bf16", train_subset=3000, test_subset=500, epochs=1)
    [spec] = cfg.expand()
    src = next(d for d in paper.datasets if d.name == "cifar10")
    assert (spec.method, spec.dataset, spec.model, spec.seed) == ("magnitude", "cifar10", "resnet56", 0)
    assert (spec.target_kind, spec.target) == paper.targets[0]
    assert spec.train_subset == 3000 and spec.test_subset == 500
    assert spec.pretrain.precision == spec.finetune.precision == "bf16"
    assert spec.pretrain.epochs == spec.finetune.epochs == 1
    # everything else as the preset says
    assert (spec.pretrain.lr, spec.pretrain.schedule, spec.finetune.lr) == (src.pretrain.lr, src.pretrain.schedule,
                                                                            src.finetune.lr)
    assert spec.pruning == paper.pruning and spec.val_size == paper.val_size


def test_missing_datasets_get_loadable_random_stand_ins(tmp_path, data_dir, monkeypatch):
    folder, source = dc.prepare_data(str(data_dir), tmp_path, ("mnist", "svhn"), n_train=300, n_test=50)
    assert source == {"mnist": "real", "svhn": "synthetic"}
    monkeypatch.setenv("BENCH_DATA", folder)  # as main() does: BENCH_DATA wins over any config's data_dir
    svhn = load("svhn", folder, val_size=100)
    assert svhn.train.x.shape == (200, 3, 32, 32) and svhn.train.x.dtype == torch.uint8 and len(svhn.test) == 50
    assert len(load("mnist", folder, val_size=1000).train) == 59000  # the real file, linked


def test_a_crashing_stage_fails_its_check_and_an_exhausted_budget_skips_the_rest():
    out: dict = {}

    def crash():
        raise RuntimeError("CUDA error: out of memory")

    dc._stage(out, "a", dc.Budget(60), crash)
    assert out["a"]["ok"] is False and out["a"]["problems"] == ["RuntimeError: CUDA error: out of memory"]
    dc._stage(out, "b", dc.Budget(0), lambda: {"ok": True, "problems": []})
    assert out["b"]["problems"] == ["not run: --budget-s used up"]
