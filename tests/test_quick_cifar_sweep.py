"""The settings sweep builds the cells it names: under PLS+VIP's paper-protocol defaults, a
ranking/rounds change only takes effect as a variant, so each PLS variant must really differ."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep():
    spec = importlib.util.spec_from_file_location("quick_cifar_sweep", REPO / "benchmarks/quick_cifar_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_variant_is_one_cifar_cell_with_its_own_settings(tmp_path):
    s = sweep()
    cells = {name: s.variant_config(name, str(tmp_path)).expand() for name in s.VARIANTS}
    assert all(len(c) == 1 and c[0].dataset == "cifar10" for c in cells.values())
    one = {name: c[0] for name, c in cells.items()}
    assert {one[n].finetune.lr for n in one if n.startswith("lr0.01")} == {0.01}
    assert (one["lr0.05-pls"].pruning.ranking, one["lr0.05-pls"].pruning.rounds) == ("global", 8)  # the paper's
    assert (one["lr0.05-pls-per_layer"].pruning.ranking, one["lr0.05-pls-per_layer"].pruning.rounds) == ("per_layer", 1)
    assert dict(one["lr0.05-pls-h10"].method_args)["components"] == 10
    assert len({c.run_id for c in one.values()}) == len(one)  # no two variants are the same cell


def test_the_sweep_never_reads_test_accuracy():
    source = (REPO / "benchmarks/quick_cifar_sweep.py").read_text()
    assert "acc_val_final" in source and "acc_final" not in source.replace("acc_val_final", "")
