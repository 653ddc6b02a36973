"""The report's figures and their registry. Adding a figure is one function registered with
`@figure(name, caption)`, whose parameters name what it draws from (fields of `FigureInputs`); the
report draws every registered figure that has data, in registration order.

One seaborn style, a palette readable on white (no yellow or pale hues: every colour has a
contrast ratio of at least 3:1 against white), one colour and marker per variant in every figure,
variants under their display names (bench.report.names). Each function returns a matplotlib
Figure (no pyplot state), so tests can inspect the Axes before anything is saved.

Inputs are the report's tidy runs frame (bench.report.tidy), the long curves frame
(mlflow_run_id, key, step, value, timestamp) and the long widths frame (mlflow_run_id, which,
layer, position, width). Only finished runs are drawn; a dataset x model with none gets an empty
panel that says why, rather than disappearing. A point whose runs failed a method's precondition
(`preconditions_met` = 0) carries a black ×: its number measures something other than the method.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bench.report.load import KEYS, SETTING, target_label
from bench.report.names import display_name, display_names
from bench.report.stats import Ranking, summarize

RC = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.1),
      "axes.titlesize": 10, "legend.frameon": False, "pdf.fonttype": 42, "ps.fonttype": 42}
BASE_COLOR = "black"
# Okabe-Ito hues without yellow, sky blue and orange, then darker Tol / ColorBrewer / X11 hues picked
# greedily for the largest CIELAB distance to those before (>= 22): 16 colours, each >= 3:1 on white.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#AA4499", "#8C510A", "#332288", "#E7298A", "#117733", "#882255",
           "#666666", "#DC143C", "#9932CC", "#7A7A00", "#CD5C5C", "#00798C", "#33A02C"]
# 13 filled markers: 13 and 16 are coprime, so the first 208 variants get distinct (colour, marker)
# pairs. No "X": a black x marks a failed precondition.
MARKERS = ["o", "s", "D", "^", "v", "P", "*", "h", "<", ">", "p", "d", "8"]
UNMET_LABEL = "precondition not met (≥ 1 seed)"
UNMET_STYLE = {"marker": "x", "color": BASE_COLOR, "ms": 9, "mew": 1.6, "ls": "none", "zorder": 6,
               "clip_on": False, "label": UNMET_LABEL}
# Far-off points: outside Tukey's far-out fences (quartiles -/+ 3 IQR) of a panel's means, the IQR
# taken as at least MIN_IQR (pp or %) so that a tight cluster does not call a 1 pp step far off.
FENCE_K = 3.0
MIN_IQR = 1.0


def unmet_points(runs: pd.DataFrame) -> frozenset[tuple]:
    """KEYS of every (setting, target, variant) with a finished run whose `preconditions_met` is 0;
    runs logged before the column existed count as met."""
    if "preconditions_met" not in runs:
        return frozenset()
    done = runs[runs["status"] == "done"]
    failed = pd.to_numeric(done["preconditions_met"], errors="coerce") == 0
    return frozenset(map(tuple, done.loc[failed, KEYS].itertuples(index=False)))


@dataclass
class Style:
    """Fixed colour, marker and display name per variant, shared by every figure of a report,
    and the points to mark as failing a precondition."""

    colors: dict[str, str]
    markers: dict[str, str]
    multi_experiment: bool = False
    names: dict[str, str] = field(default_factory=dict)
    unmet: frozenset[tuple] = frozenset()

    @classmethod
    def for_runs(cls, runs: pd.DataFrame) -> "Style":
        """Plain methods by name, then named variants by name, each a colour and a marker of its
        own: a plain method keeps its colour in every report of the same methods (curves and
        ablations), and 11+ variants stay apart by colour and by marker."""
        order = sorted(set(runs["variant"]), key=lambda v: ("@" in v, v))
        colors = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(order)}
        markers = {v: MARKERS[i % len(MARKERS)] for i, v in enumerate(order)}
        return cls(colors, markers, runs["experiment"].nunique() > 1, display_names(order), unmet_points(runs))

    def label(self, variant: str) -> str:
        return self.names.get(variant) or display_name(variant)

    def by_name(self, frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
        """(variant, rows) in the order of display names, so a legend lists each method's
        variants right after it ("RLS", "RLS (P = I)")."""
        return sorted(frame.groupby("variant"), key=lambda kv: self.label(kv[0]))

    def title(self, setting: tuple, target: tuple | None = None) -> str:
        exp, ds, model = setting
        text = f"{ds} / {model}" + (f", {target_label(*target)}" if target else "")
        return text + (f"\n[{exp}]" if self.multi_experiment else "")


@dataclass
class FigureInputs:
    """What the report hands its figures; a registered figure takes the fields it needs by name."""

    runs: pd.DataFrame                          # the tidy runs frame
    curves: pd.DataFrame                        # stepped metrics, long form
    widths: pd.DataFrame                        # per-layer widths, long form
    style: Style
    ranks: Mapping[str, Ranking] | None = None  # scope -> ranking (stats.rankings)
    front: pd.DataFrame = field(default_factory=pd.DataFrame)  # the Pareto table (stats.pareto_table)
    verdicts: pd.DataFrame | None = None        # the paired comparisons (paired.csv)


FigureFn = Callable[..., Figure | None]
FIGURES: dict[str, tuple[FigureFn, str]] = {}  # name -> (function, caption), in registration order


def figure(name: str, caption: str) -> Callable[[FigureFn], FigureFn]:
    """Register a figure function under `name`; its parameters are FigureInputs fields, and it
    returns None where a report has no data for it (the report then leaves it out)."""
    def deco(fn: FigureFn) -> FigureFn:
        unknown = set(inspect.signature(fn).parameters) - set(FigureInputs.__dataclass_fields__)
        if unknown:
            raise TypeError(f"figure '{name}': parameters {sorted(unknown)} are not FigureInputs fields")
        FIGURES[name] = (fn, caption)
        return fn
    return deco


def draw_all(inputs: FigureInputs) -> dict[str, tuple[Figure, str]]:
    """Every registered figure that has data: name -> (Figure, caption)."""
    out = {}
    with mpl.rc_context(RC):
        for name, (fn, caption) in FIGURES.items():
            fig = fn(**{p: getattr(inputs, p) for p in inspect.signature(fn).parameters})
            if fig is not None:
                out[name] = (fig, caption)
    return out


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


def _line_band(ax, x, mean, ci, color, band: bool = True, bounds: tuple = (-np.inf, np.inf), **kw) -> None:
    """Mean line with a 95 % CI band cut to the values the quantity can take (`bounds`, scalars or
    one per point: a t interval at n = 3 easily reaches past 100 % accuracy); single points, or
    `band=False`, get error bars instead (none where `ci` is NaN)."""
    x, mean, ci = map(np.asarray, (x, mean, ci))
    lo, hi = np.clip(mean - ci, *bounds), np.clip(mean + ci, *bounds)
    ax.plot(x, mean, color=color, **kw)
    ok = np.isfinite(ci)
    if band and len(x) > 1 and ok.all():
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
    elif ok.any():
        ax.errorbar(x[ok], mean[ok], yerr=[mean[ok] - lo[ok], hi[ok] - mean[ok]], fmt="none", ecolor=color,
                    capsize=3, lw=1)


def _focus_y(ax, values, top: float = 100.5) -> None:
    """Keep the means in view when a CI band is huge (n = 2 gives t = 12.7): the band is clipped
    at a few points beyond the data rather than stretching the axis past 100 % accuracy."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return
    pad = max(1.0, 0.15 * (v.max() - v.min()))
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, v.min() - 4 * pad), min(hi, v.max() + 4 * pad, top))


