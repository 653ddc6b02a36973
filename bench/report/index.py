"""index.md: the report on one page, opening with a verdict generated from the statistics
(bench.report.verdict: better / worse / equivalent / inconclusive under the grid's design).
"""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.report.load import run_label
from bench.report.repro import paper_results, reproduction_markdown
from bench.report.stats import Ranking
from bench.report.tables import Table, md_escape, paired_markdown
from bench.report.verdict import from_scratch, verdict
from bench.run.config import Design


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


def fmt_list(values) -> str:
    return ", ".join(str(v) for v in values) if len(values) else "none"


def index(*, runs: pd.DataFrame, tables: list[Table], rep: pd.DataFrame, paired: pd.DataFrame,
          ablations: pd.DataFrame, ranks: dict[str, Ranking], reference: str, design: Design,
          improvement: pd.DataFrame, figures: dict[str, str], extras: list[Path], out: Path,
          command: str, made: list[str], experiment: str | None, no_widths: list[str], overlap: str) -> str:
    """The page. `figures`: name -> caption of files under figures/; `extras`: plugin files;
    `made`: bullet lines on where the runs came from and their code; `overlap`: the channel overlap."""
    counts = runs["status"].value_counts()
    exps = sorted(runs["experiment"].unique())
    seeds = sorted(int(s) for s in runs["seed"].dropna().unique())
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# prunebench report: {experiment or 'all experiments'}", ""]
    lines += verdict(paired, ranks, reference, design=design, ablations=ablations, improvement=improvement,
                     scratch=from_scratch(runs))
    lines += [
        "## How this was made", "",
        f"- Built {now} by `{command}`.", *made,
        f"- Experiment(s): {fmt_list(exps)}; {len(runs)} runs ("
        + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"); seeds {fmt_list(seeds)}; "
        f"variants {fmt_list(sorted(runs['variant'].unique()))}.",
        f"- Report machine: {hardware()}. Latencies were measured on the machine that ran each cell "
        "(CPU: median of repeats at batch 1 and 64, after warm-up).",
        "- Numbers: mean ± sample std over seeds of the finished runs; accuracies are top-1 on the held-out "
        "test split, in % (every choice of settings is made on the validation split, `Final val acc`); "
        "Δacc = final − base (the shared SGD-trained base, also for methods that train from scratch) in "
        "percentage points; speed-up = base / pruned per run; times exclude the base's pretraining. "
        "The CSV files add n and the 95 % CI half-width (t distribution). An accuracy is bold only where the "
        "verdict against the reference in that cell is \"better\" (below). `–` = no finished run. "
        "`Runs` = finished/total (why the rest did not finish), and how many finished runs met the target.",
        "", "## Paired comparison with the reference", "",
        paired_markdown(paired) if len(paired) else f"No cell holds `{reference}` and another variant.",
        "Files: [CSV](tables/paired.csv), [probability of improvement CSV](tables/improvement.csv), "
        "[ranking CSV](tables/ranking.csv).", "",
    ]
    if len(ablations):
        lines += ["## Ablations: variant vs its plain method", "", paired_markdown(ablations),
                  "Files: [Markdown](ablations.md), [CSV](ablations.csv).", ""]
    lines += ["## Which channels do variants remove?", "", overlap,
              "Files: [Markdown](tables/overlap.md), [CSV](tables/overlap.csv).", ""]
    lines += [
        "## Tables (variants as rows)", "",
    ]
    for t in tables:
        exp, ds, model = t.setting
        lines += [f"### {ds} / {model}" + (f" (experiment {exp})" if len(exps) > 1 else ""), "",
                  t.markdown(), f"Files: [CSV](tables/{t.stem}.csv), [Markdown](tables/{t.stem}.md), "
                  f"[LaTeX](tables/{t.stem}.tex) (booktabs).", ""]
    covered = rep[rep["result"].isin(["pass", "fail"])]
    n_cov = len(covered.drop_duplicates(["ref", "paper_setting", "paper_delta_pp"]))
    lines += [
        "## Reproduction of paper results (docs/methods.md §7)", "",
        f"{n_cov} of {len(paper_results())} paper results are covered by these runs. A result is covered only "
        "when the same method ran as the plain variant with the paper's protocol (ranking, rounds), on the "
        "paper's full-size model and dataset, at a target within ±3 pp of the paper's reduction; pass = Δacc "
        "within ±0.5 pp (±1.0 pp on ImageNet) of the paper's and the targeted reduction within ±3 pp. The quick "
        "and smoke presets use small models on subsets with a few epochs, so most rows are correctly `not "
        "covered` there; `not checked` = the paper gives no numbers (n/f).", "",
        reproduction_markdown(rep),
        "Files: [CSV](tables/reproduction.csv), [LaTeX](tables/reproduction.tex).", "", "## Figures", "",
    ]
    for name, caption in figures.items():
        lines += [f"### {caption.split('.')[0]}", "", f"![{name}](figures/{name}.png)", "",
                  caption + f" [PDF](figures/{name}.pdf)", ""]
    if extras:
        lines += ["## Method-specific results", "", "Written by the methods' own `report_extras` hooks.", ""]
        for p in extras:
            rel = p.relative_to(out).as_posix()
            if p.suffix == ".md":  # a plugin's table: shown, not only linked
                lines += [p.read_text().rstrip(), "", f"File: [{p.name}]({rel})", ""]
            else:
                lines += [f"![{p.stem}]({rel})" if p.suffix == ".png" else f"- [{p.name}]({rel})", ""]
    lines += ["## Runs that did not finish", ""]
    bad = runs[runs["status"] != "done"]
    if bad.empty:
        lines.append("All runs finished.")
    else:
        lines += [f"{len(bad)} runs did not finish; their cells are shown as missing above. "
                  "Runs with the same status and reason are listed together; `runs.csv` has one row per run.", "",
                  "| Status | Runs (variant/dataset/model/target/seed) | Reason |", "|---|---|---|"]
        reasons = [" ".join(str(e).split()) or "(no reason recorded: killed, or still running)" for e in bad["error"]]
        for (status, reason), g in bad.assign(reason=reasons).groupby(["status", "reason"], sort=False):
            labels = "<br>".join(run_label(r) for _, r in g.iterrows())
            lines.append(f"| {status} ({len(g)}) | {labels} | {md_escape(reason)} |")
    if no_widths:
        lines += ["", "Runs without a readable `widths.json` (left out of the width figure): " + "; ".join(no_widths)]
    return "\n".join(lines) + "\n"
