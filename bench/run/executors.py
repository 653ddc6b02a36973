"""Executors: the same `run_one` sequentially, in a local process pool, or on Ray.

Every executor yields (spec, status) as cells finish. A cell that raises is recorded `failed`
by `run_one` itself; a worker that dies outright (OOM kill, segfault) is recorded `failed` here
with that reason, and the grid goes on. Workers log straight to the tracking store: the SQLite
default runs in WAL mode (see tracking.py), a server URI is the choice for clusters.

Every executor runs a cell at its spec's torch threads (`run_cell`), so where and beside what a
cell runs never changes its numbers; only how many cells run at once may follow the machine.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from bench.core.spec import RunSpec
from bench.errors import ConfigError
from bench.interrupts import raise_pending
from bench.run.cpu import CpuLoad, free_slots, usable_cpus

EXECUTORS = ("local", "pool", "ray")
DEFAULT_EXECUTOR = "pool"  # `bench run` with no flags: as many cells at once as free cores (issue 28)
# what each executor accepts under `executor:` (workers is the grid's, the rest its own); threads
# change a cell's numbers, so they are a grid setting (top-level `threads:`), not an executor's
OPTIONS = {"local": ("workers",), "pool": ("workers", "gpu_ids"),
           "ray": ("workers", "address", "cpus_per_run", "gpus_per_run")}


@dataclass
class CellJob:
    """Everything a worker needs to run one cell, picklable for pools and Ray."""

    spec: RunSpec
    data_dir: str | None
    results_dir: str
    tracking_uri: str
    progress: bool = False
    method_module: str = ""  # imported first in the worker, so in-process registrations reach it


def run_cell(job: CellJob) -> str:
    """Worker entry point: run one cell against the given tracking store, at its spec's torch
    threads (restored after, for the in-process executor's caller)."""
    import importlib

    from bench.core.probe import torch_threads
    from bench.run.runner import run_one
    from bench.run.tracking import Tracker

    if job.method_module:
        importlib.import_module(job.method_module)
    tracker = Tracker(job.results_dir, uri=job.tracking_uri)
    with torch_threads(job.spec.threads):
        return run_one(job.spec, data_dir=job.data_dir, results_dir=job.results_dir, tracker=tracker,
                       progress=job.progress)


def record_worker_death(job: CellJob, reason: str, *, unstarted: bool = True, status: str = "failed") -> None:
    """Mark a cell whose worker process died as `status` (failed), so the store never shows it
    'running'. A cell with no run at all gets such a run too, unless `unstarted` is False."""
    from bench.run.tracking import STATUS_RUNNING, RunLogger, Tracker

    tracker = Tracker(job.results_dir, uri=job.tracking_uri)
    runs = tracker.runs_of(job.spec.experiment, job.spec.run_id)
    live = [r for r in runs if r.data.tags.get("status") == STATUS_RUNNING]
    if live:
        for r in live:
            RunLogger(tracker.client, r.info.run_id).finish(status, reason)
    elif not runs and unstarted:
        tracker.start(job.spec).finish(status, reason)


class Executor:
    """What every executor offers: `run` yields (job, status) as cells finish. `start` may begin
    acquiring workers early, before the jobs are known; `close` releases them if `run` never ran."""

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class LocalExecutor(Executor):
    """In-process, one cell after another: the default, and what a laptop check of one cell wants."""

    def __init__(self, workers: int = 1):
        pass

    def run(self, jobs: Sequence[CellJob]) -> Iterator[tuple[CellJob, str]]:
        for job in jobs:
            raise_pending()
            yield job, run_cell(job)


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, as CUDA_VISIBLE_DEVICES would name them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


# Loaded once by the forkserver, which then forks every pool worker with them in memory: N workers
# no longer import torch and MLflow N times over (about 3 s of CPU each), and a forked worker
# exits without the interpreter teardown. Safe for CUDA: importing these never initialises it
# (checked by tracing torch.cuda during the import), so each worker still picks its own GPU.
PRELOAD = ["bench.run.runner", "mlflow.tracking", "torch._dynamo"]  # _dynamo: the first optimizer imports it


def _pool_context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm_forkserver() -> None:
    """Start the pool's forkserver now, before the caller imports torch itself: its preload (about
    3 s of CPU) then runs on a free core beside the caller's own imports instead of after them,
    which takes about 2 s off a cold grid's wall time (docs/performance.md). Returns at once."""
    from multiprocessing import forkserver

    _pool_context()
    forkserver.ensure_running()


def _init_worker(slots, pids, gpu_ids: Sequence[str], environ: dict[str, str]) -> None:
    """Pool initializer: the caller's environment, then one GPU per worker; reports its pid, so
    an interrupted grid can stop the cells it runs.

    A forked worker inherits the forkserver's environment, frozen when the server started; the
    caller's current one (BENCH_*, MLFLOW_*, set since) is what a spawned process would see.
    The GPU pin runs before the worker's first CUDA call, so every run inside it uses "cuda" =
    GPU `slot % len(gpu_ids)`; without it all workers would share GPU 0.
    """
    os.environ.clear()
    os.environ.update(environ)
    pids.put(os.getpid())
    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing semaphore; a worker killed by an interrupt would
    # leave it to the resource tracker, which then warns about "leaked semaphore objects"
    tqdm.set_lock(threading.RLock())
    slot = slots.get()
    if gpu_ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_ids[slot % len(gpu_ids)]


RECHECK_S = 5.0  # how often a running pool looks again for cores freed meanwhile (and whenever a cell ends)


def _ready() -> None:
    """No-op task: the pool creates a worker per task submitted while none is idle."""


def _fill(pool: cf.ProcessPoolExecutor, workers: Callable[[], int]) -> None:
    for _ in range(workers()):
        pool.submit(_ready)


class PoolExecutor(Executor):
    """A local process pool; each worker sees one GPU (round-robin) where there are GPUs.

    `workers` fixes how many cells run at once. Without it and without GPUs (one worker each) the
    pool follows the CPU: whenever a cell finishes, and every RECHECK_S while cells run, it runs
    as many cells of `threads` torch threads as fit beside the other processes' load (bench.run.cpu),
    at most the usable cores, so a busy machine costs a grid the cores it takes instead of
    oversubscribing them all. A running cell is never stopped for load, and its threads are its
    own (`run_cell`): the load never changes a number.
    """

    def __init__(self, workers: int | None = None, gpu_ids: Sequence[str] | None = None, cell=run_cell,
                 threads: int = 1):
        self.gpu_ids = list(visible_gpus() if gpu_ids is None else gpu_ids)
        self.threads = threads
        self.load = CpuLoad() if workers is None and not self.gpu_ids else None
        self.workers = workers or len(self.gpu_ids) or max(1, usable_cpus() // threads)  # the most at once
        self.cell = cell  # the function each worker runs per job; swapped only by tests
        self._started: _Pool | None = None
        self._starter: threading.Thread | None = None

    def limit(self) -> int:
        """How many cells may run at once now: `workers` when fixed, else what the free cores hold."""
        return free_slots(self.load, self.threads, self.workers) if self.load else self.workers

    def start(self) -> None:
        """Start the workers in the background, so the forkserver's imports (about 3 s) overlap
        the caller's own work before `run`; the first batch of `run` goes to this pool. Adaptive,
        as many as the free cores hold (measured in the background too)."""
        if self._starter is None:
            self._started = self._new_pool(self.workers)
            # creating a worker waits for the forkserver's imports: a thread waits, not the caller
            self._starter = threading.Thread(target=_fill, args=(self._started.executor, self.limit), daemon=True)
            self._starter.start()

    def close(self) -> None:
        """Shut down a started pool that `run` never used."""
        pool = self._take_started()
        if pool is not None:
            pool.executor.shutdown(cancel_futures=True)

    def _take_started(self) -> _Pool | None:
        if self._starter is not None:
            self._starter.join()
            self._starter = None
        pool, self._started = self._started, None
        return pool

    def run(self, jobs: Sequence[CellJob]) -> Iterator[tuple[CellJob, str]]:
        # One dead worker breaks a whole ProcessPoolExecutor and takes the other running cells
        # down with it. Cells that never started go to a fresh pool; cells that were running are
        # suspects, each rerun alone in a one-worker pool: a second death there is its own fault.
        pending, suspects = list(jobs), []
        while pending or suspects:
            if pending:
                batch, workers, limit, pending = pending, self.workers, self.limit, []
            else:
                batch, workers, limit = [suspects.pop(0)], 1, lambda: 1
            lost = []
            with contextlib.closing(self._pool(batch, workers, limit)) as results:
                for job, status in results:
                    if status is None:
                        lost.append(job)
                    else:
                        yield job, status
            for job in lost:
                if not _was_started(job):
                    pending.append(job)
                elif workers > 1 or len(batch) > 1:
                    suspects.append(job)
                else:
                    record_worker_death(job, "worker process died (killed, e.g. out of memory)")
                    yield job, "failed"

    def _new_pool(self, workers: int) -> _Pool:
        ctx = _pool_context()
        slots, pids = ctx.Queue(), ctx.Queue()
        for i in range(workers):
            slots.put(i)
        executor = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                          initargs=(slots, pids, self.gpu_ids, dict(os.environ)))
        return _Pool(executor, pids)

    def _pool(self, batch: list[CellJob], workers: int, limit: Callable[[], int]
              ) -> Iterator[tuple[CellJob, str | None]]:
        """(job, status) per finished cell; status None for cells lost to a broken pool. A cell is
        submitted only while fewer than `limit()` run, asked again each time one finishes and every
        RECHECK_S: queued in the executor instead, every cell would start once any worker was idle."""
        # only the first batch can find a started pool, and it asks for self.workers, as started
        pool = self._take_started() or self._new_pool(workers)
        waiting, running = list(batch), {}
        with pool.executor:
            try:
                while waiting or running:
                    room = limit() - len(running)
                    while waiting and room > 0:
                        try:
                            running[pool.executor.submit(self.cell, waiting[0])] = waiting[0]
                        except cf.process.BrokenProcessPool:
                            break
                        waiting.pop(0)
                        room -= 1
                    if not running:  # the pool broke: the rest never started
                        break
                    done, _ = cf.wait(running, timeout=RECHECK_S, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        job = running.pop(fut)
                        try:
                            yield job, fut.result()
                        except cf.process.BrokenProcessPool:
                            yield job, None
                for job in waiting:
                    yield job, None
            except BaseException:  # Ctrl-C / SIGTERM, or whoever iterates stopped early (GeneratorExit)
                pool.stop(list(running.values()))
                raise


@dataclass
class _Pool:
    """A process pool and the pids its workers reported."""

    executor: cf.ProcessPoolExecutor
    pids: object  # multiprocessing Queue

    def stop(self, unfinished: Sequence[CellJob]) -> None:
        """Stop now: kill the running cells as kill -9 would (the rerun redoes them, resuming from
        their last epoch checkpoint), then mark those interrupted so the store shows none 'running'.
        Without this the pool finished every running cell before exiting."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        while True:
            try:
                pid = self.pids.get(timeout=0.1)
            except queue.Empty:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _mark_interrupted(unfinished)


def _mark_interrupted(jobs) -> None:
    from bench.run.runner import INTERRUPTED_REASON
    from bench.run.tracking import STATUS_INTERRUPTED

    for job in jobs:
        record_worker_death(job, INTERRUPTED_REASON, unstarted=False, status=STATUS_INTERRUPTED)


def _was_started(job: CellJob) -> bool:
    from bench.run.tracking import STATUS_RUNNING, Tracker

    runs = Tracker(job.results_dir, uri=job.tracking_uri).runs_of(job.spec.experiment, job.spec.run_id)
    return any(r.data.tags.get("status") == STATUS_RUNNING for r in runs)


class RayExecutor(Executor):
    """Ray: `address='auto'` joins a running cluster, None starts a local one.

    Each cell asks for `cpus_per_run` CPUs and `gpus_per_run` GPUs (a fraction lets several small
    runs share one GPU). Ray is an optional extra: `pip install .[ray]`.
    """

    def __init__(self, workers: int | None = None, address: str | None = None, cpus_per_run: float = 1,
                 gpus_per_run: float = 0):
        try:
            import ray
        except ImportError:
            raise ConfigError("executor 'ray' needs Ray: pip install '.[ray]' (or use --executor pool)") from None
        self.ray = ray
        self.address = address
        self.workers = workers
        self.cpus, self.gpus = cpus_per_run, gpus_per_run

    def run(self, jobs: Sequence[CellJob]) -> Iterator[tuple[CellJob, str]]:
        ray = self.ray
        if not ray.is_initialized():
            cpus = self.workers * self.cpus if self.workers else os.cpu_count()  # workers: parallel cells
            kwargs = {"address": self.address} if self.address else {"num_cpus": cpus}
            repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            # plugins registered from modules outside the repo (a test file, a user's folder) too
            roots = dict.fromkeys([repo, *filter(None, (_import_root(j.method_module) for j in jobs))])
            ray.init(include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(roots), **_passthrough_env()}},
                     **kwargs)
        remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)(run_cell)
        refs = {remote.remote(job): job for job in jobs}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                job = refs.pop(done[0])
                try:
                    yield job, ray.get(done[0])
                except ray.exceptions.RayError as e:  # the worker died: record it, keep going
                    record_worker_death(job, f"Ray worker died: {type(e).__name__}")
                    yield job, "failed"
        except BaseException:  # Ctrl-C / SIGTERM, or whoever iterates stopped early: as in the pool
            for ref in refs:
                ray.cancel(ref, force=True)
            _mark_interrupted(refs.values())
            raise


def _import_root(module: str) -> str | None:
    """The sys.path entry `module` was imported from, so a Ray worker can import it as well."""
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        return None
    path = Path(path).resolve()
    return str(path.parents[module.count(".") + (path.name == "__init__.py")])


def _passthrough_env() -> dict[str, str]:
    keys = ("BENCH_DATA", "BENCH_OFFLINE", "MLFLOW_TRACKING_URI", "BENCH_CHANNELS_LAST")
    return {k: os.environ[k] for k in keys if k in os.environ}


def check_options(kind: str, options: dict) -> None:
    """Fail before any cell starts on an unknown executor or option, naming the allowed ones."""
    if kind not in EXECUTORS:
        raise ConfigError(f"executor '{kind}' is unknown; allowed: {', '.join(EXECUTORS)}")
    if "threads" in options:
        raise ConfigError("executor.threads: torch threads change a cell's numbers, so they are a grid "
                          "setting: write `threads: N` at the top level of the config")
    for key in options:
        if key not in OPTIONS[kind]:
            raise ConfigError(f"executor.{key}: unknown option of executor '{kind}'; "
                              f"allowed: {', '.join(OPTIONS[kind])}")


def make_executor(kind: str, *, threads: int = 1, **options) -> Executor:
    """The executor `kind` for cells of `threads` torch threads: the pool fits that many cells
    into the free cores, Ray reserves that many CPUs per cell unless `cpus_per_run` says otherwise."""
    check_options(kind, options)
    if kind == "pool":
        return PoolExecutor(threads=threads, **options)
    if kind == "ray":
        return RayExecutor(**{"cpus_per_run": threads, **options})
    return LocalExecutor(**options)
