"""Which channels a method kept, as indices of the base: composed over rounds and merges."""
from __future__ import annotations

import torch
from torch import nn

from bench.core.merge import merge
from bench.core.surgery import find_units, kept_channels, prune


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


EXAMPLE = torch.zeros(1, 1, 8, 8)


def test_two_rounds_compose_to_indices_of_the_base():
    once = prune(net(), {"0": [1, 3, 4, 6, 7]}, EXAMPLE)
    assert kept_channels(once) == {"0": [1, 3, 4, 6, 7]}
    # positions 0, 2, 4 of the 5 kept are base channels 1, 4, 7; layer 2 is cut for the first time
    twice = prune(once, {"0": [4, 0, 2], "2": [5, 0]}, EXAMPLE)
    assert kept_channels(twice) == {"0": [1, 4, 7], "2": [0, 5]}
    assert twice[0].out_channels == 3 and twice[2].out_channels == 2
    assert kept_channels(net()) == {}


def test_lineage_survives_save_and_load(tmp_path):
    model = prune(net(), {"2": [2, 3]}, EXAMPLE)
    torch.save(model, tmp_path / "m.pt")
    assert kept_channels(torch.load(tmp_path / "m.pt", weights_only=False)) == {"2": [2, 3]}


def test_a_merge_keeps_each_clusters_first_member():
    model = net()
    units = find_units(model, EXAMPLE)
    merged = merge(model, units, {"0": [[0, 5], [1], [2, 3, 4], [6, 7]]}, EXAMPLE)
    assert kept_channels(merged) == {"0": [0, 1, 2, 6]}
