"""Run a whole grid: expand the config into specs and hand them to an executor.

A failed or skipped cell is recorded and the grid goes on; finished cells are skipped on rerun
(checked here first, so a rerun of a finished grid starts no worker at all). On a fresh store
nothing can be finished, so pool workers are started before the store is opened and spend
their start-up importing torch while the main process creates it.
"""
from __future__ import annotations

import os
from collections import Counter
from contextlib import closing

from tqdm.auto import tqdm

from bench.config import GridConfig
from bench.datasets import resolve_data_dir
from bench.errors import ConfigError
from bench.executors import CellJob, check_options, make_executor
from bench.registry import get_method
from bench.tracking import Tracker, may_hold_runs


def spread_bases(specs: list) -> list:
    """Round-robin over base checkpoints, so parallel workers start by training different bases
    instead of queueing on one base's lock."""
    from bench.baselines import base_key

    groups: dict[str, list] = {}
    for spec in specs:
        groups.setdefault(base_key(spec), []).append(spec)
    out, queues = [], list(groups.values())
    while queues:
        out += [q.pop(0) for q in queues]
        queues = [q for q in queues if q]
    return out


def default_workers(kind: str) -> int:
    """local: 1; pool/ray: one per GPU when there are GPUs, else one per CPU core."""
    if kind == "local":
        return 1
    import torch

    return torch.cuda.device_count() or os.cpu_count() or 1


def threads_per_worker(kind: str, workers: int, options: dict) -> int:
    """Torch threads per cell: 0 (torch's default, all cores) in-process; an explicit `threads`
    option; Ray's `cpus_per_run`; else the pool's fair share, cores // workers, so workers never
    oversubscribe the CPU."""
    threads = options.get("threads")
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigError(f"executor.threads: expected an integer >= 1, got {threads!r}")
        return threads
    if kind == "local":
        return 0
    if kind == "ray":
        return max(1, int(options.get("cpus_per_run", 1)))
    return max(1, (os.cpu_count() or 1) // workers)


def _check_workers(field: str, value) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{field}: expected an integer >= 1 (parallel cells), got {value!r}")


def run_grid(cfg: GridConfig, *, executor: str | None = None, workers: int | None = None,
             progress: bool = True, **executor_options) -> Counter:
    """Run every cell; returns how many ended done / cached / skipped / failed."""
    options = {**cfg.executor, **{k: v for k, v in executor_options.items() if v is not None}}
    kind = executor or options.pop("kind", "local")
    options.pop("kind", None)
    check_options(kind, options)
    configured = options.pop("workers", None)  # always popped: the CLI's --workers wins over the config's
    _check_workers("--workers", workers)
    _check_workers("executor.workers", configured)
    workers = workers or configured or default_workers(kind)
    threads = threads_per_worker(kind, workers, options)
    options.pop("threads", None)
    runner = make_executor(kind, workers=workers, **options)
    specs = cfg.expand()
    data_dir = str(resolve_data_dir(cfg.data_dir))
    if specs and not may_hold_runs(cfg.results_dir):
        runner.start()  # nothing can be done yet: workers load torch while the new store is created
    try:
        return _run(cfg, specs, runner, data_dir, threads, kind, progress)
    finally:
        runner.close()


def _run(cfg: GridConfig, specs: list, runner, data_dir: str, threads: int, kind: str, progress: bool) -> Counter:
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
    jobs = [CellJob(s, data_dir, cfg.results_dir, tracker.uri, threads, progress=progress and kind == "local",
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
