"""Named variants (`method@label`): several settings of one method side by side in one grid."""
from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench import cli
from bench.errors import ConfigError
from bench.run import config
from bench.run.grid import run_grid

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"magnitude": {}, "magnitude@independent": {"strategy": "independent"},
            "magnitude@global": {"pruning": {"ranking": "global"}}}


def smoke_with(methods: dict, **pruning) -> dict:
    raw = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    raw["methods"] = methods
    raw["datasets"] = {"mnist": raw["datasets"]["mnist"]}
    if pruning:
        raw["pruning"] = pruning
    return raw


def test_variant_keys_expand_to_specs_with_their_own_options_and_pruning():
    cfg = config.from_dict(smoke_with(VARIANTS, rounds=2))
    specs = {s.variant: s for s in cfg.expand()}
    assert [s.method for s in specs.values()] == ["magnitude"] * 3
    assert dict(specs["magnitude@independent"].method_args) == {"strategy": "independent"}
    assert specs["magnitude@global"].pruning.ranking == "global" and specs["magnitude@global"].pruning.rounds == 2
    assert specs["magnitude"].pruning.ranking == "per_layer"
    assert len({s.run_id for s in specs.values()}) == 3
    assert specs["magnitude@global"].label.startswith("magnitude@global/mnist/")
    assert config.override(cfg, methods=["magnitude@global"]).expand()[0].pruning.ranking == "global"
    with pytest.raises(ConfigError, match="--methods: variant 'magnitude@nope' is not in this config"):
        config.override(cfg, methods=["magnitude@nope"])


def test_a_plain_row_keeps_its_run_id_and_pruning_defaults_sit_between_grid_and_variant(monkeypatch):
    from methods.magnitude import Magnitude

    plain = config.RunSpec("magnitude", "mnist", "lenet5", 0, "macs", 0.5)
    assert plain.variant == "magnitude" and "variant" not in plain.canonical()
    assert plain.run_id == config.RunSpec("magnitude", "mnist", "lenet5", 0, "macs", 0.5, variant="magnitude").run_id
    monkeypatch.setattr(Magnitude, "pruning_defaults", {"ranking": "global", "rounds": 3})
    cfg = config.from_dict(smoke_with({"magnitude": {}, "magnitude@one": {"pruning": {"rounds": 1}}}, rounds=2))
    specs = {s.variant: s.pruning for s in cfg.expand()}
    assert (specs["magnitude"].ranking, specs["magnitude"].rounds) == ("global", 3)
    assert (specs["magnitude@one"].ranking, specs["magnitude@one"].rounds) == ("global", 1)


@pytest.mark.parametrize("methods, message", [
    ({"magnitude@": {}}, "methods.magnitude@: a variant is written name@label"),
    ({"magnitude@a b": {}}, "methods.magnitude@a b: a variant is written name@label"),
    ({"magnitude@x": {"strategy": "best"}}, "methods.magnitude@x.strategy: 'best' is invalid; allowed: greedy, independent"),
    ({"magnitude@x": {"pruning": {"ranking": "wide"}}}, "methods.magnitude@x.pruning.ranking: 'wide' is unknown"),
    ({"magnitude@x": {"pruning": {"rank": "global"}}}, "methods.magnitude@x.pruning.rank: unknown field"),
])
def test_bad_variants_name_the_key(methods, message):
    with pytest.raises(ConfigError) as e:
        config.from_dict(smoke_with(methods))
    assert str(e.value).startswith(message)


def test_a_method_and_two_variants_are_three_rows_and_a_rerun_adds_nothing(tmp_path, data_dir):
    cfg = config.from_dict(smoke_with(VARIANTS), name="smoke")
    cfg.results_dir, cfg.data_dir = str(tmp_path), str(data_dir)
    assert run_grid(cfg, progress=False) == {"done": 3}
    assert run_grid(cfg, progress=False)["cached"] == 3
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["results", "--format", "csv", "--results-dir", str(tmp_path)]) == 0
    df = pd.read_csv(io.StringIO(out.getvalue()))
    assert len(df) == 3 and df.run_id.nunique() == 3 and set(df.status) == {"done"}
    assert set(df.method) == {"magnitude"} and set(df.variant) == set(VARIANTS)
    assert ((df.macs_reduction - 0.5).abs() <= 0.015).all()
