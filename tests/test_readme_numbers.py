"""The numbers README.md and docs/*.md quote from a committed report are that report's, not numbers
retyped by hand or left stale. Three markers (an HTML comment on the line before):

- `<!-- numbers: docs/results/<exp>/summary.csv dataset=<name> -->` opens a table whose rows start
  with a variant; every number in a row (`mean ± std` or a bare mean) must be one of that variant's
  summary values on that dataset, to the decimals shown.
- `<!-- pairs: <csv of paired comparisons> -->` opens a table of comparisons (columns `Dataset`,
  `Variant` or `Method`, optionally `vs`, `Target` and `Contrast`); its mean difference, CI, p-values,
  MDE and paired sd must be
  that comparison's row of the CSV, to the decimals shown.
- `<!-- quotes: <csv> [<csv> ...] -->` opens a paragraph or list (up to the next blank line); every
  decimal number in it (`1.97`, `−60.53`, `6.5e-11`) must be a value of one of those CSVs, to the
  decimals shown, sign aside (prose says "1.8 pp under"), or a fraction of one shown in percent.
"""
import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- numbers: (docs/results/\S+\.csv) dataset=(\w+) -->")
PAIRS = re.compile(r"<!-- pairs: (docs/results/\S+\.csv) -->")
QUOTES = re.compile(r"<!-- quotes: ((?:docs/results/\S+\.csv\s+)+)-->")
NUMBER = re.compile(r"^([+-]?\d+(?:\.(\d+))?)(?: ± (\d+(?:\.\d+)?))?$")
DECIMAL = re.compile(r"(?<![\w.@/])[+-]?\d+(?:\.\d+(?:e[+-]?\d+)?|e[+-]?\d+)(?!\w|\.\d)")


def documents() -> list[Path]:
    """The README and every page under docs/ (the generated reports under docs/results/ excluded)."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _minus(s: str) -> str:
    return s.replace("−", "-").replace("**", "")


def _body(lines: list[str], start: int) -> list[list[str]]:
    """The cells of the table that starts after line `start` (blank lines before it skipped)."""
    body = []
    for row in lines[start + 1:]:
        if not row.startswith("|"):
            if body or row.strip():
                break
            continue
        body.append([c.strip() for c in row.strip().strip("|").split("|")])
    return body


def quoted_tables(text: str) -> list[tuple[str, str, list[list[str]]]]:
    """(summary csv, dataset, body rows as cells) for every `numbers:` table."""
    lines = text.splitlines()
    return [(m.group(1), m.group(2), _body(lines, i)[2:])  # drop header and separator
            for i, line in enumerate(lines) if (m := MARKER.search(line))]


def pair_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(csv, header, body rows) for every `pairs:` table."""
    lines = text.splitlines()
    tables = []
    for i, line in enumerate(lines):
        if m := PAIRS.search(line):
            body = _body(lines, i)
            tables.append((m.group(1), body[0], body[2:]))
    return tables


def quoted_blocks(text: str) -> list[tuple[list[str], str]]:
    """(csvs, text) for every `quotes:` block: the lines after the marker up to a blank line."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if m := QUOTES.search(line):
            block = []
            for row in lines[i + 1:]:
                if not row.strip():
                    break
                block.append(row)
            blocks.append((m.group(1).split(), "\n".join(block)))
    return blocks


def _half(shown: str) -> float:
    """Half a unit of the last digit shown: 1.97 -> 0.005, 6.5e-11 -> 0.05e-11, 1 -> 0.5."""
    mantissa, _, exp = shown.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10 ** (-decimals) * 10 ** int(exp or 0) * (1 + 1e-9)


def close(shown: str, value: float) -> bool:
    return abs(float(_minus(shown)) - value) <= _half(_minus(shown)) + 1e-12


def matches(cell: str, rows: pd.DataFrame) -> bool:
    """True when the cell's mean (and std) round to one summary column's values."""
    hit = NUMBER.match(_minus(cell))
    if hit is None:
        return True  # not a number: a name, a note, a dash
    shown, decimals, std = float(hit.group(1)), len(hit.group(2) or ""), hit.group(3)
    half = 0.5 * 10 ** -decimals + 1e-9
    for column in [c for c in rows.columns if c.endswith("_mean")]:
        means = rows[column].dropna()
        ok = (means - shown).abs() <= half
        if std is not None:
            std_half = 0.5 * 10 ** -len(std.partition(".")[2]) + 1e-9
            stds = rows.loc[means.index, column.removesuffix("_mean") + "_std"]
            ok &= (stds - float(std)).abs() <= std_half
        if ok.any():
            return True
    return False


def _name(cell: str) -> str:
    """The variant a cell names: its first `code` span, else its first word."""
    code = re.search(r"`([^`]+)`", cell)
    return code.group(1) if code else cell.strip("*† ").split()[0]


def _dataset(cell: str) -> str:
    return re.sub(r"[^a-z0-9]", "", cell.lower())


def _contrast(cell: str) -> str:
    """The CSV's spelling of a contrast cell: `mean over targets` -> mean, `−50 % MACs` -> macs:0.5."""
    words = cell.lower()
    if "mean" in words:
        return "mean"
    return f"{'params' if 'param' in words else 'macs'}:{_target(cell):g}"


def _target(cell: str) -> float:
    return float(re.search(r"(\d+(?:\.\d+)?)", cell).group(1)) / 100


PAIR_COLUMNS = {"mean diff (pp)": ("mean_diff",), "95 % ci": ("ci_low", "ci_high"), "p (t)": ("p_t",),
                "p (holm)": ("p_holm",), "simultaneous ci": ("ci_low", "ci_high"), "p adj": ("p_adj",),
                "tost p adj": ("p_tost_adj",), "mde (pp)": ("mde",), "paired sd (pp)": ("sd",)}


