"""The report's tables: one per (experiment, dataset, model), variants (per target) as rows,
mean ± sample std over seeds, as CSV (with n and the 95 % CI), Markdown and LaTeX (booktabs).

A value is bold only where a paired test over seeds says the best variant beats the runner-up
(bench.report_stats.significant_best); a single noisy run is never "best".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from bench.report_load import SETTING, target_label
from bench.report_stats import FALLBACK_MAJORITY, GPU_METRICS, METRICS, OPTIONAL_METRICS, Metric, significant_best

FALLBACK_MARK = "†"   # on the variant: a scoring fallback decided most of the removed MACs
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

    @property
    def stem(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(self.setting))

    def _rows(self, latex: bool) -> tuple[list[str], list[list[str]]]:
        pm = r" $\pm$ " if latex else " ± "
        esc = tex if latex else md_escape
        header = ["Target", "Variant"] + [m.latex if latex else m.label for m in self.metrics] + ["Runs"]
        body = []
        for i, r in self.numbers.iterrows():
            label = esc(r["row_label"]) + ((r"$^\dagger$" if latex else FALLBACK_MARK) if r["fallback_majority"] else "")
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

    def notes(self) -> list[tuple[str, str, str]]:
        """(Markdown marker, LaTeX marker, text) for each marker the table uses; none when nothing is marked."""
        out = []
        if self.numbers["fallback_majority"].any():
            out.append((FALLBACK_MARK, r"$^\dagger$", f"Fallback scoring (mean activation) decided more than "
                        f"{FALLBACK_MAJORITY:.0%} of the removed MACs (`<method>.fallback_share`) in some runs of "
                        "this row: the row measures the fallback more than the method."))
        if self.numbers["budget_over"].any():
            out.append((OVER_BUDGET_MARK, r"\textsuperscript{!}", "Over budget: some runs of this row trained past "
                        "the shared epoch budget (`budget_met` = 0; `Runs` says how many)."))
        if any(m.key == "delta_acc_own_pp" for m in self.metrics):
            out.append(("", "", "Δacc is against the shared SGD-trained base; Δacc vs own unpruned against the "
                        "method's own unpruned net, trained by its own rule (RLS), where the method logs one."))
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
                   r"mean $\pm$ sample std over seeds; bold = better than the runner-up, paired $t$-test "
                   r"over seeds, $p < 0.05$." + "".join(f" {mark} {tex(text)}".replace(" Δ", r" $\Delta$")
                                                        for _, mark, text in self.notes()))
        return df.to_latex(index=False, escape=False, column_format="ll" + "r" * len(self.metrics) + "l",
                           caption=caption, label=f"tab:{self.stem}")

    def csv_frame(self) -> pd.DataFrame:
        keep = ["experiment", "dataset", "model", "target_kind", "target", "variant", "method", "method_mode",
                "runs", "done", "not_done", "target_met", "budget_over", "fallback_majority", "seeds"]
        stat = [f"{m.key}_{s}" for m in self.metrics for s in ("mean", "std", "n", "ci95")]
        out = self.numbers[keep + stat].copy()
        out["best"] = [";".join(m.key for m in self.metrics if self.best.get((i, m.key))) for i in out.index]
        return out


def build_tables(summary: pd.DataFrame, runs: pd.DataFrame, with_gpu: bool) -> list[Table]:
    """One table per (experiment, dataset, model); variants (per target) as rows.

    Per column and target the best mean is bold only when significantly better than the
    runner-up's, paired over seeds (`significant_best`)."""
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
        best = {}
        for target, tg in g.groupby(["target_kind", "target"]):
            cell = runs[(runs[SETTING + ["target_kind", "target"]] == (*setting, *target)).all(axis=1)]
            for m in metrics:
                if m.better is None:
                    continue
                winner = significant_best(cell, m.key, m.better)
                if winner is not None:
                    best.update({(i, m.key): True for i in tg.index[tg["variant"] == winner]})
        tables.append(Table(tuple(setting), g, metrics, best))
    return tables


def ablations_markdown(ablations: pd.DataFrame) -> str:
    """The ablation table: each variant `X@label` minus its plain method `X` in final test accuracy."""
    return ("# Does each mechanism matter?\n\nEach variant `X@label` against its plain method `X` (the paper's "
            "protocol), final test accuracy, paired over seeds: mean difference (variant − plain) with its 95 % "
            "t CI, paired t-test p, Holm-corrected over all pairs of this table.\n\n" + paired_markdown(ablations))


def paired_markdown(paired: pd.DataFrame) -> str:
    """The paired comparison against the reference, one line per cell and variant."""
    def f(v, d=2, signed=False):
        return "–" if pd.isna(v) else f"{v:{'+' if signed else ''}.{d}f}"

    def p(v):
        return "–" if pd.isna(v) else f"{v:.2g}"

    lines = ["| Dataset / model | Target | Variant | vs | n | Mean diff (pp) | 95 % CI | p (t) | p (Wilcoxon) "
             "| p (Holm) | Verdict |", "|---|---|---|---|---:|---:|---|---:|---:|---:|---|"]
    for _, r in paired.iterrows():
        lines.append(" | ".join([
            f"| {r['dataset']} / {r['model']}", target_label(r["target_kind"], r["target"]), md_escape(r["variant"]),
            md_escape(r["reference"]), str(int(r["n"])), f(r["mean_diff"], signed=True),
            f"[{f(r['ci_low'], signed=True)}, {f(r['ci_high'], signed=True)}]", p(r["p_t"]),
            p(r["p_wilcoxon"]), p(r["p_holm"]), r["verdict"] + " |"]))
    return "\n".join(lines) + "\n"

