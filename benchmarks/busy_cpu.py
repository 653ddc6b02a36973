"""Cold grid wall time, idle and beside one busy competing process: the old default vs the new.

Set-ups, each a cold `python -m bench run` (fresh process, fresh results folder, so the base is
trained too), timed from launch to exit as a user sees it:
  old default   --executor local --threads <torch's default>: `bench run` before issue 28, one
                cell at a time with torch on every core
  new default   no flags: the adaptive pool, as many 1-thread cells as the free cores hold
Conditions: idle, and busy = beside one real competing process (an OpenBLAS matmul loop on
--competitor-threads threads, started and warmed up before the grid, killed after it).
Rounds interleave the four (set-up, condition) pairs, alternating their order each round, so a
burst of load from elsewhere hits all alike; medians are quoted with every sample.

The grid: CIFAR-10, VGG-11 width 0.25, 5,000 training images, one base (pretrain 2 epochs) and
--methods cells (fine-tune 1 epoch each). Before the grids, the CPU's features and fp32/bf16
training throughput (benchmarks/train_throughput.py) at 1 thread and at every usable core.
Acceptance (issue 28): new busy / new idle <= 2.3, and new idle <= 1.10 x old idle.
Run: python benchmarks/busy_cpu.py [--rounds 3] [--json out.json]; takes ~4 x rounds grid runs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.core.probe import torch_threads  # noqa: E402
from bench.run.cpu import CpuLoad, usable_cpus  # noqa: E402
from benchmarks._common import REPO, data_dir, hardware  # noqa: E402
from benchmarks.train_throughput import compare, features_line, render  # noqa: E402

METHODS = "magnitude,random,feature_map,tp_taylor"
# dataset -> (model, training images, pretrain epochs, fine-tune epochs); mnist: a seconds-long check
GRIDS = {"cifar10": ({"name": "vgg", "depth": 11, "width": 0.25}, 5000, 2, 1), "mnist": ("lenet5", 1000, 1, 1)}
COMPETITOR = """

import numpy as np
a = np.random.rand(384, 384).astype(np.float32)
print("ready", flush=True)
while True:
    a = np.tanh(a @ a)
