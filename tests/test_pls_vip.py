"""PLS+VIP filter pruning (docs/methods.md §2): VIP formula, feature collection, scores, global threshold."""
from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from sklearn.cross_decomposition import PLSRegression
from torch import nn

from bench.api import Target
from bench.core.datasets import Data, normalize
from bench.core.driver import plan_keep
from bench.core.models import build
from bench.core.spec import PruningConfig, TrainConfig
from bench.core.surgery import find_units, min_keep
from bench.core.training import fit
from bench.errors import ConfigError
from methods.pls_vip import PLSVIP, collect_features, fit_vip, group_vip, vip


def _vip_loop(pls: PLSRegression) -> np.ndarray:
    """VIP as in the paper's code (scikit-learn issue 7050): diag(T'T Q'Q), one feature at a time."""
    t, w, q = pls.x_scores_, pls.x_weights_, pls.y_loadings_
    p, h = w.shape
    s = np.diag(t.T @ t @ q.T @ q)
    out = np.zeros(p)
    for i in range(p):
        weight = np.array([(w[i, j] / np.linalg.norm(w[:, j])) ** 2 for j in range(h)])
        out[i] = np.sqrt(p * (s @ weight) / s.sum())
    return out


def _synthetic(n: int = 600, f: int = 30, informative: tuple[int, ...] = (3, 11, 17, 25), seed: int = 0):
    """Labels 0..4; only the `informative` columns depend on the label, the rest are noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    x = rng.normal(size=(n, f))
    for j, col in enumerate(informative):
        x[:, col] += 1.5 * np.eye(5)[y][:, j % 5] - 0.8 * np.eye(5)[y][:, (j + 2) % 5]
    return x.astype(np.float32), y


def test_vip_matches_independent_computation_and_mean_square_is_one():
    x, y = _synthetic()
    onehot = np.eye(5)[y]
    for h in (1, 2, 3):
        pls = PLSRegression(n_components=h, scale=True).fit(x, onehot)
        v = vip(pls.x_scores_, pls.x_weights_, pls.y_loadings_)
        np.testing.assert_allclose(v, _vip_loop(pls), rtol=0, atol=1e-6)
        assert np.mean(v ** 2) == pytest.approx(1.0, abs=1e-9)
        ours, explained = fit_vip(x, y, 5, h)
        np.testing.assert_allclose(ours, v, atol=1e-6)
        # The logged "Y explained" share is the R^2 of the fit on standardised labels.
        assert explained == pytest.approx(pls.score(x, onehot), abs=1e-6)


def test_label_carrying_columns_get_the_top_vip():
    informative = (3, 11, 17, 25)
    x, y = _synthetic(informative=informative)
    v, explained = fit_vip(x, y, 5, 2)
    assert set(np.argsort(v)[-len(informative):]) == set(informative)
    assert v[list(informative)].min() > 1.0 > np.delete(v, informative).max()
    assert explained > 0.1


def test_dead_filter_gets_zero_vip():
    x, y = _synthetic()
    x[:, 7] = 0.25  # constant: a dead filter
    v, _ = fit_vip(x, y, 5, 2)
    assert v[7] == 0.0 and np.isfinite(v).all()


def test_group_vip_is_root_mean_square():
    a, b = np.array([1.0, 0.0, 3.0]), np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(group_vip([a, b]), np.sqrt((a ** 2 + b ** 2) / 2))


class _Wide(nn.Module):
    """A 1x1 conv on 8x8 images (16 maps per image), an in-place ReLU, then a linear output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(16 * 64, 10)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def test_collector_keeps_pooled_scalars_only_on_a_large_sample():
    torch.manual_seed(0)
    model = _Wide()
    live: list[weakref.ref] = []
    model.conv.register_forward_hook(lambda m, i, out: live.append(weakref.ref(out)))
    gen = torch.Generator().manual_seed(0)
    first = torch.randn(1000, 1, 8, 8, generator=gen)
    rest = torch.randn(1000, 1, 8, 8, generator=gen)

    def batches(count):
        for b in range(count):
            assert all(r() is None for r in live), "a feature map outlived its batch"
            yield (first if b == 0 else rest), torch.full((1000,), b % 10)

    # 50 000 images (the maps alone would be 50 000 x 16 x 64 floats) -> one [50 000, 16] array.
    x, y, cols = collect_features(model, ["conv"], batches(50), 50_000, "max")
    assert x.shape == (50_000, 16) and x.dtype == np.float32 and cols == {"conv": slice(0, 16)}
    assert y.shape == (50_000,) and y[-1] == 9 and len(live) == 50
    for pooling, reduce in (("max", lambda t: t.amax((2, 3))), ("avg", lambda t: t.mean((2, 3)))):
        x, _, _ = collect_features(model, ["conv"], batches(1), 1000, pooling)
        with torch.no_grad():  # pre-ReLU values: the in-place ReLU after the conv must not leak in
            np.testing.assert_allclose(x, reduce(model.conv(first)).numpy(), atol=1e-6)
        assert (x < 0).any()


def test_collector_stops_at_n_and_restores_training_mode():
    model = _Wide().train()
    data = [(torch.randn(64, 1, 8, 8), torch.zeros(64, dtype=torch.long)) for _ in range(4)]
    x, y, _ = collect_features(model, ["conv", "fc"], iter(data), 100)
    assert x.shape == (100, 26) and y.shape == (100,)
    assert model.training and not model.conv._forward_hooks and not model.fc._forward_hooks


