"""`python -m bench report`: MLflow runs -> one tidy DataFrame -> seed-aggregated tables, the
paper reproduction check (methods.md §7), figures and an `index.md` that puts them on one page.

Why this shape: the tidy frame (one row per run, every status kept) is the single source of every
table and figure, so each number can be traced back to the runs it averages. Runs that did not
finish stay in it: their cells show as missing and index.md lists them with the reason, so
nothing is dropped silently. Statistics are over seeds: mean, sample std (ddof=1), n, and the
95 % CI half-width from the t distribution (undefined for n < 2, shown as missing).
"""
from __future__ import annotations

import inspect
import json
import os
import platform
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from bench.errors import BenchError

KEYS = ["experiment", "dataset", "model", "target_kind", "target", "method"]
SETTING = ["experiment", "dataset", "model"]


@dataclass(frozen=True)
class Metric:
    """One aggregated quantity: a tidy-frame column (display units) and how tables show it."""

    key: str
    label: str          # Markdown / CSV header
    latex: str          # LaTeX header
    better: str | None  # "max", "min" or None (not ranked, e.g. the shared base accuracy)
    digits: int
    signed: bool = False  # a change: always show the sign


METRICS = [
    Metric("acc_base_pct", "Base acc (%)", r"Base acc (\%)", None, 2),
    Metric("acc_final_pct", "Final acc (%)", r"Final acc (\%)", "max", 2),
    Metric("delta_acc_pp", "Δacc (pp)", r"$\Delta$acc (pp)", "max", 2, signed=True),
    Metric("macs_reduction_pct", "MACs ↓ (%)", r"MACs $\downarrow$ (\%)", "max", 1),
    Metric("params_reduction_pct", "Params ↓ (%)", r"Params $\downarrow$ (\%)", "max", 1),
    Metric("speedup_cpu_b1_x", "CPU b1 speed-up (×)", r"CPU b1 speed-up ($\times$)", "max", 2),
    Metric("speedup_cpu_b64_x", "CPU b64 speed-up (×)", r"CPU b64 speed-up ($\times$)", "max", 2),
    Metric("speedup_gpu_b1_x", "GPU b1 speed-up (×)", r"GPU b1 speed-up ($\times$)", "max", 2),
    Metric("speedup_gpu_b64_x", "GPU b64 speed-up (×)", r"GPU b64 speed-up ($\times$)", "max", 2),
    # Only the total is ranked: a method that trains while pruning (RLS) has no separate fine-tune.
    Metric("prune_time_s", "Prune time (s)", "Prune time (s)", None, 1),
    Metric("finetune_time_s", "Fine-tune time (s)", "Fine-tune time (s)", None, 1),
    Metric("total_time_s", "Prune + fine-tune (s)", "Prune + fine-tune (s)", "min", 1),
]
GPU_METRICS = {"speedup_gpu_b1_x", "speedup_gpu_b64_x"}
# Aggregated as well (figures, reproduction check) but not table columns.
EXTRA_AGG = ["acc_pruned_pct", "macs_speedup_x", "params_speedup_x"]


# ---------------------------------------------------------------- loading


