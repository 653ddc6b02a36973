"""RLS optimizer and RLS pruning: truth tests against closed forms, scores, state transfer, schedule."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core import models
from bench.core.training import FitContext
from bench.errors import ConfigError
from methods._rls_optim import RLS, input_rows, shrink
from methods.rls import PruneOnRecovery, RLSPrune, channel_scores, transfer_state, unit_scores


def _ls_problem(n=240, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(d, k, generator=g, dtype=torch.float64) + 0.3 + 0.1 * torch.randn(n, k, generator=g,
                                                                                          dtype=torch.float64)
    return X, Y


def _one_pass(layer, X, Y, batch, **kw):
    """One epoch of RLS over (X, Y) with the suite's MSE loss; returns the optimizer."""
    opt = RLS(layer, 1.0, sum_scale=0.5, **kw)  # ½: the suite's MSE is Σe²/M, classical RLS minimises ½Σe²
    for i in range(0, len(X), batch):
        opt.zero_grad()
        out = layer(X[i:i + batch])
        (F.mse_loss(out, Y[i:i + batch], reduction="sum") / len(out)).backward()  # loss_fn('mse') on real targets
        opt.step()
    return opt


@pytest.mark.parametrize("mode,batch", [("average", 1), ("exact", 32)])
@pytest.mark.parametrize("bias", [False, True])
def test_one_rls_pass_reproduces_closed_form_least_squares(mode, batch, bias):
    """λ = 1, η = 1, MSE: one pass over the data equals the (α-regularised) normal-equation solution.
    The average approximation is exact for one row per batch; exact mode for any batch."""
    X, Y = _ls_problem()
    alpha = 1e6
    layer = nn.Linear(X.shape[1], Y.shape[1], bias=bias).double()
    nn.init.zeros_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    _one_pass(layer, X, Y, batch, alpha=alpha, mode=mode, bias_in_p=bias)
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1) if bias else X
    sol = torch.linalg.solve(A.T @ A + torch.eye(A.shape[1], dtype=X.dtype) / alpha, A.T @ Y)
    got = torch.cat([layer.weight.T, layer.bias[None]], 0) if bias else layer.weight.T
    assert float((got.detach() - sol).norm() / sol.norm()) < 1e-4


def test_exact_mode_P_is_inverse_of_regularised_autocorrelation_with_forgetting():
    """Conv (padding, stride) and linear: P = (λ^T·I/α + Σ_t λ^(T−t)·U_tᵀU_t)⁻¹ over unfolded patches."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 4)).double()
    alpha, lam = 0.5, 0.9
    opt = RLS(net, 1e-3, alpha=alpha, lam=lam, mode="exact")
    R = {"0": torch.eye(18, dtype=torch.float64) / alpha, "3": torch.eye(48, dtype=torch.float64) / alpha}
    for _ in range(3):
        x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
        u0 = input_rows(net[0], x)
        with torch.no_grad():  # a grad-enabled training forward would feed the hooks twice
            u3 = net[2](net[1](net[0](x)))
        R = {"0": lam * R["0"] + u0.T @ u0, "3": lam * R["3"] + u3.T @ u3}
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
    for name in ("0", "3"):
        assert torch.allclose(opt.get_P(name), torch.linalg.inv(R[name]), rtol=1e-8, atol=1e-12)


def test_average_mode_P_uses_the_mean_patch_of_the_batch():
    """Average mode: P = (I/α + Σ_t N_t ū_t ū_tᵀ)⁻¹ with ū the mean unfolded patch (zero padding included)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    alpha = 2.0
    opt = RLS(conv, 1e-3, alpha=alpha)
    R = torch.eye(18, dtype=torch.float64) / alpha
    for _ in range(4):
        x = torch.rand(6, 2, 7, 7, dtype=torch.float64)
        u = input_rows(conv, x)
        R += len(u) * torch.outer(u.mean(0), u.mean(0))
        opt.zero_grad()
        conv(x).sum().backward()
        opt.step()
    assert torch.allclose(opt.get_P(""), torch.linalg.inv(R), rtol=1e-7, atol=1e-12)


