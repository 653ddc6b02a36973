"""bench.api's contracts: one registry name per class, typed options, one target rule, and one clear
line for each misuse a newcomer met (part epochs, a unit without a score, the test split)."""
from __future__ import annotations

import importlib
from typing import Annotated, Literal

import pytest
import torch

from bench.api import Range, ScoreMethod, Target, register
from bench.core import registry
from bench.core.options import describe
from bench.errors import ConfigError


def test_a_different_class_under_a_taken_name_fails_naming_both():
    registry.discover()

    # a third-party class with the built-in's __qualname__ (what the old check compared)
    Magnitude = type("Magnitude", (ScoreMethod,), {"name": "magnitude", "__module__": "thirdparty.plugin"})
    with pytest.raises(ValueError, match=r"taken by methods\.magnitude\.Magnitude; "
                                         r"thirdparty\.plugin\.Magnitude cannot register"):
        register(Magnitude)
    assert registry.get_method("magnitude").__module__ == "methods.magnitude"


def test_reimporting_a_method_module_registers_it_again_without_error():
    import methods.magnitude

    importlib.reload(methods.magnitude)
    assert registry.get_method("magnitude") is methods.magnitude.Magnitude


class Typed(ScoreMethod):
    name = "typed_probe"

    def __init__(self, mode: Literal["a", "b"] = "a", frac: Annotated[float, Range(0, 1, lo_open=True)] = 0.5,
                 n: Annotated[int, Range(2)] = 3, lr: Annotated[float, Range(0, lo_open=True)] | None = None,
                 flag: bool = False):
        self.mode, self.frac, self.n, self.lr, self.flag = mode, frac, n, lr, flag


@pytest.mark.parametrize("args, message", [
    ({"mode": "c"}, "m.mode: 'c' is invalid; allowed: a, b"),
    ({"frac": 0.0}, "m.frac: 0.0 is invalid; allowed: float in (0, 1]"),
    ({"frac": "0.5"}, "m.frac: '0.5' is invalid; allowed: float in (0, 1]"),
    ({"n": 2.5}, "m.n: 2.5 is invalid; allowed: int >= 2"),
    ({"n": True}, "m.n: True is invalid; allowed: int >= 2"),
    ({"lr": -1}, "m.lr: -1 is invalid; allowed: float > 0 or null"),
    ({"flag": 1}, "m.flag: 1 is invalid; allowed: bool"),
    ({"nope": 1}, "m.nope: unknown option of method 'typed_probe'; allowed: mode, frac, n, lr, flag"),
])
def test_one_validator_names_the_field_and_the_allowed_values(args, message):
    with pytest.raises(ConfigError) as e:
        Typed.validate_args(args, "m")
    assert str(e.value) == message


def test_good_values_pass_and_constructing_directly_is_checked_too():
    Typed.validate_args({"mode": "b", "frac": 1, "n": 2, "lr": None, "flag": True}, "m")
    assert Typed(frac=1).frac == 1
    with pytest.raises(ConfigError, match="typed_probe.mode: 'z' is invalid"):
        Typed(mode="z")


def test_a_default_outside_its_own_type_is_refused_at_registration():
    class Broken(ScoreMethod):
        name = "broken_probe"

        def __init__(self, k: Annotated[int, Range(1)] = 0):
            self.k = k

    with pytest.raises(TypeError, match="default 0 of option 'k' is not a int >= 1"):
        register(Broken)
    assert describe(Literal["x"] | None) == "x or null"


def test_target_relative_to_keeps_the_absolute_end_point_and_band():
    t = Target("macs", 0.5, 0.02)
    step = t.relative_to(0.2)  # 80 % of the cost left; 50 % of the base is 62.5 % of what is left
    assert step.reduction == pytest.approx(0.375) and step.tolerance == pytest.approx(0.025)
    assert t.met(0.48) and t.met(0.52) and not t.met(0.5201)
    assert t.reached(0.48) and not t.reached(0.4799) and t.reached(0.9)
    assert Target("params", 0.3).relative_to(0.0).reduction == pytest.approx(0.3)


def test_eval_mode_gives_every_submodule_its_own_mode_back_even_after_an_error():
    from torch import nn

    from bench.api import eval_mode

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout())
    model[1].eval()  # a BN a method froze while the rest trains
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_atomic_write_replaces_whole_or_leaves_the_old_file(tmp_path):
    from bench.utils import atomic_write

    path = tmp_path / "state.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
    with atomic_write(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def _lenet_task(noise_mnist, **kw):
    from bench.core.models import build
    from tests.conftest import make_task

    return make_task(noise_mnist, **kw), build("lenet5", in_channels=1, input_size=28, num_classes=10)


@pytest.mark.parametrize("epochs", [0.5, 1.5, -1, "1"])
def test_task_train_refuses_part_epochs_with_one_line_naming_the_fix(noise_mnist, epochs):
    task, model = _lenet_task(noise_mnist)
    with pytest.raises(ValueError) as e:
        task.train(model, epochs)
    assert str(e.value).startswith(f"task.train: epochs must be a whole number >= 0, got {epochs!r}; split a budget")
    assert "\n" not in str(e.value) and task.images_seen == 0


def test_task_train_takes_a_whole_float_as_its_epochs(noise_mnist):
    task, model = _lenet_task(noise_mnist)
    task.train(model, 1.0)
    assert task.epochs_used == pytest.approx(1.0, abs=0.1)


def test_scores_that_leave_out_a_unit_fail_naming_it_and_keep_leaves_one_whole(noise_mnist):
    from bench.api import KEEP

    task, model = _lenet_task(noise_mnist, target=0.3)
    units = task.units(model)
    scores = {n: torch.rand(u.size) for n, u in units.items()}
    first, *rest = units
    partial = {n: scores[n] for n in rest}
    with pytest.raises(ValueError, match=rf"^scores leave out unit\(s\) {first}: score every unit of "
                                         r"task.units\(model\), or give KEEP \(from bench.api\) to leave one whole$"):
        task.plan(model, partial)
    plan = task.plan(model, {first: KEEP, **partial})
    assert first not in plan.keep and set(plan.keep) <= set(rest) and task.target.met(plan.predicted_reduction)


def test_the_test_split_is_refused_with_one_clear_line(noise_mnist):
    task, model = _lenet_task(noise_mnist)
    why = "test is for the final numbers only: methods see the 'train' and 'val' splits only"
    for ask in (lambda: task.batches("test"), lambda: task.evaluate(model, "test")):
        with pytest.raises(ValueError, match=f"^split 'test': {why}$"):
            ask()
    with pytest.raises(AttributeError, match=f"^{why}$"):
        task.data.test
    assert not hasattr(task.data, "test") and len(task.data.train) == len(noise_mnist.train)
    with pytest.raises(ValueError, match="^split 'tset': methods see the 'train' and 'val' splits only$"):
        task.batches("tset")
