"""Loading for the report: MLflow runs -> one tidy DataFrame, one row per run, every status kept.

The tidy frame is the single source of every table, statistic and figure, so each number traces
back to the runs it averages. Runs that did not finish stay in it (their cells show as missing).
Rows are *variants* (`method@label`, or the plain method name): the `variant` column is the row
name everywhere; `method` stays the plugin name.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

# One aggregated row per cell of the grid and row name.
KEYS = ["experiment", "dataset", "model", "target_kind", "target", "variant"]
SETTING = ["experiment", "dataset", "model"]
CELL = SETTING + ["target_kind", "target"]


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
    # A method's own unpruned net (`Task.save_reference("<name>_unpruned")`, e.g. RLS): 2nd Δacc reference
    own = [c for c in df.columns if c.startswith("acc_") and c.endswith("_unpruned")]
    own_acc = pd.concat([num(c) for c in own], axis=1).bfill(axis=1).iloc[:, 0] if own else num("acc_own_unpruned")
    df["delta_acc_own_pp"] = df["acc_final_pct"] - 100 * own_acc
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
    return df.sort_values(KEYS + ["seed"], kind="stable").reset_index(drop=True)


def load_runs(tracker, experiment: str | None = None) -> pd.DataFrame:
    """All runs of one experiment (or all experiments) as the tidy frame."""
    frame = tracker.runs_frame(experiment)
    names = {e.experiment_id: e.name for e in tracker.client.search_experiments()}
    return tidy(frame, names)


def load_curves(tracker, runs: pd.DataFrame) -> pd.DataFrame:
    """Every stepped metric (a name with a `/`: `<phase>/val_acc` curves and whatever a plugin
    logs under its own prefix) of the finished runs, in long form: mlflow_run_id, key, step,
    value, timestamp (ms). Plugins read their own keys from it in `Method.report_extras`."""
    rows = []
    keys = [c for c in runs.columns if "/" in c]
    for _, r in runs[runs["status"] == "done"].iterrows():
        for key in keys:
            if pd.isna(r.get(key)):
                continue
            for m in tracker.client.get_metric_history(r["mlflow_run_id"], key):
                rows.append((r["mlflow_run_id"], key, int(m.step), float(m.value), int(m.timestamp)))
    return pd.DataFrame(rows, columns=["mlflow_run_id", "key", "step", "value", "timestamp"])


def load_widths(tracker, runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per-layer widths from each finished run's `widths.json` artifact (long form), and the
    run labels whose artifact could not be read (listed in index.md instead of failing)."""
    rows, missing = [], []
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run is noise
    with tempfile.TemporaryDirectory() as tmp:
        for _, r in runs[runs["status"] == "done"].iterrows():
            rid = r["mlflow_run_id"]
            try:
                path = tracker.client.download_artifacts(rid, "widths.json", os.path.join(tmp, rid))
                data = json.loads(Path(path).read_text())
            except Exception as e:  # a run logged by an older harness, or a lost artifact store
                missing.append(f"{run_label(r)}: {type(e).__name__}")
                continue
            for which in ("base", "pruned"):
                for pos, (layer, w) in enumerate(data.get(which, {}).items()):
                    rows.append((rid, which, layer, pos, float(w)))
    return pd.DataFrame(rows, columns=["mlflow_run_id", "which", "layer", "position", "width"]), missing


def run_label(r) -> str:
    return f"{r['variant']}/{r['dataset']}/{r['model']}/{target_label(r['target_kind'], r['target'])}/s{r['seed']}"


def target_label(kind: str, target: float, latex: bool = False) -> str:
    if pd.isna(target):
        return "?"
    name = "MACs" if kind == "macs" else str(kind)
    return f"{name} $-${target * 100:g}\\%" if latex else f"{name} −{target * 100:g}%"
