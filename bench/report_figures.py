"""The report's figures: one seaborn style, the colour-blind palette, one colour and marker per
method in every figure. Each function returns a matplotlib Figure (no pyplot state), so tests can
inspect the Axes before anything is saved.

Inputs are the report's tidy runs frame (bench.report.tidy), the long curves frame
(mlflow_run_id, key, step, value, timestamp) and the long widths frame (mlflow_run_id, which,
layer, position, width). Only finished runs are drawn; a dataset x model with none gets an empty
panel that says why, rather than disappearing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bench.report import SETTING, summarize, target_label

RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.1),
      "axes.titlesize": 10, "legend.frameon": False, "pdf.fonttype": 42, "ps.fonttype": 42}
MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "h", "<"]
BASE_COLOR = "black"


@dataclass
class Style:
    """Fixed colour and marker per method, shared by every figure of a report."""

    colors: dict[str, tuple]
    markers: dict[str, str]
    multi_experiment: bool = False

    @classmethod
    def for_runs(cls, runs: pd.DataFrame) -> "Style":
        """Registry order (RLS, the suite's primary method, first), so a method keeps its colour
        across reports of this codebase; methods no longer registered follow."""
        try:
            from bench.registry import method_names
            names = sorted(method_names(), key=lambda n: (n != "rls", n))
        except Exception:  # a broken plugin must not stop a report of finished runs
            names = []
        names += sorted(set(runs["method"]) - set(names))
        pal = sns.color_palette("colorblind", 10)
        # Most distinct hues first; 7 (grey) is left out: greys and black mark the unpruned base.
        pal = [pal[i] for i in (0, 2, 1, 4, 9, 3, 6, 8, 5)]
        colors = {m: pal[i % len(pal)] for i, m in enumerate(names)}
        markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(names)}
        return cls(colors, markers, runs["experiment"].nunique() > 1)

    def title(self, setting: tuple, target: tuple | None = None) -> str:
        exp, ds, model = setting
        text = f"{ds} / {model}" + (f", {target_label(*target)}" if target else "")
        return text + (f"\n[{exp}]" if self.multi_experiment else "")


def _grid(n: int, ncols: int, w: float, h: float) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _legend(fig: Figure, axes) -> None:
    """One legend for the whole figure, below the panels, so it never covers data."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        n = len(seen)
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=n if n <= 4 else math.ceil(n / 2))