def view_limits(means, lows, highs, include=()) -> tuple[float, float]:
    """y-limits for a panel that one far-off method must not squash: the means inside the panel's
    far-out fences (FENCE_K, MIN_IQR) set them, with their CI bands (`lows`, `highs`) cut at the
    fences, and every value of `include` (the base line); the far-off means are marked at the edge
    (mark_off_scale)."""
    means, lows, highs = (np.asarray(v, dtype=float) for v in (means, lows, highs))
    finite = means[np.isfinite(means)]
    if not len(finite):
        return (-1.0, 1.0)
    q1, q3 = np.percentile(finite, [25, 75])
    iqr = max(q3 - q1, MIN_IQR)
    fence = (q1 - FENCE_K * iqr, q3 + FENCE_K * iqr)
    inside = np.isfinite(means) & (means >= fence[0]) & (means <= fence[1])
    v = np.concatenate([means[inside], np.clip(lows[inside], *fence), np.clip(highs[inside], *fence),
                        np.asarray(include, dtype=float)])
    v = v[np.isfinite(v)]
    pad = max(0.06 * (v.max() - v.min()), 0.25 * MIN_IQR)
    return float(v.min() - pad), float(v.max() + pad)


def signed(v: float, unit: str = "") -> str:
    """+1.0 / −60.2 with a true minus sign, as the tables print a change."""
    return f"{v:+.1f}".replace("-", "−") + unit


