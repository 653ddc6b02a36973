"""Measured CPU latency speedup vs MACs speedup of pruned models.

Part 1, architectures: each quick-preset model pruned by L1 magnitude (per-layer ranking) to
-30/-50/-70 % MACs, widths free (round 1) or multiples of 8 (round 8). Part 2, methods: every finished run's saved pruned model in a results store
(default results/, filled by `tox -e quick`) against its base. Batch 1 and 64, median of repeats,
base and pruned timed in turns (`measure.paired_latency_ms`). Goal: latency speedup / MACs speedup >= 0.8 at -50 %.
Run: python benchmarks/latency.py [--results-dir results]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.api import Target  # noqa: E402
from bench.core import models  # noqa: E402
from bench.core.driver import prune_to_target  # noqa: E402
from bench.core.measure import count_macs, paired_latency_ms  # noqa: E402
from bench.core.spec import PruningConfig  # noqa: E402
from bench.core.surgery import find_units  # noqa: E402
from benchmarks._common import hardware  # noqa: E402
from methods.magnitude import filter_l1  # noqa: E402

ARCHS = [("lenet5", {}, 1, 28), ("vgg", {"depth": 11, "width": 0.25}, 3, 32), ("resnet20", {}, 3, 32)]


def row(label: str, base, pruned, x) -> str:
    mac_speedup = count_macs(base, x) / count_macs(pruned, x)
    cells = [f"{label:<56}", f"{mac_speedup:>6.2f}x"]
    for b in (1, 64):
        lb, lp = paired_latency_ms([base, pruned], x, b, repeats=30 if b == 1 else 10)
        cells.append(f"{lb:>8.2f} {lp:>8.2f} {lb / lp / mac_speedup:>6.2f}")
    return " ".join(cells)


def header() -> str:
    return (f"{'model / run':<56} {'MACs':>7} {'b1 base':>8} {'pruned':>8} {'ratio':>6} "
            f"{'b64 base':>8} {'pruned':>8} {'ratio':>6}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results-dir", default="results")
    args = ap.parse_args()
    print(f"# CPU latency (ms, median) and ratio = latency speedup / MACs speedup; {hardware()}")
    print(header())
    for name, margs, c, h in ARCHS:
        torch.manual_seed(0)
        base = models.build(name, c, h, 10, **margs).eval()
        x = torch.randn(1, c, h, h)
        mods = dict(base.named_modules())
        scores = {n: filter_l1(mods[n].weight) for n in find_units(base, x)}
        for amount in (0.3, 0.5, 0.7):
            for round_to in (1, 8):
                cfg = PruningConfig(round_to=round_to)
                pruned, got = prune_to_target(base, x, scores, Target("macs", amount), cfg)
                label = f"{name}{margs or ''} -{amount:.0%} (got -{got:.1%}) round {round_to}"
                print(row(label, base, pruned.eval(), x))
    runs = sorted(Path(args.results_dir).glob("runs/*/pruned_model.pt"))
    if not runs:
        print(f"# no finished runs under {args.results_dir}/runs: run `tox -e quick` for the per-method part")
        return
    from bench.run.tracking import Tracker

    df = Tracker(args.results_dir).runs_frame()
    done = df[df.status == "done"]
    for _, r in done.iterrows():
        path = Path(args.results_dir) / "runs" / r.run_id / "pruned_model.pt"
        base_files = list((Path(args.results_dir) / "baselines").glob(f"{r.dataset}-{r.model}-s{r.seed}-*.pt"))
        if not path.exists() or not base_files:
            continue
        pruned = torch.load(path, weights_only=False).eval()
        base = torch.load(base_files[0], weights_only=False)["model"].eval()
        c = 1 if r.dataset == "mnist" else 3
        h = 28 if r.dataset == "mnist" else 32
        print(row(f"{r.method} {r.dataset}/{r.model} -{r.target:.0%}", base, pruned, torch.randn(1, c, h, h)))


if __name__ == "__main__":
    main()
