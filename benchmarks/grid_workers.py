"""Grid wall time with 1 vs 2 pool workers on the smoke grid (MNIST, 2 methods x 4 seeds, 20k images).

Both runs start cold (fresh results folder: bases are trained too) and use the same spawn pool,
so the ratio is the executor's scaling alone. Goal on 2 cores: >= 1.7x.
Run: python benchmarks/grid_workers.py
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import REPO, data_dir, hardware  # noqa: E402
from bench import config  # noqa: E402
from bench.grid import run_grid  # noqa: E402


def timed(workers: int) -> float:
    cfg = config.override(config.load(REPO / "configs/smoke.yaml"), methods=["magnitude", "random"],
                          datasets=["mnist"], seeds=[0, 1, 2, 3])
    cfg.data_dir = data_dir()
    # Cells must outweigh the ~5 s a spawned worker spends importing torch and MLflow, or the
    # benchmark measures interpreter start-up: 20 000 training images per base, not 4 000.
    cfg.datasets = [dataclasses.replace(d, train_subset=20000) for d in cfg.datasets]
    with tempfile.TemporaryDirectory() as tmp:
        cfg.results_dir = tmp
        t = time.perf_counter()
        counts = run_grid(cfg, executor="pool", workers=workers, progress=False)
        elapsed = time.perf_counter() - t
    assert counts == {"done": 8}, counts
    return elapsed


def main() -> None:
    print(f"# smoke grid (8 cells, 4 bases), cold, spawn pool; {hardware()}")
    one, two = timed(1), timed(2)
    print(f"{'workers':<8} {'wall s':>8}")
    print(f"{1:<8} {one:>8.1f}\n{2:<8} {two:>8.1f}\nspeedup 2 vs 1 worker: {one / two:.2f}x")


if __name__ == "__main__":
    main()
