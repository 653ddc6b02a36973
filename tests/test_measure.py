"""Measurement helpers: MACs on the real model, paired latency, the base latency cache."""
import dataclasses

import torch
from torch import nn

from bench.core.measure import count_macs, paired_latency_ms
from bench.core.spec import LatencyConfig, RunSpec
from bench.run import baselines


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
    import bench.core.measure as measure

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


def test_base_cpu_latency_is_measured_once_per_base_and_latency_settings(tmp_path, monkeypatch):
    timed = []

    def counting(models, example, batch, **kw):
        timed.append((batch, kw["repeats"], kw["warmup"]))
        return paired_latency_ms(models, example, batch, **kw)

    monkeypatch.setattr(baselines, "paired_latency_ms", counting)
    spec = RunSpec(method="magnitude", dataset="mnist", model="lenet5", seed=0, target_kind="macs", target=0.5,
                   latency=LatencyConfig(repeats_b1=2, repeats_b64=1, warmup=0))
    model, example = nn.Conv2d(1, 2, 3), torch.randn(1, 1, 8, 8)
    first = baselines.cpu_latency_ms(spec, model, example, tmp_path)
    assert set(first) == {1, 64} and all(v > 0 for v in first.values())
    assert timed == [(1, 2, 0), (64, 1, 0)]
    other_cell = dataclasses.replace(spec, method="random", variant="random", target=0.3)
    assert baselines.cpu_latency_ms(other_cell, model, example, tmp_path) == first  # same base: cached
    assert len(timed) == 2
    more = dataclasses.replace(spec, latency=LatencyConfig(repeats_b1=3, repeats_b64=1, warmup=0))
    baselines.cpu_latency_ms(more, model, example, tmp_path)  # other passes: measured anew
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        baselines.cpu_latency_ms(spec, model, example, tmp_path)  # other thread count: measured anew
    finally:
        torch.set_num_threads(threads)
    assert len(timed) == 6 and len(list((tmp_path / "baselines").glob("*.latency-*.json"))) == 3


def test_base_test_accuracy_is_evaluated_once_per_base_and_test_split(tmp_path, monkeypatch):
    """Hand-made split: a 1x1 conv + flatten whose logit for class 0 is the pixel, so the images
    with pixel 200 (3 of 4, labels 0) are right and the one with pixel 0 (label 1) ties -> class 0:
    accuracy 3/4, evaluated once for every cell of the base, again for another test split size."""
    from bench.core.datasets import Data, DatasetInfo, Split

    calls = []
    real = baselines.evaluate

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(baselines, "evaluate", counting)
    info = DatasetInfo("mnist", (1, 1, 1), (0.0,), (1.0,), 0, False)
    x = torch.tensor([200, 200, 200, 0], dtype=torch.uint8).reshape(4, 1, 1, 1)
    test = Split(x, torch.tensor([0, 0, 0, 1]))
    data = Data(info, test, test, test)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 0.0]).reshape(2, 1, 1, 1))
        model[0].bias.zero_()
    spec = RunSpec(method="magnitude", dataset="mnist", model="lenet5", seed=0, target_kind="macs", target=0.5)
    assert baselines.accuracy_on_test(spec, model, data.test, info, tmp_path, device="cpu") == 0.75
    other_cell = dataclasses.replace(spec, method="random", variant="random", target=0.3)
    assert baselines.accuracy_on_test(other_cell, model, data.test, info, tmp_path, device="cpu") == 0.75
    assert len(calls) == 1
    fewer = Data(info, test, test, Split(x[:3], test.y[:3]))
    assert baselines.accuracy_on_test(spec, model, fewer.test, info, tmp_path, device="cpu") == 1.0
    assert len(calls) == 2
