"""RL pruning agent (docs/methods.md §4): reward shape, no empty layers, masking = surgery, learning, budget."""
from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from bench.api import Target
from bench.core.models import build, init_weights
from bench.core.surgery import find_units, prune
from bench.errors import ConfigError
from methods.rl_agent import MaskedEval, RLAgent, final_action, reward, sample_actions


def test_reward_rises_with_pruning_while_drop_below_b():
    kept = torch.tensor([10, 8, 5, 2, 1])
    r = reward(torch.full((5,), 0.5), kept, n=10, b=1.0)
    assert r[0] == 0  # nothing pruned: nothing gained
    assert (r[1:] > 0).all() and (r.diff() > 0).all()


def test_reward_negative_and_falling_with_pruning_when_drop_above_b():
    r = reward(torch.full((4,), 3.0), torch.tensor([9, 6, 3, 1]), n=10, b=2.0)
    assert (r < 0).all() and (r.diff() < 0).all()
    # the same pruning is worth less the larger the drop
    assert reward(torch.tensor([0.0, 1.0, 1.9]), torch.tensor([5, 5, 5]), 10, 2.0).diff().lt(0).all()


def test_empty_layers_impossible():
    gen = torch.Generator().manual_seed(0)
    probs = torch.full((6,), 1e-4)
    probs[3] = 2e-4
    actions = sample_actions(probs, 64, gen)
    assert actions.any(1).all()
    assert actions[:, 3].all()  # the forced survivor is the most probable filter
    keep = final_action(torch.full((5,), 0.1))
    assert int(keep.sum()) == 1


def test_option_errors_name_the_option():
    with pytest.raises(ConfigError, match="rl_agent.b"):
        RLAgent(b=0)
    with pytest.raises(ConfigError, match="rl_agent.init_keep"):
        RLAgent(init_keep=1.0)


