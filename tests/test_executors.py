"""Executors on real processes (loopback only): pool on SQLite, pool on an MLflow server, Ray, dead workers."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.api import ScoreMethod
from bench.core.registry import register
from bench.run import config
from bench.run.grid import run_grid
from bench.run.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]


@register
class DieForTests(ScoreMethod):
    """Test-only plugin: the worker process dies as if OOM-killed."""

    name = "die_for_tests"

    def score(self, model, task):
        os._exit(137)


@register
class SleepForTests(ScoreMethod):
    """Test-only plugin: a cell that is still running when the grid is interrupted."""

    name = "sleep_for_tests"

    def __init__(self, marker: str = ""):
        self.marker = marker

    def score(self, model, task):
        Path(self.marker).touch()
        time.sleep(300)


def tiny(tmp_path, data_dir, methods=("magnitude", "random"), seeds=(0, 1)):
    cfg = config.override(config.load(REPO / "configs/smoke.yaml"), methods=list(methods), datasets=["mnist"],
                          seeds=list(seeds))
    cfg.results_dir = str(tmp_path / "results")
    cfg.data_dir = str(data_dir)
    return cfg


def assert_each_cell_once(cfg, uri=None):
    df = Tracker(cfg.results_dir, uri=uri).runs_frame("smoke")
    expected = {s.run_id for s in cfg.expand()}
    assert set(df.run_id) == expected and df.run_id.is_unique
    return df


def test_pool_of_two_on_the_sqlite_default_loses_nothing(tmp_path, data_dir):
    cfg = tiny(tmp_path, data_dir)
    counts = run_grid(cfg, executor="pool", workers=2, progress=False)
    assert counts == {"done": 4}
    df = assert_each_cell_once(cfg)
    assert (df.status == "done").all()
    # every run carries its full record: no metric lost to a write conflict
    assert df[["acc_final", "macs_reduction", "latency_cpu_b64_pruned_ms"]].notna().all().all()
    hist = Tracker(cfg.results_dir).client.get_metric_history(df.mlflow_run_id[0], "finetune/val_acc")
    assert len(hist) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench", "server", "--port", str(port),
                             "--results-dir", str(tmp_path / "server")], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, 9)
        pytest.fail("mlflow server did not start within 90 s")
    yield uri
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def test_pool_of_two_against_a_real_mlflow_server(tmp_path, data_dir, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cfg = tiny(tmp_path, data_dir, seeds=(0,))
    counts = run_grid(cfg, executor="pool", workers=2, progress=False)
    assert counts == {"done": 2}
    df = assert_each_cell_once(cfg, uri=mlflow_server)
    assert (df.status == "done").all()
    assert not (Path(cfg.results_dir) / "mlflow.db").exists()  # nothing went to the embedded store


def test_dead_worker_is_recorded_failed_and_the_grid_goes_on(tmp_path, data_dir):
    cfg = tiny(tmp_path, data_dir, methods=("die_for_tests", "magnitude"), seeds=(0,))
    counts = run_grid(cfg, executor="pool", workers=2, progress=False)
    assert counts == {"failed": 1, "done": 1}
    df = assert_each_cell_once(cfg)
    dead = df[df.method == "die_for_tests"].iloc[0]
    assert dead.status == "failed" and "worker process died" in dead.error


def test_ray_local_cluster_with_two_workers_runs_each_cell_once(tmp_path, data_dir):
    ray = pytest.importorskip("ray")
    cfg = tiny(tmp_path, data_dir, seeds=(0,))
    try:
        counts = run_grid(cfg, executor="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert counts == {"done": 2}
    assert (assert_each_cell_once(cfg).status == "done").all()


def report_gpu_after_rendezvous(job) -> str:
    """Pool cell for the GPU test: wait until every worker holds a job, then report what it sees."""
    Path(job.folder, str(os.getpid())).touch()
    deadline = time.time() + 60
    while len(os.listdir(job.folder)) < job.workers and time.time() < deadline:
        time.sleep(0.05)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


@pytest.mark.spawns
def test_pool_pins_each_worker_to_its_own_gpu(tmp_path):
    from types import SimpleNamespace

    from bench.run.executors import PoolExecutor

    pool = PoolExecutor(workers=2, gpu_ids=["3", "5"], cell=report_gpu_after_rendezvous)
    jobs = [SimpleNamespace(folder=str(tmp_path), workers=2) for _ in range(2)]
    assert sorted(status for _, status in pool.run(jobs)) == ["3", "5"]


def timed_cell(job) -> tuple[float, float]:
    """Pool cell: (start, end) wall times. A cell with a `meet` folder waits (up to 60 s) there
    until two cells have arrived, so two cells the pool runs at once are seen to overlap."""
    start = time.time()
    if job.meet:
        Path(job.meet, str(os.getpid())).touch()
        while len(os.listdir(job.meet)) < 2 and time.time() < start + 60:
            time.sleep(0.02)
    else:
        time.sleep(0.3)
    return start, time.time()


@pytest.mark.spawns
def test_pool_runs_at_most_its_limit_at_once_and_more_once_it_grows(tmp_path):
    """The adaptive pool asks `limit()` before each submission: cells never outnumber it, and
    freed cores are used by the cells still waiting."""
    from types import SimpleNamespace

    from bench.run.executors import PoolExecutor

    pool = PoolExecutor(workers=2, gpu_ids=[], cell=timed_cell)
    done: dict[int, tuple[float, float]] = {}
    pool.limit = lambda: 1 if len(done) < 2 else 2  # "busy" for the first two cells, then a core frees up
    jobs = [SimpleNamespace(i=i, meet=str(tmp_path) if i >= 2 else None) for i in range(4)]
    for job, times in pool.run(jobs):
        done[job.i] = times
    assert done[0][1] <= done[1][0] or done[1][1] <= done[0][0]  # one at a time
    assert max(done[2][0], done[3][0]) < min(done[2][1], done[3][1])  # side by side
    assert max(done[0][1], done[1][1]) <= min(done[2][0], done[3][0])


def test_default_pool_follows_the_cpu_and_fixed_workers_do_not(monkeypatch):
    from bench.run import executors

    monkeypatch.setattr(executors, "usable_cpus", lambda: 4)
    adaptive = executors.make_executor("pool", gpu_ids=[], threads=2)
    assert adaptive.load is not None and adaptive.workers == 2  # at most 4 cores // 2 threads
    monkeypatch.setattr(executors, "free_slots", lambda load, threads, most: 1)
    assert adaptive.limit() == 1
    fixed = executors.make_executor("pool", gpu_ids=[], workers=3, threads=2)
    assert fixed.load is None and fixed.limit() == 3
    assert executors.make_executor("pool", gpu_ids=["0", "1"]).workers == 2  # one per GPU, not adaptive


def test_threads_are_a_grid_setting_not_an_executor_option():
    from bench.run.executors import check_options

    with pytest.raises(config.ConfigError, match=r"executor.threads: .*top level"):
        check_options("pool", {"threads": 2})


def test_run_cell_runs_at_the_specs_threads_and_restores_the_callers(monkeypatch):
    import dataclasses

    import torch

    from bench.core.spec import RunSpec
    from bench.run import runner, tracking
    from bench.run.executors import CellJob, run_cell

    spec = RunSpec(method="magnitude", dataset="mnist", model="lenet5", seed=0, target_kind="macs", target=0.5)
    seen = []
    monkeypatch.setattr(runner, "run_one", lambda spec, **kw: seen.append(torch.get_num_threads()) or "done")
    monkeypatch.setattr(tracking, "Tracker", lambda *a, **kw: None)
    before = torch.get_num_threads()
    for threads in (1, 2):
        job = CellJob(dataclasses.replace(spec, threads=threads), None, "unused", "unused")
        assert run_cell(job) == "done"
    assert seen == [1, 2] and torch.get_num_threads() == before


def test_cli_workers_override_the_configs_instead_of_clashing(tmp_path, monkeypatch):
    empty = tmp_path / "no-data"  # the cell ends skipped at once; the point is that it ran at all
    empty.mkdir()
    monkeypatch.setenv("BENCH_DATA", str(empty))
    cfg = tiny(tmp_path, empty, methods=("random",), seeds=(0,))
    cfg.executor = {"kind": "local", "workers": 3}
    assert run_grid(cfg, workers=1, progress=False) == {"skipped": 1}


def read_env(job) -> str:
    return os.environ.get("BENCH_TEST_VALUE", "unset")


def test_pool_workers_see_the_callers_current_environment(monkeypatch):
    """Forked from a forkserver started earlier, workers would otherwise see its frozen environment."""
    from bench.run.executors import PoolExecutor

    monkeypatch.setenv("BENCH_TEST_VALUE", "before")
    assert [s for _, s in PoolExecutor(workers=1, gpu_ids=[], cell=read_env).run([None])] == ["before"]
    monkeypatch.setenv("BENCH_TEST_VALUE", "after")
    assert [s for _, s in PoolExecutor(workers=1, gpu_ids=[], cell=read_env).run([None])] == ["after"]


@pytest.mark.spawns
def test_started_pool_runs_the_jobs_and_an_unused_one_closes():
    from bench.run.executors import PoolExecutor

    pool = PoolExecutor(workers=2, gpu_ids=[], cell=read_env)
    pool.start()
    assert [s for _, s in pool.run([None, None])] == ["unset", "unset"]
    assert pool._started is None and pool._starter is None
    idle = PoolExecutor(workers=2, gpu_ids=[], cell=read_env)
    idle.start()
    idle.close()
    assert idle._started is None


def test_rerun_of_a_finished_pool_grid_starts_no_worker(tmp_path, data_dir, monkeypatch):
    from bench.run.executors import PoolExecutor

    cfg = tiny(tmp_path, data_dir, methods=("random",), seeds=(0,))
    assert run_grid(cfg, executor="pool", workers=2, progress=False) == {"done": 1}

    def no_pool(self, workers):
        raise AssertionError("a finished grid started a worker pool")

    monkeypatch.setattr(PoolExecutor, "_new_pool", no_pool)
    assert run_grid(cfg, executor="pool", workers=2, progress=False) == {"cached": 1}


def test_cold_pool_grid_is_judged_before_torch_and_only_for_a_fresh_pool_store(tmp_path, monkeypatch):
    """The forkserver may start early only where `run_grid` would start a pool on a new store,
    and only without plugins (their folders join sys.path later, which the server copies)."""
    from bench.cli import cold_pool_grid, parser

    monkeypatch.delenv("BENCH_PLUGINS", raising=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"results_dir: {tmp_path / 'store'}\n")

    def cold(*flags, text=None):
        if text is not None:
            grid.write_text(text)
        return cold_pool_grid(parser().parse_args(["run", str(grid), *flags]))

    assert cold()
    assert not cold("--executor", "local")
    assert not cold("--plugins", str(tmp_path))
    assert not cold(text="executor: {kind: ray}\n")
    assert cold(text="executor: {kind: ray}\n", *["--executor", "pool", "--results-dir", str(tmp_path / "b")])
    assert not cold(text="[unclosed\n")  # left to config.load to report
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "mlflow.db").touch()
    assert not cold(text=f"results_dir: {tmp_path / 'store'}\n")
    monkeypatch.setenv("BENCH_PLUGINS", str(tmp_path))
    assert not cold(text="{}\n", *["--results-dir", str(tmp_path / "c")])


@pytest.mark.spawns
def test_cold_pool_grid_starts_the_forkserver_before_importing_torch(tmp_path):
    """A cold `bench run` starts the pool's forkserver first, so its imports overlap the CLI's own
    (about 2 s of a cold grid, docs/performance.md). Fails if it starts only once torch is loaded."""
    probe = f"""
