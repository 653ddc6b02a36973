"""Map-EX feature-representation pruning (docs/methods.md §6): receptive fields, masks, scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bench.core.datasets import DATASETS, Data, DatasetInfo, Split
from bench.core.models import build, init_weights
from bench.core.receptive_field import Geometry, layer_geometry
from bench.errors import ConfigError
from methods.feature_map import FeatureMap, center_mask, gradcam_mask, grid_mask


def _geometry(name: str, channels: int, size: int, **args) -> dict[str, tuple[int, int, int, int]]:
    """(rf, stride, start, map side) per module, square maps only."""
    model = build(name, channels, size, 10, **args)
    geo = layer_geometry(model, torch.zeros(1, channels, size, size))
    for g in geo.values():
        assert g.rf[0] == g.rf[1] and g.stride[0] == g.stride[1] and g.start[0] == g.start[1]
    return {k: (g.rf[0], g.stride[0], g.start[0], g.size[0]) for k, g in geo.items()}


# Recurrence: rf += (k-1)*j_in, j *= s, start -= p*j_in (start = first input pixel of cell 0).
def test_receptive_field_lenet5():
    g = _geometry("lenet5", 1, 28)
    assert g["features.0"] == (5, 1, -2, 28)    # conv 5x5 pad 2: rf 1+4=5, start 0-2
    assert g["features.1"] == (5, 1, -2, 28)    # ReLU passes through
    assert g["features.2"] == (6, 2, -2, 14)    # pool 2/2: rf 5+1*1=6, j 2
    assert g["features.3"] == (14, 2, -2, 10)   # conv 5x5 pad 0: rf 6+4*2=14
    assert g["features.5"] == (16, 4, -2, 5)    # pool 2/2: rf 14+1*2=16, j 4


def test_receptive_field_vgg11():
    # Layout 64 M 128 M 256 256 M 512 512 M 512 512 M; each conv is 3x3 pad 1 (+BN+ReLU = 3 modules).
    g = _geometry("vgg", 3, 32, depth=11, width=0.125)
    expected = {
        "features.0": (3, 1, -1, 32),     # 1 + 2*1;            start -1*1
        "features.3": (4, 2, -1, 16),     # pool: 3 + 1*1
        "features.4": (8, 2, -3, 16),     # 4 + 2*2;            start -1 - 1*2
        "features.7": (10, 4, -3, 8),     # pool: 8 + 1*2
        "features.8": (18, 4, -7, 8),     # 10 + 2*4;           start -3 - 4
        "features.11": (26, 4, -11, 8),   # 18 + 2*4
        "features.14": (30, 8, -11, 4),   # pool: 26 + 1*4
        "features.15": (46, 8, -19, 4),   # 30 + 2*8
        "features.18": (62, 8, -27, 4),   # 46 + 2*8
        "features.21": (70, 16, -27, 2),  # pool: 62 + 1*8
        "features.22": (102, 16, -43, 2),  # 70 + 2*16
        "features.25": (134, 16, -59, 2),  # 102 + 2*16
        "features.28": (150, 32, -59, 1),  # pool: 134 + 1*16
    }
    assert {k: g[k] for k in expected} == expected


def test_receptive_field_resnet20():
    # Stem 3x3: rf 3. Every 3x3 conv adds 2*j; stage 2 and 3 open with a stride-2 conv (pad 1) and
    # a 1x1 stride-2 shortcut; the block output sees the union of both branches (the conv path).
    g = _geometry("resnet20", 3, 32)
    expected = {
        "conv1": (3, 1, -1, 32),
        "layers.0.conv1": (5, 1, -2, 32), "layers.0.conv2": (7, 1, -3, 32),
        "layers.2.conv2": (15, 1, -7, 32),            # 3 + 6 convs * 2
        "layers.3.conv1": (17, 2, -8, 16),            # 15 + 2*1, j 2
        "layers.3.shortcut.0": (15, 2, -7, 16),       # 1x1 stride 2: rf unchanged
        "layers.3.conv2": (21, 2, -10, 16),           # 17 + 2*2
        "layers.5.conv2": (37, 2, -18, 16),           # 21 + 4 convs * 4
        "layers.6.conv1": (41, 4, -20, 8),            # 37 + 2*2, j 4
        "layers.8.conv2": (81, 4, -40, 8),            # 41 + 5 convs * 8
        "pool": (109, 32, -40, 1),                    # global 8x8 average: 81 + 7*4
    }
    assert {k: g[k] for k in expected} == expected


def test_grid_mask_map_and_map_ex_rules():
    region = torch.zeros(1, 28, 28, dtype=torch.bool)
    region[0, 13, 13] = True
    conv1 = Geometry((5, 5), (1, 1), (-2, -2), (28, 28))  # LeNet conv1
    assert grid_mask(region, conv1, "map").nonzero().tolist() == [[0, 13, 13]]
    ex = grid_mask(region, conv1, "map-ex")[0]
    assert ex.sum() == 25 and ex[11:16, 11:16].all()  # the pixel grown by rf//2 = 2 per side
    # LeNet conv2: cell u sees pixels [-2+2u, 12+2u), centre 5+2u. Map-EX: u = 1..7 contain 13;
    # Map: only u = 4 (centre 13 lies between pixels 12 and 13). §6's ((u+0.5)*2) would say u = 6.
    conv2 = Geometry((14, 14), (2, 2), (-2, -2), (10, 10))
    assert grid_mask(region, conv2, "map")[0].nonzero().tolist() == [[4, 4]]
    ex = grid_mask(region, conv2, "map-ex")[0]
    assert ex.sum() == 49 and ex[1:8, 1:8].all()


def test_grid_mask_pooled_rule_on_a_2x2_map():
    """VGG-11's features.22 (rf 102, stride 16, start -43, 2x2): each cell's tile is its 16x16
    quadrant [16u, 16u + 16); a cell is foreground when more than 128 of its 256 pixels are."""
    deep = Geometry((102, 102), (16, 16), (-43, -43), (2, 2))
    region = torch.zeros(2, 32, 32, dtype=torch.bool)
    region[0, 2:14, 3:15] = True     # 144 pixels in the top-left quadrant
    region[1, 18:29, 17:28] = True   # 121 pixels in the bottom-right one: not a majority
    pooled = grid_mask(region, deep, "pooled")
    assert pooled[0].tolist() == [[True, False], [False, False]]
    assert not pooled[1].any()
    assert grid_mask(region, deep, "map-ex").all()  # every window covers the whole image
    # "map": centres at 8 + 16u lie between pixels 7 and 8
    assert grid_mask(region, deep, "map")[0].tolist() == [[True, False], [False, False]]
    with pytest.raises(ValueError, match="unknown rule 'centre'"):
        grid_mask(region, deep, "centre")


def _quadrant_squares(n: int = 24, seed: int = 0) -> Data:
    """CIFAR-shaped images, dark with one bright 14x14 square inside a random quadrant."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    quad = torch.randint(0, 2, (n, 2), generator=gen)
    off = torch.randint(0, 3, (n, 2), generator=gen)
    for i in range(n):  # test-data construction only
        r, c = (16 * quad[i] + off[i]).tolist()
        x[i, :, r:r + 14, c:c + 14] = 255
    split = Split(x, torch.randint(0, 10, (n,), generator=gen))
    info = DatasetInfo("squares", (3, 32, 32), (0.5,) * 3, (0.25,) * 3, 0, False)
    return Data(info, split, split, split)