@pytest.fixture(scope="module")
def trained_lenet(mnist_small):
    """LeNet-5 after one epoch on 2000 real MNIST images (~85 % val accuracy): cheap, but trained."""
    torch.manual_seed(0)
    data = Data(mnist_small.info, mnist_small.train.subset(2000, 0), mnist_small.val.subset(200, 0), None)
    recipe = TrainConfig(epochs=1, lr=0.05, batch_size=64, augment=False)
    return fit(build("lenet5", 1, 28, 10), data, recipe, seed=0, device="cpu", progress=False).model


@pytest.mark.slow
def test_score_on_real_lenet(mnist_small, task_for, trained_lenet):
    task = task_for(mnist_small, method="pls_vip")
    scores = PLSVIP(samples=2000).score(trained_lenet, task)
    units = task.units(trained_lenet)
    assert list(scores) == list(units) == ["features.0", "features.3", "classifier.1", "classifier.3"]
    for name, unit in units.items():
        assert scores[name].shape == (unit.size,) and torch.isfinite(scores[name]).all()
    # All the network's features share one VIP scale: mean VIP^2 over all F columns is 1.
    allv = torch.cat(list(scores.values()))
    assert float((allv ** 2).mean()) == pytest.approx(1.0, abs=1e-6)
    (_, explained), = task.memory_logger.metrics["pls_vip_y_explained"]
    # Two components of a trained LeNet explain a real share of the 10-class one-hot variance
    # (at most about 2/9 of it for h = 2); label-free features would give ~0.
    assert explained > 0.1
    assert task.memory_logger.metrics["pls_vip_samples"] == [(1, 2000.0)]

    paper = PLSVIP(samples=500, layers="paper").score(trained_lenet, task)
    assert list(paper) == ["features.0"]  # no linear units, never the last conv


def test_global_threshold_removes_by_raw_vip_under_global_ranking(noise_mnist):
    """With `ranking: global` the driver must remove channels by one network-wide VIP threshold."""
    model = build("lenet5", 1, 28, 10)
    example = normalize(noise_mnist.train.x[:2], noise_mnist.info)
    units = find_units(model, example)
    gen = torch.Generator().manual_seed(0)
    # One unit with uniformly low VIPs: the paper's threshold empties it first; per-unit
    # normalisation would make it look as good as the others.
    raw = {n: torch.rand(u.size, generator=gen, dtype=torch.float64) * (0.2 if n == "classifier.1" else 2.0)
           for n, u in units.items()}
    cfg = PruningConfig(ranking="global")
    target = Target("macs", 0.3)

    def threshold_holds(keep):
        removed_max = max(float(raw[n][c]) for n in units for c in range(units[n].size)
                          if c not in keep.get(n, range(units[n].size)))
        for n, u in units.items():
            kept = keep.get(n, list(range(u.size)))
            at_floor = len(kept) == min_keep(u.size, cfg.max_layer_prune)
            if not at_floor and any(float(raw[n][c]) < removed_max for c in kept):
                return False
        return True

    assert PLSVIP.comparable_scores
    ours = plan_keep(model, example, raw, target, cfg, comparable=True)
    assert threshold_holds(ours.keep)
    assert abs(ours.predicted_reduction - 0.3) <= target.tolerance
    assert len(ours.keep["classifier.1"]) == min_keep(120, cfg.max_layer_prune)
    assert not threshold_holds(plan_keep(model, example, raw, target, cfg).keep)  # what it fixes
    # Inside every unit the order is unchanged, so per_layer plans are identical.
    per_layer = PruningConfig(ranking="per_layer")
    assert plan_keep(model, example, raw, target, per_layer, comparable=True).keep == \
        plan_keep(model, example, raw, target, per_layer).keep


def test_coupled_units_get_group_scores(noise_mnist, task_for):
    task = task_for(noise_mnist, method="pls_vip", model="resnet20",
                    pruning=PruningConfig(include_coupled=True))
    model = build("resnet20", 1, 28, 10, width=0.25)
    units = task.units(model)
    assert any(u.coupled for u in units.values())
    scores = PLSVIP(samples=200, batch_size=100).score(model, task)
    assert set(scores) == set(units)
    for name, unit in units.items():
        assert scores[name].shape == (unit.size,) and torch.isfinite(scores[name]).all()


@pytest.mark.parametrize("args, field", [({"pooling": "mean"}, "pooling"), ({"layers": "convs"}, "layers"),
                                         ({"samples": 1}, "samples"), ({"components": 0}, "components"),
                                         ({"threshold": 0.1}, "threshold")])
def test_bad_options_name_the_field(args, field):
    with pytest.raises(ConfigError, match=field):
        PLSVIP.validate_args(args)


def test_default_cells_run_the_paper_protocol_global_threshold_and_k_rounds():
    """The grid's per-layer one-shot is overridden by PLS's paper protocol; other methods keep the grid's."""
    from bench.run.config import from_dict
    from methods.pls_vip import PAPER_ROUNDS

    grid = from_dict({"methods": {"pls_vip": {}, "magnitude": {}}, "pruning": {"ranking": "per_layer", "rounds": 1},
                      "datasets": {"mnist": {"models": ["lenet5"]}}})
    specs = {s.method: s for s in grid.expand()}
    assert PAPER_ROUNDS == 8
    assert (specs["pls_vip"].pruning.ranking, specs["pls_vip"].pruning.rounds) == ("global", 8)
    assert (specs["magnitude"].pruning.ranking, specs["magnitude"].pruning.rounds) == ("per_layer", 1)
    assert specs["pls_vip"].pruning.max_layer_prune == grid.pruning.max_layer_prune  # the rest stays the grid's
