"""`python -m bench report`: MLflow runs -> tidy frame -> tables, paired statistics, ranking,
the reproduction check, figures, method-specific extras and an `index.md` opening with a verdict.

One job per module: sources (stores and committed segments, merged without double counting),
load (runs -> tidy DataFrame), stats (statistics), tables (tables), checks (failed preconditions),
overlap (which channels variants removed), repro (docs/methods.md §7), figures / figures_stats
(the registered figures), index (the page). This module only wires them and writes the files.
The harness knows no method by name: a plugin adds its own figures through `Method.report_extras`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from bench.errors import BenchError
from bench.report.compare import ablation_comparisons, improvement, paired_comparisons
from bench.report.index import index
from bench.report.load import code_versions, load_widths, pruning_runs, tidy
from bench.report.overlap import overlap_markdown, overlap_pairs, overlap_table
from bench.report.repro import reproduction, reproduction_latex, reproduction_markdown
from bench.report.stats import aggregate, pareto_table, rankings
from bench.report.tables import ablations_markdown, build_tables
from bench.run.config import DEFAULT_REFERENCE, Design


@dataclass
class ReportFiles:
    out: Path
    index: Path
    tables: list[Path]
    figures: list[Path]


def method_extras(runs: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    """Each registered plugin's `report_extras` on its own finished runs; the stepped metrics of
    those runs ride along in `runs.attrs['curves']`. Plugins no longer registered are skipped."""
    from bench.core.registry import get_method
    from bench.errors import UnknownMethod

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


def build_report(results_dirs: Sequence[str | os.PathLike] = ("results",), experiment: str | None = None,
                 out: str | os.PathLike | None = None, reference: str | None = None,
                 segments: Sequence[str | os.PathLike] = ()) -> ReportFiles:
    """Read the runs of every store (`results_dirs`) and committed segment (`segments`), each cell
    once, and write tables (CSV/MD/TeX), figures (PNG/PDF) and index.md into `out`.

    `reference`: the variant every other is compared with, paired over seeds; by default the one
    the grid's config named (`reference:`, kept as an experiment tag), else magnitude."""
    from bench.report import figures_stats  # noqa: F401  registers the statistics figures
    from bench.report.figures import FigureInputs, Style, draw_all, save
    from bench.report.sources import merge, open_sources

    merged = merge(open_sources(results_dirs, segments), experiment)
    where = ", ".join(f"`{s.label}`" for s in merged.sources)
    reference = reference or merged.tag(experiment, "reference") or DEFAULT_REFERENCE
    if merged.frame.empty:
        raise BenchError(f"no runs found in {where}; run a grid first, e.g. python -m bench run configs/quick.yaml")
    runs = tidy(merged.frame)
    out = Path(out or Path("reports") / (experiment or "all"))
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)

    summary = aggregate(runs)
    with_gpu = bool(runs[["speedup_gpu_b1_x", "speedup_gpu_b64_x"]].notna().any().any())
    design = Design.from_json(merged.tag(experiment, "design"))  # the grid's pre-registered analysis
    compared = pruning_runs(runs)  # the own-unpruned references show in the tables, not in the statistics
    paired = paired_comparisons(compared, reference, design)
    tables = build_tables(summary, runs, with_gpu, paired)
    rep = reproduction(summary)
    ablations = ablation_comparisons(compared, design)
    ranks = rankings(compared, design)
    gains = improvement(compared, reference, design)
    front = pareto_table(compared)
    curves = merged.curves(runs)
    widths, no_widths = load_widths(merged, runs)
    kept, no_kept = merged.artifacts(runs, "kept_channels.json")
    overlap = overlap_table(overlap_pairs(runs, kept))

    keep = [c for c in runs.columns if "/" not in c]  # stepped metrics live in curves, not here
    labels = [src.label for src in merged.sources]
    frames = {out / "runs.csv": runs[keep].assign(source=[labels[int(i)] for i in runs["source"]]),
              out / "summary.csv": summary, out / "tables" / "paired.csv": paired,
              out / "tables" / "improvement.csv": gains,
              out / "tables" / "pareto.csv": front, out / "tables" / "overlap.csv": overlap}
    if ranks:
        frames[out / "tables" / "ranking.csv"] = pd.concat([r.frame() for r in ranks.values()], ignore_index=True)
    for path, frame in frames.items():
        frame.to_csv(path, index=False)
    written = list(frames)
    overlap_md = overlap_markdown(overlap, no_kept)
    (out / "tables" / "overlap.md").write_text("# Which channels do variants remove?\n\n" + overlap_md)
    written.append(out / "tables" / "overlap.md")
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

    figures = draw_all(FigureInputs(runs, curves, widths, Style.for_runs(runs), ranks, front, paired))
    fig_paths = []
    for name, (fig, _) in figures.items():
        fig_paths += save(fig, out / "figures" / name)
    extras = method_extras(runs, curves, out)
    command = " ".join(["python -m bench report"] + (["--experiment", experiment] if experiment else [])
                       + [f"--results-dir {d}" for d in results_dirs] + [f"--segments {s}" for s in segments])
    made = [f"- Runs read from {where}."] + [f"- {n}" for n in merged.duplicates] + [f"- {code_versions(runs)}"]
    (out / "index.md").write_text(index(
        runs=runs, tables=tables, rep=rep, paired=paired, ablations=ablations, ranks=ranks, reference=reference,
        design=design, improvement=gains,
        figures={k: c for k, (_, c) in figures.items()}, extras=extras, out=out, command=command, made=made,
        experiment=experiment, no_widths=no_widths, overlap=overlap_md))
    return ReportFiles(out, out / "index.md", written, fig_paths + extras)