def test_last_vgg11_convs_scored_without_fallback(task_for):
    """The 2x2 maps of VGG-11's last two convs are scored by object vs background (pooled rule),
    not by the activation fallback; only the linear unit falls back, and its cut is a tiny share
    of the removed MACs."""
    task = task_for(_quadrant_squares(), model="vgg")
    model = build("vgg", 3, 32, 10, depth=11, width=0.25)
    init_weights(model)
    FeatureMap(foreground="stroke").score(model, task)
    logged = task.memory_logger.params
    assert logged["feature_map/layer/features.0"] == "map-ex; images 24/24"
    for deep in ("features.22", "features.25"):
        assert logged[f"feature_map/layer/{deep}"] == "pooled (map-ex left < 10 usable images); images 24/24"
    assert logged["feature_map/layer/classifier.1"].startswith("activation-magnitude fallback (linear")
    (step, share), = task.memory_logger.metrics["feature_map.fallback_share"]
    assert 0.0 <= share < 0.05


def test_activation_scoring_is_the_fallback_everywhere(task_for):
    """`scoring: activation` (the feature_map@activation ablation): every unit's score is its mean
    post-ReLU activation, so background-only filters are no longer cut first, and all removed MACs
    are fallback-decided; Map-EX on the same model uses no fallback."""
    split, _ = _squares()
    info = DatasetInfo("squares", (1, 16, 16), (0.0,), (1.0,), 0, False)
    model = _planted_model()
    task = task_for(Data(info, split, split, split))
    act = FeatureMap(foreground="stroke", scoring="activation").score(model, task)["0"]
    with torch.no_grad():
        expected = model[1](model[0](task.normalize(split.x))).mean((0, 2, 3))
    assert torch.allclose(act, expected, atol=1e-6)
    assert task.memory_logger.params["feature_map/layer/0"] == "activation-magnitude fallback (scoring: activation)"
    assert "feature_map/foreground" not in task.memory_logger.params  # no foreground computed at all
    assert task.memory_logger.metrics["feature_map.fallback_share"] == [(1, 1.0)]
    assert task.checks == {}  # the fallback everywhere is this variant's point, not a failed precondition

    task = task_for(Data(info, split, split, split))
    mapex = FeatureMap(foreground="stroke").score(model, task)["0"]
    assert set(torch.argsort(mapex)[:2].tolist()) == {1, 4} != set(torch.argsort(act)[:2].tolist())
    assert task.memory_logger.metrics["feature_map.fallback_share"] == [(1, 0.0)]
    assert task.checks == {"mapex_decided": True}
    assert task.memory_logger.metrics["check.mapex_decided.passed"] == [(1, 1.0)]