"""
BUSY_MAX, IDLE_MAX = 2.3, 1.10  # the acceptance bounds
OLD_THREADS = torch.get_num_threads()  # what the in-process executor ran cells at before issue 28


def grid_yaml(dataset: str, methods: list[str]) -> str:
    model, images, pretrain, finetune = GRIDS[dataset]
    batch = 128 if dataset == "cifar10" else 64
    return yaml.safe_dump({
        "name": "busy_cpu", "seeds": [0], "targets": ["macs:0.5"], "val_size": 1000,
        "methods": {m: {} for m in methods},
        "datasets": {dataset: {"models": [model], "train_subset": images, "test_subset": 2000,
                               "pretrain": {"epochs": pretrain, "lr": 0.05, "batch_size": batch},
                               "finetune": {"epochs": finetune, "lr": 0.05, "batch_size": batch}}}})


def start_competitor(threads: int) -> subprocess.Popen:
    """One CPU-bound process on `threads` BLAS threads, returned once it computes."""
    env = {**os.environ, **{k: str(threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR], stdout=subprocess.PIPE, text=True, env=env)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("the competing process did not start")
    time.sleep(1.0)  # a second of load before the grid starts, as a job already running would have
    return proc


def time_grid(flags: list[str], config: Path, cells: int) -> float:
    """Seconds of one cold `bench run` of `config` with `flags`; fails loudly unless every cell is done."""
    with tempfile.TemporaryDirectory(prefix="busy-cpu-") as results:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench", "run", str(config), "--no-progress",
                               "--results-dir", results, "--data-dir", data_dir(), *flags],
                              cwd=REPO, capture_output=True, text=True)
        elapsed = time.perf_counter() - t
    if proc.returncode != 0 or f"grid finished: done {cells}" not in proc.stderr:
        raise RuntimeError(f"grid {' '.join(flags) or '(no flags)'} did not finish every cell:\n{proc.stderr[-2000:]}")
    return elapsed


def timed(setup: str, condition: str, config: Path, cells: int, competitor_threads: int) -> dict:
    old = ["--executor", "local", "--threads", str(OLD_THREADS)]
    others = CpuLoad(min_window_s=1.0).others_busy()  # the load from elsewhere, before anything starts
    rival = start_competitor(competitor_threads) if condition == "busy" else None
    try:
        seconds = time_grid(old if setup == "old" else [], config, cells)
    finally:
        if rival:
            rival.kill()
            rival.wait()
    return {"setup": setup, "condition": condition, "seconds": seconds, "others_busy_before": round(others, 2),
            "loadavg_1m": os.getloadavg()[0]}


def summarize(samples: list[dict]) -> dict:
    """Medians per (set-up, condition) and the acceptance ratios."""
    med = {f"{s}/{c}": statistics.median(x["seconds"] for x in samples if (x["setup"], x["condition"]) == (s, c))
           for s in ("old", "new") for c in ("idle", "busy")}
    out = {"median_s": med, "old_busy_over_idle": med["old/busy"] / med["old/idle"],
           "new_busy_over_idle": med["new/busy"] / med["new/idle"],
           "new_idle_over_old_idle": med["new/idle"] / med["old/idle"]}
    out["pass"] = out["new_busy_over_idle"] <= BUSY_MAX and out["new_idle_over_old_idle"] <= IDLE_MAX
    return out


def render_grids(samples: list[dict], summary: dict) -> str:
    lines = [f"{'set-up':<12} {'condition':<9} {'median s':>9}  runs"]
    for key, med in summary["median_s"].items():
        setup, condition = key.split("/")
        runs = [x["seconds"] for x in samples if (x["setup"], x["condition"]) == (setup, condition)]
        lines.append(f"{setup + ' default':<12} {condition:<9} {med:>9.1f}  {' '.join(f'{r:.1f}' for r in runs)}")
    lines += [f"busy / idle, old default: {summary['old_busy_over_idle']:.2f}x",
              f"busy / idle, new default: {summary['new_busy_over_idle']:.2f}x (acceptance <= {BUSY_MAX}x)",
              f"idle, new / old default:  {summary['new_idle_over_old_idle']:.2f}x (acceptance <= {IDLE_MAX:.2f}x)",
              f"acceptance: {'PASS' if summary['pass'] else 'FAIL'}"]
    return "\n".join(lines)


def throughput(cores: int, steps: int, repeats: int) -> list[dict]:
    """fp32 and bf16 training img/s of the grid's model at 1 thread (a cell) and at every core."""
    rows = []
    for threads in sorted({1, cores}):
        with torch_threads(threads):
            row = compare("vgg11-w0.25", batch=128, steps=steps, repeats=repeats, device="cpu")
        rows.append({**row, "case": f"vgg11 {threads}t", "threads": threads})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--methods", default=METHODS, help=f"comma list: the grid's cells (default {METHODS})")
    p.add_argument("--dataset", choices=sorted(GRIDS), default="cifar10", help="mnist: a seconds-long check")
    p.add_argument("--competitor-threads", type=int, default=1)
    p.add_argument("--throughput-steps", type=int, default=8, help="0: skip the throughput table")
    p.add_argument("--json", help="also write every figure to this file")
    a = p.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    cores = usable_cpus()
    print(f"# {datetime.datetime.now().isoformat(timespec='minutes')}; {hardware()}; {cores} usable cores; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# CPU features: {features_line()}")
    report: dict = {"date": datetime.datetime.now().isoformat(), "hardware": hardware(), "cores": cores,
                    "features": features_line(), "loadavg_start": os.getloadavg()}
    if a.throughput_steps:
        rows = throughput(cores, a.throughput_steps, repeats=3)
        print("# training throughput, batch 128, synthetic CIFAR-10 data, median of 3 interleaved repeats")
        print(render(rows))
        report["throughput"] = rows
    with tempfile.TemporaryDirectory(prefix="busy-cpu-cfg-") as tmp:
        config = Path(tmp) / "busy_cpu.yaml"
        config.write_text(grid_yaml(a.dataset, methods))
        print(f"# cold grid: {a.dataset}, {GRIDS[a.dataset][0]}, {GRIDS[a.dataset][1]} images, one base, "
              f"{len(methods)} cells ({', '.join(methods)}); competitor: {a.competitor_threads}-thread matmul loop; "
              f"{a.rounds} interleaved rounds", flush=True)
        pairs = [(s, c) for c in ("idle", "busy") for s in ("old", "new")]
        samples = []
        for r in range(a.rounds):
            for setup, condition in (pairs if r % 2 == 0 else pairs[::-1]):
                samples.append(timed(setup, condition, config, len(methods), a.competitor_threads))
                print(f"  round {r + 1}: {setup} default, {condition}: {samples[-1]['seconds']:.1f} s "
                      f"(others busy before: {samples[-1]['others_busy_before']:.2f} cores)", flush=True)
    summary = summarize(samples)
    print(render_grids(samples, summary))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({**report, "grids": samples, "summary": summary}, indent=1))
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