def tidy(frame: pd.DataFrame, experiment_names: dict[str, str] | None = None) -> pd.DataFrame:
    """`Tracker.runs_frame` -> the report's frame: every run kept, derived columns in display units.

    Accuracies become percent, reductions percent, `delta_acc_pp` = final - base in percentage
    points, speed-ups are base / pruned per run (latency and MACs), so a mean over seeds is a
    mean of per-run ratios."""
    df = frame.copy()
    names = experiment_names or {}
    if "experiment" not in df:
        ids = df["experiment_id"] if "experiment_id" in df else pd.Series("", index=df.index)
        df["experiment"] = [names.get(str(i), str(i)) for i in ids]
    for c in ("method_mode", "error"):
        df[c] = df[c].fillna("").astype(str) if c in df else ""

    def num(col: str) -> pd.Series:
        return pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(np.nan, index=df.index)

    for c in ("acc_base", "acc_pruned", "acc_final"):
        df[f"{c}_pct"] = 100 * num(c)
    df["delta_acc_pp"] = df["acc_final_pct"] - df["acc_base_pct"]
    df["macs_reduction_pct"] = 100 * num("macs_reduction")
    df["params_reduction_pct"] = 100 * num("params_reduction")
    df["macs_speedup_x"] = num("macs_base") / num("macs_pruned")
    df["params_speedup_x"] = num("params_base") / num("params_pruned")
    for dev in ("cpu", "gpu"):
        for b in (1, 64):
            df[f"speedup_{dev}_b{b}_x"] = num(f"latency_{dev}_b{b}_base_ms") / num(f"latency_{dev}_b{b}_pruned_ms")
    for c in ("prune_time_s", "finetune_time_s", "target", "target_met"):
        df[c] = num(c)
    df["total_time_s"] = df["prune_time_s"] + df["finetune_time_s"]
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    for c in ("dataset", "model", "method", "target_kind", "status"):
        df[c] = df[c].fillna("?").astype(str)
    return df.sort_values(KEYS + ["seed"], kind="stable").reset_index(drop=True)


def load_runs(tracker, experiment: str | None = None) -> pd.DataFrame:
    """All runs of one experiment (or all experiments) as the tidy frame."""
    frame = tracker.runs_frame(experiment)
    names = {e.experiment_id: e.name for e in tracker.client.search_experiments()}
    return tidy(frame, names)


RLS_EVENT_KEYS = ("rls/prune_epoch", "rls/val_acc_after_prune")


def load_curves(tracker, runs: pd.DataFrame) -> pd.DataFrame:
    """Stepped metrics of the finished runs: every `<phase>/val_acc` and the RLS prune events
    (`rls/prune_epoch`, `rls/val_acc_after_prune`, step = event number).

    Returns long form: mlflow_run_id, key, step, value, timestamp (ms)."""
    rows = []
    done = runs[runs["status"] == "done"]
    keys = [c for c in runs.columns if c.endswith("/val_acc") or c in RLS_EVENT_KEYS]
    for _, r in done.iterrows():
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
    return f"{r['method']}/{r['dataset']}/{r['model']}/{target_label(r['target_kind'], r['target'])}/s{r['seed']}"


def target_label(kind: str, target: float, latex: bool = False) -> str:
    if pd.isna(target):
        return "?"
    name = "MACs" if kind == "macs" else str(kind)
    return f"{name} $-${target * 100:g}\\%" if latex else f"{name} −{target * 100:g}%"


# ---------------------------------------------------------------- statistics


def summarize(values: Iterable[float]) -> tuple[float, float, int, float]:
    """(mean, sample std, n, 95 % CI half-width via t) of the finite values; NaN where undefined."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return np.nan, np.nan, 0, np.nan
    if n == 1:
        return float(v[0]), np.nan, 1, np.nan
    std = float(v.std(ddof=1))
    return float(v.mean()), std, n, float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n))


def aggregate(runs: pd.DataFrame, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per (experiment, dataset, model, target, method): counts of runs by status and
    `<col>_mean/_std/_n/_ci95` over the finished runs' seeds. Groups with no finished run keep
    their row (all statistics NaN) so tables can show them as missing."""
    columns = list(columns or [m.key for m in METRICS] + EXTRA_AGG)
    rows = []
    for key, g in runs.groupby(KEYS, dropna=False, sort=True):
        done = g[g["status"] == "done"]
        row = dict(zip(KEYS, key))
        row["runs"] = len(g)
        row["done"] = len(done)
        row["seeds"] = ",".join(str(s) for s in sorted(done["seed"].dropna().unique()))
        other = g.loc[g["status"] != "done", "status"].value_counts()
        row["not_done"] = ", ".join(f"{n} {s}" for s, n in other.items())
        row["target_met"] = int(done["target_met"].fillna(0).sum()) if "target_met" in done else 0
        modes = sorted(set(g["method_mode"]) - {""})
        row["method_mode"] = ",".join(modes)
        for c in columns:
            mean, std, n, ci = summarize(done[c] if c in done else [])
            row.update({f"{c}_mean": mean, f"{c}_std": std, f"{c}_n": n, f"{c}_ci95": ci})
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables


