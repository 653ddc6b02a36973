"""Foreground regions for Map-EX (docs/methods.md §6): in input pixels, and carried onto a feature-map grid.

Kept apart from the method because the geometry is reusable and testable on its own: a region is
bool [N, H, W] over input pixels; `grid_mask` turns it into the cells of a map whose geometry
(receptive field, cumulative stride, first pixel; `bench.core.receptive_field`) is known.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from bench.api import Geometry, eval_mode, trace
from methods._fx import activation_node

STROKE_THRESHOLD = 0.5  # §6: MNIST foreground = pixels above 0.5 on [0, 1]
RULES = ("map-ex", "map", "pooled")


def stroke_mask(x: torch.Tensor, threshold: float = STROKE_THRESHOLD) -> torch.Tensor:
    """uint8 [N, C, H, W] -> bool [N, H, W]: pixels brighter than `threshold` of full scale."""
    return x.float().mean(1) / 255.0 > threshold


def boxes_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boxes [N, B, 4] (x0, y0, x1, y1 in pixels; NaN rows ignored) -> bool [N, H, W] of pixels they touch."""
    boxes = boxes.double()
    if boxes.ndim == 2:
        boxes = boxes[:, None]
    x0, y0, x1, y1 = boxes.unbind(-1)  # [N, B]; comparisons with NaN are False, so NaN rows drop out
    cols = torch.arange(width, dtype=torch.float64)
    rows = torch.arange(height, dtype=torch.float64)
    in_c = (cols + 1 > x0[..., None]) & (cols < x1[..., None])  # pixel [c, c+1) overlaps [x0, x1)
    in_r = (rows + 1 > y0[..., None]) & (rows < y1[..., None])
    return (in_r[..., :, None] & in_c[..., None, :]).any(1)


def center_mask(n: int, height: int, width: int, box_width: float, box_height: float) -> torch.Tensor:
    """The same central box (fractions of the image side) for all n images: bool [N, H, W]."""
    x0, y0 = width * (1 - box_width) / 2, height * (1 - box_height) / 2
    box = torch.tensor([x0, y0, width - x0, height - y0], dtype=torch.float64)
    return boxes_mask(box.expand(n, 4), height, width)


class Recorder(fx.Interpreter):
    """Runs a traced model and keeps the outputs of the named nodes."""

    def __init__(self, gm: fx.GraphModule, names: set[str]):
        super().__init__(gm)
        self.names = names
        self.out: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        value = super().run_node(n)
        if n.name in self.names:
            self.out[n.name] = value
        return value


def gradcam_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, percentile: float = 60.0,
                 layer: str | None = None) -> torch.Tensor:
    """Grad-CAM of the true class at the last conv's post-ReLU map (or at `layer`), upsampled to
    the input and thresholded at its per-image `percentile`: bool [N, H, W] (~(100-p) % foreground)."""
    gm, _ = trace(model, x)
    convs = [n for n in gm.graph.nodes if n.op == "call_module"
             and isinstance(gm.get_submodule(n.target), nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a conv layer; the model has none")
    node, _ = activation_node(gm, layer or convs[-1].target)
    rec = Recorder(gm, {node.name})
    with eval_mode(gm), torch.enable_grad():
        logits = rec.run(x)
        act = rec.out[node.name]
        grad, = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), act)
    cam = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).flatten(1)
    thr = torch.quantile(cam, percentile / 100.0, dim=1, keepdim=True)
    return (cam > thr).view(len(x), *x.shape[-2:])


def grid_mask(region: torch.Tensor, geo: Geometry, rule: str = "map-ex") -> torch.Tensor:
    """bool [N, H, W] pixel region -> bool [N, Hl, Wl]: which cells of a map with geometry `geo`
    are foreground.
    - "map-ex": the cell's receptive-field window touches the region;
    - "map": its centre does (a 1-pixel window, or the 2 pixels the centre lies between when rf is even);
    - "pooled": more than half of the cell's own tile (the stride x stride square around its centre,
      pixels outside the image not counted) is foreground: the pixel mask average-pooled down to the
      map. For deep maps whose receptive field covers the whole image, where "map-ex" marks every
      cell and "map" leaves too few cells for a background."""
    if rule not in RULES:
        raise ValueError(f"grid_mask: unknown rule '{rule}'; choose one of {', '.join(RULES)}")
    n, h, w = region.shape
    win, lo = [], []
    for a in (0, 1):
        k = {"map-ex": geo.rf[a], "map": 1 if geo.rf[a] % 2 else 2, "pooled": geo.stride[a]}[rule]
        win.append(k)
        lo.append(geo.start[a] + (0 if rule == "map-ex" else (geo.rf[a] - k) // 2))
    pad = []  # F.pad order: left, right, top, bottom
    for a in (1, 0):
        end = lo[a] + (geo.size[a] - 1) * geo.stride[a] + win[a]
        pad += [max(0, -lo[a]), max(0, end - (h, w)[a])]

    def pool(x: torch.Tensor, op) -> torch.Tensor:
        x = F.pad(x[:, None].float(), pad)[..., max(0, lo[0]):, max(0, lo[1]):]
        return op(x, tuple(win), tuple(geo.stride))[:, 0, :geo.size[0], :geo.size[1]]

    if rule != "pooled":
        return pool(region, F.max_pool2d) > 0
    inside = pool(torch.ones_like(region[:1]), F.avg_pool2d)  # share of each tile inside the image
    return pool(region, F.avg_pool2d) > 0.5 * inside
