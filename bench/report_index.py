"""index.md: the report on one page, opening with a verdict generated from the statistics.

The verdict states only what the tests support: a difference is named only where the
Holm-corrected paired test (or the Nemenyi post-hoc after a significant Friedman test) rejects
equality at α = 0.05; every other comparison is listed as not distinguishable at its n.
"""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.report_load import run_label, target_label
from bench.report_repro import PAPER_RESULTS, reproduction_markdown
from bench.report_stats import ALPHA, Ranking
from bench.report_tables import Table, md_escape, paired_markdown


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


def _where(r) -> str:
    return f"{r['dataset']} / {r['model']}, {target_label(r['target_kind'], r['target'])}"


def verdict(paired: pd.DataFrame, rank: Ranking | None, reference: str) -> list[str]:
    """The verdict's lines: significant paired differences, the rest grouped as not
    distinguishable (or not testable), then the ranking across cells."""
    lines = ["## Verdict", "",
             f"Generated from the statistics below, α = {ALPHA}. Each variant is compared with the reference "
             f"`{reference}` on final test accuracy, paired over seeds (every variant of a cell starts from the same "
             "base per seed), paired t-test with Holm correction over the comparisons of one dataset / model table.",
             ""]
    if paired.empty:
        lines += [f"- No paired comparison: the reference `{reference}` has no finished run in a cell with other "
                  "variants (choose one with `--reference`).", ""]
    else:
        sig = paired[paired["verdict"].isin(["better", "worse"])]
        for _, r in sig.iterrows():
            lines.append(f"- **{r['variant']} is {r['verdict']} than {reference}** on {_where(r)}: "
                         f"{r['mean_diff']:+.2f} pp (95 % CI [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]), "
                         f"p_Holm = {r['p_holm']:.3g}, n = {int(r['n'])}.")
        for word, lead in (("not distinguishable", "Not distinguishable from"), ("not testable", "Not testable against")):
            rest = paired[paired["verdict"].str.startswith(word)]
            for where, g in rest.groupby(["dataset", "model", "target_kind", "target"], sort=True):
                why = g["verdict"].str.replace(word + " ", "").str.strip("()")  # "at n=3" / "n=1"
                items = ", ".join(f"{v} ({r})" for v, r in zip(g["variant"], why))
                lines.append(f"- {lead} {reference} on {_where(g.iloc[0])}: {items}.")
        if sig.empty:
            lines.append(f"- No variant differs significantly from {reference} in any cell.")
        lines.append("")
    if rank is None:
        lines.append("- Ranking: fewer than two variants, nothing to rank.")
    elif rank.nemenyi_p is None:
        lines.append(f"- Ranking not tested: {rank.note}.")
    elif rank.friedman_p < ALPHA:
        pairs = rank.significant_pairs()
        sep = "; ".join(f"{a} ranks above {b}" for a, b in pairs) if pairs else "no pair (the post-hoc test is weaker)"
        lines.append(f"- Ranking across {rank.blocks} blocks (cell × seed): the Friedman test rejects equal ranks "
                     f"(p = {rank.friedman_p:.3g}); Nemenyi separates: {sep}. Every other pair is not distinguishable.")
    else:
        lines.append(f"- Ranking across {rank.blocks} blocks (cell × seed): the Friedman test does not reject equal "
                     f"ranks (p = {rank.friedman_p:.3g}), so no variant ranks significantly above another; the mean "
                     "ranks in the CD diagram are descriptive only.")
    return lines + [""]


def index(*, runs: pd.DataFrame, tables: list[Table], rep: pd.DataFrame, paired: pd.DataFrame,
          ablations: pd.DataFrame, rank: Ranking | None, reference: str, figures: dict[str, str], extras: list[Path], out: Path,
          uri: str, experiment: str | None, no_widths: list[str]) -> str:
    """The page. `figures`: name -> caption of files under figures/; `extras`: plugin files."""
    counts = runs["status"].value_counts()
    exps = sorted(runs["experiment"].unique())
    seeds = sorted(int(s) for s in runs["seed"].dropna().unique())
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python -m bench report" + (f" --experiment {experiment}" if experiment else "")
    lines = [f"# prunebench report: {experiment or 'all experiments'}", ""]
    lines += verdict(paired, rank, reference)
    lines += [
        "## How this was made", "",
        f"- Built {now} by `{cmd}` from the MLflow store `{uri}`.",
        f"- Experiment(s): {fmt_list(exps)}; {len(runs)} runs ("
        + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"); seeds {fmt_list(seeds)}; "
        f"variants {fmt_list(sorted(runs['variant'].unique()))}.",
        f"- Report machine: {hardware()}. Latencies were measured on the machine that ran each cell "
        "(CPU: median of repeats at batch 1 and 64, after warm-up).",
        "- Numbers: mean ± sample std over seeds of the finished runs; accuracies are top-1 on the held-out "
        "test split, in % (every choice of settings is made on the validation split, `Final val acc`); "
        "Δacc = final − base (the shared SGD-trained base, also for methods that train from scratch) in "
        "percentage points; speed-up = base / pruned per run; times exclude the base's pretraining. "
        "The CSV files add n and the 95 % CI half-width (t distribution). A value is bold only where the best "
        "variant beats the runner-up in a paired t-test over seeds (p < 0.05). `–` = no finished run. "
        "`Runs` = finished/total (why the rest did not finish), and how many finished runs met the target.",
        "", "## Paired comparison with the reference", "",
        paired_markdown(paired) if len(paired) else f"No cell holds `{reference}` and another variant.",
        "Files: [CSV](tables/paired.csv), [ranking CSV](tables/ranking.csv).", "",
    ]
    if len(ablations):
        lines += ["## Ablations: variant vs its plain method", "", paired_markdown(ablations),
                  "Holm over all pairs. Files: [Markdown](ablations.md), [CSV](ablations.csv).", ""]
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
        "## Reproduction of paper results (methods.md §7)", "",
        f"{n_cov} of {len(PAPER_RESULTS)} paper results are covered by these runs. A result is covered only "
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