def _tex(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", str(text)).replace("~", r"\textasciitilde{}")


@dataclass
class Table:
    """One dataset x model table: numbers (CSV) and the rendered cells with best values marked."""

    setting: tuple[str, str, str]
    numbers: pd.DataFrame              # target, method, <metric>_{mean,std,n,ci95}, runs, best
    metrics: list[Metric]
    best: dict[tuple[int, str], bool] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(self.setting))

    def _rows(self, latex: bool) -> tuple[list[str], list[list[str]]]:
        pm = r" $\pm$ " if latex else " ± "
        esc = _tex if latex else (lambda s: str(s).replace("|", "\\|"))
        header = ["Target", "Method"] + [m.latex if latex else m.label for m in self.metrics] + ["Runs"]
        body = []
        for i, r in self.numbers.iterrows():
            cells = [target_label(r["target_kind"], r["target"], latex), esc(r["method_label"])]
            for m in self.metrics:
                mean, std = r[f"{m.key}_mean"], r[f"{m.key}_std"]
                if pd.isna(mean):
                    cells.append("--" if latex else "–")
                    continue
                text = f"{mean:{'+' if m.signed else ''}.{m.digits}f}"
                if pd.notna(std):
                    text += f"{pm}{std:.{m.digits}f}"
                if self.best.get((i, m.key)):
                    text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
                cells.append(text)
            cells.append(esc(r["runs_text"]))
            body.append(cells)
        return header, body

    def markdown(self) -> str:
        header, body = self._rows(latex=False)
        align = ["---", "---"] + ["---:"] * len(self.metrics) + ["---"]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        header, body = self._rows(latex=True)
        df = pd.DataFrame(body, columns=header)
        caption = (f"{_tex(self.setting[1])} / {_tex(self.setting[2])} (experiment {_tex(self.setting[0])}): "
                   r"mean $\pm$ sample std over seeds; best per target in bold.")
        return df.to_latex(index=False, escape=False, column_format="ll" + "r" * len(self.metrics) + "l",
                           caption=caption, label=f"tab:{self.stem}")

    def csv_frame(self) -> pd.DataFrame:
        keep = ["experiment", "dataset", "model", "target_kind", "target", "method", "method_mode",
                "runs", "done", "not_done", "target_met", "seeds"]
        stat = [f"{m.key}_{s}" for m in self.metrics for s in ("mean", "std", "n", "ci95")]
        out = self.numbers[keep + stat].copy()
        out["best"] = [";".join(m.key for m in self.metrics if self.best.get((i, m.key))) for i in out.index]
        return out


def build_tables(summary: pd.DataFrame, with_gpu: bool) -> list[Table]:
    """One table per (experiment, dataset, model); methods (per target) as rows.

    Best value per column and target is marked when at least two methods have a value; ties at
    the displayed precision are all marked, unless every method ties."""
    metrics = [m for m in METRICS if with_gpu or m.key not in GPU_METRICS]
    tables = []
    for setting, g in summary.groupby(SETTING, sort=True):
        g = g.sort_values(["target_kind", "target", "method"]).reset_index(drop=True)
        g["method_label"] = [m + (f" [{mode}]" if mode else "") for m, mode in zip(g["method"], g["method_mode"])]
        g["runs_text"] = [f"{d}/{n}" + (f" ({nd})" if nd else "") + (f", target met {t}/{d}" if d else "")
                          for d, n, nd, t in zip(g["done"], g["runs"], g["not_done"], g["target_met"])]
        best = {}
        for _, tg in g.groupby(["target_kind", "target"]):
            for m in metrics:
                if m.better is None:
                    continue
                vals = tg[f"{m.key}_mean"].round(m.digits).dropna()
                if len(vals) < 2:
                    continue
                top = vals.max() if m.better == "max" else vals.min()
                winners = vals.index[vals == top]
                if len(winners) < len(vals):  # a column where everyone ties says nothing
                    best.update({(i, m.key): True for i in winners})
        tables.append(Table(tuple(setting), g, metrics, best))
    return tables


