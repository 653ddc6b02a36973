"""Display names of methods and variants, for every figure and table of the report.

A reader should see "L1 magnitude" and "RLS (exact P)", not the code identifiers `magnitude` and
`rls@exact_p` the runs are logged under; one mapping here keeps figures and tables in agreement.
A name not listed falls back to its identifier (a new plugin shows up under its own name, a new
variant label with its underscores as spaces), so an unknown method never breaks a report.
"""
from __future__ import annotations

from typing import Iterable

METHODS = {
    "magnitude": "L1 magnitude",
    "pls_vip": "PLS+VIP",
    "csgd": "C-SGD",
    "rl_agent": "RL agent",
    "feature_map": "Map-EX",
    "rls": "RLS",
    "random": "Random",
    "tp_l1": "TP group L1",
    "tp_l2": "TP group L2",
    "tp_taylor": "TP Taylor",
    "tp_bn_scale": "TP BN scale",
    "tp_lamp": "TP LAMP",
}
# The part after `@` of a variant (configs/ablations.yaml and the RLS options it names).
LABELS = {
    "exact_p": "exact P",
    "no_p": "P = I",
    "no_prune": "no pruning",
    "per_layer": "per layer, one shot",
    "fast_eps": "auto ε",
    "activation": "activation scores",
    "l1_fill": "L1 fill",
}


def display_name(variant: str) -> str:
    """`rls@exact_p` -> "RLS (exact P)"; `magnitude` -> "L1 magnitude"."""
    method, _, label = variant.partition("@")
    name = METHODS.get(method, method)
    return f"{name} ({LABELS.get(label, label.replace('_', ' '))})" if label else name


def display_names(variants: Iterable[str]) -> dict[str, str]:
    """variant -> display name for a report's variants; where two would read the same (a label
    `a_b` next to `a b`), both keep their identifier in brackets so no two rows merge."""
    names = {v: display_name(v) for v in sorted(set(variants))}
    shown = list(names.values())
    return {v: n if shown.count(n) == 1 else f"{n} [{v}]" for v, n in names.items()}
