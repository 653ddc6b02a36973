"""Do two variants remove the same channels? Jaccard overlap of their removed channel sets.

Equal accuracies do not tell whether two methods choose differently at all (RLS with and without
its P weighting, say). Every finished run records which channels of the base it kept
(`kept_channels.json`: the base's layer widths, and per pruned unit root the kept indices). A
run's removed set is every (layer, channel) of the base it does not keep, pooled over layers; two
runs on the same base (experiment, dataset, model, seed, target) overlap by |A ∩ B| / |A ∪ B|.
Beside it, the overlap expected by chance: each run removing the same number of channels per
layer, uniformly at random. A run that removed nothing (a `@no_prune` reference) has no removed
set to compare and is left out.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from bench.report.load import CELL, target_label
from bench.report.tables import md_escape

Removed = dict[str, set[int]]  # layer -> removed channel indices of the base

PAIR_COLUMNS = CELL + ["seed", "variant_a", "variant_b", "removed_a", "removed_b", "jaccard", "chance"]
TABLE_COLUMNS = CELL + ["variant_a", "variant_b", "n", "seeds", "jaccard_mean", "jaccard_sd", "chance_mean"]


def removed_channels(kept: dict) -> tuple[Removed, dict[str, int]]:
    """The removed channels per layer of one `kept_channels.json`, and the base's widths."""
    widths = {layer: int(w) for layer, w in kept["base_widths"].items()}
    return {layer: set(range(widths[layer])) - set(idx) for layer, idx in kept["kept"].items()}, widths


def jaccard(a: Removed, b: Removed) -> float:
    """|A ∩ B| / |A ∪ B| of the pooled (layer, channel) pairs; NaN when both are empty."""
    pa = {(layer, c) for layer, cs in a.items() for c in cs}
    pb = {(layer, c) for layer, cs in b.items() for c in cs}
    union = len(pa | pb)
    return len(pa & pb) / union if union else float("nan")


def chance_jaccard(a: Removed, b: Removed, widths: dict[str, int]) -> float:
    """The overlap of two random choices with the same removed counts per layer: the expected
    intersection (k_a k_b / n per layer) over the expected union, pooled over layers."""
    both = sum(len(a.get(layer, ())) * len(b.get(layer, ())) / n for layer, n in widths.items() if n)
    union = sum(len(s) for s in a.values()) + sum(len(s) for s in b.values()) - both
    return both / union if union else float("nan")


def overlap_pairs(runs: pd.DataFrame, kept: dict[str, dict]) -> pd.DataFrame:
    """One row per base (cell x seed) and pair of variants that both finished there, removed
    something and left `kept_channels.json` (`kept`: mlflow run id -> its content)."""
    done = runs[(runs["status"] == "done") & runs["mlflow_run_id"].isin(list(kept))]
    rows = []
    for key, g in done.groupby(CELL + ["seed"], sort=True):
        sets = {}
        for _, r in g.sort_values("variant").iterrows():
            removed, widths = removed_channels(kept[r["mlflow_run_id"]])
            if any(removed.values()):
                sets[r["variant"]] = (removed, widths)
        for (va, (a, widths)), (vb, (b, _)) in combinations(sets.items(), 2):
            rows.append((*key, va, vb, sum(map(len, a.values())), sum(map(len, b.values())), jaccard(a, b),
                         chance_jaccard(a, b, widths)))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def overlap_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample sd over seeds of each pair's overlap, per cell, with the chance level."""
    rows = []
    for key, g in pairs.groupby(CELL + ["variant_a", "variant_b"], sort=True):
        j = g["jaccard"].dropna()
        rows.append((*key, len(j), ",".join(str(s) for s in sorted(g["seed"])), j.mean(),
                     j.std(ddof=1) if len(j) > 1 else np.nan, g["chance"].mean()))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def overlap_markdown(table: pd.DataFrame, missing: list[str]) -> str:
    """One upper-triangular matrix per cell: row variant vs column variant."""
    lines = ["Jaccard overlap |A ∩ B| / |A ∪ B| of the channels two variants removed from the same base "
             "(pooled over layers as (layer, channel) of the base), mean ± sd over seeds; in parentheses the "
             "overlap of random choices with the same number of channels per layer. 1 = the same channels; "
             "near chance = unrelated choices. Runs that removed nothing are left out.", ""]
    if table.empty:
        lines.append("No two variants with recorded channel choices (`kept_channels.json`) share a base.")
    for key, g in table.groupby(CELL, sort=True):
        cell = dict(zip(CELL, key))
        names = sorted(set(g["variant_a"]) | set(g["variant_b"]))
        full = g["n"].max()
        lines += [f"**{cell['dataset']} / {cell['model']}, {target_label(cell['target_kind'], cell['target'])}** "
                  f"(experiment {cell['experiment']}, up to n = {full} seeds)", "",
                  "| | " + " | ".join(md_escape(v) for v in names[1:]) + " |",
                  "|---|" + "---:|" * (len(names) - 1)]
        at = {(r["variant_a"], r["variant_b"]): r for _, r in g.iterrows()}
        for i, a in enumerate(names[:-1]):
            cells = []
            for j, b in enumerate(names[1:], start=1):
                r = at.get((a, b))
                if j <= i or r is None:
                    cells.append("")
                    continue
                sd = "" if pd.isna(r["jaccard_sd"]) else f" ± {r['jaccard_sd']:.2f}"
                n = "" if r["n"] == full else f", n = {r['n']}"
                cells.append(f"{r['jaccard_mean']:.2f}{sd} ({r['chance_mean']:.2f}{n})")
            lines.append(f"| {md_escape(a)} | " + " | ".join(cells) + " |")
        lines.append("")
    if missing:
        lines.append("Runs without a readable `kept_channels.json` (left out): " + "; ".join(missing))
    return "\n".join(lines).rstrip() + "\n"