# ---------------------------------------------------------------- reproduction (methods.md §7)


@dataclass(frozen=True)
class PaperResult:
    """One row of methods.md §7. `delta_pp` = pruned - baseline accuracy in percentage points.

    `aliases` are the registry names (lower-case, non-alphanumerics removed) that implement the
    method; `model` is (bench.models name, args) of the paper's network, None when the suite has
    no such network or dataset."""

    ref: str
    method: str
    aliases: tuple[str, ...]
    setting: str
    dataset: str | None
    model: tuple[str, tuple] | None
    base: float | None = None
    pruned: float | None = None
    delta_pp: float | None = None
    flops_pct: float | None = None
    params_pct: float | None = None
    source: str = ""
    note: str = ""


RLS, PLS, CSGD = ("rls",), ("pls", "plsvip", "vip"), ("csgd", "centripetal", "centripetalsgd")
RL, L1, MAPEX = ("rl", "rlagent", "rlpruning"), ("magnitude", "l1", "l1norm"), ("mapex", "featuremap")
PAPER_RESULTS = [
    PaperResult("1", "RLS", RLS, "arXiv: MNIST / CIFAR-10 / SVHN (models n/f)", None, None, source="[A]",
                note="qualitative only (\"small or no acc. loss\"); numbers n/f"),
    PaperResult("1j", "RLS (journal)", RLS, "VGG-16, ResNet-50 / CIFAR-10/100; 3-layer FNN / MNIST", None, None,
                source="[A]", note="numbers n/f"),
    PaperResult("2", "PLS+VIP", PLS, "ResNet-56 / CIFAR-10 (it=8)", "cifar10", ("resnet56", ()),
                delta_pp=0.62, flops_pct=52.56, source="[R] README"),
    PaperResult("2", "PLS+VIP", PLS, "ResNet-50 / ImageNet (it=10)", "imagenet", ("resnet50", ()),
                delta_pp=-1.01, flops_pct=44.50, source="[R] README"),
    PaperResult("3", "C-SGD", CSGD, "ResNet-56 / CIFAR-10 (to 5/8 width)", "cifar10", ("resnet56", ()),
                93.39, 93.44, 0.05, 60.8, source="[S]"),
    *[PaperResult("3j", "C-SGD (journal)", CSGD, "ResNet-50 / ImageNet", "imagenet", ("resnet50", ()),
                  76.15, p, round(p - 76.15, 2), f, source="[R] README")
      for p, f in ((75.94, 36.0), (75.80, 46.0), (75.29, 56.0))],
    PaperResult("4", "RL agent", RL, "VGG-16 / CIFAR-10 (suite choice)", "cifar10", ("vgg", (("depth", 16),)),
                source="suite", note="numbers n/f; report a b-sweep"),
    PaperResult("5a", "L1", L1, "VGG-16-A / CIFAR-10", "cifar10", ("vgg", (("depth", 16),)),
                93.25, 93.40, 0.15, 34.2, 64.0, source="[R]"),
    PaperResult("5a", "L1", L1, "ResNet-56-B / CIFAR-10", "cifar10", ("resnet56", ()),
                93.04, 93.06, 0.02, 27.6, 13.7, source="[R]"),
    PaperResult("5a", "L1", L1, "ResNet-110-B / CIFAR-10", "cifar10", ("resnet110", ()),
                93.53, 93.30, -0.23, 38.6, 32.4, source="[R]"),
    PaperResult("6", "Map-EX", MAPEX, "not found", None, None, source="[X]", note="paper numbers n/f; 'adapted'"),
]
RED_TOL_PP = 3.0  # methods.md §7: reduction within ±3 pp of the paper's


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def parse_model_label(label: str) -> tuple[str, dict[str, float]]:
    """`vgg-depth11-width0.25` -> ("vgg", {"depth": 11.0, "width": 0.25}) with the model's defaults
    filled in (RunSpec.model_label writes only the args given in the config)."""
    from bench.models import MODELS

    name, *parts = str(label).split("-")
    args: dict[str, float] = {}
    if name in MODELS:
        for p in inspect.signature(MODELS[name]).parameters.values():
            if p.name not in ("in_channels", "input_size", "num_classes") and isinstance(p.default, (int, float)):
                args[p.name] = float(p.default)
    for p in parts:
        m = re.fullmatch(r"([a-z_]+)(.+)", p)
        if m:
            try:
                args[m.group(1)] = float(m.group(2))
            except ValueError:
                args[m.group(1)] = m.group(2)
    return name, args


