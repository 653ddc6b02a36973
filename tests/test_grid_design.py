"""A grid's own design: per-dataset seeds and targets, the pre-registered primary contrast, and
CLI flags that narrow it (segments) without widening it."""
from __future__ import annotations

from collections import Counter

import pytest

from bench.cli import _seeds
from bench.errors import ConfigError
from bench.run import config

GRID = {
    "methods": {"magnitude": {}, "random": {}},
    "seeds": [0, 1, 2],
    "targets": ["macs:0.3", "macs:0.5"],
    "design": {"primary": {"cifar10": "macs:0.5", "mnist": "mean"}, "margin_pp": 0.4},
    "datasets": {
        "mnist": {"models": ["lenet5"], "seeds": [0, 1, 2, 3]},
        "cifar10": {"models": ["vgg"], "targets": [{"target": "macs:0.5", "seeds": [0, 1, 2, 3, 4]},
                                                   {"target": "macs:0.3", "seeds": [0, 1]}, "macs:0.7"]},
    },
}


def cells(cfg) -> Counter:
    return Counter((s.dataset, s.target, s.seed) for s in cfg.expand() if s.method == "magnitude")


def test_each_dataset_and_target_runs_its_own_seeds():
    cfg = config.from_dict(GRID)
    got = cells(cfg)
    assert sorted(k for k in got if k[0] == "mnist") == [("mnist", t, s) for t in (0.3, 0.5) for s in range(4)]
    cifar = sorted(k[1:] for k in got if k[0] == "cifar10")
    assert cifar == [(0.3, 0), (0.3, 1)] + [(0.5, s) for s in range(5)] + [(0.7, s) for s in range(3)]
    assert cfg.design.primary_of("cifar10") == "macs:0.5" and cfg.design.primary_of("mnist") == "mean"
    assert cfg.design.margin_pp == 0.4
    assert config.Design.from_json(cfg.design.to_json()) == cfg.design


def test_cli_seeds_narrow_a_datasets_own_design_and_never_widen_it():
    cfg = config.override(config.from_dict(GRID), datasets=["cifar10"], seeds=_seeds("2-4"))
    assert sorted(k[1:] for k in cells(cfg)) == [(0.5, 2), (0.5, 3), (0.5, 4), (0.7, 2), (0.7, 3), (0.7, 4)]
    cfg = config.override(config.from_dict(GRID), datasets=["cifar10"], targets=["macs:0.3"])
    assert sorted(k[1:] for k in cells(cfg)) == [(0.3, 0), (0.3, 1)]


def test_seed_ranges_on_the_command_line():
    assert _seeds("0,3-5") == [0, 3, 4, 5]


@pytest.mark.parametrize("design, message", [
    ({"primary": {"svhn": "mean"}}, "design.primary.svhn: not a dataset of this grid"),
    ({"primary": {"mnist": "macs:0.7"}}, r"design.primary.mnist: macs:0.7 is not a target of mnist; allowed: mean, macs:0.3, macs:0.5"),
    ({"margin_pp": 0}, "design.margin_pp: expected a number of percentage points > 0"),
    ({"primary": {}, "alpha": 0.1}, "design.alpha: unknown field; allowed: primary, margin_pp"),
])
def test_bad_designs_name_the_field_and_what_is_allowed(design, message):
    with pytest.raises(ConfigError, match=message):
        config.from_dict({**GRID, "design": design})


def test_bad_dataset_targets_are_one_clear_line():
    bad = {**GRID, "datasets": {"mnist": {"models": ["lenet5"], "targets": [{"target": "macs:0.5", "n": 3}]}}}
    with pytest.raises(ConfigError, match=r"datasets.mnist.targets\[0\].n: unknown field; allowed: target, seeds"):
        config.from_dict(bad)