import sys
from multiprocessing import forkserver
import bench.cli as cli
def stop(plugins):
    running = forkserver._forkserver._forkserver_pid is not None
    print("forkserver", running, "torch", "torch" in sys.modules)
    raise SystemExit(0)
cli._load_methods = stop
cli.main(["run", "configs/smoke.yaml", "--results-dir", {str(tmp_path / "store")!r}])
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "BENCH_PLUGINS": ""})
    assert out.stdout.split() == ["forkserver", "True", "torch", "False"], out.stderr


@pytest.mark.spawns
def test_forkserver_preload_never_touches_cuda():
    """Workers fork from the process that ran these imports: CUDA initialised there would be
    unusable in every worker, and the per-worker GPU pin would come too late."""
    probe = """
import torch, torch._C
calls = []
def spy(name, real):
    def wrapper(*a, **k):
        calls.append(name)
        return real(*a, **k)
    return wrapper
for mod, name in [(torch.cuda, "_lazy_init"), (torch.cuda, "init"), (torch.cuda, "is_available"),
                  (torch.cuda, "device_count"), (torch._C, "_cuda_getDeviceCount")]:
    if hasattr(mod, name):
        setattr(mod, name, spy(name, getattr(mod, name)))
from bench.run.executors import PRELOAD
for m in PRELOAD:
    __import__(m)
assert not calls and not torch.cuda.is_initialized(), calls
"""
    subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True, timeout=120)


