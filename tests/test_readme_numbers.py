"""The README's result tables quote the committed report, not numbers retyped by hand or left stale.

A table opens with `<!-- numbers: docs/results/<exp>/summary.csv dataset=<name> -->`; each row
starts with a variant, and every number in it (`mean ± std` or a bare mean) must be one of that
variant's summary values on that dataset, to the decimals shown.
"""
import re
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- numbers: (docs/results/\S+\.csv) dataset=(\w+) -->")
NUMBER = re.compile(r"^([+-]?\d+(?:\.(\d+))?)(?: ± (\d+(?:\.\d+)?))?$")


def quoted_tables(text: str) -> list[tuple[str, str, list[list[str]]]]:
    """(summary csv, dataset, body rows as cells) for every marked table."""
    lines = text.splitlines()
    tables = []
    for i, line in enumerate(lines):
        mark = MARKER.search(line)
        if not mark:
            continue
        body = []
        for row in lines[i + 1:]:
            if not row.startswith("|"):
                if body or row.strip():
                    break
                continue
            body.append([c.strip() for c in row.strip().strip("|").split("|")])
        tables.append((mark.group(1), mark.group(2), body[2:]))  # drop header and separator
    return tables


def matches(cell: str, rows: pd.DataFrame) -> bool:
    """True when the cell's mean (and std) round to one summary column's values."""
    hit = NUMBER.match(cell.replace("−", "-").replace("**", ""))
    if hit is None:
        return True  # not a number: a name, a note, a dash
    shown, decimals, std = float(hit.group(1)), len(hit.group(2) or ""), hit.group(3)
    half = 0.5 * 10 ** -decimals + 1e-9
    for column in [c for c in rows.columns if c.endswith("_mean")]:
        means = rows[column].dropna()
        close = (means - shown).abs() <= half
        if std is not None:
            std_half = 0.5 * 10 ** -len(std.partition(".")[2]) + 1e-9
            stds = rows.loc[means.index, column.removesuffix("_mean") + "_std"]
            close &= (stds - float(std)).abs() <= std_half
        if close.any():
            return True
    return False


def test_readme_tables_quote_the_committed_reports():
    tables = quoted_tables((REPO / "README.md").read_text())
    assert tables, "the README marks no table as quoted from a report"
    wrong = []
    for csv, dataset, body in tables:
        summary = pd.read_csv(REPO / csv)
        for cells in body:
            variant = cells[0].strip("`† ")
            rows = summary[(summary.dataset == dataset) & (summary.variant == variant)]
            assert not rows.empty, f"{csv}: no {dataset} row for README variant {variant!r}"
            wrong += [f"{dataset} {variant}: {c}" for c in cells[1:] if not matches(c, rows)]
    assert not wrong, f"README numbers not in the committed report: {wrong}"


@pytest.mark.parametrize("cell, ok", [("78.92 ± 0.53", True), ("78.93 ± 0.53", False),
                                      ("−1.32 ± 0.22", True), ("50.0", True), ("51.0", False)])
def test_a_retyped_number_is_caught(cell, ok):
    rows = pd.DataFrame({"acc_final_pct_mean": [78.921], "acc_final_pct_std": [0.534],
                         "delta_acc_pp_mean": [-1.3249], "delta_acc_pp_std": [0.2201],
                         "macs_reduction_pct_mean": [50.02], "macs_reduction_pct_std": [0.0]})
    assert matches(cell, rows) is ok
