"""Every shipped grid config loads, validates (methods, options, targets) and expands to cells."""
from pathlib import Path

import pytest

from bench.core.registry import get_method
from bench.run import config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml")) + [REPO / "tests" / "tiny.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_expands(path):
    cfg = config.load(path)
    specs = cfg.expand()
    assert specs, f"{path.name} expands to no cell"
    assert {s.method for s in specs} == {get_method(m.split("@")[0]).name for m in cfg.methods}
    assert len({s.run_id for s in specs}) == len(specs)


def test_every_config_is_covered():
    assert {p.name for p in CONFIGS} >= {"smoke.yaml", "quick.yaml", "paper.yaml"}
