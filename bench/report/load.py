"""Loading for the report: MLflow runs -> one tidy DataFrame, one row per run, every status kept.

The tidy frame is the single source of every table, statistic and figure, so each number traces
back to the runs it averages. Runs that did not finish stay in it (their cells show as missing).
Rows are *variants* (`method@label`, or the plain method name): the `variant` column is the row
name everywhere; `method` stays the plugin name. Where the runs come from (stores, segments) is
bench.report.sources.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# One aggregated row per cell of the grid and row name.
KEYS = ["experiment", "dataset", "model", "target_kind", "target", "variant"]
SETTING = ["experiment", "dataset", "model"]
CELL = SETTING + ["target_kind", "target"]
# The variant label of a method trained over its whole budget with no cut: the method's own
# unpruned reference ("Δacc vs own unpruned"), e.g. `rls@no_prune`.
NO_PRUNE = "no_prune"


def tidy(frame: pd.DataFrame, experiment_names: dict[str, str] | None = None) -> pd.DataFrame:
    """`Tracker.runs_frame` -> the report's frame: every run kept, derived columns in display units.

    Accuracies become percent, reductions percent, `delta_acc_pp` = final - base in percentage
    points, speed-ups are base / pruned per run (latency and MACs), so a mean over seeds is a
    mean of per-run ratios. `variant` falls back to `method` for runs logged without one."""
    df = frame.copy()
    names = experiment_names or {}
    if "experiment" not in df:
        ids = df["experiment_id"] if "experiment_id" in df else pd.Series("", index=df.index)
        df["experiment"] = [names.get(str(i), str(i)) for i in ids]
    for c in ("method_mode", "error"):
        df[c] = df[c].fillna("").astype(str) if c in df else ""

    def num(col: str) -> pd.Series:
        return pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(np.nan, index=df.index)

    for c in ("acc_base", "acc_pruned", "acc_final", "acc_val_pruned", "acc_val_final"):
        df[f"{c}_pct"] = 100 * num(c)
    df["delta_acc_pp"] = df["acc_final_pct"] - df["acc_base_pct"]
    df["macs_reduction_pct"] = 100 * num("macs_reduction")
    df["params_reduction_pct"] = 100 * num("params_reduction")
    df["macs_speedup_x"] = num("macs_base") / num("macs_pruned")
    df["params_speedup_x"] = num("params_base") / num("params_pruned")
    for dev in ("cpu", "gpu"):
        for b in (1, 64):
            df[f"speedup_{dev}_b{b}_x"] = num(f"latency_{dev}_b{b}_base_ms") / num(f"latency_{dev}_b{b}_pruned_ms")
    for c in ("prune_time_s", "finetune_time_s", "target", "target_met", "macs_pruned", "epochs_used", "budget_met",
              "latency_cpu_b1_pruned_ms", "latency_gpu_b1_pruned_ms"):
        df[c] = num(c)
    df["total_time_s"] = df["prune_time_s"] + df["finetune_time_s"]
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    for c in ("dataset", "model", "method", "target_kind", "status"):
        df[c] = df[c].fillna("?").astype(str)
    variant = df["variant"] if "variant" in df else pd.Series(None, index=df.index, dtype=object)
    df["variant"] = variant.where(variant.notna() & (variant.astype(str) != ""), df["method"]).astype(str)
    df["delta_acc_own_pp"] = df["acc_final_pct"] - own_unpruned_pct(df)
    return df.sort_values(KEYS + ["seed"], kind="stable").reset_index(drop=True)


OWN_KEY = ["experiment", "dataset", "model", "method", "seed"]


def own_unpruned_pct(df: pd.DataFrame) -> pd.Series:
    """Per run, the final accuracy (%) of its method's `<method>@no_prune` run on the same
    experiment, dataset, model and seed (the mean where it ran at several targets: it cuts nothing),
    so Δacc vs own unpruned is paired by seed. NaN for the no_prune runs themselves and where none
    finished: a net saved before the first cut (`acc_<method>_unpruned`) had less training than the
    pruned one, so it measures training, not pruning, and is never used instead."""
    own = df["method"] + "@" + NO_PRUNE
    ref = df[(df["status"] == "done") & (df["variant"] == own)]
    acc = ref.groupby(OWN_KEY)["acc_final_pct"].mean()
    values = acc.reindex(pd.MultiIndex.from_frame(df[OWN_KEY])).to_numpy() if len(acc) else np.nan
    return pd.Series(values, index=df.index, dtype=float).where(df["variant"] != own)


def pruning_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` without the `<method>@no_prune` references: they cut nothing, so they are not compared
    with the reference, ranked, or read as an ablation; they enter as Δacc vs own unpruned."""
    return runs[~runs["variant"].str.endswith("@" + NO_PRUNE)]


def lacking_own_reference(runs: pd.DataFrame) -> list[str]:
    """Methods among `runs` that have an unpruned net of their own (they log
    `acc_<method>_unpruned`, e.g. RLS, which trains from scratch) but no finished
    `<method>@no_prune` run to measure Δacc vs own unpruned against."""
    out = []
    for method, g in runs.groupby("method", sort=True):
        logged = f"acc_{method}_unpruned" in g and g[f"acc_{method}_unpruned"].notna().any()
        if logged and not ((g["variant"] == f"{method}@{NO_PRUNE}") & (g["status"] == "done")).any():
            out.append(method)
    return out


def load_widths(merged, runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per-layer widths from each finished run's `widths.json` artifact (long form), and the
    run labels whose artifact could not be read (listed in index.md instead of failing).
    `merged`: a bench.report.sources.Merged."""
    found, missing = merged.artifacts(runs, "widths.json")
    rows = [(rid, which, layer, pos, float(w)) for rid, data in found.items() for which in ("base", "pruned")
            for pos, (layer, w) in enumerate(data.get(which, {}).items())]
    return pd.DataFrame(rows, columns=["mlflow_run_id", "which", "layer", "position", "width"]), missing


def code_versions(runs: pd.DataFrame) -> str:
    """The git commit(s) the finished runs' code came from and whether the checkout had local
    changes (params `git_commit`, `git_dirty`), with how many runs each, so a number traces to its code."""
    done = runs[runs["status"] == "done"]

    def col(name: str) -> pd.Series:
        return done[name] if name in done else pd.Series(None, index=done.index, dtype=object)

    state = col("git_dirty").astype(str).str.lower().map({"false": "clean", "true": "uncommitted changes"})
    pairs = pd.DataFrame({"commit": col("git_commit").fillna("").astype(str).str[:12], "state": state.fillna("")})
    parts = [f"{n} runs with no commit recorded" if not c else f"git commit {c}" + (f" ({s})" if s else "")
             + f": {n} runs" for (c, s), n in pairs.value_counts(sort=False).sort_index().items()]
    return "Code of the finished runs: " + ("; ".join(parts) or "none finished") + "."


def run_label(r) -> str:
    return f"{r['variant']}/{r['dataset']}/{r['model']}/{target_label(r['target_kind'], r['target'])}/s{r['seed']}"


def target_label(kind: str, target: float, latex: bool = False) -> str:
    if pd.isna(target):
        return "?"
    name = "MACs" if kind == "macs" else str(kind)
    return f"{name} $-${target * 100:g}\\%" if latex else f"{name} −{target * 100:g}%"
