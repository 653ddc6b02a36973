"""Measurement helpers: MACs on the real model, paired latency."""
import torch
from torch import nn

from bench.measure import count_macs, paired_latency_ms


def test_paired_latency_gives_one_median_per_model_and_ranks_a_heavier_model_slower():
    torch.manual_seed(0)
    light = nn.Conv2d(3, 4, 3, padding=1)
    heavy = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 64, 64, 3, padding=1) for i in range(4)])
    example = torch.randn(1, 3, 32, 32)
    assert count_macs(heavy, example) > 100 * count_macs(light, example)
    t_light, t_heavy = paired_latency_ms([light, heavy], example, 8, repeats=5, warmup=1)
    assert 0 < t_light < t_heavy


def test_gpu_latency_uses_cuda_events(monkeypatch):
    """No GPU here: the CUDA branch is selected by the device string and timed by events, not
    the host clock (fake events report 2.5 ms)."""
    import bench.measure as measure

    calls = []

    class FakeEvent:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            calls.append("record")

        def synchronize(self):
            calls.append("sync")

        def elapsed_time(self, other):
            return 2.5

    monkeypatch.setattr(measure.torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(measure.torch.cuda, "synchronize", lambda: calls.append("device-sync"))
    model = torch.nn.Linear(4, 2)
    assert measure._cuda_timer(model, torch.zeros(1, 4)) == 2.5
    assert calls == ["device-sync", "record", "record", "sync"]