def _paper_model(model: tuple[str, tuple]) -> tuple[str, dict[str, float]]:
    name, given = model
    _, args = parse_model_label(name)
    args.update({k: float(v) for k, v in given})
    return name, args


def reproduction(summary: pd.DataFrame) -> pd.DataFrame:
    """Paper numbers beside ours, one row per §7 result (and per matching run group).

    A group covers a result when method, dataset and full paper model match and the run's target
    is within ±3 pp of the paper's reduction of the same kind (MACs vs FLOPs, params vs params).
    Pass = |our Δacc - paper Δacc| <= 0.5 pp (1.0 on ImageNet) and our reduction of the targeted
    kind within ±3 pp of the paper's; the other reduction is shown, not checked, because the
    harness sizes each cut to one target only."""
    from bench.datasets import DATASETS
    from bench.models import MODELS

    rows = []
    ok = summary[summary["done"] > 0]
    for p in PAPER_RESULTS:
        base = {"ref": p.ref, "paper_method": p.method, "paper_setting": p.setting, "source": p.source,
                "paper_base": p.base, "paper_pruned": p.pruned, "paper_delta_pp": p.delta_pp,
                "paper_flops_red_pct": p.flops_pct, "paper_params_red_pct": p.params_pct}
        ours = ok[np.array([_norm(m) in p.aliases for m in ok["method"]], dtype=bool)]
        if p.delta_pp is None:
            rows.append({**base, "result": "not checked", "note": p.note + (
                f"; our runs are in the method tables ({len(ours)} groups)" if len(ours) else "")})
            continue
        if p.dataset not in DATASETS:
            rows.append({**base, "result": "not covered", "note": f"{p.dataset} is not in the suite"})
            continue
        if p.model[0] not in MODELS:
            rows.append({**base, "result": "not covered", "note": f"no {p.model[0]} in bench.models"})
            continue
        if not len(ours):
            rows.append({**base, "result": "not covered", "note": f"no finished runs of {p.method}"})
            continue
        want = _paper_model(p.model)
        same_model = np.array([parse_model_label(m) == want for m in ours["model"]], dtype=bool)
        same = ours[(ours["dataset"] == p.dataset).to_numpy() & same_model]
        if not len(same):
            ran = ", ".join(sorted(set(ours["model"] + "/" + ours["dataset"])))
            rows.append({**base, "result": "not covered",
                         "note": f"not run on the paper's full-size model and data (ran: {ran})"})
            continue
        paper_red = {"macs": p.flops_pct, "params": p.params_pct}
        near = same[np.array([paper_red.get(k) is not None and abs(100 * t - paper_red[k]) <= RED_TOL_PP
                              for k, t in zip(same["target_kind"], same["target"])], dtype=bool)]
        if not len(near):
            ran = ", ".join(sorted({target_label(k, t) for k, t in zip(same["target_kind"], same["target"])}))
            rows.append({**base, "result": "not covered",
                         "note": f"targets run ({ran}) not within ±{RED_TOL_PP:g} pp of the paper's reduction"})
            continue
        tol = 1.0 if p.dataset == "imagenet" else 0.5
        for _, r in near.iterrows():
            red_key = "macs_reduction_pct" if r["target_kind"] == "macs" else "params_reduction_pct"
            d_acc = r["delta_acc_pp_mean"]
            d_red = r[f"{red_key}_mean"] - paper_red[r["target_kind"]]
            passed = abs(d_acc - p.delta_pp) <= tol and abs(d_red) <= RED_TOL_PP
            rows.append({**base, "experiment": r["experiment"], "method": r["method"], "model": r["model"],
                         "target": target_label(r["target_kind"], r["target"]), "n": int(r["done"]),
                         "our_base": r["acc_base_pct_mean"], "our_final": r["acc_final_pct_mean"],
                         "our_delta_pp": d_acc, "our_macs_red_pct": r["macs_reduction_pct_mean"],
                         "our_params_red_pct": r["params_reduction_pct_mean"],
                         "result": "pass" if passed else "fail",
                         "note": f"Δacc within ±{tol:g} pp and {red_key.split('_')[0]} reduction within "
                                 f"±{RED_TOL_PP:g} pp: {abs(d_acc - p.delta_pp):.2f} / {abs(d_red):.1f} pp off"})
    cols = ["ref", "paper_method", "paper_setting", "source", "paper_base", "paper_pruned", "paper_delta_pp",
            "paper_flops_red_pct", "paper_params_red_pct", "experiment", "method", "model", "target", "n",
            "our_base", "our_final", "our_delta_pp", "our_macs_red_pct", "our_params_red_pct", "result", "note"]
    return pd.DataFrame(rows).reindex(columns=cols)