@pytest.mark.parametrize("executor", ["pool", "ray"])
def test_interrupt_stops_the_grid_at_once_and_leaves_no_cell_running(tmp_path, data_dir, executor):
    import signal
    import threading

    if executor == "ray":
        ray = pytest.importorskip("ray")
    marker = tmp_path / "asleep"
    cfg = tiny(tmp_path, data_dir, methods=("sleep_for_tests",), seeds=(0, 1, 2))  # 2 workers: one cell queued
    cfg.methods = {"sleep_for_tests": {"marker": str(marker)}}
    sent, grid_over = [], threading.Event()

    def interrupt_once_a_cell_sleeps():
        while not marker.exists():
            if grid_over.wait(0.05):
                return  # never interrupt a later test
        sent.append(time.time())
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C, or SIGTERM through the CLI, does to the main process

    # SIGINT must raise KeyboardInterrupt here even if the test runner was started with it ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_once_a_cell_sleeps, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_grid(cfg, executor=executor, workers=2, progress=False)
    finally:
        grid_over.set()
        signal.signal(signal.SIGINT, previous)
        if executor == "ray":
            ray.shutdown()
    assert time.time() - sent[0] < 30  # before the fix, the pool ran every queued cell to its end first
    df = Tracker(cfg.results_dir).runs_frame("smoke")
    assert len(df) >= 1 and not (df.status == "running").any()
    assert (df.status == "interrupted").any() and not (df.status == "failed").any()


def test_sigterm_stops_a_pool_grid_from_the_cli_quietly(tmp_path, data_dir):
    import signal

    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench", "run", "configs/smoke.yaml", "--datasets", "mnist", "--methods", "magnitude",
           "--seeds", "0,1,2,3,4,5", "--no-progress", "--results-dir", str(results), "--data-dir", str(data_dir),
           "--executor", "pool", "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(results.glob("runs/*/stage-*/pruned_before_finetune.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` does
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "run the same command again" in err
    assert "leaked semaphore" not in err  # a killed worker's tqdm lock used to be reported at exit
    df = Tracker(results).runs_frame("smoke")
    assert not (df.status == "running").any() and (df.status == "done").sum() < 6