def _calibrated(name: str, **kw) -> tuple[nn.Module, torch.Tensor]:
    """A random net with BN statistics set on its own inputs, so every channel changes the output."""
    c, s = (1, 28) if name == "lenet5" else (3, 32)
    torch.manual_seed(0)
    model = build(name, c, s, 10, **kw)
    s = 16 if name == "resnet20" else s  # global pooling: smaller inputs keep the test fast
    init_weights(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.bias.data.normal_(0, 0.1)
            m.momentum = None
    x = torch.randn(200, c, s, s)
    with torch.no_grad():
        model.train()(x)
    return model.eval(), x


@pytest.mark.parametrize("name,kw,which", [("lenet5", {}, 0), ("lenet5", {}, -1),  # conv, linear after flatten
                                           ("vgg", {"depth": 11, "width": 0.125}, -1),  # linear + BN1d
                                           ("resnet20", {"width": 0.5}, 0)])  # residual group, 4 BNs
def test_masked_accuracy_equals_accuracy_after_surgery(name, kw, which):
    """Masking post-BN outputs (residual groups included) must score exactly what the pruned net scores."""
    model, x = _calibrated(name, **kw)
    gen = torch.Generator().manual_seed(1)
    units = find_units(model, x[:2], include_coupled=True)
    for uname in [list(units)[which]]:
        unit = units[uname]
        keep = torch.rand(unit.size, generator=gen) > 0.5
        keep[0] = True
        pruned = prune(model, {uname: keep.nonzero().flatten().tolist()}, x[:2]).eval()
        with torch.no_grad():
            y = pruned(x).argmax(1)  # labels = the pruned net's answers: exact match gives 1.0
        ev = MaskedEval(model, unit, [x[:120], x[120:]], [y[:120], y[120:]], max_bytes=1)  # one action a pass
        batched = MaskedEval(model, unit, [x[:120], x[120:]], [y[:120], y[120:]])
        actions = torch.stack([keep, torch.ones_like(keep), keep])
        assert ev.accuracy(actions).tolist()[0] == 1.0 and ev.accuracy(actions)[1] < 1.0
        assert torch.equal(batched.accuracy(actions), ev.accuracy(actions))


def _toy(n_real: int = 10, n_zero: int = 10, seed: int = 0):
    """One conv layer: filter i < n_real detects class i's input channel; the other filters are exactly zero."""
    gen = torch.Generator().manual_seed(seed)
    n = n_real + n_zero
    conv = nn.Conv2d(n_real, n, 1)
    head = nn.Linear(n, n_real)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        head.weight.zero_()
        head.bias.zero_()
        perm = torch.randperm(n, generator=gen)  # real and zero filters interleaved
        real, zero = perm[:n_real], perm[n_real:]
        for cls, f in enumerate(real.tolist()):
            conv.weight[f, cls] = 1.0
            head.weight[cls, f] = 1.0
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    y = torch.randint(0, n_real, (400,), generator=gen)
    x = torch.randn(400, n_real, 4, 4, generator=gen) * 0.3
    x[torch.arange(400), y] += 1.0
    return model, x, y, real, zero


def test_agent_learns_to_remove_zero_filters_and_keep_the_rest():
    model, x, y, real, zero = _toy()
    unit = find_units(model, x[:2])["0"]
    logged = []
    task = types.SimpleNamespace(log_metric=lambda k, v, step=None: logged.append((k, step, v)))
    probs, ref = RLAgent(b=1.0).search(model, unit, task, [x], [y], seed=0)
    assert ref > 0.95
    keep = final_action(probs)
    assert (~keep[zero]).float().mean() >= 0.9
    assert keep[real].float().mean() >= 0.9
    curve = [v for k, _, v in logged if k == "rl/0/reward"]
    assert len(curve) == RLAgent().updates and sum(curve[-5:]) > sum(curve[:5])


def test_allocation_is_the_agents_scaled_jointly_and_keeps_the_floor(mnist_small):
    """Two equal layers (LeNet's fc1 and a copy of it would do; here fc1/fc2 scores swapped) get the
    allocation their agents chose, whatever their order; no unit goes below the 10 % floor."""
    from bench.core.datasets import normalize
    from bench.core.driver import plan_keep
    from bench.core.spec import PruningConfig
    from bench.core.surgery import find_units, min_keep
    from methods.rl_agent import allocation_scores

    model = build("lenet5", 1, 28, 10)
    example = normalize(mnist_small.train.x[:2], mnist_small.info)
    units = find_units(model, example)
    gen = torch.Generator().manual_seed(0)
    order = {n: torch.rand(u.size, generator=gen) for n, u in units.items()}
    removed = {"features.0": 0.0, "features.3": 0.5, "classifier.1": 0.25, "classifier.3": 1.0}
    cfg = PruningConfig(ranking="global")
    plan = plan_keep(model, example, allocation_scores(removed, order), Target("macs", 0.5), cfg, comparable=True)
    kept = {n: len(plan.keep.get(n, range(u.size))) for n, u in units.items()}
    assert abs(plan.predicted_reduction - 0.5) <= 0.015
    assert kept["classifier.3"] == min_keep(84, cfg.max_layer_prune)  # the agent wanted all gone: floor
    shares = {n: 1 - kept[n] / units[n].size for n in ("features.3", "classifier.1")}
    assert shares["features.3"] == pytest.approx(2 * shares["classifier.1"], abs=0.1)  # 0.5 : 0.25, scaled jointly
    assert kept["features.0"] == 6  # the agent kept everything: cut only if the target needed it
    # Inside a unit the lowest-ordered channels go first.
    gone = sorted(set(range(16)) - set(plan.keep["features.3"]))
    assert gone == sorted(torch.argsort(order["features.3"])[:len(gone)].tolist())
    # Order independence: scores computed in reversed unit order are the same scores.
    rev = allocation_scores(dict(reversed(list(removed.items()))), dict(reversed(list(order.items()))))
    assert all(torch.equal(rev[n], allocation_scores(removed, order)[n]) for n in units)


@pytest.mark.slow
def test_prune_meets_target_without_training_and_does_not_depend_on_layer_order(mnist_small, task_for):
    task = task_for(mnist_small, method="rl_agent", pretrain_epochs=1, finetune_epochs=2, target=0.5)
    base = task.train(build("lenet5", 1, 28, 10), 1, from_scratch=True).model
    seen = task.images_seen
    method = RLAgent(updates=4, samples=4, eval_size=200)
    pruned = method.prune(base, task, Target("macs", 0.5))
    assert abs(1 - task.macs(pruned) / task.macs(base) - 0.5) <= task.target.tolerance
    assert task.images_seen == seen  # no training of its own: the harness fine-tunes (needs_finetune)
    kept = {k: v for k, v in task.memory_logger.params.items() if k.endswith("/kept")}
    units = task.units
    task.units = lambda m, **kw: dict(reversed(list(units(m, **kw).items())))  # visit the layers back to front
    again = method.prune(base, task, Target("macs", 0.5))
    assert [p.shape for p in again.parameters()] == [p.shape for p in pruned.parameters()]
    assert {k: v for k, v in task.memory_logger.params.items() if k.endswith("/kept")} == kept
    l1 = RLAgent(updates=4, samples=4, eval_size=200, fill="l1").prune(base, task, Target("macs", 0.5))
    assert [p.shape for p in l1.parameters()] == [p.shape for p in pruned.parameters()]  # same allocation