def mark_off_scale(ax, points: list[tuple[float, float, str]], fmt: Callable[[float], str]) -> None:
    """Each (x, y, colour) outside the y-limits set: an arrowhead at the axis edge with its value
    `fmt(y)`, so the far-off point is shown without stretching the axis for it. Labels at one x
    stack away from the edge."""
    lo, hi = ax.get_ylim()
    to_axes = ax.transData + ax.transAxes.inverted()  # linear or log x alike
    stacked: dict[tuple, int] = {}
    for x, y, color in points:
        if not np.isfinite(y) or lo <= y <= hi:
            continue
        below, left = y < lo, to_axes.transform((x, lo))[0] > 0.7  # the label on the side with room
        k = stacked[(below, round(x, 1))] = stacked.get((below, round(x, 1)), -1) + 1
        ax.plot([x], [lo if below else hi], ls="none", marker="v" if below else "^", color=color, ms=8,
                clip_on=False, zorder=5)
        ax.annotate(fmt(y), (x, lo if below else hi), xytext=(-6 if left else 6, (4 + 9 * k) * (1 if below else -1)),
                    textcoords="offset points", ha="right" if left else "left", va="bottom" if below else "top",
                    color=color, fontsize=7, annotation_clip=False)


@figure("tradeoff",
        "Accuracy change vs MACs reduction. Δacc = final − base top-1 test accuracy of each run (pp), "
        "against the achieved MACs reduction, mean over seeds per method and target; band / bar = 95 % "
        "CI (t), cut to the possible range [−base, 100 − base]; dashed: the unpruned base (Δ = 0). The "
        "y-axis spans the means within the far-out fences of their panel (quartiles ∓ 3 IQR, IQR ≥ 1 pp) "
        "and their bands up to the fences; a mean beyond them is an arrowhead at the axis edge with its "
        "value, its method drawn with bars instead of a band. × = a method's precondition failed in at "
        "least one seed of the point.")
def tradeoff(runs: pd.DataFrame, style: Style) -> Figure:
    """Δacc against the base (final − base accuracy per run, pp) vs achieved MACs reduction, one
    panel per dataset x model: each run's own base cancels, so panels of different bases compare.
    Bands stay within [−base, 100 − base]; a far-off method is marked at the axis edge."""
    groups = _settings(runs)
    fig, axes = _grid(len(groups), 3, 4.2, 3.4)
    for ax, (setting, g) in zip(axes, groups):
        ax.set_title(style.title(setting))
        done = g[g["status"] == "done"]
        if done.empty:
            _empty(ax, g)
            continue
        pts = pd.DataFrame([(variant, *target, summarize(tg["macs_reduction_pct"])[0],
                             *summarize(tg["delta_acc_pp"])[::3], tg["acc_base_pct"].mean())
                            for (variant, *target), tg in done.groupby(["variant", "target_kind", "target"])],
                           columns=["variant", "target_kind", "target", "x", "y", "ci", "base"]).sort_values("x")
        bounds = (-pts["base"], 100 - pts["base"])
        ylim = view_limits(pts["y"], np.clip(pts["y"] - pts["ci"], *bounds), np.clip(pts["y"] + pts["ci"], *bounds),
                           include=[0.0])
        far = (pts["y"] < ylim[0]) | (pts["y"] > ylim[1])
        for variant, vp in style.by_name(pts):  # a far-off variant gets bars where in view: its band would flood
            _line_band(ax, vp["x"], vp["y"], vp["ci"].where(~far), style.colors[variant], not far[vp.index].any(),
                       bounds=(-vp["base"], 100 - vp["base"]), marker=style.markers[variant],
                       label=style.label(variant))
        ax.axhline(0, color=BASE_COLOR, ls="--", lw=1, label="unpruned base (Δ = 0)")
        lo, hi = ax.get_xlim()
        if hi - lo < 10:  # one target: do not blow a 0.1 pp spread of achieved reductions up to full width
            mid = (lo + hi) / 2
            ax.set_xlim(mid - 5, mid + 5)
        ax.set_ylim(*ylim)
        mark_off_scale(ax, [(r.x, r.y, style.colors[r.variant]) for r in pts.itertuples()], lambda v: signed(v, " pp"))
        unmet = pts[[(*setting, r.target_kind, r.target, r.variant) in style.unmet for r in pts.itertuples()]]
        if len(unmet):
            ax.plot(unmet["x"], unmet["y"].clip(*ylim), **UNMET_STYLE)
        ax.set_xlabel("MACs reduction (%)")
        ax.set_ylabel("Δ top-1 test accuracy vs base (pp)")
    _legend(fig, axes)
    return fig