def test_a_map_ex_run_the_fallback_decided_fails_its_precondition(task_for):
    """A net whose only unit is linear can be scored by the fallback alone: Map-EX's check fails."""
    split, _ = _squares()
    info = DatasetInfo("squares", (1, 16, 16), (0.0,), (1.0,), 0, False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    task = task_for(Data(info, split, split, split))
    FeatureMap(foreground="stroke").score(model, task)
    assert task.checks == {"mapex_decided": False}
    assert task.memory_logger.metrics["check.mapex_decided"] == [(1, 1.0)]
    assert task.memory_logger.params["check.mapex_decided.rule"] == "fallback decided < 50% of the removed MACs"


def test_center_pseudo_box():
    m = center_mask(2, 32, 32, 0.6, 0.9)  # x in [6.4, 25.6), y in [1.6, 30.4)
    assert m.shape == (2, 32, 32)
    rows, cols = m[0].any(1).nonzero().flatten(), m[0].any(0).nonzero().flatten()
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 30, 6, 25)
    assert m[0].sum() == 30 * 20


def _squares(n: int = 48, size: int = 16, side: int = 5, seed: int = 0):
    """Dark images with one bright square each, and the square as a box (x0, y0, x1, y1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    pos = torch.randint(0, size - side + 1, (n, 2), generator=gen)
    for i, (r, c) in enumerate(pos.tolist()):  # test-data construction only
        x[i, 0, r:r + side, c:c + side] = 255
    boxes = torch.stack([pos[:, 1], pos[:, 0], pos[:, 1] + side, pos[:, 0] + side], 1).double()
    return Split(x, torch.zeros(n, dtype=torch.long)), boxes


def _planted_model() -> nn.Module:
    """Conv 1->5 (3x3 centre tap only) on [0, 1] inputs: filter 0 fires on the object,
    1 and 4 only on the background, 2 never, 3 everywhere alike."""
    conv = nn.Conv2d(1, 5, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 1, 1] = torch.tensor([1.0, -1.0, 0.0, 0.0, -1.0])
        conv.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5, 0.5]))
    return nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5 * 8 * 8, 10))


@pytest.mark.parametrize("source", ["stroke", "boxes"])
@pytest.mark.parametrize("score", ["contrast", "ratio"])
def test_background_filters_score_lowest(task_for, tmp_path, source, score):
    split, boxes = _squares()
    info = DatasetInfo("squares", (1, 16, 16), (0.0,), (1.0,), 0, False)
    task = task_for(Data(info, split, split, split))
    args = {"foreground": source, "score": score, "images": 40}
    if source == "boxes":
        np.savez(tmp_path / "boxes.npz", train=boxes.numpy())
        args["boxes"] = str(tmp_path / "boxes.npz")
    scores = FeatureMap(**args).score(_planted_model(), task)
    s = scores["0"]
    assert set(torch.argsort(s)[:2].tolist()) == {1, 4}   # background-only filters go first
    assert int(torch.argmax(s)) == 0                      # the object filter is kept longest
    assert s[1] < s[2] and s[4] < s[3]                    # below even the dead and the uniform one
    logged = task.memory_logger.params
    assert logged["feature_map/layer/0"] == "map-ex; images 40/40"
    assert "adapted" in logged["feature_map/linear_units"]


def test_images_without_background_are_skipped_then_fallback(task_for):
    """A square covering the whole image leaves no background: such images are skipped, and a
    layer with too few usable images falls back (logged) instead of scoring noise."""
    split, _ = _squares(n=20, side=16)
    split.x[:8] = 0
    split.x[:8, :, 6:9, 6:9] = 255  # 8 images with a small object and plenty of background
    task = task_for(Data(DatasetInfo("squares", (1, 16, 16), (0.0,), (1.0,), 0, False), split, split, split))
    FeatureMap(foreground="stroke", min_images=5).score(_planted_model(), task)
    assert task.memory_logger.params["feature_map/layer/0"] == "map-ex; images 8/20"
    task = task_for(Data(DatasetInfo("squares", (1, 16, 16), (0.0,), (1.0,), 0, False), split, split, split))
    scores = FeatureMap(foreground="stroke", min_images=9).score(_planted_model(), task)
    assert task.memory_logger.params["feature_map/layer/0"].startswith("activation-magnitude fallback")
    assert scores["0"][2] == scores["0"].min()  # the dead filter is the weakest by activation


def test_gradcam_mask_shape_and_fraction():
    split, _ = _squares(n=8, size=16, side=4, seed=1)
    gen = torch.Generator().manual_seed(0)
    x = split.x.float() / 255 + 0.2 * torch.rand(8, 1, 16, 16, generator=gen)  # bright object on faint noise
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():  # positive weights: every channel's evidence points to every class
        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.abs_()
                m.bias.zero_()
    mask = gradcam_mask(model, x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), percentile=60)
    assert mask.shape == (8, 16, 16) and mask.dtype == torch.bool
    assert abs(float(mask.float().mean()) - 0.4) < 0.02
    assert (mask & (split.x[:, 0] > 0)).sum() == (split.x[:, 0] > 0).sum()  # the object is inside
    assert model.training  # left in the mode it came in


@pytest.mark.slow
def test_cifar_gradcam_on_vgg_and_plan(task_for, data_dir):
    """Tiny real CIFAR subset, VGG-11/8: Grad-CAM foreground by default, deep layers whose receptive
    field covers the image fall back (logged), and the scores drive a real plan + surgery."""
    with np.load(data_dir / "cifar10.npz") as z:  # 32 test images: reading all of train costs seconds
        x = torch.from_numpy(z["x_test"][:32]).permute(0, 3, 1, 2).contiguous()
        y = torch.from_numpy(z["y_test"][:32].astype(np.int64))
    task = task_for(Data(DATASETS["cifar10"], Split(x, y), Split(x, y), Split(x, y)), model="vgg")
    torch.manual_seed(0)
    model = build("vgg", 3, 32, 10, depth=11, width=0.125)
    init_weights(model)
    method = FeatureMap(images=32)
    scores = method.score(model, task)
    units = task.units(model)
    assert set(scores) == set(units)
    assert all(len(scores[n]) == u.size and torch.isfinite(scores[n]).all() for n, u in units.items())
    logged = task.memory_logger.params
    assert logged["feature_map/foreground"].startswith("Grad-CAM") and "adapted" in logged["feature_map/foreground"]
    assert logged["feature_map/layer/features.0"].startswith("map-ex")
    # rf 134 on a 32-pixel image: map-ex marks every cell, "map" cannot leave 4 background cells of 4
    assert logged["feature_map/layer/features.25"].startswith("pooled (map-ex left < 10")
    regions = method._regions
    assert regions.shape == (32, 32, 32)
    method.score(model, task)  # a second round reuses the base model's masks
    assert method._regions is regions
    plan = task.plan(model, scores, task.target)
    pruned = task.prune_channels(model, plan.keep)
    assert pruned(task.example).shape == (2, 10)


def test_bad_options_name_the_option():
    with pytest.raises(ConfigError, match="feature_map.rule"):
        FeatureMap(rule="centre")
    with pytest.raises(ConfigError, match="feature_map.boxes"):
        FeatureMap(foreground="boxes")
    with pytest.raises(ConfigError, match="feature_map.box_width"):
        FeatureMap(box_width=1.5)
    with pytest.raises(ConfigError, match="'auto' has no default"):
        FeatureMap()._source("squares")


def test_mnist_scores_use_strokes(task_for, mnist_small):
    """Real MNIST, LeNet-5: stroke foreground; fc units get the logged activation fallback."""
    task = task_for(mnist_small)
    torch.manual_seed(0)
    model = build("lenet5", 1, 28, 10)
    init_weights(model)
    scores = FeatureMap(images=256).score(model, task)
    assert set(scores) == {"features.0", "features.3", "classifier.1", "classifier.3"}
    logged = task.memory_logger.params
    assert logged["feature_map/foreground"].startswith("stroke pixels > 0.5")
    assert logged["feature_map/layer/classifier.1"].startswith("activation-magnitude fallback")
    frac = task.memory_logger.metrics["feature_map/foreground_fraction"][0][1]
    assert 0.05 < frac < 0.35  # digit strokes, not the whole frame