def reproduction_markdown(rep: pd.DataFrame) -> str:
    def f(v, d=2):
        return "–" if v is None or pd.isna(v) else f"{v:.{d}f}"

    lines = ["| # | Paper result | Paper base → pruned | Paper Δacc (pp) | Paper FLOPs↓ / params↓ (%) "
             "| Ours (method, model, target, n) | Our Δacc (pp) | Our MACs↓ / params↓ (%) | Result | Note |",
             "|---|---|---|---:|---|---|---:|---|---|---|"]
    for _, r in rep.iterrows():
        ours = "–" if pd.isna(r["method"]) else f"{r['method']}, {r['model']}, {r['target']}, n={int(r['n'])}"
        lines.append(" | ".join([
            f"| {r['ref']}", f"{r['paper_method']}: {r['paper_setting']} {r['source']}",
            f"{f(r['paper_base'])} → {f(r['paper_pruned'])}", f(r["paper_delta_pp"]),
            f"{f(r['paper_flops_red_pct'], 1)} / {f(r['paper_params_red_pct'], 1)}", ours, f(r["our_delta_pp"]),
            f"{f(r['our_macs_red_pct'], 1)} / {f(r['our_params_red_pct'], 1)}", f"**{r['result']}**",
            str(r["note"]).replace("|", "\\|") + " |"]))
    return "\n".join(lines) + "\n"


def reproduction_latex(rep: pd.DataFrame) -> str:
    def f(v, d=2):
        return "--" if v is None or pd.isna(v) else f"{v:.{d}f}"

    body = [[_tex(r["ref"]), _tex(f"{r['paper_method']}: {r['paper_setting']}"), f(r["paper_delta_pp"]),
             f(r["paper_flops_red_pct"], 1), f(r["paper_params_red_pct"], 1), f(r["our_delta_pp"]),
             f(r["our_macs_red_pct"], 1), f(r["our_params_red_pct"], 1), _tex(r["result"])]
            for _, r in rep.iterrows()]
    cols = ["\\#", "Paper result", r"Paper $\Delta$acc", r"Paper FLOPs$\downarrow$", r"Paper params$\downarrow$",
            r"Our $\Delta$acc", r"Our MACs$\downarrow$", r"Our params$\downarrow$", "Result"]
    return pd.DataFrame(body, columns=cols).to_latex(
        index=False, escape=False, column_format="ll" + "r" * 6 + "l", label="tab:reproduction",
        caption=r"Reproduction check (methods.md \S7): accuracy change in pp, reductions in \%.")