def test_eval_forwards_do_not_touch_P():
    conv = nn.Conv2d(1, 2, 3)
    opt = RLS(conv, 1e-3)
    with torch.no_grad():
        conv(torch.randn(4, 1, 6, 6))
    opt.step()
    assert torch.equal(opt.get_P(""), torch.eye(9, dtype=torch.float64))


def test_schur_shrink_equals_inverse_of_kept_autocorrelation_block():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 12, generator=g, dtype=torch.float64)
    R = A.T @ A + 0.1 * torch.eye(12, dtype=torch.float64)
    P = torch.linalg.inv(R)
    keep = torch.tensor([0, 2, 3, 7, 8, 11])
    assert torch.allclose(shrink(P, keep, "schur"), torch.linalg.inv(R[keep][:, keep]), atol=1e-10)
    assert torch.equal(shrink(P, keep, "submatrix"), P[keep][:, keep])


def _trained_probe(mode, alpha):
    """A conv layer whose 5 input channels are: 0-2 informative, 3 constant zero, 4 pure noise."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    teacher = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64)
    teacher[:, 3:] = 0
    conv = nn.Conv2d(5, 2, 3, bias=False).double()
    nn.init.normal_(conv.weight, std=0.05)
    opt = RLS(conv, 1.0, alpha=alpha, mode=mode, sum_scale=0.5)
    for _ in range(60):
        x = torch.randn(16, 5, 8, 8, generator=g, dtype=torch.float64) + 0.5
        x[:, 3] = 0
        x[:, 4] = torch.randn(16, 8, 8, generator=g, dtype=torch.float64)
        y = F.conv2d(x, teacher) + 0.05 * torch.randn(16, 2, 6, 6, generator=g, dtype=torch.float64)
        opt.zero_grad()
        (F.mse_loss(conv(x), y, reduction="sum") / len(x)).backward()
        opt.step()
    return conv, opt


# Average mode leaves P = α in directions the batch means never excite, so its step there is SGD
# with lr α·M/2: α = 1 would diverge (see _rls_optim's docstring on the gradient scale).
@pytest.mark.parametrize("mode,alpha", [("average", 1e-3), ("exact", 1.0)])
@pytest.mark.parametrize("form", ["diag", "block"])
def test_constant_and_noise_channels_score_lowest(mode, alpha, form):
    conv, opt = _trained_probe(mode, alpha)
    s = channel_scores(conv.weight, opt.get_P(""), 5, form)
    assert set(torch.argsort(s)[:2].tolist()) == {3, 4}, s
    assert s[:3].min() > 10 * s[3:].max(), s


def _lenet_with_state(steps=3, mode="average"):
    torch.manual_seed(0)
    m = models.build("lenet5", 1, 28, 10)
    models.init_weights(m)
    opt = RLS(m, 1.0, alpha=3e-3, mode=mode)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(m(torch.randn(32, 1, 28, 28)), torch.randint(0, 10, (32,))).backward()
        opt.step()
    return m, opt


def test_cut_shrinks_P_of_the_consumer_after_flatten_and_slices_momentum():
    """Cutting filters of conv2 removes 25 consecutive input rows per filter from fc1's P (5x5 map);
    Schur shrink = inverse of the kept block of fc1's accumulated autocorrelation."""
    from bench.core.surgery import find_units, prune

    m, opt = _lenet_with_state(mode="exact")
    example = torch.randn(2, 1, 28, 28)
    units = find_units(m, example)
    keep = {"features.3": [0, 3, 4, 9, 15], "features.0": [1, 2, 5]}
    opt.remove_hooks()
    new = prune(m, keep, example)
    new_opt = RLS(new, 1.0, alpha=3e-3, mode="exact")
    transfer_state(opt, new_opt, m, new, units, keep, "schur")
    rows = torch.cat([torch.arange(c * 25, c * 25 + 25) for c in keep["features.3"]])
    R = torch.linalg.inv(opt.get_P("classifier.1"))
    assert torch.allclose(new_opt.get_P("classifier.1"), torch.linalg.inv(R[rows][:, rows]), rtol=1e-6, atol=1e-12)
    rows3 = torch.cat([torch.arange(c * 25, c * 25 + 25) for c in keep["features.0"]])
    R3 = torch.linalg.inv(opt.get_P("features.3"))
    assert torch.allclose(new_opt.get_P("features.3"), torch.linalg.inv(R3[rows3][:, rows3]), rtol=1e-6, atol=1e-12)
    assert torch.equal(new_opt.get_P("features.0"), opt.get_P("features.0"))  # its input is untouched
    old_buf = opt.state[m.features[3].bias]["momentum_buffer"]
    assert torch.equal(new_opt.state[new.features[3].bias]["momentum_buffer"], old_buf[keep["features.3"]])
    new_opt.zero_grad()
    F.cross_entropy(new(torch.randn(8, 1, 28, 28)), torch.randint(0, 10, (8,))).backward()
    new_opt.step()  # training goes on with the shrunk state


