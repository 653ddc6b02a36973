"""Run a whole grid: expand the config into specs and hand them to an executor.

A failed or skipped cell is recorded and the grid goes on; finished cells are skipped on rerun
(checked here first, so a rerun of a finished grid starts no worker at all). On a fresh store
nothing can be finished, so pool workers are started before the store is opened and spend
their start-up importing torch while the main process creates it.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from contextlib import closing

from tqdm.auto import tqdm

from bench.core.datasets import resolve_data_dir
from bench.core.registry import get_method
from bench.errors import ConfigError
from bench.run.config import GridConfig, check_threads
from bench.run.executors import DEFAULT_EXECUTOR, CellJob, check_options, make_executor
from bench.run.tracking import Tracker, may_hold_runs


def spread_bases(specs: list) -> list:
    """Round-robin over base checkpoints, so parallel workers start by training different bases
    instead of queueing on one base's lock."""
    from bench.run.baselines import base_key

    groups: dict[str, list] = {}
    for spec in specs:
        groups.setdefault(base_key(spec), []).append(spec)
    out, queues = [], list(groups.values())
    while queues:
        out += [q.pop(0) for q in queues]
        queues = [q for q in queues if q]
    return out


def default_workers(kind: str, threads: int = 1) -> int:
    """local: 1; pool/ray: one per GPU when there are GPUs, else as many cells of `threads` threads
    as there are usable cores (the most the adaptive pool runs at once)."""
    if kind == "local":
        return 1
    import torch

    from bench.run.cpu import usable_cpus

    return torch.cuda.device_count() or max(1, usable_cpus() // threads)


def _check_workers(field: str, value) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{field}: expected an integer >= 1 (parallel cells), got {value!r}")


def run_grid(cfg: GridConfig, *, executor: str | None = None, workers: int | None = None,
             threads: int | None = None, progress: bool = True, **executor_options) -> Counter:
    """Run every cell; returns how many ended done / cached / skipped / failed.

    `threads` replaces the config's torch threads per cell (as the CLI's --threads does): a
    different setting, with its own run ids and bases. `workers` fixes the number of parallel cells; without
    it (nor the config's executor.workers) the pool follows the free cores between cells."""
    if threads is not None:
        cfg = dataclasses.replace(cfg, threads=check_threads(threads, "--threads"))
    options = {**cfg.executor, **{k: v for k, v in executor_options.items() if v is not None}}
    kind = executor or options.pop("kind", DEFAULT_EXECUTOR)
    options.pop("kind", None)
    check_options(kind, options)
    configured = options.pop("workers", None)  # always popped: the CLI's --workers wins over the config's
    _check_workers("--workers", workers)
    _check_workers("executor.workers", configured)
    workers = workers or configured or (None if kind == "pool" else default_workers(kind, cfg.threads))
    runner = make_executor(kind, workers=workers, threads=cfg.threads, **options)
    specs = cfg.expand()
    data_dir = str(resolve_data_dir(cfg.data_dir))
    if specs and not may_hold_runs(cfg.results_dir):
        runner.start()  # nothing can be done yet: workers load torch while the new store is created
    try:
        return _run(cfg, specs, runner, data_dir, kind, progress)
    finally:
        runner.close()


def _run(cfg: GridConfig, specs: list, runner, data_dir: str, kind: str, progress: bool) -> Counter:
    tracker = Tracker(cfg.results_dir)
    tracker.set_reference(cfg.name, cfg.reference)
    tracker.set_design(cfg.name, cfg.design.to_json())
    counts: Counter = Counter()
    todo = []
    for spec in specs:
        if tracker.is_done(spec.experiment, spec.run_id):
            counts["cached"] += 1
        else:
            todo.append(spec)
    if kind != "local":
        todo = spread_bases(todo)
    jobs = [CellJob(s, data_dir, cfg.results_dir, tracker.uri, progress=progress and kind == "local",
                    method_module=get_method(s.method).__module__) for s in todo]
    bar = tqdm(total=len(specs), initial=counts["cached"], desc=f"grid {cfg.name}", unit="cell",
               disable=not progress, position=0, dynamic_ncols=True)
    bar.set_postfix(dict(counts))
    with closing(runner.run(jobs)) as results:  # an interrupt here reaches the executor at once
        for job, status in results:
            counts[status] += 1
            bar.update(1)
            bar.set_postfix(dict(counts))
    bar.close()
    return counts
