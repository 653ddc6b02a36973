"""benchmarks/busy_cpu.py: the grid it times, its competing process, and its verdict."""
import importlib.util
import json
import time
from pathlib import Path

import pytest

from bench.run import config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def busy_cpu():
    spec = importlib.util.spec_from_file_location("busy_cpu", REPO / "benchmarks/busy_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_timed_grid_is_one_cold_base_and_one_cell_per_method(busy_cpu):
    import yaml

    cfg = config.from_dict(yaml.safe_load(busy_cpu.grid_yaml("cifar10", ["magnitude", "random", "tp_taylor"])))
    specs = cfg.expand()
    assert [s.method for s in specs] == ["magnitude", "random", "tp_taylor"]
    assert {(s.dataset, s.model_label, s.train_subset, s.pretrain.epochs, s.finetune.epochs, s.threads)
            for s in specs} == {("cifar10", "vgg-depth11-width0.25", 5000, 2, 1, 1)}


def test_the_competitor_really_burns_a_cpu_until_killed(busy_cpu):
    rival = busy_cpu.start_competitor(1)
    try:
        time.sleep(0.3)
        fields = Path(f"/proc/{rival.pid}/stat").read_text().rpartition(")")[2].split()
        assert int(fields[11]) + int(fields[12]) > 10  # > 0.1 s of CPU in ~1.3 s, on a loaded machine too
    finally:
        rival.kill()
        rival.wait()


def test_summary_gives_the_ratios_and_the_verdict(busy_cpu):
    def runs(old_idle, old_busy, new_idle, new_busy):
        values = {("old", "idle"): old_idle, ("old", "busy"): old_busy, ("new", "idle"): new_idle,
                  ("new", "busy"): new_busy}
        return [{"setup": s, "condition": c, "seconds": v + d} for (s, c), v in values.items() for d in (-1, 0, 5)]

    good = busy_cpu.summarize(runs(20, 110, 21, 40))
    assert good["median_s"]["new/busy"] == 40 and good["new_busy_over_idle"] == pytest.approx(40 / 21)
    assert good["new_idle_over_old_idle"] == pytest.approx(21 / 20) and good["pass"]
    assert not busy_cpu.summarize(runs(20, 110, 23, 40))["pass"]  # idle 15 % slower than the old default
    assert not busy_cpu.summarize(runs(20, 110, 20, 50))["pass"]  # 2.5x beside the competitor
    assert "acceptance: PASS" in busy_cpu.render_grids(runs(20, 110, 21, 40), good)


def test_a_short_mnist_run_times_all_four_cases(busy_cpu, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(data_dir))
    out = tmp_path / "busy.json"
    code = busy_cpu.main(["--dataset", "mnist", "--rounds", "1", "--methods", "magnitude,random",
                          "--throughput-steps", "0", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == (0 if report["summary"]["pass"] else 1)
    assert sorted((g["setup"], g["condition"]) for g in report["grids"]) == [
        ("new", "busy"), ("new", "idle"), ("old", "busy"), ("old", "idle")]
    assert all(g["seconds"] > 0 for g in report["grids"]) and report["features"]
