"""A cell's stage is keyed by all the code it runs (issue 29): the harness, bench/core/merge.py and
bench/core/models.py included, and the method with the helper modules it imports. A fix in a
helper must not resume from what the old helper made."""
from __future__ import annotations

import sys
import textwrap

import pytest

from bench.core.registry import get_method
from bench.core.spec import LatencyConfig, RunSpec, TrainConfig
from bench.run import runner
from bench.run.stage import code_key, harness_files, method_files
from tests.conftest import write_noise_npz

PLUGIN = '''
from pathlib import Path

from bench.api import FullMethod

from _stagekey_helper import shrink


class Helped(FullMethod):
    name = "stagekey_helped"
    needs_finetune = False

    def prune(self, model, task, target):
        with open(Path(__file__).with_name("calls.txt"), "a") as fh:  # one line per pruning phase run
            fh.write("prune\\n")
        return shrink(model)
'''
HELPER = '''
def shrink(model):
    return model  # version 1
'''


class _Log:
    def metric(self, *a, **k): ...
    def metrics(self, *a, **k): ...
    def param(self, *a, **k): ...
    def params(self, *a, **k): ...
    def curve(self, *a, **k): ...
    def artifact(self, *a, **k): ...
    def json_artifact(self, *a, **k): ...


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A method file beside the helper it imports, as a `--plugins` folder holds them."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "stagekey_helped.py").write_text(PLUGIN)
    (folder / "_stagekey_helper.py").write_text(textwrap.dedent(HELPER))
    monkeypatch.syspath_prepend(str(folder))
    for name in ("stagekey_helped", "_stagekey_helper"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import stagekey_helped

    return folder, stagekey_helped.Helped


def test_the_key_covers_the_harness_and_the_methods_helpers(plugin):
    folder, cls = plugin
    harness = {p.relative_to(p.parents[1]).as_posix() if p.parent.name in ("core", "run") else p.name
               for p in harness_files()}
    assert {"core/merge.py", "core/models.py", "run/runner.py", "api.py", "utils.py"} <= harness
    assert not any(p.parent.name == "report" for p in harness_files())  # a cell never imports the report
    assert set(method_files(cls)) == {"stagekey_helped.py", "_stagekey_helper.py"}
    # methods/feature_map.py imports methods/_masks.py and _fx.py; _masks.py imports _fx.py too
    assert set(method_files(get_method("feature_map"))) == {"feature_map.py", "_masks.py", "_fx.py"}
    assert set(method_files(get_method("csgd"))) == {"csgd.py"}

    before = code_key(cls)
    helper = folder / "_stagekey_helper.py"
    helper.write_text(helper.read_text().replace("version 1", "version 2"))
    assert code_key(cls) != before


def test_a_fixed_helper_does_not_resume_from_the_old_helpers_stage(plugin, tmp_path, monkeypatch):
    folder, cls = plugin
    data_dir = write_noise_npz(tmp_path / "data")
    monkeypatch.setattr(runner, "get_method", lambda name: cls)
    recipe = TrainConfig(epochs=1, batch_size=64, augment=False)
    spec = RunSpec(method=cls.name, dataset="mnist", model="lenet5", seed=0, target_kind="macs", target=0.5,
                   pretrain=recipe, finetune=recipe, val_size=100,
                   latency=LatencyConfig(repeats_b1=1, repeats_b64=1, warmup=0))
    results = tmp_path / "results"

    def run() -> int:
        """Runs the cell without run_one's bookkeeping, which would discard the stage when it is done;
        returns how often the method's pruning phase ran so far."""
        runner.execute(spec, _Log(), data_dir=str(data_dir), results_dir=results, progress=False)
        return len((folder / "calls.txt").read_text().splitlines())

    assert run() == 1
    stages = list((results / "runs" / spec.run_id).glob("stage-*"))
    assert len(stages) == 1 and (stages[0] / "pruned_before_finetune.pt").exists()
    assert run() == 1  # the same code resumes from its stage: the pruning phase is not run again
    helper = folder / "_stagekey_helper.py"
    helper.write_text(helper.read_text().replace("version 1", "version 2"))  # a fix in the helper only
    assert run() == 2  # the old stage is not reused
    assert [p.name for p in (results / "runs" / spec.run_id).glob("stage-*")] == [f"stage-{code_key(cls)}"]
