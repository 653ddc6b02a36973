"""One-command device check before GPU-hours are spent on the paper grid.

On a CUDA machine (about 2-4 minutes, bounded by --budget-s, 8 minutes by default):
  1. the smoke grid (configs/smoke.yaml) in a temporary store, in-process: every finished run must
     have logged this GPU as its `device`;
  2. the pool executor with one worker per visible GPU: each worker must see exactly one GPU, and
     the workers different ones (CUDA uuids); then the smoke grid again through that pool;
  3. one paper-preset cell (ResNet-56 / CIFAR-10 from configs/paper.yaml, magnitude, train_subset
     and epochs cut) in fp32 and in bf16: accuracies, train/fine-tune seconds, GPU/CPU latency;
  4. fp32 vs bf16 training throughput (benchmarks/train_throughput.py) of LeNet-5, VGG-11/0.25
     and ResNet-56.
Always, also without a GPU: a short CPU part, fp32 vs bf16 throughput of LeNet-5 and the
`bench plan` probe of the smoke config. Everything goes into one JSON file (--out). The exit
status is 1 if a GPU check failed, else 0 (a CPU-only machine exits 0 after the CPU part).
Datasets: BENCH_DATA (or ../shared/datasets); a dataset missing there is replaced by random
uint8 images of its shape (said so in the JSON), since speed does not depend on pixels.
Run: python benchmarks/device_check.py [--out reports/device_check.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.core.datasets import DATASETS  # noqa: E402
from bench.run import config  # noqa: E402
from bench.run.config import GridConfig  # noqa: E402
from benchmarks import train_throughput  # noqa: E402
from benchmarks._common import REPO, data_dir, hardware  # noqa: E402

SMOKE, PAPER = REPO / "configs" / "smoke.yaml", REPO / "configs" / "paper.yaml"
PAPER_METRICS = ("acc_base", "acc_final", "prune_time_s", "finetune_time_s", "macs_reduction",
                 "latency_gpu_b1_base_ms", "latency_gpu_b1_pruned_ms", "latency_gpu_b64_base_ms",
                 "latency_gpu_b64_pruned_ms", "latency_cpu_b64_base_ms", "latency_cpu_b64_pruned_ms")


# ---------------------------------------------------------------- data
def synthetic_npz(path: Path, dataset: str, n_train: int, n_test: int, seed: int = 0) -> None:
    """`<dataset>.npz` in the project's format (uint8 NHWC, int64 labels) with random content."""
    c, h, w = DATASETS[dataset].shape
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, h, w, c), dtype=np.uint8),
             y_train=rng.integers(0, 10, n_train).astype(np.int64),
             x_test=rng.integers(0, 256, (n_test, h, w, c), dtype=np.uint8),
             y_test=rng.integers(0, 10, n_test).astype(np.int64))


def prepare_data(real: str | None, scratch: Path, needed: tuple[str, ...], n_train: int, n_test: int) -> tuple[str, dict]:
    """A folder holding every needed dataset: links to the real files where they exist, random
    stand-ins elsewhere; returns (folder, dataset -> 'real' | 'synthetic')."""
    folder = scratch / "data"
    folder.mkdir(parents=True, exist_ok=True)
    source = {}
    for name in needed:
        found = Path(real, f"{name}.npz") if real else None
        if found is not None and found.exists():
            (folder / f"{name}.npz").symlink_to(found.resolve())
            source[name] = "real"
        else:
            synthetic_npz(folder / f"{name}.npz", name, n_train, n_test)
            source[name] = "synthetic"
    return str(folder), source


# ---------------------------------------------------------------- checks (pure, unit-tested on CPU)
def check_runs_on_gpu(runs: list[dict], gpu_name: str) -> dict:
    """Every run that finished must have logged `gpu_name` as its device; at least one finished."""
    done = [r for r in runs if r["status"] == "done"]
    wrong = [f"{r['label']}: device {r.get('device')!r}" for r in done if r.get("device") != gpu_name]
    failed = [f"{r['label']}: {r.get('error', '')}" for r in runs if r["status"] == "failed"]
    problems = wrong + [f"failed {f}" for f in failed] + ([] if done else ["no run finished"])
    return {"ok": not problems, "runs": len(runs), "done": len(done),
            "skipped": sum(r["status"] == "skipped" for r in runs), "problems": problems}


