"""The CPU a grid runs on: how many cores it may use now, and what its vector units can do.

A cell's numbers must not depend on the machine's load, so its torch threads are fixed by the
grid config (docs/decisions.md, issue 28); only the number of cells run side by side follows the
load. Oversubscribed cores are what made a busy machine cost a grid 5x: OpenMP threads spin
waiting for a core another process holds. So the pool runs as many single-thread cells as there
are cores the other processes leave free, measured from /proc (Linux), not guessed from the
core count. Elsewhere every CPU this process may use counts as free.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

# /proc/cpuinfo flags that decide whether bf16 autocast pays off on a CPU (README, precision)
FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16",
            "amx_tile": "AMX-TILE"}


def _affinity() -> set[int]:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    cpus = len(_affinity())
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def cpu_features() -> list[str]:
    """The FEATURES this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return [name for flag, name in FEATURES.items() if flag in flags]


def _cpu_ticks(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks since boot summed over `cpus`, from /proc/stat."""
    busy = total = 0
    with open("/proc/stat") as fh:
        for line in fh:
            name, *values = line.split()
            if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
                continue
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


def _own_ticks() -> dict[int, int]:
    """Pid -> CPU ticks used so far, for this process and all its descendants (pool workers,
    the forkserver): their work is the grid's own, not load to make room for."""
    parent: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:  # exited meanwhile
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        used[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = {}, [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid in used:
            tree[pid] = used[pid]
        todo += children.get(pid, [])
    return tree


class CpuLoad:
    """Cores kept busy by other processes, on the CPUs this process may use, averaged over the
    time since the previous reading (the previous cell, say): what a grid must leave them."""

    def __init__(self, min_window_s: float = 0.5):
        self.cpus = _affinity()
        self.min_window_s = min_window_s
        self.available = os.path.exists("/proc/stat")
        self.busy = 0.0
        self._last = self._snapshot()
        self._measured = False

    def _snapshot(self) -> tuple[float, int, int, dict[int, int]]:
        if not self.available:
            return time.monotonic(), 0, 0, {}
        busy, total = _cpu_ticks(self.cpus)
        return time.monotonic(), busy, total, _own_ticks()

    def others_busy(self) -> float:
        """Busy cores outside this process tree since the previous call. The first call waits
        until `min_window_s` has passed since construction; a later call that comes sooner
        returns the previous figure, so bursts of quick cells do not read noise."""
        if not self.available:
            return 0.0
        wait = self.min_window_s - (time.monotonic() - self._last[0])
        if wait > 0:
            if self._measured:
                return self.busy
            time.sleep(wait)
        now = self._snapshot()
        _, busy0, total0, own0 = self._last
        _, busy1, total1, own1 = now
        if total1 > total0:
            per_core = (total1 - total0) / len(self.cpus)  # ticks of one core over the window
            own = sum(t - own0.get(pid, 0) for pid, t in own1.items())
            self.busy = max(0.0, (busy1 - busy0 - own) / per_core)
        self._last, self._measured = now, True
        return self.busy


def free_slots(load: CpuLoad, threads: int, most: int) -> int:
    """Cells of `threads` threads that fit beside the other processes now, between 1 and `most`.
    Rounded: one competitor at 100 % of a core takes a core; noise under half a core takes none."""
    free = min(usable_cpus(), len(load.cpus) - load.others_busy())
    return max(1, min(most, int(free / threads + 0.5)))
