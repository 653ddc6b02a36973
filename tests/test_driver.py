"""The driver turns scores into keep-lists that hit the target, measured on the real pruned model."""
import pytest
import torch

from bench.api import Target
from bench.core import models
from bench.core.driver import prune_to_target
from bench.core.spec import PruningConfig
from bench.core.surgery import find_units

MODELS = [("lenet5", {}, (1, 28)), ("vgg", {"depth": 11, "width": 0.25}, (3, 32)),
          ("vgg", {"depth": 16, "width": 0.25}, (3, 32)), ("resnet20", {}, (3, 32))]


@pytest.mark.parametrize("name,args,shape", MODELS)
@pytest.mark.parametrize("ranking", ["per_layer", "global"])
@pytest.mark.parametrize("kind,amount", [("macs", 0.5), ("macs", 0.3), ("params", 0.5)])
def test_driver_hits_target_within_tolerance(name, args, shape, ranking, kind, amount):
    torch.manual_seed(1)
    m = models.build(name, shape[0], shape[1], 10, **args)
    x = torch.randn(1, shape[0], shape[1], shape[1])
    units = find_units(m, x)
    scores = {n: torch.rand(u.size) for n, u in units.items()}
    pruned, achieved = prune_to_target(m, x, scores, Target(kind, amount), PruningConfig(ranking=ranking))
    assert abs(achieved - amount) <= 0.015, achieved
    assert pruned.eval()(x).shape == (1, 10)


def test_lowest_scores_are_removed_first():
    m = models.build("lenet5", 1, 28, 10)
    x = torch.randn(1, 1, 28, 28)
    units = find_units(m, x)
    scores = {n: torch.arange(u.size, dtype=torch.float) for n, u in units.items()}
    scores["features.0"] = torch.tensor([5.0, 0.1, 4.0, 0.2, 3.0, 2.0])
    pruned, _ = prune_to_target(m, x, scores, Target("macs", 0.5))
    w_before = m.features[0].weight
    kept_rows = [i for i in range(6) if any(torch.equal(w_before[i], r) for r in pruned.features[0].weight)]
    assert 1 not in kept_rows and 3 not in kept_rows and 0 in kept_rows


def test_per_layer_ranking_prunes_units_evenly_and_never_empties_them():
    m = models.build("vgg", 3, 32, 10, depth=11, width=0.25)
    x = torch.randn(1, 3, 32, 32)
    units = find_units(m, x)
    scores = {n: torch.rand(u.size) for n, u in units.items()}
    scores["features.0"] = torch.zeros(16)
    scores["features.0"][0] = 1.0  # 15 near-worthless filters: global ranking would gut the layer
    cfg = PruningConfig(ranking="per_layer", max_layer_prune=0.9)
    pruned, _ = prune_to_target(m, x, scores, Target("macs", 0.7), cfg)
    after = find_units(pruned, x)
    fracs = [after[n].size / u.size for n, u in units.items()]
    assert max(fracs) - min(fracs) < 0.15
    glob, _ = prune_to_target(m, x, scores, Target("macs", 0.7), PruningConfig(ranking="global", max_layer_prune=0.9))
    assert find_units(glob, x)["features.0"].size == 2  # ceil(16 * 0.1): capped, not emptied


def test_round_to_keeps_widths_multiples_of_8_and_still_hits_the_target():
    m = models.build("vgg", 3, 32, 10, depth=16, width=0.5)
    x = torch.randn(1, 3, 32, 32)
    units = find_units(m, x)
    scores = {n: torch.rand(u.size) for n, u in units.items()}
    pruned, achieved = prune_to_target(m, x, scores, Target("macs", 0.5), PruningConfig(round_to=8))
    assert abs(achieved - 0.5) <= 0.015
    assert all(u.size % 8 == 0 for u in find_units(pruned, x).values())
