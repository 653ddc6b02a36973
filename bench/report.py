"""`python -m bench report`: MLflow runs -> tidy frame -> tables, paired statistics, ranking,
the reproduction check, figures, method-specific extras and an `index.md` opening with a verdict.

One job per module: report_load (MLflow -> DataFrame), report_stats (statistics),
report_tables (tables), report_repro (methods.md §7), report_figures / report_figures_stats
(figures), report_index (the page). This module only wires them and writes the files. The
harness knows no method by name: a plugin adds its own figures through `Method.report_extras`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.report_index import fmt_list, index
from bench.report_load import load_curves, load_runs, load_widths
from bench.report_repro import reproduction, reproduction_latex, reproduction_markdown
from bench.report_stats import ablation_comparisons, aggregate, paired_comparisons, pareto_table, ranking
from bench.report_tables import ablations_markdown, build_tables


@dataclass
class ReportFiles:
    out: Path
    index: Path
    tables: list[Path]
    figures: list[Path]


def method_extras(runs: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    """Each registered plugin's `report_extras` on its own finished runs; the stepped metrics of
    those runs ride along in `runs.attrs['curves']`. Plugins no longer registered are skipped."""
    from bench.errors import UnknownMethod
    from bench.registry import get_method

    files: list[Path] = []
    for name, g in runs[runs["status"] == "done"].groupby("method", sort=True):
        try:
            cls = get_method(name)
        except UnknownMethod:
            continue
        mine = g.copy()
        mine.attrs["curves"] = curves[curves["mlflow_run_id"].isin(g["mlflow_run_id"])].reset_index(drop=True)
        files += [Path(p) for p in cls.report_extras(mine, out / "extras")]
    return files


def build_report(results_dir: str | os.PathLike = "results", experiment: str | None = None,
                 out: str | os.PathLike | None = None, uri: str | None = None,
                 reference: str | None = None) -> ReportFiles:
    """Read the runs, write tables (CSV/MD/TeX), figures (PNG/PDF) and index.md into `out`.

    `reference`: the variant every other is compared with, paired over seeds; by default the one
    the grid's config named (`reference:`, kept as an experiment tag), else magnitude."""
    from bench import report_figures as rf
    from bench import report_figures_stats as rfs
    from bench.tracking import Tracker, may_hold_runs

    if not (uri or may_hold_runs(results_dir)):
        raise BenchError(f"no MLflow store at {Path(results_dir) / 'mlflow.db'}; pass the --results-dir a grid "
                         "wrote to, or set MLFLOW_TRACKING_URI")
    tracker = Tracker(results_dir, uri=uri)
    if experiment and tracker.client.get_experiment_by_name(experiment) is None:
        names = sorted(e.name for e in tracker.client.search_experiments())
        raise BenchError(f"experiment '{experiment}' not found at {tracker.uri}; there: {fmt_list(names)}")
    reference = reference or tracker.reference(experiment) or "magnitude"
    runs = load_runs(tracker, experiment)
    if runs.empty:
        raise BenchError(f"no runs found at {tracker.uri}" + (f" in experiment '{experiment}'" if experiment else "")
                         + "; run a grid first, e.g. python -m bench run configs/quick.yaml")
    out = Path(out or Path("reports") / (experiment or "all"))
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)

    summary = aggregate(runs)
    with_gpu = bool(runs[["speedup_gpu_b1_x", "speedup_gpu_b64_x"]].notna().any().any())
    tables = build_tables(summary, runs, with_gpu)
    rep = reproduction(summary)
    paired = paired_comparisons(runs, reference)
    ablations = ablation_comparisons(runs)
    rank = ranking(runs)
    front = pareto_table(runs)
    curves = load_curves(tracker, runs)
    widths, no_widths = load_widths(tracker, runs)

    keep = [c for c in runs.columns if "/" not in c]  # stepped metrics live in curves, not here
    frames = {out / "runs.csv": runs[keep], out / "summary.csv": summary, out / "tables" / "paired.csv": paired,
              out / "tables" / "pareto.csv": front}
    if rank is not None:
        frames[out / "tables" / "ranking.csv"] = rank.frame()
    for path, frame in frames.items():
        frame.to_csv(path, index=False)
    written = list(frames)
    if len(ablations):  # variants `X@label` next to their plain `X`: does each mechanism matter?
        ablations.to_csv(out / "ablations.csv", index=False)
        (out / "ablations.md").write_text(ablations_markdown(ablations))
        written += [out / "ablations.csv", out / "ablations.md"]
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
    figures.update(rfs.draw_all(rank, front, style))
    fig_paths = []
    for name, (fig, _) in figures.items():
        fig_paths += rf.save(fig, out / "figures" / name)
    extras = method_extras(runs, curves, out)
    (out / "index.md").write_text(index(
        runs=runs, tables=tables, rep=rep, paired=paired, ablations=ablations, rank=rank, reference=reference,
        figures={k: c for k, (_, c) in figures.items()}, extras=extras, out=out, uri=tracker.uri,
        experiment=experiment, no_widths=no_widths))
    return ReportFiles(out, out / "index.md", written, fig_paths + extras)