def test_unit_scores_sum_over_consumers_of_a_residual_group():
    from bench.core.surgery import find_units

    torch.manual_seed(0)
    m = models.build("resnet20", 3, 32, 10, width=0.25)
    opt = RLS(m, 1e-3)
    units = find_units(m, torch.randn(2, 3, 32, 32), include_coupled=True)
    group = next(u for u in units.values() if u.coupled)
    s = unit_scores(m, opt, {group.name: group}, "diag")[group.name]
    mods = dict(m.named_modules())
    expect = sum(channel_scores(mods[c].weight, opt.get_P(c), group.size) for c in group.consumers)
    assert len(group.consumers) > 1 and torch.allclose(s, expect)


def test_cut_of_a_residual_group_shrinks_every_consumer_and_training_goes_on():
    from bench.core.surgery import find_units, prune

    torch.manual_seed(0)
    m = models.build("resnet20", 3, 32, 10, width=0.25)
    x = torch.randn(2, 3, 32, 32)
    opt = RLS(m, 1.0, alpha=3e-4)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(m(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,))).backward()
        opt.step()
    units = find_units(m, x, include_coupled=True)
    scores = unit_scores(m, opt, units, "diag")
    keep = {n: sorted(torch.argsort(s)[len(s) // 4:].tolist()) for n, s in scores.items()}
    opt.remove_hooks()
    new = prune(m, keep, x)
    new_opt = RLS(new, 1.0, alpha=3e-4)
    transfer_state(opt, new_opt, m, new, units, keep, "schur")
    for layer in new_opt.layers:
        assert new_opt.get_P(layer).shape == (new_opt.dim(layer),) * 2
    new_opt.zero_grad()
    loss = F.cross_entropy(new(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,)))
    loss.backward()
    new_opt.step()
    assert torch.isfinite(loss)


def test_float32_P_stays_symmetric_positive_and_finite_under_degenerate_input():
    """The same input row every step drives P towards singular along it; the guards hold."""
    lin = nn.Linear(8, 3)
    opt = RLS(lin, 1.0, alpha=1.0, dtype=torch.float32, eps=1e-12)
    x = torch.ones(16, 8)
    for _ in range(300):
        opt.zero_grad()
        F.mse_loss(lin(x), torch.zeros(16, 3)).backward()
        opt.step()
    P = opt.get_P("")
    assert P.dtype == torch.float32 and torch.isfinite(P).all() and torch.equal(P, P.T)
    assert (P.diagonal() >= 1e-12).all() and torch.isfinite(lin.weight).all()


def test_state_dict_round_trip_keeps_P_in_float64():
    m, opt = _lenet_with_state(steps=2)
    again = RLS(m, 1.0, alpha=3e-4)
    again.load_state_dict(opt.state_dict())  # the harness's checkpoint resume path
    P = again.get_P("classifier.1")
    assert P.dtype == torch.float64 and torch.equal(P, opt.get_P("classifier.1"))


def test_bad_options_name_the_option():
    with pytest.raises(ConfigError, match="rls.mode"):
        RLSPrune(mode="greedy")
    with pytest.raises(ConfigError, match="rls.ratio"):
        RLSPrune(ratio=1.5)
    with pytest.raises(ConfigError, match="rls.shrink"):
        RLSPrune(shrink="diag")


def _schedule(task, method, total):
    m, opt = _lenet_with_state(steps=1)
    hook = PruneOnRecovery(method, task, total)
    ctx = FitContext(model=m, optimizer=opt, cfg=task.spec.pretrain, data=task.data, device="cpu",
               make_optimizer=method.make_optimizer(task))
    hook.on_fit_start(ctx)
    return hook, ctx


def _epoch(hook, ctx, epoch, val_loss, val_acc=0.9):
    ctx.epoch = epoch - 1
    ctx.history.append({"epoch": epoch, "val_loss": val_loss, "val_acc": val_acc})
    hook.on_epoch_end(ctx)
    return hook.events


def test_adaptive_schedule_cuts_only_after_recovery_and_keeps_a_recovered_final_net(mnist_small, task_for):
    task = task_for(mnist_small, method="rls", pretrain_epochs=4, finetune_epochs=2)
    hook, ctx = _schedule(task, RLSPrune(mode="adaptive", epochs_before_prune=2), 6)
    assert _epoch(hook, ctx, 1, 0.5) == 0           # before E0
    assert _epoch(hook, ctx, 2, 0.4) == 1           # E0: reference recorded, first cut
    assert task.memory_logger.metrics["rls.acc_val_unpruned"][0][1] == 0.9
    assert '"features.3": 13' in task.memory_logger.params["rls/event1"]  # r = 0.2 of 16 filters cut
    assert ctx.model.classifier[1].out_features == 96
    assert _epoch(hook, ctx, 3, 0.45) == 1          # not recovered: no cut
    assert _epoch(hook, ctx, 4, 0.39) == 2          # recovered: cut again
    saved = hook.best
    assert _epoch(hook, ctx, 5, 0.41) == 2
    assert _epoch(hook, ctx, 6, 0.30) == 2          # recovered in the last epoch: never cut then
    hook.on_fit_end(ctx)
    assert ctx.model is not saved                   # it recovered: keep the final net


def test_adaptive_rolls_back_to_last_recovered_net(mnist_small, task_for):
    task = task_for(mnist_small, method="rls", pretrain_epochs=2, finetune_epochs=2)
    hook, ctx = _schedule(task, RLSPrune(mode="adaptive", epochs_before_prune=1), 4)
    _epoch(hook, ctx, 1, 0.5)
    _epoch(hook, ctx, 2, 0.45)
    widths_best = [p.shape for p in hook.best.parameters()]
    _epoch(hook, ctx, 3, 0.6)
    _epoch(hook, ctx, 4, 0.6)
    hook.on_fit_end(ctx)
    assert [p.shape for p in ctx.model.parameters()] == widths_best
    assert task.memory_logger.metrics["rls/rolled_back"][0][1] == 1.0


def test_target_mode_forces_the_cut_to_target_at_the_deadline(mnist_small, task_for):
    task = task_for(mnist_small, method="rls", pretrain_epochs=3, finetune_epochs=2, target=0.5)
    hook, ctx = _schedule(task, RLSPrune(epochs_before_prune=2, ratio=0.1, recovery_epochs=1), 5)
    base = task.macs(ctx.model)
    _epoch(hook, ctx, 2, 0.4)                       # small first cut, far from the target
    first = 1 - task.macs(ctx.model) / base
    assert 0 < first < 0.35
    _epoch(hook, ctx, 3, 0.5)                       # not recovered
    _epoch(hook, ctx, 4, 0.5)                       # deadline (5 - 1): forced to the target
    assert abs(1 - task.macs(ctx.model) / base - 0.5) <= 0.015
    assert hook.events == 2 and hook.reached
    _epoch(hook, ctx, 5, 0.1)
    assert hook.events == 2                         # nothing after the target


@pytest.mark.slow
@pytest.mark.parametrize("loss,bar", [("ce", 0.9), ("mse", 0.7)])  # MSE learns slower (module doc)
def test_rls_end_to_end_on_real_mnist_hits_target_and_learns(mnist_small, task_for, loss, bar):
    """Real MNIST subset, 2 epochs from scratch with the default options of each loss: the cut
    falls at the end of epoch 1 (deadline = 2 - recovery_epochs), epoch 2 recovers."""
    task = task_for(mnist_small, method="rls", pretrain_epochs=1, finetune_epochs=1, target=0.5)
    method = RLSPrune(loss=loss)
    fresh = models.build("lenet5", 1, 28, 10)
    models.init_weights(fresh)
    base_macs = task.macs(fresh)
    pruned = method.prune(fresh, task, task.target)
    assert abs(1 - task.macs(pruned) / base_macs - 0.5) <= 0.015
    assert task.evaluate(pruned, "val")[1] > bar
    logged = task.memory_logger
    assert logged.params["rls/mode"] == "target" and logged.metrics["rls.acc_val_unpruned"][0][1] > bar
    assert not any(m._forward_pre_hooks for m in pruned.modules())
    torch.save(pruned, io.BytesIO())  # the harness pickles the result


def test_no_p_changes_the_keep_list_on_a_layer_with_correlated_inputs():
    """Channels 0 and 1 carry almost the same signal (rho ~ 0.99), channel 2 an independent one.
    Their consumer weighs channel 2 least (0.8 vs 1.0), so |W|^2 alone cuts channel 2; with P, the
    redundant channels have ~50x larger P_jj (inverse autocorrelation), so RLS cuts one of them."""
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 2, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.1, 0.0], [1.0, -0.1, 0.0], [0.0, 0.0, 1.0]]))
        model[1].weight.copy_(torch.tensor([[1.0, 1.0, 0.8], [1.0, 1.0, 0.8]]))
    model[0].weight.requires_grad_(False)  # a fixed producer: only the consumer's P is under test
    opt = RLS(model, 1e-9, alpha=1.0, mode="exact", layers=["1"])  # tiny eta: W stays as set, P learns R
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        opt.zero_grad()
        model(torch.randn(64, 3, generator=g, dtype=torch.float64)).pow(2).sum().backward()
        opt.step()
    unit = type("U", (), {"size": 3, "consumers": ["1"]})()
    P = opt.get_P("1")
    assert P[0, 0] > 20 * P[2, 2]  # the correlated inputs are the redundant ones

    def cut(use_p):  # the channel one cut removes
        return int(torch.argmin(unit_scores(model, opt, {"0": unit}, "diag", use_p)["0"]))

    assert cut(False) == 2 and cut(True) in (0, 1)
    assert RLSPrune(use_p=False).use_p is False