def _empty(ax, g: pd.DataFrame, what: str = "no finished runs") -> None:
    counts = g["status"].value_counts()
    ax.text(0.5, 0.5, what + "\n(" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")",
            ha="center", va="center", transform=ax.transAxes, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _settings(runs: pd.DataFrame, by_target: bool = False) -> list[tuple[tuple, pd.DataFrame]]:
    keys = SETTING + (["target_kind", "target"] if by_target else [])
    return [(tuple(k), g) for k, g in runs.groupby(keys, sort=True)]


def _line_band(ax, x, mean, ci, color, **kw) -> None:
    """Mean line with a 95 % CI band; single points get an error bar instead of a band."""
    x, mean, ci = map(np.asarray, (x, mean, ci))
    ax.plot(x, mean, color=color, **kw)
    ok = np.isfinite(ci)
    if len(x) > 1 and ok.all():
        ax.fill_between(x, mean - ci, mean + ci, color=color, alpha=0.2, lw=0)
    elif ok.any():
        ax.errorbar(x[ok], mean[ok], yerr=ci[ok], fmt="none", ecolor=color, capsize=3, lw=1)


def _focus_y(ax, values, top: float = 100.5) -> None:
    """Keep the means in view when a CI band is huge (n = 2 gives t = 12.7): the band is clipped
    at a few points beyond the data rather than stretching the axis past 100 % accuracy."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return
    pad = max(1.0, 0.15 * (v.max() - v.min()))
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, v.min() - 4 * pad), min(hi, v.max() + 4 * pad, top))


def _base_acc(done: pd.DataFrame) -> float:
    """Mean base accuracy over seeds (each seed's base is shared by all methods and targets)."""
    return summarize(done.drop_duplicates("seed")["acc_base_pct"])[0]


def tradeoff(runs: pd.DataFrame, style: Style) -> Figure:
    """Final accuracy vs achieved MACs reduction, one panel per dataset x model."""
    groups = _settings(runs)
    fig, axes = _grid(len(groups), 3, 4.2, 3.4)
    for ax, (setting, g) in zip(axes, groups):
        ax.set_title(style.title(setting))
        done = g[g["status"] == "done"]
        if done.empty:
            _empty(ax, g)
            continue
        means = [_base_acc(done)]
        for method, mg in done.groupby("method"):
            pts = sorted((summarize(tg["macs_reduction_pct"])[0], *summarize(tg["acc_final_pct"])[::3])
                         for _, tg in mg.groupby(["target_kind", "target"]))
            xs, ys, cis = zip(*pts)
            means += ys
            _line_band(ax, xs, ys, cis, style.colors[method], marker=style.markers[method], label=method)
        ax.axhline(means[0], color=BASE_COLOR, ls="--", lw=1, label="unpruned base (mean over seeds)")
        _focus_y(ax, means)
        lo, hi = ax.get_xlim()
        if hi - lo < 10:  # one target: do not blow a 0.1 pp spread of achieved reductions up to full width
            mid = (lo + hi) / 2
            ax.set_xlim(mid - 5, mid + 5)
        ax.set_xlabel("MACs reduction (%)")
        ax.set_ylabel("top-1 test accuracy (%)")
    _legend(fig, axes)
    return fig


def _log_err(v: np.ndarray, ci: np.ndarray) -> np.ndarray:
    """Asymmetric error bars that stay positive on a log axis (a CI reaching below 0 is cut)."""
    ci = np.nan_to_num(ci)
    return np.vstack([np.minimum(ci, 0.95 * v), ci])


LATENCY_PANELS = [("cpu", 1), ("cpu", 64), ("gpu", 1), ("gpu", 64)]


def latency(runs: pd.DataFrame, style: Style) -> Figure | None:
    """Measured latency speed-up vs MACs speed-up (both base / pruned, log axes so one noisy
    latency cannot squash the rest), one panel per device x batch."""
    done = runs[runs["status"] == "done"]
    panels = [(d, b) for d, b in LATENCY_PANELS if done[f"speedup_{d}_b{b}_x"].notna().any()]
    if not panels:
        return None
    fig, axes = _grid(len(panels), 2, 3.8, 3.6)
    for ax, (dev, b) in zip(axes, panels):
        col = f"speedup_{dev}_b{b}_x"
        allv = [1.0]
        for method, mg in done.groupby("method"):
            pts = [(*summarize(g["macs_speedup_x"])[::3], *summarize(g[col])[::3])
                   for _, g in mg.groupby(SETTING + ["target_kind", "target"])]
            x, xci, y, yci = map(np.asarray, zip(*pts))
            allv += [v for v in np.concatenate([x, y]) if np.isfinite(v) and v > 0]
            ax.errorbar(x, y, xerr=_log_err(x, xci), yerr=_log_err(y, yci), fmt=style.markers[method],
                        color=style.colors[method], ms=6, capsize=2, lw=1, label=method)
        lo, hi = min(allv) / 1.15, max(allv) * 1.15
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axline((1, 1), (2, 2), color=BASE_COLOR, ls=":", lw=1, label="y = x (latency follows MACs)")
        for axis in (ax.xaxis, ax.yaxis):  # ratios: log axes, plain tick labels (0.5, 1, 2, 5 ...)
            axis.set_major_locator(mpl.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(f"{dev.upper()}, batch {b}")
        ax.set_xlabel("MACs speed-up, base / pruned (×)")
        ax.set_ylabel("latency speed-up, base / pruned (×)")
    _legend(fig, axes)
    return fig


def layer_widths(runs: pd.DataFrame, widths: pd.DataFrame, style: Style) -> Figure | None:
    """Output width of every conv/linear layer: the base as bars, each method's pruned model as a
    line (mean over seeds), one panel per dataset x model x target."""
    done = runs[runs["status"] == "done"]
    if done.empty or widths.empty:
        return None
    w = widths.merge(done[["mlflow_run_id", "method"] + SETTING + ["target_kind", "target"]], on="mlflow_run_id")
    groups = _settings(w, by_target=True)
    n_layers = max(g["position"].max() + 1 for _, g in groups)
    ncols = 2 if n_layers <= 12 else 1
    fig, axes = _grid(len(groups), ncols, max(4.2, 0.3 * n_layers + 1.5), 3.4)
    for ax, (key, g) in zip(axes, groups):
        ax.set_title(style.title(key[:3], key[3:]))
        base = g[g["which"] == "base"].groupby(["position", "layer"])["width"].mean().reset_index()
        ax.bar(base["position"], base["width"], color="0.85", edgecolor="0.55", label="unpruned base")
        for method, mg in g[g["which"] == "pruned"].groupby("method"):
            m = mg.groupby("position")["width"].mean()
            ax.plot(m.index, m.values, color=style.colors[method], marker=style.markers[method], ms=4,
                    label=method)
        step = max(1, math.ceil(len(base) / 16))
        ticks = base.iloc[::step]
        ax.set_xticks(ticks["position"], ticks["layer"], rotation=45 if step == 1 else 90,
                      ha="right" if step == 1 else "center", fontsize=7)
        ax.set_xlabel("layer (module order)")
        ax.set_ylabel("output channels / features")
    _legend(fig, axes)
    return fig


def run_timeline(c: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One run's `<phase>/val_acc` curves other than pretraining, joined in the order they were
    logged (fine-tuning last on a tie): columns x (epoch since the method started), value (%),
    phase; plus each phase's x offset (its step `s` sits at offset + s - first step + 1)."""
    acc = c[c["key"].str.endswith("/val_acc") & (c["key"] != "pretrain/val_acc")]
    order = sorted(acc.groupby("key")["timestamp"].min().items(), key=lambda kv: (kv[1], kv[0] == "finetune/val_acc"))
    parts, offsets, offset = [], {}, 0
    for key, _ in order:
        k = acc[acc["key"] == key].sort_values("step")
        phase = key.rsplit("/", 1)[0]
        offsets[phase] = offset - int(k["step"].min()) + 1
        x = k["step"].to_numpy() + offsets[phase]
        parts.append(pd.DataFrame({"x": x, "value": 100 * k["value"].to_numpy(), "phase": phase}))
        offset = int(x.max())
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["x", "value", "phase"])
    return frame, offsets


def _mean_curve(frames: list[pd.DataFrame]) -> pd.DataFrame:
    allc = pd.concat(frames, ignore_index=True)
    rows = [(x, *summarize(g["value"])[::3]) for x, g in allc.groupby("x")]
    return pd.DataFrame(rows, columns=["x", "mean", "ci"])


def training_curves(runs: pd.DataFrame, curves: pd.DataFrame, style: Style) -> Figure | None:
    """One row per dataset x model: first the shared base's pretraining, then one panel per target
    with each method's own epochs (training while pruning, then fine-tuning; a dotted line marks
    where fine-tuning starts). Validation accuracy, mean over seeds with a 95 % CI band."""
    done = runs[runs["status"] == "done"]
    if done.empty or curves.empty:
        return None
    groups = _settings(done)
    ncols = 1 + max(g.groupby(["target_kind", "target"]).ngroups for _, g in groups)
    fig = Figure(figsize=(3.9 * ncols, 3.1 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), ncols, squeeze=False)
    for row, (setting, g) in zip(axes, groups):
        c = curves[curves["mlflow_run_id"].isin(g["mlflow_run_id"])]
        pre = c[c["key"] == "pretrain/val_acc"].merge(g[["mlflow_run_id", "seed"]], on="mlflow_run_id")
        pre = pre.drop_duplicates(["seed", "step"]).rename(columns={"step": "x"})
        used = [row[0]]
        row[0].set_title("base pretraining: " + style.title(setting))
        if len(pre):
            m = _mean_curve([pre.assign(value=100 * pre["value"])])
            _line_band(row[0], m["x"], m["mean"], m["ci"], BASE_COLOR, marker=".", label="base pretraining")
            _focus_y(row[0], m["mean"])
        for ax, (target, tg) in zip(row[1:], g.groupby(["target_kind", "target"])):
            used.append(ax)
            ax.set_title(f"pruning + fine-tuning epochs, {target_label(*target)}")
            means = []
            for method, mg in tg.groupby("method"):
                timelines = [run_timeline(c[c["mlflow_run_id"] == rid]) for rid in mg["mlflow_run_id"]]
                frames = [tl for tl, _ in timelines if len(tl)]
                if not frames:
                    continue
                m = _mean_curve(frames)
                means += list(m["mean"])
                color = style.colors[method]
                _line_band(ax, m["x"], m["mean"], m["ci"], color, marker=style.markers[method], ms=4, label=method)
                first = frames[0]
                if first["phase"].nunique() > 1 and (first["phase"] == "finetune").any():
                    ax.axvline(first.loc[first["phase"] == "finetune", "x"].min() - 0.5, color=color, ls=":", lw=1)
            _focus_y(ax, means)
        for ax in row[len(used):]:
            ax.set_visible(False)
        for ax in used:
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation accuracy (%)")
            ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True, min_n_ticks=1))
            lo, hi = ax.get_xlim()
            ax.set_xlim(min(lo, 0.5), max(hi, 1.5))
    _legend(fig, axes.ravel())
    return fig


def rls_curves(runs: pd.DataFrame, curves: pd.DataFrame, style: Style) -> Figure | None:
    """RLS only: validation accuracy per epoch of each seed with its prune events marked.

    methods/rls.py logs event k as `rls/prune_epoch` = the (1-based) epoch at whose end it cut, and
    `rls/val_acc_after_prune` = the accuracy right after the cut, both at step k; the epoch counts
    like the steps of the first phase RLS trains in (its `rls/val_acc` curve)."""
    rls = runs[(runs["status"] == "done") & (runs["method"].str.lower() == "rls")]
    if rls.empty or curves.empty:
        return None
    groups = _settings(rls, by_target=True)
    fig, axes = _grid(len(groups), 2, 4.6, 3.4)
    color = style.colors.get("rls", BASE_COLOR)
    styles = ["-", "--", "-.", ":"]
    for ax, (key, g) in zip(axes, groups):
        ax.set_title(style.title(key[:3], key[3:]))
        for i, (_, r) in enumerate(g.sort_values("seed").iterrows()):
            c = curves[curves["mlflow_run_id"] == r["mlflow_run_id"]]
            tl, offsets = run_timeline(c)
            if tl.empty:
                continue
            ax.plot(tl["x"], tl["value"], color=color, ls=styles[i % len(styles)], label=f"RLS seed {r['seed']}")
            first = next(iter(offsets.values()))
            events = c[c["key"] == "rls/prune_epoch"].set_index("step")["value"]
            after = c[c["key"] == "rls/val_acc_after_prune"].set_index("step")["value"]
            for k, epoch in events.items():
                x = first + epoch  # the epoch at whose end the cut happened, placed like that epoch's step
                y = 100 * after[k] if k in after.index else np.interp(x, tl["x"], tl["value"])
                ax.axvline(x, color=color, alpha=0.35, lw=1)
                ax.plot([x], [y], "v", color=BASE_COLOR, ms=6, label="prune event (acc. right after the cut)")
        for col, lab, ls in (("rls.acc_val_unpruned", "RLS-trained base (val)", "--"),
                             ("pretrain/val_acc", "SGD base (val)", ":")):
            if col in g and g[col].notna().any():
                v = summarize(g[col])[0]
                ax.axhline(100 * v if v <= 1 else v, color="0.45", ls=ls, lw=1, label=lab)
        ax.set_xlabel("epoch of RLS training")
        ax.set_ylabel("validation accuracy (%)")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    _legend(fig, axes)
    return fig


CAPTIONS = {
    "tradeoff": "Accuracy vs MACs reduction. Final top-1 test accuracy against the achieved MACs reduction, "
                "mean over seeds per method and target, band / bar = 95 % CI (t); dashed: unpruned base.",
    "latency": "Latency vs MACs speed-up. Measured latency speed-up (base / pruned, median of repeats) "
               "against the MACs speed-up, one point per method, dataset, model and target (mean, 95 % CI "
               "bars); dotted: y = x, where wall time would shrink exactly as MACs do.",
    "widths": "Per-layer widths. Output channels (conv) or features (linear) of every layer: grey bars = "
              "unpruned base, lines = pruned models (mean over seeds).",
    "curves": "Training and fine-tuning curves. Validation accuracy per epoch: left the shared base's "
              "pretraining, right each method's own epochs (mean over seeds, 95 % CI band; a dotted line "
              "marks where fine-tuning starts for methods that train while pruning).",
    "rls": "RLS accuracy vs epoch. Validation accuracy of each RLS run per epoch of its training, with "
           "prune events (triangles, vertical lines) and the base accuracies as reference lines.",
}


def draw_all(runs: pd.DataFrame, curves: pd.DataFrame, widths: pd.DataFrame,
             style: Style) -> dict[str, tuple[Figure, str]]:
    """Every figure that has data: name -> (Figure, caption)."""
    with mpl.rc_context(RC):
        figs = {"tradeoff": tradeoff(runs, style), "latency": latency(runs, style),
                "widths": layer_widths(runs, widths, style), "curves": training_curves(runs, curves, style),
                "rls": rls_curves(runs, curves, style)}
    return {k: (f, CAPTIONS[k]) for k, f in figs.items() if f is not None}


def save(fig: Figure, stem: Path) -> list[Path]:
    """PNG (200 dpi) and PDF (vector, embedded TrueType fonts) of one figure."""
    paths = [stem.parent / f"{stem.name}.{ext}" for ext in ("png", "pdf")]
    with mpl.rc_context(RC):
        for p in paths:
            fig.savefig(p, dpi=200, bbox_inches="tight")
    return paths
