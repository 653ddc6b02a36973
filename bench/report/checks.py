"""Preconditions a method checked on its own runs (`Task.check`), summarised for the tables.

A row whose runs failed a check measures something other than the method's protocol (a lossy
C-SGD merge, Map-EX decided by its fallback), so its table footnotes the check, how many runs
failed it, their values and the rule. Each run logs metrics `check.<name>` (the value) and
`check.<name>.passed` (0/1), param `check.<name>.rule`, and `preconditions_met`; the harness
knows no check by name.
"""
from __future__ import annotations

import pandas as pd


def check_names(runs: pd.DataFrame) -> list[str]:
    """Names of the checks any of `runs` logged."""
    return sorted(c[len("check."):-len(".passed")] for c in runs.columns
                  if c.startswith("check.") and c.endswith(".passed"))


def _values(v: pd.Series) -> str:
    if v.empty:
        return "not logged"
    lo, hi = v.min(), v.max()
    return f"{lo:.2g}" if lo == hi else f"{lo:.2g}–{hi:.2g}"


def failed_checks(done: pd.DataFrame) -> str:
    """'' when every finished run passed each check it logged; else one clause per failed check,
    e.g. 'merge_lossless failed in 3/3 runs (value 0.47–0.56; rule ≤ 1e-3)', joined by '; '
    (n = the runs that logged the check)."""
    parts = []
    for name in check_names(done):
        passed = pd.to_numeric(done[f"check.{name}.passed"], errors="coerce")
        failed = passed == 0
        if not failed.any():
            continue
        value = pd.to_numeric(done.get(f"check.{name}", pd.Series(index=done.index, dtype=float)), errors="coerce")
        rule_col = done.get(f"check.{name}.rule", pd.Series(index=done.index, dtype=object))
        rules = " / ".join(sorted(set(rule_col[failed].dropna().astype(str))))
        parts.append(f"{name} failed in {int(failed.sum())}/{int(passed.notna().sum())} runs "
                     f"(value {_values(value[failed].dropna())}" + (f"; rule {rules}" if rules else "") + ")")
    return "; ".join(parts)
