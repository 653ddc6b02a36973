"""The torch-pruning adapter (methods/tp_criteria.py): its scores against hand-derived values and
`magnitude`, and one smoke run of each criterion through the real harness to the target."""
from __future__ import annotations

import functools
import io
from contextlib import redirect_stdout

import pytest
import torch

from bench import cli
from bench.core.models import build
from bench.core.spec import PruningConfig
from bench.run import config
from bench.run.grid import run_grid
from methods.magnitude import Magnitude
from methods.tp_criteria import TpBNScale, TpL1, TpL2, TpLAMP, TpTaylor
from tests.conftest import make_task
from tests.test_variants import smoke_with

CRITERIA = ["tp_l1", "tp_l2", "tp_taylor", "tp_bn_scale", "tp_lamp"]
# tp sums in float32, the references here in float64: equal to float32 precision
close = functools.partial(torch.testing.assert_close, rtol=1e-6, atol=0)
VGG = {"name": "vgg", "depth": 11, "width": 0.125}  # the smallest model with BN, which network slimming needs


def model_for(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(name, 1, 28, 10, **({"depth": 11, "width": 0.125} if name == "vgg" else {}))


@pytest.mark.parametrize("arch", ["lenet5", "resnet20"])
def test_l1_of_the_members_outputs_is_magnitudes_score(noise_mnist, arch):
    task = make_task(noise_mnist, model=arch, pruning=PruningConfig(include_coupled=True))
    model = model_for(arch)
    expected = Magnitude(strategy="independent").score(model, task)  # greedy's first pass is this too
    got = TpL1(scope="outputs", reduction="sum").score(model, task)
    assert set(got) == set(expected) and any(len(u.members) > 1 for u in task.units(model).values()) == (arch != "lenet5")
    for name in expected:
        close(got[name], expected[name])


def test_group_scope_averages_the_filter_and_the_consumers_input_slice(noise_mnist):
    task = make_task(noise_mnist)
    model = model_for("lenet5")
    w = {n: m.weight.detach().abs().double() for n, m in model.named_modules() if hasattr(m, "weight")}
    s = TpL1().score(model, task)  # default: scope group, reduction mean, over 2 items per unit here
    close(s["features.0"], (w["features.0"].sum((1, 2, 3)) + w["features.3"].sum((0, 2, 3))) / 2)
    fc_cols = w["classifier.1"].sum(0).view(16, 25).sum(1)  # flatten: 25 input columns per channel
    close(s["features.3"], (w["features.3"].sum((1, 2, 3)) + fc_cols) / 2)
    close(s["classifier.1"], (w["classifier.1"].sum(1) + w["classifier.3"].sum(0)) / 2)
    l2 = TpL2(scope="outputs").score(model, task)["classifier.3"]
    close(l2, w["classifier.3"].pow(2).sum(1))


def test_bn_scale_is_gamma_and_a_model_without_bn_fails_naming_the_unit(noise_mnist):
    model = model_for("vgg")
    task = make_task(noise_mnist, model="vgg")
    mods = dict(model.named_modules())
    with torch.no_grad():
        for m in mods.values():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(-1, 1)
    s = TpBNScale().score(model, task)
    assert s["features.0"].tolist() == mods["features.1"].weight.detach().abs().double().tolist()
    assert s["classifier.1"].tolist() == mods["classifier.2"].weight.detach().abs().double().tolist()
    with pytest.raises(ValueError, match="tp_bn_scale: unit 'features.0' has no BatchNorm to score"):
        TpBNScale().score(model_for("lenet5"), make_task(noise_mnist))


def test_taylor_uses_gradients_of_seeded_train_batches_and_leaves_the_model_unchanged(noise_mnist):
    task = make_task(noise_mnist)
    model = model_for("lenet5")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = TpTaylor(scope="outputs", batches=2, batch_size=32).score(model, task)
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    for x, y in task.batches("train", 32, shuffle=True, limit=64):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    w = model.features[3].weight
    close(got["features.3"], (w * w.grad).abs().sum((1, 2, 3)).detach().double())
    assert TpTaylor(scope="outputs", batches=2, batch_size=32).score(model_for("lenet5"), task)["features.3"].tolist() \
        == got["features.3"].tolist()


def test_lamp_keeps_l2s_order_inside_a_unit_on_one_scale_across_units(noise_mnist):
    task = make_task(noise_mnist)
    model = model_for("lenet5")
    lamp, l2 = TpLAMP().score(model, task), TpL2().score(model, task)
    for name in lamp:
        assert lamp[name].max().item() == pytest.approx(1.0, rel=1e-4)  # the largest over itself (float32 cumsum)
        assert torch.argsort(lamp[name]).tolist() == torch.argsort(l2[name]).tolist()
    assert TpLAMP.comparable_scores and TpLAMP.pruning_defaults == {"ranking": "global"}


def test_units_and_scores_work_under_no_grad(noise_mnist):
    task = make_task(noise_mnist)
    model = model_for("lenet5")
    with torch.no_grad():  # tp traces through autograd; the harness turns it back on for the trace
        assert list(task.units(model)) == ["features.0", "features.3", "classifier.1", "classifier.3"]
        assert list(TpL1().score(model, task)) == list(task.units(model))


def test_an_inherited_option_is_reported_under_the_subclass_name():
    with pytest.raises(Exception, match=r"^tp_l2\.scope: 'all' is invalid; allowed: group, outputs$"):
        TpL2(scope="all")


def test_methods_lists_the_criteria_with_their_options():
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["methods"]) == 0
    text = out.getvalue()
    for name in CRITERIA:
        assert name in text
    assert "batches" in text and "outputs" in text


def test_each_criterion_reaches_the_target_in_one_smoke_grid(tmp_path, data_dir):
    raw = smoke_with({name: {} for name in CRITERIA})
    raw["latency"] = {"repeats_b1": 1, "repeats_b64": 1, "warmup": 0}  # latency is not under test here
    raw["val_size"] = 200
    mnist = raw["datasets"]["mnist"]
    mnist.update(models=[VGG], train_subset=1000, test_subset=200)
    mnist["pretrain"]["epochs"] = 1
    cfg = config.from_dict(raw, name="smoke")
    cfg.results_dir, cfg.data_dir = str(tmp_path), str(data_dir)
    assert run_grid(cfg, progress=False) == {"done": len(CRITERIA)}
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["results", "--format", "csv", "--results-dir", str(tmp_path)]) == 0
    import pandas as pd

    df = pd.read_csv(io.StringIO(out.getvalue())).set_index("method")
    assert sorted(df.index) == sorted(CRITERIA) and set(df.status) == {"done"}
    assert ((df.macs_reduction - 0.5).abs() <= 0.015).all(), df.macs_reduction
    assert (df.budget_met == 1.0).all() and (df.epochs_used > 0.95).all()  # the one fine-tune epoch, drop_last
