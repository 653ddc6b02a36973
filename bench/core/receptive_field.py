"""Theoretical receptive field and cumulative stride of every spatial tensor of a model.

Why a traced graph and not a hand-written table per model: pruned models, new registry entries
and residual branches must all work without edits. The model is traced with torch.fx and the
shapes propagated once; each node then gets its geometry from its inputs with the standard
recurrence (Araujo et al., Distill 2019), per axis:

    k_eff = d (k - 1) + 1;   rf_out = rf_in + (k_eff - 1) j_in;   j_out = j_in s;   start_out = start_in - p j_in

`start` is the first input pixel (negative inside the zero padding) that output cell 0 sees, so
cell u sees input pixels [start + u j, start + u j + rf). Where several tensors meet (residual
add, concat) the result sees the union of what its inputs see. Ops that keep the spatial size
(BN, ReLU, add, dropout, ...) pass the geometry through; an unknown op that changes the spatial
size is an error rather than a silent guess.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from bench.utils import eval_mode

Pair = tuple[int, int]


@dataclass(frozen=True)
class Geometry:
    """Where the cells of one H x W feature map look in the input image (per axis: rows, cols)."""

    rf: Pair      # receptive-field side in input pixels
    stride: Pair  # cumulative stride (jump) between neighbouring cells, in input pixels
    start: Pair   # first input pixel seen by cell 0 (negative = inside the padding)
    size: Pair    # H, W of the feature map

    def centre(self, axis: int) -> torch.Tensor:
        """Continuous input coordinate of each cell centre along `axis` (pixel i spans [i, i+1))."""
        u = torch.arange(self.size[axis], dtype=torch.float64)
        return self.start[axis] + u * self.stride[axis] + self.rf[axis] / 2


def _pair(v) -> Pair:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window(g: Geometry, k, s, p, d, size: Pair) -> Geometry:
    k, s, p, d = _pair(k), _pair(s), _pair(p), _pair(d)
    return Geometry(
        rf=tuple(g.rf[a] + d[a] * (k[a] - 1) * g.stride[a] for a in (0, 1)),
        stride=tuple(g.stride[a] * s[a] for a in (0, 1)),
        start=tuple(g.start[a] - p[a] * g.stride[a] for a in (0, 1)),
        size=size,
    )


def _union(geoms: list[Geometry], size: Pair, where: str) -> Geometry:
    strides = {g.stride for g in geoms}
    if len(strides) > 1:
        raise ValueError(f"{where}: inputs with different cumulative strides {sorted(strides)} meet here")
    start = tuple(min(g.start[a] for g in geoms) for a in (0, 1))
    end = tuple(max(g.start[a] + g.rf[a] for g in geoms) for a in (0, 1))
    return Geometry(tuple(end[a] - start[a] for a in (0, 1)), geoms[0].stride, start, size)


def _spatial(node: fx.Node) -> Pair | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return (int(shape[-2]), int(shape[-1])) if shape is not None and len(shape) == 4 else None


def _inputs(node: fx.Node) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: out.append(n))
    return out


def trace(model: nn.Module, example: torch.Tensor) -> tuple[fx.GraphModule, dict[str, Geometry]]:
    """The traced model and the geometry of every 4-D node, keyed by fx node name.

    Nodes without a spatial output (after flatten, linear layers) get no entry.
    """
    gm = fx.symbolic_trace(model)
    with eval_mode(gm), torch.no_grad():
        ShapeProp(gm).propagate(example[:1].to(next(model.parameters()).device))
    modules = dict(gm.named_modules())
    geo: dict[str, Geometry] = {}
    for node in gm.graph.nodes:
        size = _spatial(node)
        if size is None:
            continue
        if node.op == "placeholder":
            geo[node.name] = Geometry((1, 1), (1, 1), (0, 0), size)
            continue
        ins = [geo[n.name] for n in _inputs(node) if n.name in geo]
        if not ins:
            raise ValueError(f"{node.name}: a spatial tensor that does not derive from the input image")
        mod = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, nn.Conv2d):
            geo[node.name] = _window(ins[0], mod.kernel_size, mod.stride, mod.padding, mod.dilation, size)
        elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            d = getattr(mod, "dilation", 1)
            geo[node.name] = _window(ins[0], mod.kernel_size, mod.stride or mod.kernel_size, mod.padding, d, size)
        elif isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            src = ins[0].size
            if src[0] % size[0] or src[1] % size[1]:
                raise ValueError(f"{node.name}: adaptive pooling {src} -> {size} has no fixed window")
            k = (src[0] // size[0], src[1] // size[1])
            geo[node.name] = _window(ins[0], k, k, 0, 1, size)
        elif all(g.size == size for g in ins):  # size-preserving op: BN, ReLU, add, cat, dropout, ...
            geo[node.name] = _union(ins, size, node.name)
        else:
            raise ValueError(f"{node.name} ({node.op} {node.target}) changes the spatial size "
                             f"{ins[0].size} -> {size} in a way the receptive-field walk does not know")
    return gm, geo


def layer_geometry(model: nn.Module, example: torch.Tensor) -> dict[str, Geometry]:
    """Geometry at the output of every module that is called once, keyed by module name.

    A module called several times (ResNet's shared `relu`) has no single geometry and is left out;
    use `trace` for per-call (node) geometry.
    """
    gm, geo = trace(model, example)
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    return {name: geo[nodes[0].name] for name, nodes in calls.items()
            if len(nodes) == 1 and nodes[0].name in geo}
