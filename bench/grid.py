"""Run a whole grid: expand the config into specs and hand each to `run_one`.

A failed or skipped cell is recorded and the grid goes on; finished cells are skipped on rerun.
"""
from __future__ import annotations

from collections import Counter

from tqdm.auto import tqdm

from bench.config import GridConfig
from bench.datasets import resolve_data_dir
from bench.runner import run_one
from bench.tracking import Tracker


def run_grid(cfg: GridConfig, *, progress: bool = True) -> Counter:
    """Run every cell in order; returns how many ended done / cached / skipped / failed."""
    specs = cfg.expand()
    data_dir = str(resolve_data_dir(cfg.data_dir))
    tracker = Tracker(cfg.results_dir)
    counts: Counter = Counter()
    bar = tqdm(specs, desc=f"grid {cfg.name}", unit="cell", disable=not progress, position=0)
    for spec in bar:
        bar.set_postfix_str(spec.label)
        status = run_one(spec, data_dir=data_dir, results_dir=cfg.results_dir, tracker=tracker, progress=progress)
        counts[status] += 1
        bar.set_postfix(dict(counts))
    bar.close()
    return counts
