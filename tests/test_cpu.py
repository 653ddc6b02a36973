"""bench.run.cpu: the free cores the adaptive pool fills, and the CPU features the benchmarks print."""
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from bench.run import cpu

BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"


@pytest.mark.parametrize("others, threads, expected", [
    (0.0, 1, 4), (0.3, 1, 4),    # noise under half a core takes none
    (1.0, 1, 3), (2.6, 1, 1),    # a busy competitor takes its core
    (9.0, 1, 1),                 # never fewer than one cell
    (0.0, 2, 2), (1.0, 2, 2),    # cells of 2 threads: 3 free cores hold 1.5, rounded
])
def test_free_slots_leave_the_busy_cores_to_their_processes(monkeypatch, others, threads, expected):
    monkeypatch.setattr(cpu, "usable_cpus", lambda: 4)
    load = SimpleNamespace(cpus={0, 1, 2, 3}, others_busy=lambda: others)
    assert cpu.free_slots(load, threads, most=4) == expected
    assert cpu.free_slots(load, threads, most=1) == 1


@pytest.mark.spawns
def test_own_descendants_are_the_grids_work_not_load():
    child = subprocess.Popen([sys.executable, "-c", BUSY.format(s=0.6)])
    try:
        time.sleep(0.5)
        own = cpu._own_ticks()
    finally:
        child.wait()
    assert own[child.pid] > 0  # a busy child of ours is counted as our own
    assert 1 not in own        # init is nobody's descendant


def test_cpu_load_reads_a_nonnegative_figure_after_its_window():
    load = cpu.CpuLoad(min_window_s=0.2)
    t = time.monotonic()
    busy = load.others_busy()
    assert time.monotonic() - t >= 0.1  # the first reading waits for its window
    assert 0 <= busy <= len(load.cpus) + 0.5
    assert load.others_busy() == busy  # a reading within the window repeats the last one


def test_cpu_features_are_named_from_the_known_flags():
    assert set(cpu.cpu_features()) <= set(cpu.FEATURES.values())
    assert 1 <= cpu.usable_cpus() <= (len(cpu._affinity()))