def pair_errors(csv: str, header: list[str], body: list[list[str]]) -> list[str]:
    frame = pd.read_csv(REPO / csv)
    cols = {h.strip().lower(): k for k, h in enumerate(header)}
    variant = cols.get("variant", cols.get("method"))
    assert "dataset" in cols and variant is not None, f"{csv}: a pairs table needs Dataset and Variant/Method"
    wrong = []
    for cells in body:
        rows = frame[(frame.dataset.map(_dataset) == _dataset(cells[cols["dataset"]]))
                     & (frame.variant == _name(cells[variant]))]
        if "vs" in cols:
            rows = rows[rows.reference == _name(cells[cols["vs"]])]
        if "target" in cols:
            rows = rows[np.isclose(rows.target, _target(cells[cols["target"]]))]
        if "contrast" in cols:
            rows = rows[rows.contrast == _contrast(cells[cols["contrast"]])]
        assert len(rows) == 1, f"{csv}: {len(rows)} rows for {cells[:3]}"
        row = rows.iloc[0]
        for head, fields in PAIR_COLUMNS.items():
            if head not in cols:
                continue
            shown = re.findall(r"[+−-]?\d+(?:\.\d+)?(?:e[+−-]?\d+)?", cells[cols[head]])
            assert len(shown) == len(fields), f"{csv}: {head} {cells[cols[head]]!r}"
            wrong += [f"{cells[:2]} {head}: {s} (report: {row[f]:.4g})"
                      for s, f in zip(shown, fields) if not close(s, float(row[f]))]
    return wrong


@lru_cache
def csv_values(csv: str) -> np.ndarray:
    frame = pd.read_csv(REPO / csv)
    values = frame.select_dtypes("number").to_numpy(dtype=float).ravel()
    values = values[np.isfinite(values)]
    return np.abs(np.concatenate([values, 100 * values]))


def block_errors(csvs: list[str], text: str) -> list[str]:
    values = np.concatenate([csv_values(c) for c in csvs])
    wrong = []
    for shown in DECIMAL.findall(_minus(text)):
        target = abs(float(shown))
        if not (np.abs(values - target) <= _half(shown.lstrip("+-")) + 1e-12).any():
            wrong.append(shown)
    return wrong


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_quoted_numbers_are_the_committed_reports(doc):
    text = doc.read_text()
    wrong = []
    for csv, dataset, body in quoted_tables(text):
        summary = pd.read_csv(REPO / csv)
        for cells in body:
            variant = cells[0].strip("`† ")
            rows = summary[(summary.dataset == dataset) & (summary.variant == variant)]
            assert not rows.empty, f"{csv}: no {dataset} row for variant {variant!r}"
            wrong += [f"{dataset} {variant}: {c}" for c in cells[1:] if not matches(c, rows)]
    for csv, header, body in pair_tables(text):
        wrong += pair_errors(csv, header, body)
    for csvs, block in quoted_blocks(text):
        wrong += [f"{block[:40]!r}…: {n}" for n in block_errors(csvs, block)]
    assert not wrong, f"{doc.name}: numbers not in the committed report: {wrong}"


def test_the_results_stay_quoted_and_tested():
    """The marked tables moved from the README to docs/results.md; they must not fall out of the test."""
    text = (REPO / "docs/results.md").read_text()
    assert len(quoted_tables(text)) >= 4 and pair_tables(text) and quoted_blocks(text)
    assert quoted_blocks((REPO / "README.md").read_text()), "the README's headline quotes no report"


@pytest.mark.parametrize("cell, ok", [("78.92 ± 0.53", True), ("78.93 ± 0.53", False),
                                      ("−1.32 ± 0.22", True), ("50.0", True), ("51.0", False)])
def test_a_retyped_number_is_caught(cell, ok):
    rows = pd.DataFrame({"acc_final_pct_mean": [78.921], "acc_final_pct_std": [0.534],
                         "delta_acc_pp_mean": [-1.3249], "delta_acc_pp_std": [0.2201],
                         "macs_reduction_pct_mean": [50.02], "macs_reduction_pct_std": [0.0]})
    assert matches(cell, rows) is ok


def test_a_retyped_pair_or_quote_is_caught(tmp_path):
    csv = str(tmp_path / "paired.csv")  # absolute: REPO / csv is csv itself
    pd.DataFrame({"dataset": ["cifar10"], "variant": ["rls"], "reference": ["magnitude"], "target": [0.5],
                  "mean_diff": [-1.0249], "ci_low": [-1.5], "ci_high": [-0.55], "p_t": [0.0123],
                  "p_holm": [0.0011]}).to_csv(csv, index=False)
    header = ["Dataset", "Variant", "vs", "Target", "Mean diff (pp)", "95 % CI", "p (t)", "p (Holm)"]
    good = ["CIFAR-10", "`rls`", "`magnitude`", "−50 %", "−1.02", "[−1.50, −0.55]", "0.012", "0.0011"]
    assert pair_errors(csv, header, [good]) == []
    assert len(pair_errors(csv, header, [good[:6] + ["0.013", "0.0011"]])) == 1
    assert block_errors([csv], "RLS (−1.02 pp, CI [−1.50, −0.55], p_Holm = 0.0011).") == []
    assert block_errors([csv], "RLS (−1.03 pp at −50 %, n = 3, ~1e-6), then 1.20.") == ["-1.03", "1e-6", "1.20"]
    assert math.isclose(_half("6.5e-11"), 0.05e-11, rel_tol=1e-6)
