"""The epoch budget is enforced by the harness: counted in images seen / train size, flagged when exceeded."""
from __future__ import annotations

import pytest

from bench.api import FullMethod, ScoreMethod
from bench.core.spec import LatencyConfig, PruningConfig, RunSpec, TrainConfig
from bench.run import runner
from methods.magnitude import Magnitude


class _Log:
    def __init__(self):
        self.metrics_logged: dict[str, float] = {}

    def metric(self, key, value, step=None):
        self.metrics_logged[key] = value

    def param(self, *a): ...
    def params(self, *a): ...
    def curve(self, *a): ...
    def artifact(self, *a): ...
    def json_artifact(self, *a): ...


class _Trains(FullMethod):
    """A full method that trains `epochs` fine-tune epochs itself, then asks for (or not) the harness fine-tune."""

    name = "trains_test"
    epochs = 0

    def prune(self, model, task, target):
        return task.train(model, self.epochs).model if self.epochs else model


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")  # one shared base checkpoint for every run of this module


def _run(monkeypatch, results, data_dir, cls, pruning=PruningConfig()) -> dict:
    monkeypatch.setattr(runner, "get_method", lambda name: cls)
    spec = RunSpec(method=cls.name, dataset="mnist", model="lenet5", seed=0, target_kind="macs", target=0.5,
                   pretrain=TrainConfig(epochs=1, batch_size=100, augment=False),
                   finetune=TrainConfig(epochs=2, batch_size=100, augment=False), pruning=pruning,
                   val_size=200, train_subset=1000, test_subset=200,
                   latency=LatencyConfig(repeats_b1=1, repeats_b64=1, warmup=0))  # latency is not under test here
    return runner.execute(spec, _Log(), data_dir=str(data_dir), results_dir=results, progress=False)


@pytest.mark.parametrize("own, asks, used, met", [
    (3, False, 3.0, 0.0),   # trains past its 2-epoch budget: flagged
    (2, False, 2.0, 1.0),   # spends exactly its budget, no hidden fine-tune
    (1, True, 2.0, 1.0),    # asks for the fine-tune: the harness adds only what is left (1 epoch)
    (3, True, 3.0, 0.0),    # over budget: the harness adds nothing, the run is flagged
])
def test_full_method_budget_is_counted_and_flagged(monkeypatch, results, data_dir, own, asks, used, met):
    cls = type("T", (_Trains,), {"name": f"trains_{own}_{asks}", "epochs": own, "needs_finetune": asks})
    record = _run(monkeypatch, results, data_dir, cls)
    assert record["epochs_used"] == pytest.approx(used)
    assert record["budget_epochs"] == 2.0 and record["budget_met"] == met


def test_score_rounds_share_the_one_fine_tune_budget(monkeypatch, results, data_dir):
    cls = type("M", (Magnitude,), {})
    assert issubclass(cls, ScoreMethod)
    record = _run(monkeypatch, results, data_dir, cls, PruningConfig(rounds=2))
    assert record["epochs_used"] == pytest.approx(2.0) and record["budget_met"] == 1.0
