"""The paper reproduction check (docs/methods.md §7): paper numbers beside ours. The numbers live
next to what they grade, on each method class (`paper_results`); this module collects them.

A paper row is graded only against runs that did what the paper did: same method, the plain
variant (a named variant is a deviation by definition, unless the row names it as the grid's
spelling of its protocol, e.g. PLS+VIP's K = 5 rounds beside the plain K = 8), the paper's
protocol (ranking, rounds, ...) as logged in the run's `pruning.*` params, the paper's full-size
model and dataset, and a target within ±3 pp of the paper's reduction. Anything else is "not
covered" with the reason. `python -m bench plan` shows which of a grid's targets grade each row.
"""
from __future__ import annotations

import inspect
import re

import numpy as np
import pandas as pd

from bench.core.method import PaperResult
from bench.core.registry import get_method, method_names
from bench.report.load import target_label
from bench.report.tables import tex


def paper_results() -> list[tuple[str, PaperResult]]:
    """(method name, row) for the published rows of every registered method (each method class's
    `paper_results`), in the order of docs/methods.md §7."""
    rows = [(name, p) for name in method_names() for p in get_method(name).declared("paper_results")]
    return sorted(rows, key=lambda r: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", r[1].ref)])


RED_TOL_PP = 3.0  # docs/methods.md §7: reduction within ±3 pp of the paper's


def parse_model_label(label: str) -> tuple[str, dict[str, float]]:
    """`vgg-depth11-width0.25` -> ("vgg", {"depth": 11.0, "width": 0.25}) with the model's defaults
    filled in (RunSpec.model_label writes only the args given in the config)."""
    from bench.core.models import MODELS

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


def protocol_diff(group: pd.Series, p: PaperResult) -> list[str]:
    """How one aggregated run group departs from a paper row's protocol; empty when it matches."""
    want_variant = group["method"] + (f"@{p.label}" if p.label else "")
    diffs = [] if group["variant"] == want_variant else [f"variant {group['variant']}"]
    for key, want in p.protocol:
        got = group.get(key)
        if got is None or pd.isna(got) or str(got) == "":
            diffs.append(f"{key} not logged, paper {want}")
        elif str(got) != want:
            diffs.append(f"{key}={got}, paper {want}")
    return diffs


def graders(method: str, p: PaperResult, groups: pd.DataFrame, ran: str = "finished runs") -> tuple[pd.DataFrame, str]:
    """The groups (one per variant and target, with method, dataset, model label and `pruning.*`
    columns: a report's summary, or a grid's cells) that grade paper row `p` of `method`, and why
    none does ('' when some do). `ran` names what the groups are in the reasons."""
    from bench.core.datasets import DATASETS
    from bench.core.models import MODELS

    none = groups.iloc[:0]
    if p.dataset not in DATASETS:
        return none, f"{p.dataset} is not in the suite"
    if p.model[0] not in MODELS:
        return none, f"no {p.model[0]} in bench.core.models"
    ours = groups[(groups["method"] == method).to_numpy()]
    if not len(ours):
        return none, f"no {ran} of {p.method}"
    want = _paper_model(p.model)
    same_model = np.array([parse_model_label(m) == want for m in ours["model"]], dtype=bool)
    same = ours[(ours["dataset"] == p.dataset).to_numpy() & same_model]
    if not len(same):
        models = ", ".join(sorted(set(ours["model"] + "/" + ours["dataset"])))
        return none, f"not run on the paper's full-size model and data ({ran}: {models})"
    paper_red = {"macs": p.flops_pct, "params": p.params_pct}
    near = same[np.array([paper_red.get(k) is not None and abs(100 * t - paper_red[k]) <= RED_TOL_PP
                          for k, t in zip(same["target_kind"], same["target"])], dtype=bool)]
    if not len(near):
        targets = ", ".join(sorted({target_label(k, t) for k, t in zip(same["target_kind"], same["target"])}))
        return none, f"targets run ({targets}) not within ±{RED_TOL_PP:g} pp of the paper's reduction"
    differs = [protocol_diff(r, p) for _, r in near.iterrows()]
    graded = near[[not d for d in differs]]
    if not len(graded):
        why = "; ".join(sorted({f"{r['variant']}: {', '.join(d)}" for (_, r), d in zip(near.iterrows(), differs)}))
        return none, f"protocol differs ({why})"
    return graded, ""


def reproduction(summary: pd.DataFrame) -> pd.DataFrame:
    """Paper numbers beside ours, one row per §7 result (and per matching run group).

    A group covers a result when it `graders` it: method, dataset and full paper model match, it is
    the plain variant (or the row's named one) with the paper's protocol (`protocol_diff`), and the
    run's target is within ±3 pp of the paper's reduction of the same kind (MACs vs FLOPs, params
    vs params). Pass = |our Δacc - paper Δacc| <= 0.5 pp (1.0 on ImageNet) and our reduction of the
    targeted kind within ±3 pp of the paper's; the other reduction is shown, not checked, because
    the harness sizes each cut to one target only."""
    rows = []
    ok = summary[summary["done"] > 0]
    for method, p in paper_results():
        base = {"ref": p.ref, "paper_method": p.method, "paper_setting": p.setting, "source": p.source,
                "paper_base": p.base, "paper_pruned": p.pruned, "paper_delta_pp": p.delta_pp,
                "paper_flops_red_pct": p.flops_pct, "paper_params_red_pct": p.params_pct}
        if p.delta_pp is None:
            ours = ok[(ok["method"] == method).to_numpy()]
            rows.append({**base, "result": "not checked", "note": p.note + (
                f"; our runs are in the method tables ({len(ours)} groups)" if len(ours) else "")})
            continue
        graded, why = graders(method, p, ok)
        if not len(graded):
            rows.append({**base, "result": "not covered", "note": why})
            continue
        tol = 1.0 if p.dataset == "imagenet" else 0.5
        paper_red = {"macs": p.flops_pct, "params": p.params_pct}
        for _, r in graded.iterrows():
            red_key = "macs_reduction_pct" if r["target_kind"] == "macs" else "params_reduction_pct"
            d_acc = r["delta_acc_pp_mean"]
            d_red = r[f"{red_key}_mean"] - paper_red[r["target_kind"]]
            passed = abs(d_acc - p.delta_pp) <= tol and abs(d_red) <= RED_TOL_PP
            rows.append({**base, "experiment": r["experiment"], "method": r["method"], "variant": r["variant"],
                         "model": r["model"],
                         "target": target_label(r["target_kind"], r["target"]), "n": int(r["done"]),
                         "our_base": r["acc_base_pct_mean"], "our_final": r["acc_final_pct_mean"],
                         "our_delta_pp": d_acc, "our_macs_red_pct": r["macs_reduction_pct_mean"],
                         "our_params_red_pct": r["params_reduction_pct_mean"],
                         "result": "pass" if passed else "fail",
                         "note": f"Δacc within ±{tol:g} pp and {red_key.split('_')[0]} reduction within "
                                 f"±{RED_TOL_PP:g} pp: {abs(d_acc - p.delta_pp):.2f} / {abs(d_red):.1f} pp off"})
    cols = ["ref", "paper_method", "paper_setting", "source", "paper_base", "paper_pruned", "paper_delta_pp",
            "paper_flops_red_pct", "paper_params_red_pct", "experiment", "method", "variant", "model", "target", "n",
            "our_base", "our_final", "our_delta_pp", "our_macs_red_pct", "our_params_red_pct", "result", "note"]
    return pd.DataFrame(rows).reindex(columns=cols)


def plan_lines(specs) -> list[str]:
    """For `bench plan`: which of a grid's cells (`RunSpec`s) grade each paper row, or why none can
    (one line when the grid grades none, as the small presets do)."""
    cells = pd.DataFrame([{"method": s.method, "variant": s.variant, "dataset": s.dataset, "model": s.model_label,
                           "target_kind": s.target_kind, "target": s.target,
                           **{k: v for k, v in s.flat_params().items() if k.startswith("pruning.")}} for s in specs])
    lines, n, rows = [], 0, paper_results()
    for method, p in rows:
        head = f"  {p.ref:<3} {p.method}: {p.setting}" + (f", −{p.flops_pct:g} % FLOPs" if p.flops_pct else "")
        if p.delta_pp is None:
            lines.append(f"{head}: not gradable, {p.note}")
            continue
        graded, why = graders(method, p, cells.drop_duplicates(), ran="cells")
        if not len(graded):
            lines.append(f"{head}: not graded, {why}")
            continue
        n += 1
        by = graded.groupby("variant", sort=True)
        lines.append(f"{head}: graded by " + "; ".join(
            f"{v} at {', '.join(target_label(k, t) for k, t in sorted(zip(g['target_kind'], g['target'])))}"
            for v, g in by))
    head = (f"paper rows (docs/methods.md §7): {n} of {len(rows)} graded by this grid's targets "
            f"(within ±{RED_TOL_PP:g} pp of the paper's reduction)")
    return [head] + lines if n else [head + "; configs/paper.yaml grades them"]


def reproduction_markdown(rep: pd.DataFrame) -> str:
    def f(v, d=2):
        return "–" if v is None or pd.isna(v) else f"{v:.{d}f}"

    lines = ["| # | Paper result | Paper base → pruned | Paper Δacc (pp) | Paper FLOPs↓ / params↓ (%) "
             "| Ours (variant, model, target, n) | Our Δacc (pp) | Our MACs↓ / params↓ (%) | Result | Note |",
             "|---|---|---|---:|---|---|---:|---|---|---|"]
    for _, r in rep.iterrows():
        ours = "–" if pd.isna(r["variant"]) else f"{r['variant']}, {r['model']}, {r['target']}, n={int(r['n'])}"
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

    body = [[tex(r["ref"]), tex(f"{r['paper_method']}: {r['paper_setting']}"), f(r["paper_delta_pp"]),
             f(r["paper_flops_red_pct"], 1), f(r["paper_params_red_pct"], 1), f(r["our_delta_pp"]),
             f(r["our_macs_red_pct"], 1), f(r["our_params_red_pct"], 1), tex(r["result"])]
            for _, r in rep.iterrows()]
    cols = ["\\#", "Paper result", r"Paper $\Delta$acc", r"Paper FLOPs$\downarrow$", r"Paper params$\downarrow$",
            r"Our $\Delta$acc", r"Our MACs$\downarrow$", r"Our params$\downarrow$", "Result"]
    return pd.DataFrame(body, columns=cols).to_latex(
        index=False, escape=False, column_format="ll" + "r" * 6 + "l", label="tab:reproduction",
        caption=r"Reproduction check (methods.md \S7): accuracy change in pp, reductions in \%.")


