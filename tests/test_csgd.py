"""C-SGD: lossless merge surgery, widths that meet the target, clustering, the centripetal transform,
ε at the paper's contraction (checked against an independent simulation of the momentum SGD), the
merge_lossless precondition, and on real MNIST: clusters collapse and merging costs no accuracy
without fine-tuning."""
import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.api import Target, Task
from bench.core import models
from bench.core.datasets import normalize
from bench.core.measure import count_macs
from bench.core.merge import check_clusters, merge
from bench.core.spec import PruningConfig, RunSpec, TrainConfig
from bench.core.surgery import CostModel, find_units
from bench.core.training import evaluate, fit
from bench.errors import ConfigError
from methods.csgd import (CSGD, LOSSLESS, PAPER_EPSILON, Centripetal, Phase, cluster_unit, paper_fractions,
                          target_widths, tie)

CASES = [("lenet5", {}, (1, 28)), ("vgg", {"depth": 11, "width": 0.25}, (3, 32)), ("resnet20", {}, (3, 32))]


def build(name, args, chans, size):
    torch.manual_seed(0)
    m = models.build(name, chans, size, 10, **args)
    models.init_weights(m)
    for mod in m.modules():  # non-trivial BN so that a wrong merge shows up in the outputs
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


@torch.no_grad()
def make_identical(model, units, seed=0):
    """Random clusters of about half of each unit; every member becomes a copy of its cluster's first."""
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    clusters = {}
    for name, u in units.items():
        k = max(1, u.size // 2)
        perm = torch.randperm(u.size, generator=gen).tolist()
        groups = [perm[i::k] for i in range(k)]
        clusters[name] = groups
        for g in groups:
            for layer in u.members + u.others:
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    t = getattr(modules[layer], attr, None)
                    if isinstance(t, torch.Tensor):
                        t[g] = t[g[0]].clone()
    return clusters


@pytest.mark.parametrize("name,args,shape", CASES)
def test_merging_identical_clusters_is_lossless(name, args, shape):
    m = build(name, args, *shape)
    x = torch.randn(8, shape[0], shape[1], shape[1])
    units = find_units(m, x, include_coupled=True)
    if name == "resnet20":
        assert any(u.coupled for u in units.values())  # residual groups are merged too
    clusters = make_identical(m, units)
    merged = merge(m, units, clusters, x).eval()
    torch.testing.assert_close(merged(x), m(x), atol=1e-5, rtol=1e-5)
    kept = {n: len(c) for n, c in clusters.items()}
    assert count_macs(merged, x) == pytest.approx(CostModel(m, x, units).macs(kept))
    assert count_macs(merged, x) < 0.4 * count_macs(m, x)


def test_merge_of_distinct_filters_is_not_lossless():
    """The equality above comes from the duplicates, not from a merge that changes nothing."""
    m = build("lenet5", {}, 1, 28)
    x = torch.randn(8, 1, 28, 28)
    units = find_units(m, x)
    merged = merge(m, units, {"features.3": [[i, i + 8] for i in range(8)]}, x)
    assert merged.features[3].out_channels == 8 and merged.classifier[1].in_features == 8 * 25
    assert (merged(x) - m(x)).abs().max() > 1e-3


def test_clusters_must_partition_the_channels():
    assert check_clusters([[3, 1], [0], [2]], 4) == [[0], [1, 3], [2]]
    with pytest.raises(ValueError, match="partition"):
        check_clusters([[0, 1], [1, 2]], 3)
    with pytest.raises(ValueError, match="partition"):
        check_clusters([[0], [1]], 3)


@pytest.mark.parametrize("name,args,shape,coupled", [("lenet5", {}, (1, 28), False),
                                                      ("resnet20", {}, (3, 32), False),
                                                      ("resnet20", {}, (3, 32), True)])
@pytest.mark.parametrize("reduction", [0.3, 0.5, 0.7])
def test_widths_meet_the_target_within_tolerance(name, args, shape, coupled, reduction):
    m = build(name, args, *shape)
    x = torch.randn(2, shape[0], shape[1], shape[1])
    units = find_units(m, x, include_coupled=coupled)
    cost = CostModel(m, x, units)
    target = Target("macs", reduction)
    spec = RunSpec("csgd", "cifar10", name, 0, "macs", reduction, pruning=PruningConfig(max_layer_prune=0.9))
    no_data = SimpleNamespace(info=None, train=None, val=None)  # the widths need no data
    task = Task(spec=spec, data=no_data, device="cpu", example=x, logger=None, trainer=None, target=target)
    widths = target_widths(m, task, units, target)
    assert abs(1 - cost.macs(widths) / cost.macs({}) - reduction) <= target.tolerance
    assert all(1 <= widths[n] <= u.size for n, u in cost.units.items())


def test_kmeans_groups_duplicate_filters_and_couples_residual_members():
    m = build("resnet20", {}, 3, 32)
    x = torch.randn(2, 3, 32, 32)
    unit = find_units(m, x, include_coupled=True)["conv1"]  # stem + three conv2 of stage 1
    modules = dict(m.named_modules())
    with torch.no_grad():  # channels 2j and 2j+1 equal in *every* member, distinct across j
        for layer in unit.members:
            w = modules[layer].weight
            w[1::2] = w[0::2].clone()
    clusters = cluster_unit(m, unit, 8, "kmeans", seed=0)
    assert clusters == [[2 * j, 2 * j + 1] for j in range(8)]
    assert cluster_unit(m, unit, 4, "even", seed=0) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert cluster_unit(m, unit, 16, "kmeans", seed=0) == [[i] for i in range(16)]


def test_centripetal_transform_matches_the_formula():
    """grad_i <- mean_H grad + eta W_i + eps (W_i - mean_H W) on kernels; 0.1 eps and no decay on biases."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(2, 3)
    units = find_units(m, x)
    clusters = {"0": [[0, 2], [1], [3]]}
    eps, eta = 0.5, 0.01
    hook = Centripetal(tie(m, units, clusters, eps, 0.1, eta), log=lambda *a: None)

    class Ctx:
        model, step = m, 0
    hook.on_fit_start(Ctx)
    m(x).sum().backward()
    w, gw = m[0].weight.detach().clone(), m[0].weight.grad.clone()
    b, gb = m[0].bias.detach().clone(), m[0].bias.grad.clone()
    hook.transform_grads(Ctx)
    for i in (0, 2):
        want = (gw[0] + gw[2]) / 2 + eta * w[i] + eps * (w[i] - (w[0] + w[2]) / 2)
        torch.testing.assert_close(m[0].weight.grad[i], want)
        torch.testing.assert_close(m[0].bias.grad[i], (gb[0] + gb[2]) / 2 + 0.1 * eps * (b[i] - (b[0] + b[2]) / 2))
    torch.testing.assert_close(m[0].weight.grad[1], gw[1] + eta * w[1])  # a singleton: only the folded decay
    assert m[2].weight.grad is not None and [t.name for t in hook.tied] == ["0.weight", "0.bias"]


@pytest.mark.parametrize("bad", [{"clustering": "spectral"}, {"epsilon": -1.0}, {"epsilon": "fast"},
                                 {"epsilon": "auto"}, {"bias_factor": -0.1}, {"bias_factor": 0.0}, {"lr": 0.0},
                                 {"log_every": 0}])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError, match=f"csgd.{next(iter(bad))}"):
        CSGD.validate_args(bad)


@pytest.mark.slow
def test_centripetal_training_on_mnist_collapses_clusters_and_merges_without_loss(mnist_small, task_for):
    task = task_for(mnist_small, method="csgd", target=0.5, pretrain_epochs=1, finetune_epochs=1)
    torch.manual_seed(0)
    base = models.build("lenet5", 1, 28, 10)
    models.init_weights(base)
    base = fit(base, mnist_small, task.spec.pretrain, seed=0, device="cpu", progress=False).model
    method = CSGD()  # ε at the paper's contraction, derived from this one-epoch schedule
    units, clusters = method.plan_clusters(base, task, task.target)
    trained, hook = method.train(copy.deepcopy(base), task, units, clusters)
    merged = merge(trained, units, clusters, task.example)
    assert method.check_lossless(trained, task, hook) <= LOSSLESS and task.checks == {"merge_lossless": True}

    dist = task.memory_logger.metrics["csgd/cluster_dist"]
    assert dist[0][1] > 1.0 and dist[-1][1] <= dist[0][1] / 100
    assert [s for s, _ in dist] == sorted(s for s, _ in dist)  # logged with increasing steps
    acc_trained = evaluate(trained, mnist_small.test, mnist_small.info)[1]
    acc_merged = evaluate(merged, mnist_small.test, mnist_small.info)[1]
    assert abs(acc_trained - acc_merged) <= 0.001
    assert acc_merged > 0.9
    assert abs(1 - task.macs(merged) / task.macs(base) - 0.5) <= task.target.tolerance


def test_epsilon_defaults_to_the_paper_contraction_and_a_float_is_literal():
    assert PAPER_EPSILON == 3e-3 and CSGD().epsilon == "paper_contraction"
    phase = Phase.of(TrainConfig(lr=0.05), 0.05, 1053)
    assert CSGD(epsilon=0.003).choose_epsilon(phase).value == 0.003  # csgd@literal_eps
    assert CSGD().choose_epsilon(phase).value > 100 * PAPER_EPSILON


def sgd_trajectory(k, lrs, cfg):
    """|d_t| / |d_0| for t = 0..len(lrs) of a tensor whose gradient is k·d, stepped by torch's own
    momentum SGD: an implementation of the recurrence independent of methods.csgd."""
    d = nn.Parameter(torch.ones(len(k), dtype=torch.float64))
    k = torch.tensor(k, dtype=torch.float64)
    opt = torch.optim.SGD([d], lr=1.0, momentum=cfg.momentum, nesterov=cfg.nesterov)
    out = [d.detach().abs().clone()]
    for lr in lrs:
        opt.param_groups[0]["lr"] = float(lr)
        d.grad = k * d.detach()
        opt.step()
        out.append(d.detach().abs().clone())
    return torch.stack(out)


def steps_to_100x(traj):
    """Per column: the first step from which the trajectory stays <= 1/100 (len = never)."""
    above = (traj > 0.01).double() * torch.arange(len(traj), dtype=torch.float64)[:, None]
    return (above.max(0).values + 1).long().tolist()


def test_paper_fractions_match_the_official_schedule():
    """The official run (ResNet-56 / CIFAR-10: 781 steps x 600 epochs, lr 0.03 for the first 200,
    momentum 0.9 Nesterov, wd 1e-4): the kernels' spread (k = eps + wd) is 100x smaller after
    ~4,920 steps, 1.05 % of 468,600, and e^-161 smaller at the end; BN gamma (0.1 eps) after 10.9 %."""
    f_kernel, f_slowest = paper_fractions()
    assert f_kernel == pytest.approx(4921 / 468600, abs=2e-6) and f_slowest == pytest.approx(51138 / 468600, abs=2e-6)
    cfg = TrainConfig(momentum=0.9, nesterov=True)
    traj = sgd_trajectory([PAPER_EPSILON + 1e-4], [0.03] * 5000, cfg)[:, 0]
    first = int(torch.nonzero(traj <= 0.01)[0])
    assert abs(first - 4921) <= 1
    lr_sum = 781 * 200 * (0.03 + 0.003 + 0.0003)
    assert (PAPER_EPSILON + 1e-4) * lr_sum / (1 - 0.9) == pytest.approx(161.2, abs=0.1)


@pytest.mark.parametrize("cfg,steps", [
    (TrainConfig(lr=0.05, weight_decay=5e-4), 1053),                         # quick CIFAR-10: 3 x 351 steps, cosine
    (TrainConfig(lr=0.01, weight_decay=5e-4), 858),                          # quick MNIST: 2 x 429 steps
    (TrainConfig(lr=0.001, weight_decay=1e-4, schedule="constant"), 14040),  # paper preset CIFAR-10: 40 x 351
    (TrainConfig(lr=0.1, schedule="step", nesterov=False), 10000),           # heavy ball, step schedule
])
def test_derived_epsilon_shrinks_the_spread_100x_within_the_papers_fraction(cfg, steps):
    from bench.core.training import lr_factor

    eps = CSGD().choose_epsilon(Phase.of(cfg, cfg.lr, steps))
    assert eps.rule == "paper_contraction" and eps.met
    lrs = [cfg.lr * lr_factor(cfg, s / steps) for s in range(steps)]
    n_kernel, n_slowest = steps_to_100x(sgd_trajectory([eps.value + cfg.weight_decay, 0.1 * eps.value], lrs, cfg))
    assert n_kernel <= math.ceil(0.0105 * steps) and n_kernel <= 0.02 * steps    # kernels: as in the paper, 1.05 %
    assert n_slowest <= math.ceil(0.1092 * steps)                                # biases, BN: the paper's BN gamma
    assert (n_kernel, n_slowest) == (eps.kernel_steps, eps.slowest_steps)
    # and it is the smallest such eps (up to the 4 % grid): 10 % less misses the kernels' fraction
    less_k, less_s = steps_to_100x(sgd_trajectory([0.9 * eps.value + cfg.weight_decay, 0.09 * eps.value], lrs, cfg))
    assert less_k > math.ceil(0.0105 * steps) or less_s > math.ceil(0.1092 * steps)


def test_literal_paper_epsilon_barely_contracts_on_the_quick_cifar_schedule():
    """The issue's numbers: 3e-3 over 1,053 cosine steps at lr 0.05 shrinks the kernels' spread to
    0.40 (exp(-0.92), eta = 5e-4 included), biases and BN to 0.93; it never gets 100x smaller."""
    from bench.core.training import lr_factor

    cfg = TrainConfig(lr=0.05)
    lrs = [0.05 * lr_factor(cfg, s / 1053) for s in range(1053)]
    end = sgd_trajectory([PAPER_EPSILON + 5e-4, 0.1 * PAPER_EPSILON], lrs, cfg)[-1]
    assert end.tolist() == pytest.approx([0.399, 0.925], abs=0.002)
    lit = CSGD(epsilon=PAPER_EPSILON).choose_epsilon(Phase.of(cfg, 0.05, 1053))
    assert lit.rule == "literal" and lit.kernel_steps == lit.slowest_steps == 1054 and not lit.met  # never


@pytest.mark.parametrize("nesterov,limit", [(True, 2 * 1.9 / 2.8), (False, 2 * 1.9)])
def test_epsilon_is_capped_inside_momentum_sgd_stability(nesterov, limit):
    """Too few steps for the paper's fractions: the cap binds, lr_max (eps + eta) <= limit / 2, and
    the recurrence still contracts."""
    cfg = TrainConfig(lr=0.05, nesterov=nesterov)
    phase = Phase.of(cfg, 0.05, 60)
    assert phase.stability_limit == pytest.approx(limit)
    eps = CSGD().choose_epsilon(phase)
    assert not eps.met and 0.05 * (eps.value + cfg.weight_decay) <= limit / 2 * (1 + 1e-9)
    traj = sgd_trajectory([eps.value + cfg.weight_decay], [0.05] * 200, cfg)[:, 0]
    assert traj[-1] < 1e-3
    unstable = sgd_trajectory([1.05 * limit / 0.05], [0.05] * 200, cfg)[:, 0]  # just past the limit
    assert unstable[-1] > 1


@pytest.mark.parametrize("eps", ["paper_contraction", PAPER_EPSILON])
def test_merge_lossless_check_passes_at_the_paper_contraction_and_fails_with_the_literal_epsilon(noise_mnist,
                                                                                                  task_for, eps):
    """LeNet-5 on noise images, 3 epochs x 64 steps, biases randomised so that they have a spread to
    close too: the derived eps leaves no spread (and merging changes no output), 3e-3 leaves it."""
    task = task_for(noise_mnist, method="csgd", target=0.5, finetune_epochs=3, batch_size=16)
    torch.manual_seed(0)
    base = models.build("lenet5", 1, 28, 10)
    models.init_weights(base)
    with torch.no_grad():
        for m in base.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.uniform_(-0.1, 0.1)
    method = CSGD(epsilon=eps, clustering="even")
    units, clusters = method.plan_clusters(base, task, task.target)
    trained, hook = method.train(copy.deepcopy(base), task, units, clusters)
    worst = method.check_lossless(trained, task, hook)
    logged, params = task.memory_logger.metrics, task.memory_logger.params
    assert logged["check.merge_lossless"] == [(0, worst)]
    assert params["check.merge_lossless.rule"].startswith("relative within-cluster spread before merge <= 0.001")
    x = normalize(noise_mnist.test.x[:64], noise_mnist.info)
    trained.eval()
    with torch.no_grad():
        out, out_merged = trained(x), merge(trained, units, clusters, task.example).eval()(x)
    change = float((out_merged - out).abs().max() / out.abs().max())
    if eps == "paper_contraction":
        assert params["csgd.epsilon_rule"] == "paper_contraction"
        assert worst <= LOSSLESS and logged["check.merge_lossless.passed"] == [(0, 1.0)]
        assert task.checks == {"merge_lossless": True}
        assert change < 1e-5
    else:
        assert params["csgd.epsilon_used"] == "0.003"
        assert worst > 0.1 and logged["check.merge_lossless.passed"] == [(0, 0.0)]
        assert task.checks == {"merge_lossless": False}
        assert change > 0.1


def test_prune_logs_cluster_distance_before_merge_and_the_epsilon_used(noise_mnist, task_for):
    task = task_for(noise_mnist, method="csgd", target=0.5, finetune_epochs=0)
    CSGD(clustering="even").prune(models.build("lenet5", 1, 28, 10), task, task.target)
    logged = task.memory_logger.metrics
    (_, mx), = logged["csgd.cluster_dist_before_merge_max"]
    (_, mean), = logged["csgd.cluster_dist_before_merge_mean"]
    assert "csgd.epsilon_used" not in task.memory_logger.params  # no centripetal step, no ε
    assert mx >= mean > 0.1  # untrained random filters: far from identical, so the merge is lossy
    assert logged["check.merge_lossless.passed"] == [(0, 0.0)] and task.checks == {"merge_lossless": False}


def test_relative_spread_before_merge_by_hand():
    """Filters [1, 0] and [3, 0] in one cluster: mean [2, 0], RMS distance 1, relative 0.5; a singleton is not counted."""
    m = nn.Sequential(nn.Linear(2, 3, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 5.0]]))
    units = {"0": type("U", (), {"members": ["0"], "others": [], "size": 3, "name": "0"})()}
    hook = Centripetal(tie(m, units, {"0": [[0, 1], [2]]}, 0.1, 0.1, 0.0), lambda *a: None)
    assert hook.relative_spreads(m).tolist() == pytest.approx([0.5])
    with torch.no_grad():
        m[0].weight[1] = m[0].weight[0]
    assert hook.relative_spreads(m).tolist() == [0.0]
