"""configs/curves.yaml is the quick preset's methods and budgets over 3 targets x 3 seeds."""
from pathlib import Path

from bench import config

REPO = Path(__file__).resolve().parents[1]


def test_curves_preset_is_126_quick_cells():
    curves = config.load(REPO / "configs/curves.yaml").expand()
    assert len(curves) == 126
    assert {(s.target_kind, s.target) for s in curves} == {("macs", 0.3), ("macs", 0.5), ("macs", 0.7)}
    assert {s.seed for s in curves} == {0, 1, 2}

    def recipe(specs):
        return {(s.method, s.method_args, s.dataset, s.model_label, s.pretrain, s.finetune, s.pruning) for s in specs}

    quick = [s for s in config.load(REPO / "configs/quick.yaml").expand() if s.dataset != "svhn"]
    assert recipe(curves) == recipe(quick)
