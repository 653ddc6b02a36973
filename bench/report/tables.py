"""The report's tables: one per (experiment, dataset, model), variants (per target) as rows,
mean ± sample std over seeds, as CSV (with n and the 95 % CI), Markdown and LaTeX (booktabs).

An accuracy is bold only where its row's verdict against the reference in that cell is "better"
(bench.report.compare: adjusted paired test, more than one test image); no other column has a
verdict, so nothing else is bold, and a difference constant across seeds is not bold by itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from bench.report.load import NO_PRUNE, SETTING, lacking_own_reference, target_label
from bench.report.stats import GPU_METRICS, METRICS, OPTIONAL_METRICS, Metric, contrast_text

CHECK_MARK = "✗"  # on the variant, numbered: some runs failed a precondition the method checks (footnoted)
OVER_BUDGET_MARK = "⚠"  # on epochs used: some run trained past its epoch budget (budget_met = 0)


def tex(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", str(text)).replace("~", r"\textasciitilde{}")


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


@dataclass
class Table:
    """One dataset x model table: numbers (CSV) and the rendered cells with best values marked."""

    setting: tuple[str, str, str]
    numbers: pd.DataFrame              # target, variant, <metric>_{mean,std,n,ci95}, runs
    metrics: list[Metric]
    best: dict[tuple[int, str], bool] = field(default_factory=dict)
    no_own_reference: list[str] = field(default_factory=list)  # methods lacking their `@no_prune` run
    mixed: str = ""  # the numeric settings its finished runs differ in (mixed_settings), "" when none

    @property
    def stem(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(self.setting))

    def _rows(self, latex: bool) -> tuple[list[str], list[list[str]]]:
        pm = r" $\pm$ " if latex else " ± "
        esc = tex if latex else md_escape
        header = ["Target", "Variant"] + [m.latex if latex else m.label for m in self.metrics] + ["Runs"]
        body = []
        marks = self.check_marks()
        for i, r in self.numbers.iterrows():
            label = esc(r["row_label"]) + (_mark(marks[i], latex) if i in marks else "")
            cells = [target_label(r["target_kind"], r["target"], latex), label]
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
                if m.key == "epochs_used" and r["budget_over"]:
                    text += r"\textsuperscript{!}" if latex else f" {OVER_BUDGET_MARK}"
                cells.append(text)
            cells.append(esc(r["runs_text"]))
            body.append(cells)
        return header, body

    def check_marks(self) -> dict[int, int]:
        """Row index -> footnote number, for the rows where some run failed a precondition check."""
        failed = self.numbers["checks_failed"].fillna("") != ""
        return {i: k + 1 for k, i in enumerate(self.numbers.index[failed])}

    def notes(self) -> list[tuple[str, str, str]]:
        """(Markdown marker, LaTeX marker, text) for each marker the table uses; none when nothing is marked."""
        out = []
        for i, k in self.check_marks().items():
            r = self.numbers.loc[i]
            out.append((_mark(k, False).strip(), _mark(k, True), f"Precondition failed ({r['row_label']}, "
                        f"{target_label(r['target_kind'], r['target'])}): {r['checks_failed']}."))
        if self.numbers["budget_over"].any():
            out.append((OVER_BUDGET_MARK, r"\textsuperscript{!}", "Over budget: some runs of this row trained past "
                        "the shared epoch budget (`budget_met` = 0; `Runs` says how many)."))
        if any(m.key == "delta_acc_own_pp" for m in self.metrics):
            out.append(("", "", "Δacc is against the shared SGD-trained base; Δacc vs own unpruned against the "
                        f"method's own `<method>@{NO_PRUNE}` run (trained by its own rule over the whole budget, "
                        "no cut), paired by seed."))
        if self.mixed:
            out.append(("", "", f"Mixed settings: {self.mixed}. Torch threads and precision change a run's "
                        "numbers, so rows that differ in them do not compare exactly (docs/decisions.md)."))
        if self.no_own_reference:
            names = ", ".join(f"`{m}@{NO_PRUNE}`" for m in self.no_own_reference)
            out.append(("", "", f"No finished {names} run here: these rows have no own unpruned reference (the net "
                        "saved before the first cut trained for less of the budget, so it is not used)."))
        return out

    def markdown(self) -> str:
        header, body = self._rows(latex=False)
        align = ["---", "---"] + ["---:"] * len(self.metrics) + ["---"]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        notes = [f"{md} {text}".strip() for md, _, text in self.notes()]
        return "\n".join(lines + ([""] + notes if notes else [])) + "\n"

    def latex(self) -> str:
        header, body = self._rows(latex=True)
        df = pd.DataFrame(body, columns=header)
        caption = (f"{tex(self.setting[1])} / {tex(self.setting[2])} (experiment {tex(self.setting[0])}): "
                   r"mean $\pm$ sample std over seeds; bold = verdict ``better'' than the reference in this "
                   r"cell (paired over seeds, adjusted $p < 0.05$; see paired.csv)."
                   + "".join(f" {mark} {tex(text)}".replace(" Δ", r" $\Delta$") for _, mark, text in self.notes()))
        return df.to_latex(index=False, escape=False, column_format="ll" + "r" * len(self.metrics) + "l",
                           caption=caption, label=f"tab:{self.stem}")

    def csv_frame(self) -> pd.DataFrame:
        keep = ["experiment", "dataset", "model", "target_kind", "target", "variant", "method", "method_mode",
                "runs", "done", "not_done", "target_met", "budget_over", "checks_failed", "seeds"]
        stat = [f"{m.key}_{s}" for m in self.metrics for s in ("mean", "std", "n", "ci95")]
        out = self.numbers[keep + stat].copy()
        out["best"] = [";".join(m.key for m in self.metrics if self.best.get((i, m.key))) for i in out.index]
        return out


# Settings that change a run's numbers without being part of its method: recorded per run, and a
# table whose finished runs differ in one says so
NUMERIC_SETTINGS = {"threads": "torch threads", "pretrain.precision": "pretrain precision",
                    "finetune.precision": "fine-tune precision"}


def mixed_settings(runs: pd.DataFrame) -> str:
    """What the finished `runs` differ in among NUMERIC_SETTINGS, with run counts per value
    ('unrecorded' for runs from before a setting was logged); "" when they all agree."""
    done = runs[runs["status"] == "done"]
    parts = []
    for col, label in NUMERIC_SETTINGS.items():
        if col not in done:
            continue
        values = done[col]
        if col == "threads":  # "1" from a store, 1.0 from a segment's CSV
            values = pd.to_numeric(values, errors="coerce").map(lambda v: "" if pd.isna(v) else f"{v:g}")
        counts = values.fillna("").astype(str).replace("", "unrecorded").value_counts()
        if len(counts) > 1:
            parts.append(f"{label} " + ", ".join(f"{v} ({n} runs)" for v, n in sorted(counts.items())))
    return "; ".join(parts)


# The columns a paired verdict speaks for: final accuracy, and Δacc against the base shared per seed
# (the same per-seed differences).
VERDICT_METRICS = ("acc_final_pct", "delta_acc_pp")


def build_tables(summary: pd.DataFrame, runs: pd.DataFrame, with_gpu: bool,
                 paired: pd.DataFrame | None = None) -> list[Table]:
    """One table per (experiment, dataset, model); variants (per target) as rows. The accuracy
    cells of a row are bold where `paired` (bench.report.compare) gives it the verdict "better"."""
    key = SETTING + ["target_kind", "target", "variant"]
    better = set() if paired is None else set(paired.loc[paired["verdict"] == "better", key].itertuples(index=False))
    logged = {k for k in OPTIONAL_METRICS if f"{k}_n" in summary and summary[f"{k}_n"].sum()}
    metrics = [m for m in METRICS if (with_gpu or m.key not in GPU_METRICS)
               and (m.key not in OPTIONAL_METRICS or m.key in logged)]  # older stores lack some columns
    tables = []
    for setting, g in summary.groupby(SETTING, sort=True):
        g = g.sort_values(["target_kind", "target", "variant"]).reset_index(drop=True)
        g["row_label"] = [v + (f" [{mode}]" if mode else "") for v, mode in zip(g["variant"], g["method_mode"])]
        g["runs_text"] = [f"{d}/{n}" + (f" ({nd})" if nd else "") + (f", target met {t}/{d}" if d else "")
                          + (f", over budget {o}/{d}" if o else "")
                          for d, n, nd, t, o in zip(g["done"], g["runs"], g["not_done"], g["target_met"],
                                                    g["budget_over"])]
        best = {(i, m): True for i, row in zip(g.index, g[key].itertuples(index=False)) if row in better
                for m in VERDICT_METRICS}
        mine = runs[(runs[SETTING] == tuple(setting)).all(axis=1)]
        tables.append(Table(tuple(setting), g, metrics, best, lacking_own_reference(mine), mixed_settings(mine)))
    return tables


def _mark(k: int, latex: bool) -> str:
    return rf"$^{{\times {k}}}$" if latex else f" {CHECK_MARK}{k}"


def ablations_markdown(ablations: pd.DataFrame) -> str:
    """The ablation table: each variant `X@label` minus its plain method `X` in final test accuracy."""
    return ("# Does each mechanism matter?\n\nEach variant `X@label` against its plain method `X` (the paper's "
            "protocol), final test accuracy, paired over seeds (variant − plain), under the grid's design: the "
            "primary contrast forms the primary family (Holm), every other contrast is secondary (Bonferroni per "
            "dataset / model).\n\n" + paired_markdown(ablations))


def _num(v, digits: int = 2, signed: bool = False) -> str:
    return "–" if pd.isna(v) else f"{v:{'+' if signed else ''}.{digits}f}"


def _p(v) -> str:
    return "–" if pd.isna(v) else f"{v:.2g}"


def paired_markdown(paired: pd.DataFrame) -> str:
    """The paired comparisons (bench.report.compare), one line per contrast and variant, with the
    notes that say how each column is adjusted. The Wilcoxon column appears only where some row's
    n lets its smallest p (2/2^n) fall below the row's α/m; otherwise a note says why it is absent."""
    wilcoxon = paired["p_wilcoxon"].notna().any()
    head = ["Dataset / model", "Contrast", "Family", "Variant", "vs", "n", "Mean diff (pp)", "Simultaneous CI",
            "p (t)"] + (["p (Wilcoxon)"] if wilcoxon else []) + ["p adj", "TOST p adj", "MDE (pp)",
                                                                  "P(improvement)", "Verdict"]
    align = ["---"] * 5 + ["---:"] * 2 + ["---"] + ["---:"] * (4 + wilcoxon) + ["---", "---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for _, r in paired.iterrows():
        ci = f"[{_num(r['ci_low'], signed=True)}, {_num(r['ci_high'], signed=True)}] ({100 * r['ci_level']:.3g} %)"
        poi = "–" if pd.isna(r["poi"]) else f"{r['poi']:.2f} [{r['poi_low']:.2f}, {r['poi_high']:.2f}]"
        verdict = r["verdict"] + (f"; {r['preconditions']}" if r["preconditions"] else "")
        cells = [f"{r['dataset']} / {r['model']}", contrast_text(r["contrast"]), r["family"], md_escape(r["variant"]),
                 md_escape(r["reference"]), str(int(r["n"])), _num(r["mean_diff"], signed=True), ci, _p(r["p_t"])]
        cells += [_p(r["p_wilcoxon"])] if wilcoxon else []
        cells += [_p(r["p_adj"]), _p(r["p_tost_adj"]), _num(r["mde"]), poi, md_escape(verdict)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "", "Primary: the design's primary contrast, one row per variant and dataset; Holm over the experiment's "
        "primary rows, for the t-test (`p adj`) and the equivalence test (`TOST p adj`) each. Secondary: every other "
        "contrast, Bonferroni within its dataset / model. CIs are simultaneous at 1 − α/m of the row's family "
        "(level shown), so a CI that excludes 0 is always an adjusted rejection. Verdicts: better / worse = "
        "adjusted t-test p < 0.05 and a mean difference of more than one test image; equivalent = adjusted TOST p "
        "< 0.05 (the difference lies within the ±margin); otherwise inconclusive. MDE: the true difference the "
        "row's test would detect with 80 % power at its α/m; smaller ones would likely be missed. The paired sd "
        "is floored at one test image (`resolution` in the CSV), so a difference equal on every seed does not "
        "give p = 0. P(improvement): share of seeds on which the variant beats the reference (ties count half), "
        "percentile-bootstrap 95 % CI over seeds, from n = 5."]
    n_max = int(paired["n"].max()) if len(paired) else 0
    notes.append("p (Wilcoxon): signed-rank, unadjusted, shown only where its smallest possible p (2/2^n) can fall "
                 "below the row's α/m." if wilcoxon else
                 f"No Wilcoxon signed-rank column: at n ≤ {n_max} its smallest possible two-sided p (2/2^n) cannot "
                 "fall below the α/m of any row, so it could never reject.")
    return "\n".join(lines + notes) + "\n"