def test_weight_decay_is_l2_on_the_weights_through_the_rls_step():
    """wd adds wd*W to the weight's gradient before preconditioning (never to the bias), and
    RLSPrune trains with the recipe's weight decay like every other method."""
    torch.manual_seed(0)
    a, b = nn.Linear(4, 2).double(), nn.Linear(4, 2).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 4, dtype=torch.float64)
    oa = RLS(a, 0.5, alpha=0.1, weight_decay=0.01)
    ob = RLS(b, 0.5, alpha=0.1)
    for layer, opt in ((a, oa), (b, ob)):
        opt.zero_grad()
        layer(x).sum().backward()
    b.weight.grad += 0.01 * b.weight.detach()
    oa.step()
    ob.step()
    torch.testing.assert_close(a.weight, b.weight)
    torch.testing.assert_close(a.bias, b.bias)


def test_rls_trains_with_the_recipe_weight_decay_and_hands_its_unpruned_net_to_the_harness(mnist_small, task_for):
    task = task_for(mnist_small, method="rls", pretrain_epochs=3, finetune_epochs=1)
    model = models.build("lenet5", 1, 28, 10)
    opt = RLSPrune().make_optimizer(task)(model)
    assert {g["weight_decay"] for g in opt.param_groups if g["kind"] == "rls"} == {task.spec.pretrain.weight_decay}
    opt.remove_hooks()
    hook, ctx = _schedule(task, RLSPrune(mode="adaptive", epochs_before_prune=2), 4)
    _epoch(hook, ctx, 1, 0.5)
    assert not task.references
    _epoch(hook, ctx, 2, 0.4, val_acc=0.93)  # the epoch of the first cut: its net is the unpruned reference
    assert task.memory_logger.metrics["rls.acc_val_unpruned"] == [(0, 0.93)]
    ref = task.references["rls_unpruned"]
    assert ref.classifier[1].out_features == 120 and ctx.model.classifier[1].out_features == 96
