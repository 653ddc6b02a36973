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