def _log_err(v: np.ndarray, ci: np.ndarray) -> np.ndarray:
    """Asymmetric error bars that stay positive on a log axis (a CI reaching below 0 is cut)."""
    ci = np.nan_to_num(ci)
    return np.vstack([np.minimum(ci, 0.95 * v), ci])


LATENCY_PANELS = [("cpu", 1), ("cpu", 64), ("gpu", 1), ("gpu", 64)]


@figure("latency",
        "Latency vs MACs speed-up. Measured latency speed-up (base / pruned, median of repeats) "
        "against the MACs speed-up, one point per method, dataset, model and target (mean, 95 % CI "
        "bars); dotted: y = x, where wall time would shrink exactly as MACs do; × = a precondition "
        "failed in at least one seed.")
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
        for method, mg in style.by_name(done):
            pts = [(*summarize(g["macs_speedup_x"])[::3], *summarize(g[col])[::3], (*k, method) in style.unmet)
                   for k, g in mg.groupby(SETTING + ["target_kind", "target"])]
            x, xci, y, yci, unmet = map(np.asarray, zip(*pts))
            allv += [v for v in np.concatenate([x, y]) if np.isfinite(v) and v > 0]
            ax.errorbar(x, y, xerr=_log_err(x, xci), yerr=_log_err(y, yci), fmt=style.markers[method],
                        color=style.colors[method], ms=6, capsize=2, lw=1, label=style.label(method))
            if unmet.any():
                ax.plot(x[unmet], y[unmet], **UNMET_STYLE)
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


@figure("widths",
        "Per-layer widths. Output channels (conv) or features (linear) of every layer: grey bars = "
        "unpruned base, lines = pruned models (mean over seeds).")
def layer_widths(runs: pd.DataFrame, widths: pd.DataFrame, style: Style) -> Figure | None:
    """Output width of every conv/linear layer: the base as bars, each method's pruned model as a
    line (mean over seeds), one panel per dataset x model x target."""
    done = runs[runs["status"] == "done"]
    if done.empty or widths.empty:
        return None
    w = widths.merge(done[["mlflow_run_id", "variant"] + SETTING + ["target_kind", "target"]], on="mlflow_run_id")
    groups = _settings(w, by_target=True)
    n_layers = max(g["position"].max() + 1 for _, g in groups)
    ncols = 2 if n_layers <= 12 else 1
    fig, axes = _grid(len(groups), ncols, max(4.2, 0.3 * n_layers + 1.5), 3.4)
    for ax, (key, g) in zip(axes, groups):
        ax.set_title(style.title(key[:3], key[3:]))
        base = g[g["which"] == "base"].groupby(["position", "layer"])["width"].mean().reset_index()
        ax.bar(base["position"], base["width"], color="0.85", edgecolor="0.55", label="unpruned base")
        for method, mg in style.by_name(g[g["which"] == "pruned"]):
            m = mg.groupby("position")["width"].mean()
            ax.plot(m.index, m.values, color=style.colors[method], marker=style.markers[method], ms=4,
                    label=style.label(method))
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


@figure("curves",
        "Training and fine-tuning curves. Validation accuracy per epoch: left the shared base's "
        "pretraining, right each method's own epochs (mean over seeds, 95 % CI band; a dotted line "
        "marks where fine-tuning starts for methods that train while pruning).")
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
            _line_band(row[0], m["x"], m["mean"], m["ci"], BASE_COLOR, bounds=(0, 100), marker=".",
                       label="base pretraining")
            _focus_y(row[0], m["mean"])
        for ax, (target, tg) in zip(row[1:], g.groupby(["target_kind", "target"])):
            used.append(ax)
            ax.set_title(f"pruning + fine-tuning epochs, {target_label(*target)}")
            means = []
            for method, mg in style.by_name(tg):
                timelines = [run_timeline(c[c["mlflow_run_id"] == rid]) for rid in mg["mlflow_run_id"]]
                frames = [tl for tl, _ in timelines if len(tl)]
                if not frames:
                    continue
                m = _mean_curve(frames)
                means += list(m["mean"])
                color = style.colors[method]
                _line_band(ax, m["x"], m["mean"], m["ci"], color, bounds=(0, 100), marker=style.markers[method], ms=4,
                           label=style.label(method))
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


def save(fig: Figure, stem: Path) -> list[Path]:
    """PNG (200 dpi) and PDF (vector, embedded TrueType fonts) of one figure."""
    paths = [stem.parent / f"{stem.name}.{ext}" for ext in ("png", "pdf")]
    with mpl.rc_context(RC):
        for p in paths:
            fig.savefig(p, dpi=200, bbox_inches="tight")
    return paths