# ---------------------------------------------------------------- the report


def hardware() -> str:
    """This machine, for the index page (runs do not record the machine they ran on)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    return (f"{platform.platform()}; {cpu}, {os.cpu_count()} logical CPUs; {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


@dataclass
class ReportFiles:
    out: Path
    index: Path
    tables: list[Path]
    figures: list[Path]


def _fmt_list(values) -> str:
    return ", ".join(str(v) for v in values) if len(values) else "none"


def build_report(results_dir: str | os.PathLike = "results", experiment: str | None = None,
                 out: str | os.PathLike | None = None, uri: str | None = None) -> ReportFiles:
    """Read the runs, write tables (CSV/MD/TeX), figures (PNG/PDF) and index.md into `out`."""
    from bench import report_figures as rf
    from bench.tracking import Tracker, may_hold_runs

    if not (uri or may_hold_runs(results_dir)):
        raise BenchError(f"no MLflow store at {Path(results_dir) / 'mlflow.db'}; pass the --results-dir a grid "
                         "wrote to, or set MLFLOW_TRACKING_URI")
    tracker = Tracker(results_dir, uri=uri)
    if experiment and tracker.client.get_experiment_by_name(experiment) is None:
        names = sorted(e.name for e in tracker.client.search_experiments())
        raise BenchError(f"experiment '{experiment}' not found at {tracker.uri}; there: {_fmt_list(names)}")
    runs = load_runs(tracker, experiment)
    if runs.empty:
        raise BenchError(f"no runs found at {tracker.uri}" + (f" in experiment '{experiment}'" if experiment else "")
                         + "; run a grid first, e.g. python -m bench run configs/quick.yaml")
    out = Path(out or Path("reports") / (experiment or "all"))
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)

    summary = aggregate(runs)
    with_gpu = bool(runs[["speedup_gpu_b1_x", "speedup_gpu_b64_x"]].notna().any().any())
    tables = build_tables(summary, with_gpu)
    rep = reproduction(summary)
    curves = load_curves(tracker, runs)
    widths, no_widths = load_widths(tracker, runs)

    keep = [c for c in runs.columns if "/" not in c]  # stepped metrics live in curves, not here
    runs[keep].to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    written: list[Path] = [out / "runs.csv", out / "summary.csv"]
    for t in tables:
        paths = [out / "tables" / f"{t.stem}.{ext}" for ext in ("csv", "md", "tex")]
        t.csv_frame().to_csv(paths[0], index=False)
        paths[1].write_text(t.markdown())
        paths[2].write_text(t.latex())
        written += paths
    rep.to_csv(out / "tables" / "reproduction.csv", index=False)
    (out / "tables" / "reproduction.md").write_text(reproduction_markdown(rep))
    (out / "tables" / "reproduction.tex").write_text(reproduction_latex(rep))
    written += [out / "tables" / f"reproduction.{e}" for e in ("csv", "md", "tex")]

    style = rf.Style.for_runs(runs)
    figures = rf.draw_all(runs, curves, widths, style)
    fig_paths = []
    for name, (fig, _) in figures.items():
        fig_paths += rf.save(fig, out / "figures" / name)
    (out / "index.md").write_text(_index(runs, tables, rep, figures, tracker.uri, experiment, no_widths))
    return ReportFiles(out, out / "index.md", written, fig_paths)


def _index(runs: pd.DataFrame, tables: list[Table], rep: pd.DataFrame,
           figures: dict, uri: str, experiment: str | None, no_widths: list[str]) -> str:
    counts = runs["status"].value_counts()
    exps = sorted(runs["experiment"].unique())
    seeds = sorted(int(s) for s in runs["seed"].dropna().unique())
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python -m bench report" + (f" --experiment {experiment}" if experiment else "")
    lines = [
        f"# prunebench report: {experiment or 'all experiments'}", "",
        f"- Built {now} by `{cmd}` from the MLflow store `{uri}`.",
        f"- Experiment(s): {_fmt_list(exps)}; {len(runs)} runs ("
        + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"); seeds {_fmt_list(seeds)}; "
        f"methods {_fmt_list(sorted(runs['method'].unique()))}.",
        f"- Report machine: {hardware()}. Latencies were measured on the machine that ran each cell "
        "(CPU: median of repeats at batch 1 and 64, after warm-up).",
        "- Numbers: mean ± sample std over seeds of the finished runs; accuracies are top-1 on the held-out "
        "test split, in %; Δacc = final − base (the shared SGD-trained base, also for methods that train "
        "from scratch) in percentage points; speed-up = base / pruned per run; times exclude the base's "
        "pretraining. "
        "The CSV files add n and the 95 % CI half-width (t distribution). Best value per target in bold "
        "(only where ≥ 2 methods have a value and not all tie). `–` = no finished run for that cell. "
        "`Runs` = finished/total (why the rest did not finish), and how many finished runs met the target.",
        "", "## Tables (methods as rows)", "",
    ]
    for t in tables:
        exp, ds, model = t.setting
        lines += [f"### {ds} / {model}" + (f" (experiment {exp})" if len(exps) > 1 else ""), "",
                  t.markdown(), f"Files: [CSV](tables/{t.stem}.csv), [Markdown](tables/{t.stem}.md), "
                  f"[LaTeX](tables/{t.stem}.tex) (booktabs).", ""]
    covered = rep[rep["result"].isin(["pass", "fail"])]
    n_cov = len(covered.drop_duplicates(["ref", "paper_setting", "paper_delta_pp"]))
    lines += [
        "## Reproduction of paper results (methods.md §7)", "",
        f"{n_cov} of {len(PAPER_RESULTS)} paper results are covered by these runs. A result is covered only "
        "when the same method ran on the paper's full-size model and dataset at a target within ±3 pp of the "
        "paper's reduction; pass = Δacc within ±0.5 pp (±1.0 pp on ImageNet) of the paper's and the targeted "
        "reduction within ±3 pp. The quick and smoke presets use small models (LeNet-5, narrow VGG-11) on "
        "subsets with a few epochs, so most rows are correctly `not covered` there; `not checked` = the paper "
        "gives no numbers (n/f).", "",
        reproduction_markdown(rep),
        "Files: [CSV](tables/reproduction.csv), [LaTeX](tables/reproduction.tex).", "", "## Figures", "",
    ]
    for name, (_, caption) in figures.items():
        lines += [f"### {caption.split('.')[0]}", "", f"![{name}](figures/{name}.png)", "",
                  caption + f" [PDF](figures/{name}.pdf)", ""]
    if "rls" not in figures:
        lines += ["No RLS runs in this report, so the RLS accuracy-vs-epoch figure is not drawn.", ""]
    lines += ["## Runs that did not finish", ""]
    bad = runs[runs["status"] != "done"]
    if bad.empty:
        lines.append("All runs finished.")
    else:
        lines += [f"{len(bad)} runs did not finish; their cells are shown as missing above. "
                  "Runs with the same status and reason are listed together; `runs.csv` has one row per run.", "",
                  "| Status | Runs (method/dataset/model/target/seed) | Reason |", "|---|---|---|"]
        reasons = [" ".join(str(e).split()) or "(no reason recorded: killed, or still running)" for e in bad["error"]]
        for (status, reason), g in bad.assign(reason=reasons).groupby(["status", "reason"], sort=False):
            labels = "<br>".join(run_label(r) for _, r in g.iterrows())
            lines.append(f"| {status} ({len(g)}) | {labels} | {reason.replace('|', chr(92) + '|')} |")
    if no_widths:
        lines += ["", "Runs without a readable `widths.json` (left out of the width figure): " + "; ".join(no_widths)]
    return "\n".join(lines) + "\n"
