"""RLS issue 26: the exact autocorrelation for scoring (`rls@exact_p`), the logged spread of 1/P_jj,
`rls@no_prune`, and the "every cut after recovery" precondition. Synthetic inputs only."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core import models
from bench.core.training import FitContext
from bench.errors import ConfigError
from methods._rls_optim import RLS, shrink, shrink_R
from methods.rls import PruneOnRecovery, RLSPrune, invP_diag_spread, transfer_state, unit_scores

# Two 1-channel 3x3 images seen by a 2x2 conv (stride 1, no padding): 4 patches each, 8 rows u of
# d = 4 per step. Within the batch the patches vary strongly (a ramp and a checkerboard), so
# Σuuᵀ is far from N·ūūᵀ.
IMAGES = [torch.tensor([[[[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]]],
                        [[[1., 0., 1.], [0., 1., 0.], [1., 0., 1.]]]], dtype=torch.float64),
          torch.tensor([[[[0., 0., 2.], [0., 0., 2.], [2., 2., 2.]]],
                        [[[3., 1., 0.], [1., 0., 0.], [0., 0., -1.]]]], dtype=torch.float64)]


def _rows_by_hand(x: torch.Tensor) -> torch.Tensor:
    """Every 2x2 patch of every image, row-major (c, i, j) like a conv weight, by slicing."""
    return torch.stack([x[n, :, i:i + 2, j:j + 2].reshape(-1)
                        for n in range(len(x)) for i in range(2) for j in range(2)])


def _train(conv, opt, batches):
    for x in batches:
        opt.zero_grad()
        conv(x).pow(2).sum().backward()
        opt.step()


def test_hand_rows_are_the_hand_values():
    u = _rows_by_hand(IMAGES[0])
    assert u.shape == (8, 4)
    assert u[0].tolist() == [1, 2, 4, 5] and u[3].tolist() == [5, 6, 8, 9] and u[5].tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("lam", [1.0, 0.8])
def test_exact_P_equals_inverse_of_the_per_patch_autocorrelation(lam):
    """P = (λ^T·I/α + Σ_t λ^(T−t) Σ_rows uuᵀ)⁻¹, Σuuᵀ from hand-sliced patches (no unfold)."""
    alpha = 0.5
    conv = nn.Conv2d(1, 2, 2, bias=False).double()
    opt = RLS(conv, 1e-3, alpha=alpha, lam=lam, track_exact=True)
    _train(conv, opt, IMAGES)
    R = torch.eye(4, dtype=torch.float64) / alpha
    for x in IMAGES:
        u = _rows_by_hand(x)
        R = lam * R + u.T @ u
    torch.testing.assert_close(opt.get_exact_P(""), torch.linalg.inv(R), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(opt.get_R(""), R, rtol=1e-12, atol=1e-12)


def test_exact_P_includes_the_bias_row_when_the_bias_is_in_P():
    alpha = 2.0
    lin = nn.Linear(3, 2).double()
    opt = RLS(lin, 1e-3, alpha=alpha, bias_in_p=True, track_exact=True)
    X = torch.tensor([[1., 0., 2.], [0., 1., 1.], [3., -1., 0.], [1., 1., 1.]], dtype=torch.float64)
    _train(lin, opt, [X])
    A = torch.cat([X, torch.ones(4, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(opt.get_exact_P(""), torch.linalg.inv(A.T @ A + torch.eye(4, dtype=torch.float64) / alpha),
                               rtol=1e-5, atol=1e-8)


def test_exact_P_differs_from_the_average_mode_P_which_alone_trains():
    """Same input: the average mode's P is inv(I/α + Σ N·ūūᵀ), which is not the exact one; tracking
    the exact R changes nothing of the training (weights and P bit-identical)."""
    alpha = 0.5
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 2, bias=False).double()
    twin = nn.Conv2d(1, 2, 2, bias=False).double()
    twin.load_state_dict(conv.state_dict())
    opt = RLS(conv, 1e-2, alpha=alpha, track_exact=True)
    plain = RLS(twin, 1e-2, alpha=alpha)
    _train(conv, opt, IMAGES)
    _train(twin, plain, IMAGES)
    assert torch.equal(conv.weight, twin.weight) and torch.equal(opt.get_P(""), plain.get_P(""))
    R_avg = torch.eye(4, dtype=torch.float64) / alpha
    for x in IMAGES:
        u = _rows_by_hand(x)
        R_avg += len(u) * torch.outer(u.mean(0), u.mean(0))
    P_avg, P_exact = opt.get_P(""), opt.get_exact_P("")
    torch.testing.assert_close(P_avg, torch.linalg.inv(R_avg), rtol=1e-7, atol=1e-10)
    assert (P_exact - P_avg).norm() > 0.5 * P_avg.norm()
    assert (P_exact.diagonal() - P_avg.diagonal()).abs().max() > 0.1 * P_avg.diagonal().abs().max()


def test_eval_forwards_leave_the_exact_autocorrelation_alone():
    conv = nn.Conv2d(1, 2, 2)
    opt = RLS(conv, 1e-3, alpha=0.25, track_exact=True)
    with torch.no_grad():
        conv(torch.randn(3, 1, 5, 5))
    opt.step()
    assert torch.equal(opt.get_R(""), torch.eye(4, dtype=torch.float64) * 4)


def test_exact_mode_optimizer_answers_with_its_own_P():
    conv = nn.Conv2d(1, 2, 2, bias=False).double()
    opt = RLS(conv, 1e-3, alpha=0.5, mode="exact", track_exact=True)
    _train(conv, opt, IMAGES)
    assert not opt.track_exact and opt.get_exact_P("") is opt.get_P("")


def test_shrink_R_is_the_autocorrelation_of_the_shrunk_P():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(30, 8, generator=g, dtype=torch.float64)
    R = A.T @ A + 0.5 * torch.eye(8, dtype=torch.float64)
    keep = torch.tensor([0, 1, 4, 6])
    for method in ("schur", "submatrix"):
        torch.testing.assert_close(torch.linalg.inv(shrink_R(R, keep, method)), shrink(torch.linalg.inv(R), keep, method))
    assert torch.equal(shrink_R(R, keep, "schur"), R[keep][:, keep])


def _lenet(task, method, steps=3):
    torch.manual_seed(0)
    m = models.build("lenet5", 1, 28, 10)
    models.init_weights(m)
    opt = method.make_optimizer(task)(m)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(m(torch.randn(32, 1, 28, 28, generator=g)), torch.randint(0, 10, (32,), generator=g)).backward()
        opt.step()
    return m, opt


def test_cut_carries_the_exact_autocorrelation_and_state_dict_keeps_it_float64(noise_mnist, task_for):
    from bench.core.surgery import find_units, prune

    task = task_for(noise_mnist, method="rls")
    method = RLSPrune(exact_p=True)
    m, opt = _lenet(task, method)
    assert opt.track_exact
    units = find_units(m, torch.randn(2, 1, 28, 28))
    keep = {"features.3": [0, 3, 4, 9, 15]}
    opt.remove_hooks()
    new = prune(m, keep, torch.randn(2, 1, 28, 28))
    new_opt = method.make_optimizer(task)(new)
    transfer_state(opt, new_opt, m, new, units, keep, "schur")
    rows = torch.cat([torch.arange(c * 25, c * 25 + 25) for c in keep["features.3"]])
    R = opt.get_R("classifier.1")
    assert torch.equal(new_opt.get_R("classifier.1"), R[rows][:, rows])
    assert torch.equal(new_opt.get_R("features.0"), opt.get_R("features.0"))
    again = method.make_optimizer(task)(new)
    again.load_state_dict(new_opt.state_dict())  # the checkpoint resume path
    assert again.get_R("classifier.1").dtype == torch.float64
    assert torch.equal(again.get_R("classifier.1"), new_opt.get_R("classifier.1"))
    for o in (new_opt, again):
        o.remove_hooks()


def test_exact_p_and_no_p_exclude_each_other():
    with pytest.raises(ConfigError, match="rls.exact_p"):
        RLSPrune(exact_p=True, use_p=False)


def test_invP_diag_spread_is_max_over_min_of_the_weight_rows():
    P = torch.diag(torch.tensor([1.0, 0.5, 0.25, 1e-6], dtype=torch.float64))  # last: a bias row
    assert invP_diag_spread(P, 3) == pytest.approx(4.0)
    assert invP_diag_spread(torch.eye(5, dtype=torch.float64) * 3e-4, 5) == 1.0


def _hook(task, method, total):
    m, opt = _lenet(task, method)
    hook = PruneOnRecovery(method, task, total)
    ctx = FitContext(model=m, optimizer=opt, cfg=task.spec.pretrain, data=task.data, device="cpu",
                     make_optimizer=method.make_optimizer(task))
    hook.on_fit_start(ctx)
    return hook, ctx


def _epoch(hook, ctx, epoch, val_loss, val_acc=0.5):
    ctx.epoch = epoch - 1
    ctx.history.append({"epoch": epoch, "val_loss": val_loss, "val_acc": val_acc})
    hook.on_epoch_end(ctx)


COVERED = ("features.0", "features.3", "classifier.1", "classifier.3", "classifier.5")


@pytest.mark.parametrize("variant", ["plain", "exact_p", "no_p"])
def test_every_cut_logs_the_spread_of_the_P_its_score_used(noise_mnist, task_for, variant):
    task = task_for(noise_mnist, method="rls", pretrain_epochs=4, finetune_epochs=2)
    method = RLSPrune(mode="adaptive", **{"plain": {}, "exact_p": {"exact_p": True}, "no_p": {"use_p": False}}[variant])
    hook, ctx = _hook(task, method, 6)
    opt = ctx.optimizer
    expect = {layer: invP_diag_spread(opt.get_exact_P(layer) if variant == "exact_p" else opt.get_P(layer),
                                      opt.layers[layer].weight[0].numel()) for layer in COVERED}
    _epoch(hook, ctx, 2, 0.4)  # E0: the first cut
    assert hook.events == 1
    logged = task.memory_logger.metrics
    for layer in COVERED:
        (step, value), = logged[f"rls.invP_diag_spread.{layer}"]
        assert step == 1 and value >= 1.0
        if variant == "no_p":
            assert value == 1.0
            assert f"rls.invP_diag_spread_optimizer.{layer}" in logged
        else:
            assert value == pytest.approx(expect[layer], rel=1e-9)
    if variant == "plain":
        assert not any(k.startswith("rls.invP_diag_spread_optimizer") for k in logged)
    if variant == "exact_p":  # the exact P weighs rows far less uniformly than the average mode's
        opt_spread = logged["rls.invP_diag_spread_optimizer.features.3"][0][1]
        assert logged["rls.invP_diag_spread.features.3"][0][1] > opt_spread
    _epoch(hook, ctx, 3, 0.3)  # recovered: the second cut logs at step 2
    assert [s for s, _ in logged["rls.invP_diag_spread.classifier.1"]] == [1, 2]
    hook.on_fit_end(ctx)


def test_exact_p_stops_tracking_after_the_last_cut_also_when_resumed(noise_mnist, task_for):
    """Target mode: after the cut that reaches the target no score follows, so R is dropped; a fit
    resumed from that point (optimizer state without R) stops tracking too and trains on."""
    task = task_for(noise_mnist, method="rls", pretrain_epochs=4, finetune_epochs=2, target=0.5)
    method = RLSPrune(exact_p=True, epochs_before_prune=2, ratio=0.1)
    hook, ctx = _hook(task, method, 6)
    _epoch(hook, ctx, 2, 0.4)
    assert hook.events == 1 and not hook.reached and ctx.optimizer.track_exact
    _epoch(hook, ctx, 3, 0.5)
    assert ctx.optimizer.track_exact
    _epoch(hook, ctx, 4, 0.5)  # not recovered: nothing yet
    _epoch(hook, ctx, 5, 0.5)  # deadline (6 - 1): forced cut to the target
    assert hook.reached and hook.forced_cuts == 1 and not ctx.optimizer.track_exact
    assert not any("R" in st for st in ctx.optimizer.state.values())
    ctx.optimizer.remove_hooks()
    resumed = method.make_optimizer(task)(ctx.model)
    resumed.load_state_dict(ctx.optimizer.state_dict())
    again = PruneOnRecovery(method, task, 6)
    again.load_state_dict(hook.state_dict())
    rctx = FitContext(model=ctx.model, optimizer=resumed, cfg=task.spec.pretrain, data=task.data, device="cpu",
                      make_optimizer=method.make_optimizer(task), history=list(ctx.history))
    again.on_fit_start(rctx)
    assert not resumed.track_exact and again.forced_cuts == 1
    resumed.zero_grad()
    F.cross_entropy(ctx.model(torch.randn(8, 1, 28, 28)), torch.randint(0, 10, (8,))).backward()
    resumed.step()
    resumed.remove_hooks()


def test_exact_p_scores_with_the_exact_P(noise_mnist, task_for):
    task = task_for(noise_mnist, method="rls")
    m, opt = _lenet(task, RLSPrune(exact_p=True))
    units = task.units(m)
    exact = unit_scores(m, opt, units, "diag", exact=True)
    plain = unit_scores(m, opt, units, "diag")
    Ps = {layer: opt.get_exact_P(layer) for layer in opt.layers}
    for name in units:
        assert torch.equal(exact[name], unit_scores(m, opt, units, "diag", Ps=Ps)[name])
        assert not torch.allclose(exact[name], plain[name])
    opt.remove_hooks()


def _scripted_train(val_losses, steps=2):
    """Task.train stand-in: a few real RLS steps per epoch, then the scripted validation loss."""
    def train(model, epochs, *, hooks=(), make_optimizer=None, loss="ce", desc="", from_scratch=False, **_):
        ctx = FitContext(model=model, optimizer=make_optimizer(model), cfg=None, data=None, device="cpu",
                         make_optimizer=make_optimizer)
        for h in hooks:
            h.on_fit_start(ctx)
        g = torch.Generator().manual_seed(0)
        for epoch in range(1, epochs + 1):
            for _ in range(steps):
                ctx.optimizer.zero_grad()
                F.cross_entropy(ctx.model(torch.randn(16, 1, 28, 28, generator=g)),
                                torch.randint(0, 10, (16,), generator=g)).backward()
                ctx.optimizer.step()
            ctx.epoch = epoch - 1
            ctx.history.append({"epoch": epoch, "val_loss": val_losses[epoch - 1], "val_acc": 0.5})
            for h in hooks:
                h.on_epoch_end(ctx)
        for h in hooks:
            h.on_fit_end(ctx)
        return SimpleNamespace(model=ctx.model, history=ctx.history)
    return train


@pytest.mark.parametrize("losses,forced", [
    ([0.5, 0.4, 0.5, 0.5, 0.5], 1),   # never recovers after the first cut: the deadline cut is forced
    ([0.5, 0.4, 0.5, 0.3, 0.3], 0),   # recovered at the deadline: that cut comes after recovery
])
def test_cuts_after_recovery_check_fails_only_when_a_cut_was_forced(noise_mnist, task_for, losses, forced):
    task = task_for(noise_mnist, method="rls", pretrain_epochs=3, finetune_epochs=2, target=0.5)
    task.train = _scripted_train(losses)
    torch.manual_seed(0)
    fresh = models.build("lenet5", 1, 28, 10)
    models.init_weights(fresh)
    base = task.macs(fresh)
    pruned = RLSPrune(epochs_before_prune=2, ratio=0.1, recovery_epochs=1).prune(fresh, task, task.target)
    assert abs(1 - task.macs(pruned) / base - 0.5) <= 0.015  # the deadline (epoch 4) cut to the target
    logged = task.memory_logger
    assert task.checks == {"cuts_after_recovery": forced == 0}
    assert logged.metrics["check.cuts_after_recovery"] == [(0, float(forced))]
    assert logged.metrics["check.cuts_after_recovery.passed"] == [(0, float(forced == 0))]
    assert json.loads(logged.params["rls/event2"])["recovered"] is (forced == 0)
    assert json.loads(logged.params["rls/event1"])["recovered"] is True


def test_no_prune_trains_the_whole_budget_and_returns_the_unpruned_net(noise_mnist, task_for):
    task = task_for(noise_mnist, method="rls", pretrain_epochs=1, finetune_epochs=1)
    torch.manual_seed(0)
    fresh = models.build("lenet5", 1, 28, 10)
    models.init_weights(fresh)
    shapes = [p.shape for p in fresh.parameters()]
    macs = task.macs(fresh)
    net = RLSPrune(prune=False).prune(fresh, task, task.target)
    assert [p.shape for p in net.parameters()] == shapes and task.macs(net) == macs
    assert task.epochs_used == pytest.approx(task.total_epochs, rel=0.1) and task.epochs_used <= task.total_epochs
    logged = task.memory_logger
    assert len(logged.metrics["rls/val_acc"]) == task.total_epochs  # one curve over the whole budget
    assert logged.metrics["rls/prune_events"] == [(0, 0.0)] and "rls.acc_val_unpruned" in logged.metrics
    assert task.checks == {"cuts_after_recovery": True}
    assert not any(m._forward_pre_hooks for m in net.modules())
    torch.save(net, io.BytesIO())  # the harness pickles the result


@pytest.mark.slow
def test_exact_p_end_to_end_on_real_mnist_hits_the_target_and_logs_both_spreads(mnist_small, task_for):
    task = task_for(mnist_small, method="rls", pretrain_epochs=1, finetune_epochs=1, target=0.5)
    fresh = models.build("lenet5", 1, 28, 10)
    models.init_weights(fresh)
    base_macs = task.macs(fresh)
    pruned = RLSPrune(exact_p=True).prune(fresh, task, task.target)
    assert abs(1 - task.macs(pruned) / base_macs - 0.5) <= 0.015
    assert task.evaluate(pruned, "val")[1] > 0.9
    logged = task.memory_logger.metrics
    exact, avg = logged["rls.invP_diag_spread.features.3"], logged["rls.invP_diag_spread_optimizer.features.3"]
    assert len(exact) == len(avg) == logged["rls/prune_events"][0][1] >= 1
    assert exact[0][1] > avg[0][1]  # the average mode's P is the more uniform one
    assert "cuts_after_recovery" in task.checks
    assert not any(m._forward_pre_hooks for m in pruned.modules())
    torch.save(pruned, io.BytesIO())
