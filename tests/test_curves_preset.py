"""configs/curves.yaml: the quick preset's methods and budgets, with the powered design of issue 27."""
from collections import Counter
from pathlib import Path

from bench.run import config

REPO = Path(__file__).resolve().parents[1]


def test_curves_preset_is_the_powered_design_on_the_quick_recipes():
    cfg = config.load(REPO / "configs/curves.yaml")
    curves = cfg.expand()
    assert len(curves) == 7 * (10 * 3 + 10 + 3 + 3)
    per_group = Counter((s.variant, s.dataset, s.target) for s in curves)
    assert all(per_group[(m, "mnist", t)] == 10 for m in cfg.methods for t in (0.3, 0.5, 0.7))
    assert all(per_group[(m, "cifar10", 0.5)] == 10 for m in cfg.methods)
    assert all(per_group[(m, "cifar10", t)] == 3 for m in cfg.methods for t in (0.3, 0.7))
    assert cfg.reference == "magnitude" and cfg.design.margin_pp == 0.5
    assert cfg.design.primary_of("cifar10") == "macs:0.5" and cfg.design.primary_of("mnist") == "mean"

    def recipe(specs):
        return {(s.method, s.method_args, s.dataset, s.model_label, s.pretrain, s.finetune, s.pruning) for s in specs}

    quick = [s for s in config.load(REPO / "configs/quick.yaml").expand() if s.dataset != "svhn"]
    assert recipe(curves) == recipe(quick)
