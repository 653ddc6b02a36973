"""Display names of methods and variants, for every figure and table of the report.

A reader should see "L1 magnitude" and "RLS (exact P)", not the code identifiers `magnitude` and
`rls@exact_p` the runs are logged under. Each method class says how it is shown (`display_name`,
`variant_labels`: no plugin names in the harness); this module holds only the fallback: a method
that sets none, or is no longer registered, shows its identifier, and a variant label its
underscores as spaces, so an unknown method never breaks a report.
"""
from __future__ import annotations

from typing import Iterable

from bench.core.registry import get_method
from bench.errors import UnknownMethod


def display_name(variant: str) -> str:
    """`rls@exact_p` -> "RLS (exact P)"; `magnitude` -> "L1 magnitude"."""
    method, _, label = variant.partition("@")
    try:
        cls = get_method(method)
    except UnknownMethod:
        name, labels = method, {}
    else:
        name, labels = cls.declared("display_name") or method, cls.declared("variant_labels")
    return f"{name} ({labels.get(label, label.replace('_', ' '))})" if label else name


def display_names(variants: Iterable[str]) -> dict[str, str]:
    """variant -> display name for a report's variants; where two would read the same (a label
    `a_b` next to `a b`), both keep their identifier in brackets so no two rows merge."""
    names = {v: display_name(v) for v in sorted(set(variants))}
    shown = list(names.values())
    return {v: n if shown.count(n) == 1 else f"{n} [{v}]" for v, n in names.items()}
