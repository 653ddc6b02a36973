"""The quick CIFAR-10 cell under other settings: fine-tune lr, and PLS+VIP's options (docs/decisions.md).

Every variant is the quick preset's CIFAR-10 / VGG-11 (width 0.25) cell at -50 % MACs, seed 0, from
the same cached base (`tox -e quick` leaves it in results/; otherwise it is trained first). Each
variant is its own MLflow experiment `sweep-<name>`, so a rerun skips finished variants.
Variants are ranked by final *validation* accuracy (`acc_val_final`): a sweep chooses settings, and
choices never look at the test split. Runs logged before validation accuracy existed show `–`.
Run: python benchmarks/quick_cifar_sweep.py [--results-dir results] [variant ...]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import config  # noqa: E402
from bench.run.grid import run_grid  # noqa: E402
from bench.run.tracking import Tracker  # noqa: E402
from benchmarks._common import REPO, data_dir  # noqa: E402

PLS = {"samples": 5000}
# name: (fine-tune lr, `methods:` entry of the grid). Entries with an @label are variants, so their
# `pruning:` beats the method's pruning_defaults (PLS+VIP's paper protocol: global VIP, 8 rounds).
VARIANTS = {
    "lr0.01-magnitude": (0.01, {"magnitude": {}}),
    "lr0.01-random": (0.01, {"random": {}}),
    "lr0.01-pls": (0.01, {"pls_vip": PLS}),
    "lr0.05-magnitude": (0.05, {"magnitude": {}}),
    "lr0.05-random": (0.05, {"random": {}}),
    "lr0.05-pls": (0.05, {"pls_vip": PLS}),
    "lr0.05-pls-per_layer": (0.05, {"pls_vip@per_layer": {**PLS, "pruning": {"ranking": "per_layer", "rounds": 1}}}),
    "lr0.05-pls-avg": (0.05, {"pls_vip@avg": {**PLS, "pooling": "avg"}}),
    "lr0.05-pls-h10": (0.05, {"pls_vip@h10": {**PLS, "components": 10}}),
}


def variant_config(name: str, results_dir: str) -> config.GridConfig:
    """The quick preset's CIFAR-10 cell with this variant's method entry and fine-tune lr."""
    lr, methods = VARIANTS[name]
    raw = yaml.safe_load((REPO / "configs/quick.yaml").read_text())
    raw["datasets"] = {"cifar10": raw["datasets"]["cifar10"]}
    raw["datasets"]["cifar10"]["finetune"] = {**raw["datasets"]["cifar10"]["finetune"], "lr": lr}
    raw.update(methods=methods, name=f"sweep-{name}", data_dir=data_dir(), results_dir=results_dir)
    return config.from_dict(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("variants", nargs="*", help=f"default: all of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; allowed: {', '.join(VARIANTS)}")
    rows = []
    for name in args.variants or VARIANTS:
        cfg = variant_config(name, args.results_dir)
        run_grid(cfg, progress=False)
        r = Tracker(args.results_dir).runs_frame(cfg.name).iloc[0]
        if r.status != "done":  # e.g. skipped for want of data: say why instead of a row of dashes
            print(f"{name}: {r.status}: {r.get('error', '')}", file=sys.stderr, flush=True)
        pruned = Path(args.results_dir, "runs", r.run_id, "pruned_model.pt")
        widths = ""
        if pruned.exists():
            import torch

            model = torch.load(pruned, weights_only=False)
            widths = "-".join(str(m.out_channels) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        rows.append((name, r.get("acc_val_pruned", float("nan")), r.get("acc_val_final", float("nan")),
                     r.macs_reduction, widths))
    rows.sort(key=lambda t: -t[2] if math.isfinite(t[2]) else math.inf)  # best validation accuracy first
    print(f"{'variant (best validation first)':<32} {'val after cut':>13} {'val final':>9} {'MACs -':>7}  conv widths")
    for name, val_pruned, val_final, red, widths in rows:
        print(f"{name:<32} {_pct(val_pruned):>13} {_pct(val_final):>9} {red:>7.1%}  {widths}", flush=True)


def _pct(v: float) -> str:
    """A validation accuracy, or – for a run logged before validation accuracy existed."""
    return f"{v:.4f}" if math.isfinite(v) else "–"


if __name__ == "__main__":
    main()
