"""Physical surgery: identity when nothing is removed, exact shapes/MACs when channels go, residual coupling."""
import pytest
import torch

from bench.core import models
from bench.core.measure import count_macs, count_params
from bench.core.surgery import CostModel, find_units, prune

CASES = [("lenet5", {}, (1, 28)), ("vgg", {"depth": 11, "width": 0.25}, (3, 32)), ("resnet20", {}, (3, 32))]


def build(name, args, chans, size):
    torch.manual_seed(0)
    m = models.build(name, chans, size, 10, **args)
    models.init_weights(m)
    # non-trivial BN statistics so that wrong slicing shows up in the outputs
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


@pytest.mark.parametrize("name,args,shape", CASES)
def test_keeping_everything_is_identity(name, args, shape):
    m = build(name, args, *shape)
    x = torch.randn(4, shape[0], shape[1], shape[1])
    units = find_units(m, x)
    keep = {n: list(range(u.size)) for n, u in units.items()}
    p = prune(m, keep, x)
    torch.testing.assert_close(p(x), m(x))
    assert count_macs(p, x) == count_macs(m, x)


@pytest.mark.parametrize("name,args,shape", CASES)
def test_removed_channels_shrink_shapes_and_macs_exactly(name, args, shape):
    m = build(name, args, *shape)
    x = torch.randn(4, shape[0], shape[1], shape[1])
    units = find_units(m, x, include_coupled=True)
    kept = {n: u.size // 2 for n, u in units.items()}
    keep = {n: list(range(1, 1 + kept[n])) for n in units}
    p = prune(m, keep, x)
    mods = dict(p.named_modules())
    for n, u in units.items():
        for member in u.members:
            mod = mods[member]
            assert (mod.out_channels if hasattr(mod, "out_channels") else mod.out_features) == kept[n]
    assert p(x).shape == (4, 10)
    assert count_macs(p, x) == pytest.approx(CostModel(m, x, units).macs(kept))
    assert count_macs(p, x) < 0.4 * count_macs(m, x)
    assert count_params(p) < count_params(m)


def test_removing_a_channel_equals_zeroing_it_in_a_plain_conv_chain():
    """LeNet has no BN: deleting filter c must equal zeroing its output and its consumer columns."""
    m = build("lenet5", {}, 1, 28)
    x = torch.randn(8, 1, 28, 28)
    ref = build("lenet5", {}, 1, 28)
    with torch.no_grad():
        ref.features[0].weight[2] = 0
        ref.features[0].bias[2] = 0
    p = prune(m, {"features.0": [0, 1, 3, 4, 5]}, x)
    torch.testing.assert_close(p(x), ref(x), atol=1e-5, rtol=1e-5)
    flat_keep = [c for c in range(16) if c != 7]
    p2 = prune(m, {"features.3": flat_keep}, x)
    assert p2.classifier[1].in_features == 15 * 25  # flatten -> linear: 25 columns per channel removed


def test_resnet_residual_group_is_one_unit_and_prunes_together():
    m = build("resnet20", {}, 3, 32)
    x = torch.randn(2, 3, 32, 32)
    units = find_units(m, x, include_coupled=True)
    stage1 = units["conv1"]
    assert stage1.coupled and {"layers.0.conv2", "layers.1.conv2", "layers.2.conv2"} <= set(stage1.members)
    assert "conv1" not in find_units(m, x, include_coupled=False)
    p = prune(m, {"conv1": list(range(10))}, x)
    for name in ("conv1", "layers.0.conv2", "layers.2.conv2"):
        assert dict(p.named_modules())[name].out_channels == 10
    assert p.layers[3].conv1.in_channels == 10 and p.layers[3].shortcut[0].in_channels == 10
    assert p(x).shape == (2, 10)


def test_pruned_model_saves_and_reloads_identically(tmp_path):
    m = build("vgg", {"depth": 11, "width": 0.25}, 3, 32)
    x = torch.randn(3, 3, 32, 32)
    units = find_units(m, x)
    p = prune(m, {n: list(range(0, u.size, 2)) for n, u in units.items()}, x).eval()
    torch.save(p, tmp_path / "m.pt")
    q = torch.load(tmp_path / "m.pt", weights_only=False).eval()
    torch.testing.assert_close(q(x), p(x), rtol=0, atol=0)
    assert (tmp_path / "m.pt").stat().st_size < 0.4 * sum(t.numel() * 4 for t in m.state_dict().values())


def test_bad_keep_lists_are_rejected():
    m = build("lenet5", {}, 1, 28)
    x = torch.randn(1, 1, 28, 28)
    with pytest.raises(ValueError, match="empty"):
        prune(m, {"features.0": []}, x)
    with pytest.raises(ValueError, match="outside"):
        prune(m, {"features.0": [0, 6]}, x)
    with pytest.raises(KeyError, match="nope"):
        prune(m, {"nope": [0]}, x)