def check_pinning(reports: list[dict], workers: int) -> dict:
    """Pool workers' reports of what they saw: each exactly one GPU, one per worker, all different."""
    by_pid: dict[int, set] = {}
    problems = []
    for r in reports:
        if r["count"] != 1:
            problems.append(f"worker {r['pid']} sees {r['count']} GPUs (CUDA_VISIBLE_DEVICES={r['visible']!r})")
        by_pid.setdefault(r["pid"], set()).add(r["uuid"])
    if len(by_pid) != workers:
        problems.append(f"{len(by_pid)} workers reported, expected {workers}")
    uuids = [u for s in by_pid.values() for u in s if u is not None]  # None: saw no GPU, reported above
    if len(set(uuids)) != len(uuids):
        problems.append("two workers share a GPU")
    return {"ok": not problems, "workers": workers,
            "pins": sorted({(r["pid"], r["visible"]) for r in reports}), "problems": problems}


def pin_report(job) -> str:
    """Pool cell: wait until every worker holds a job (so each one reports), then say what GPU it sees."""
    Path(job.folder, str(os.getpid())).touch()
    deadline = time.time() + 60
    while len(os.listdir(job.folder)) < job.workers and time.time() < deadline:
        time.sleep(0.05)
    count = torch.cuda.device_count()
    uuid = str(torch.cuda.get_device_properties(0).uuid) if count else None
    if count:
        torch.ones(1, device="cuda").sum().item()  # CUDA really initialises in the pinned worker
    return json.dumps({"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                       "count": count, "uuid": uuid})


# ---------------------------------------------------------------- configs
def smoke_config(results_dir: Path, data: str) -> GridConfig:
    cfg = config.load(SMOKE)
    cfg.results_dir, cfg.data_dir = str(results_dir), data
    return cfg


def paper_cell_config(results_dir: Path, data: str, precision: str, *, train_subset: int,
                      test_subset: int, epochs: int, method: str = "magnitude") -> GridConfig:
    """One cell of configs/paper.yaml: ResNet-56 / CIFAR-10, seed 0, its first target, `method`,
    with the subsets and epochs cut and `precision` in both recipes; everything else as the preset."""
    cfg = config.load(PAPER)
    entry = next(d for d in cfg.datasets if d.name == "cifar10")
    model = next(m for m in entry.models if m[0] == "resnet56")
    pre = dataclasses.replace(entry.pretrain, epochs=epochs, precision=precision)
    ft = dataclasses.replace(entry.finetune, epochs=epochs, precision=precision)
    cfg.datasets = [dataclasses.replace(entry, models=[model], pretrain=pre, finetune=ft,
                                        train_subset=train_subset, test_subset=test_subset, seeds=None,
                                        targets=None)]  # the grid's first target and seed 0 only
    cfg.methods = {method: cfg.methods[method]}
    cfg.seeds, cfg.targets = [0], cfg.targets[:1]
    cfg.name = f"device_check_{precision}"
    cfg.results_dir, cfg.data_dir = str(results_dir), data
    return cfg


def run_records(cfg: GridConfig) -> list[dict]:
    """Status, label, logged device, error and metrics of every run of `cfg`'s experiment."""
    from bench.run.tracking import Tracker

    tracker = Tracker(cfg.results_dir)
    exp = tracker.client.get_experiment_by_name(cfg.name)
    runs = tracker.client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [{"status": r.data.tags.get("status"), "label": r.data.tags.get("mlflow.runName"),
             "device": r.data.params.get("device"), "error": r.data.tags.get("error", ""),
             "precision": r.data.params.get("finetune.precision"), "metrics": dict(r.data.metrics),
             "seconds": (r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None}
            for r in runs]


# ---------------------------------------------------------------- parts
def cpu_part(scratch: Path, *, steps: int, repeats: int, probe_steps: int) -> dict:
    """fp32 vs bf16 throughput of LeNet-5 on the CPU, and `bench plan`'s probe of the smoke grid."""
    from bench.report.plan_power import forecast_lines
    from bench.run.plan import make_plan, render

    t = time.perf_counter()
    tp = train_throughput.compare("lenet5", batch=64, steps=steps, repeats=repeats, device="cpu")
    cfg = smoke_config(scratch / "plan", None)
    plan = make_plan(cfg, device="cpu", probe_steps=probe_steps)
    probes = [{"model": label, "dataset": ds, "batch": batch, "precision": prec,
               "step_ms_per_image": p.step_img_s * 1e3, "forward_ms_per_image": p.forward_img_s * 1e3,
               "measured_batch": p.measured_batch, "extrapolated": p.extrapolated}
              for (label, ds, batch, prec), p in plan.probes.items()]
    total = sum(plan.base_cost.values()) + sum(c.train_s + c.eval_s + c.extra_s for c in plan.cell_cost.values())
    return {"throughput": [tp], "plan": {"cells": len(plan.specs), "bases": len(plan.bases), "probes": probes,
                                         "estimate_s": total,
                                         "text": "\n".join([render(plan, executor="local", workers=1),
                                                            *forecast_lines(cfg)])},
            "seconds": time.perf_counter() - t}


class Budget:
    """Seconds left of --budget-s; a GPU stage that would start after it ran out is not run."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def _stage(out: dict, name: str, budget: Budget, fn) -> None:
    if budget.left() <= 0:
        out[name] = {"ok": False, "problems": ["not run: --budget-s used up"]}
        return
    t = time.perf_counter()
    try:
        out[name] = fn()
    except Exception as e:  # a crashed stage is a failed check, and the others still run
        out[name] = {"ok": False, "problems": [f"{type(e).__name__}: {e}"]}
    out[name]["seconds"] = time.perf_counter() - t
    print(f"  {name}: {'ok' if out[name].get('ok', True) else 'FAILED ' + '; '.join(out[name]['problems'])} "
          f"({out[name]['seconds']:.0f} s)", flush=True)


def gpu_part(scratch: Path, data: str, a: argparse.Namespace) -> dict:
    from bench.run.executors import PoolExecutor, visible_gpus
    from bench.run.grid import run_grid

    budget = Budget(a.budget_s)
    gpu = torch.cuda.get_device_name(0)
    gpus = visible_gpus()
    out: dict = {"gpu": gpu, "visible_gpus": gpus}

    def smoke_local():
        cfg = smoke_config(scratch / "smoke-local", data)
        torch.cuda.reset_peak_memory_stats()
        counts = run_grid(cfg, executor="local", progress=False)
        res = check_runs_on_gpu(run_records(cfg), gpu)
        peak = torch.cuda.max_memory_allocated()
        if peak == 0:
            res["ok"] = False
            res["problems"].append("no CUDA memory was allocated by the in-process grid")
        return {**res, "counts": dict(counts), "peak_gpu_mb": peak / 2**20}

    def pool_pinning():
        folder = scratch / "rendezvous"
        folder.mkdir()
        n = len(gpus)
        jobs = [SimpleNamespace(folder=str(folder), workers=n) for _ in range(n)]
        from benchmarks.device_check import pin_report as cell  # by module name: run as a script, this is __main__
        reports = [json.loads(s) for _, s in PoolExecutor(workers=n, cell=cell).run(jobs)]
        return check_pinning(reports, n)

    def smoke_pool():
        cfg = smoke_config(scratch / "smoke-pool", data)
        counts = run_grid(cfg, executor="pool", workers=len(gpus), progress=False)
        return {**check_runs_on_gpu(run_records(cfg), gpu), "counts": dict(counts), "workers": len(gpus)}

    def paper_cell():
        cells = {}
        for precision in ("fp32", "bf16"):
            cfg = paper_cell_config(scratch / "paper", data, precision, train_subset=a.paper_train_subset,
                                    test_subset=a.paper_test_subset, epochs=a.paper_epochs)
            counts = run_grid(cfg, executor="local", progress=False)
            records = run_records(cfg)
            res = check_runs_on_gpu(records, gpu)
            r = records[0] if records else {"metrics": {}}
            batch = cfg.datasets[0].finetune.batch_size
            ft_images = a.paper_epochs * (a.paper_train_subset // batch) * batch  # fit drops the last partial batch
            m = r["metrics"]
            cells[precision] = {**res, "counts": dict(counts), "run_seconds": r.get("seconds"),
                                **{k: m[k] for k in PAPER_METRICS if k in m},
                                "finetune_images_per_s_incl_val": ft_images / m["finetune_time_s"]
                                if m.get("finetune_time_s") else None}
        ok = all(c["ok"] for c in cells.values())
        return {"ok": ok, "problems": [p for c in cells.values() for p in c["problems"]],
                "model": "resnet56", "dataset": "cifar10", "train_subset": a.paper_train_subset,
                "epochs": a.paper_epochs, "cells": cells}

    def throughput():
        rows = [train_throughput.compare(c, batch=128, steps=a.gpu_steps, repeats=a.repeats, device="cuda")
                for c in train_throughput.CASES]
        print(train_throughput.render(rows), flush=True)
        return {"ok": True, "problems": [], "rows": rows}

    for name, fn in (("smoke_local", smoke_local), ("pool_pinning", pool_pinning), ("smoke_pool", smoke_pool),
                     ("paper_cell", paper_cell), ("throughput", throughput)):
        _stage(out, name, budget, fn)
    out["ok"] = all(out[k]["ok"] for k in ("smoke_local", "pool_pinning", "smoke_pool", "paper_cell", "throughput"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "reports" / "device_check.json"), help="the JSON report")
    p.add_argument("--budget-s", type=float, default=420, help="GPU stages that would start later are not run")
    p.add_argument("--cpu-steps", type=int, default=6, help="training steps per fit in the CPU throughput probe")
    p.add_argument("--gpu-steps", type=int, default=50, help="training steps per fit in the GPU throughput")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per precision")
    p.add_argument("--probe-steps", type=int, default=2, help="`bench plan` probe steps")
    p.add_argument("--paper-train-subset", type=int, default=10000)
    p.add_argument("--paper-test-subset", type=int, default=2000)
    p.add_argument("--paper-epochs", type=int, default=1)
    a = p.parse_args(argv)
    os.environ["BENCH_OFFLINE"] = "1"  # a missing dataset is skipped or replaced, never downloaded
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hardware": hardware(),
                    "python": platform.python_version(), "cuda_available": torch.cuda.is_available()}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        scratch = Path(tmp)
        print("CPU part: fp32 vs bf16 throughput (LeNet-5), bench plan probe (smoke config)", flush=True)
        report["cpu"] = cpu_part(scratch, steps=a.cpu_steps, repeats=a.repeats, probe_steps=a.probe_steps)
        tp = report["cpu"]["throughput"][0]
        print(f"  CPU LeNet-5 batch 64: fp32 {tp['images_per_s']['fp32']:.0f} img/s, "
              f"bf16 {tp['images_per_s']['bf16']:.0f} img/s ({tp['bf16_over_fp32']:.2f}x)", flush=True)
        if torch.cuda.is_available():
            print(f"GPU part on {torch.cuda.get_device_name(0)}:", flush=True)
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
            data, source = prepare_data(data_dir(), scratch, ("mnist", "cifar10"), 16000, 2000)
            os.environ["BENCH_DATA"] = data
            report["data"] = source
            report["gpu"] = gpu_part(scratch, data, a)
        else:
            print("device_check: the GPU part needs a CUDA GPU and none is visible; ran the CPU part only")
            report["gpu"] = None
    report["seconds"] = time.perf_counter() - t0
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out} ({report['seconds']:.0f} s)")
    return 0 if report["gpu"] is None or report["gpu"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
