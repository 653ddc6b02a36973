"""Grid wall time with 1 vs 2 pool workers on the smoke grid (MNIST, 2 methods x 4 seeds, 20k images).

Set-ups, each cold (fresh results folder: the 4 bases are trained too) and each in a fresh Python
process, so every timing includes starting the pool's forkserver as `python -m bench run` does (a
forkserver left over from an earlier timing would hide it). Same forkserver pool:
  1 worker x 2 threads          what `--workers 1` gives: one cell at a time, torch threads on both cores
  1 worker x 1 thread           one core's worth of work: the unit the executor scales
  2 workers x 1 thread          the pool default on 2 cores (`--executor pool`)
  start-up: 2 workers, no data  the same grid with no data, every cell `skipped` at once: the fixed
                                cost (forkserver imports, store creation) that no worker count shrinks
Executor scaling = (1 worker x 1 thread) / (2 workers x 1 thread), goal >= 1.7x on 2 cores; the
net gain over one worker that already uses both cores through threads is reported beside it.
Rounds interleave the set-ups so machine noise hits all alike; medians are quoted.
The timer brackets `run_grid` only: the fresh process's own `import torch` is left out, as before.
Run: python benchmarks/grid_workers.py [--rounds 3] [--train-subset 20000; 0 = the whole split]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import config  # noqa: E402
from bench.run.grid import run_grid  # noqa: E402
from benchmarks._common import REPO, data_dir, hardware  # noqa: E402

SETUPS = {"1 worker x 2 threads": (1, 2, True), "1 worker x 1 thread": (1, 1, True),
          "2 workers x 1 thread": (2, 1, True), "start-up: 2 workers, no data": (2, 1, False)}


def timed(workers: int, threads: int, train_subset: int | None, with_data: bool) -> float:
    cfg = config.override(config.load(REPO / "configs/smoke.yaml"), methods=["magnitude", "random"],
                          datasets=["mnist"], seeds=[0, 1, 2, 3])
    if with_data:
        cfg.data_dir = data_dir()
    else:  # every cell ends `skipped` at once: what is left is the grid's fixed cost
        cfg.data_dir = os.environ["BENCH_DATA"] = tempfile.mkdtemp()
    # Cells must outweigh that fixed cost (about 5 s, mostly imports: the no-data set-up), or the
    # benchmark measures start-up: 20 000 training images per base by default, not 4 000.
    cfg.datasets = [dataclasses.replace(d, train_subset=train_subset) for d in cfg.datasets]
    with tempfile.TemporaryDirectory() as tmp:
        cfg.results_dir = tmp
        t = time.perf_counter()
        counts = run_grid(cfg, executor="pool", workers=workers, threads=threads, progress=False)
        elapsed = time.perf_counter() - t
    assert counts == {"done" if with_data else "skipped": 8}, counts
    return elapsed


def timed_in_fresh_process(workers: int, threads: int, train_subset: int | None, with_data: bool) -> float:
    out = subprocess.run([sys.executable, __file__, "--one", str(workers), str(threads), str(train_subset or 0),
                          str(int(with_data))], check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=20000, help="training images per cell; 0 = all")
    parser.add_argument("--one", nargs=4, type=int, metavar=("WORKERS", "THREADS", "SUBSET", "WITH_DATA"),
                        help="internal: time one grid in this process and print the seconds")
    args = parser.parse_args()
    if args.one:
        workers, threads, subset, with_data = args.one
        print(timed(workers, threads, subset or None, bool(with_data)))
        return
    rounds, subset = args.rounds, args.train_subset or None
    print(f"# smoke grid (8 cells, 4 bases, {subset or 'all'} training images), cold, forkserver pool, "
          f"{rounds} interleaved rounds; {hardware()}")
    times: dict[str, list[float]] = {name: [] for name in SETUPS}
    for _ in range(rounds):
        for name, (workers, threads, with_data) in SETUPS.items():
            times[name].append(timed_in_fresh_process(workers, threads, subset, with_data))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'set-up':<30} {'median s':>9}  runs")
    for name, t in times.items():
        print(f"{name:<30} {med[name]:>9.1f}  {' '.join(f'{x:.1f}' for x in t)}")
    two = med["2 workers x 1 thread"]
    print(f"executor scaling, 2 vs 1 worker at 1 thread each: {med['1 worker x 1 thread'] / two:.2f}x (goal >= 1.7x)")
    print(f"net gain of 2 workers over 1 worker using both cores: {med['1 worker x 2 threads'] / two:.2f}x")
    fixed, one = med["start-up: 2 workers, no data"], med["1 worker x 1 thread"]
    print(f"bound from the fixed cost alone (Amdahl): {one / (fixed + (one - fixed) / 2):.2f}x")


if __name__ == "__main__":
    main()
