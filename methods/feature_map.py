"""Feature-representation pruning, "Map-EX" (Ge, Lu, Gao 2021; methods.md §6, reconstruction [X]).

A filter earns its place by responding more on the object than on the background. For every
prunable conv unit, a per-image foreground region (input pixels) is carried onto the unit's
feature-map grid with its receptive field and cumulative stride (`bench.receptive_field`):
- "map-ex" (default): a cell is foreground when its receptive-field square overlaps the region
  (the box grown by rf/2 per side);
- "map": a cell is foreground when its centre lies in the region. Deviation: the centre is the
  exact one from the traced geometry (start + u*j + rf/2), not §6's ((u+0.5) s), which is only
  right for 'same'-padded convs (LeNet's unpadded conv2 would be off by 4 pixels).
On post-ReLU maps a (the ReLU after conv/BN is captured; where none follows, relu is applied to the
conv/BN output), per image n and channel c: fg = mean of a on foreground cells, bg = mean on
background cells; images with fewer than `min_bg_cells` background cells (or no foreground cell)
are skipped. Scores, lowest pruned by the harness:
- "contrast" (§6 step 4): s_c = mean_n (fg - bg) / (mean_n (fg + bg) + eps);
- "ratio" [X]: s_c = mean_n log((fg + d) / (bg + d)), d = 1 % of the layer's mean activation. A
  per-image log ratio: a ratio of the means would rank filters exactly as "contrast" does (it is a
  monotone function of it), so that variant would add nothing.

Adaptations [X], none in the paper (our datasets have no boxes):
- foreground "stroke" (MNIST): pixels > 0.5 after scaling to [0, 1];
- "center" (SVHN): a central pseudo-box of `box_width` x `box_height` of the image;
- "gradcam" (CIFAR-10): Grad-CAM of the unpruned model for the true class at the last conv,
  upsampled bilinearly, foreground above its per-image `gradcam_percentile`;
- "boxes": explicit boxes from an npz file (`boxes` option), for datasets that have them;
- when the chosen rule leaves fewer than `min_images` usable images in a layer (deep layers whose
  receptive field covers the whole image: everything is foreground), that layer falls back to
  the "map" rule, then to mean activation; each fallback is logged per unit;
- linear units (LeNet's fc layers) have no spatial map: scored by mean post-ReLU activation
  (activation-magnitude fallback, logged), or left unpruned with `linear_units: skip`;
- a residual group (only with `include_coupled`) averages the scores of its members' maps;
- ties (contrast is exactly 1 for every filter silent on a blank background) are broken by
  response strength, see `representation_scores`.
Masks are computed once, from the model of the first `score` call (the unpruned base), and reused
in later rounds of an iterative schedule, so Grad-CAM always comes from the base model.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from bench.api import ConfigError, Geometry, Range, ScoreMethod, Split, Task, register, trace
from methods._fx import activation_node

Source = Literal["auto", "stroke", "center", "gradcam", "boxes"]
AUTO_SOURCE = {"mnist": "stroke", "svhn": "center", "cifar10": "gradcam"}
STROKE_THRESHOLD = 0.5  # §6: MNIST foreground = pixels above 0.5 on [0, 1]
EPS = 1e-8
TIE_BREAK = 1e-3


# -- foreground regions (input pixels) ------------------------------------------------------------

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
    was = model.training
    gm.eval()
    rec = _Recorder(gm, {node.name})
    with torch.enable_grad():
        logits = rec.run(x)
        act = rec.out[node.name]
        grad, = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), act)
    model.train(was)
    cam = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).flatten(1)
    thr = torch.quantile(cam, percentile / 100.0, dim=1, keepdim=True)
    return (cam > thr).view(len(x), *x.shape[-2:])


# -- foreground regions on a feature-map grid -------------------------------------------------------

def grid_mask(region: torch.Tensor, geo: Geometry, rule: str = "map-ex") -> torch.Tensor:
    """bool [N, H, W] pixel region -> bool [N, Hl, Wl]: which cells of a map with geometry `geo`
    are foreground. "map-ex": the cell's receptive-field window touches the region; "map": its
    centre does (a 1-pixel window, or the 2 pixels the centre lies between when rf is even)."""
    n, h, w = region.shape
    win, lo = [], []
    for a in (0, 1):
        if rule == "map-ex":
            k, first = geo.rf[a], geo.start[a]
        else:
            k = 1 if geo.rf[a] % 2 else 2
            first = geo.start[a] + (geo.rf[a] - k) // 2
        win.append(k)
        lo.append(first)
    size = (h, w)
    pad = []  # F.pad order: left, right, top, bottom
    for a in (1, 0):
        end = lo[a] + (geo.size[a] - 1) * geo.stride[a] + win[a]
        pad += [max(0, -lo[a]), max(0, end - size[a])]
    x = F.pad(region[:, None].float(), pad)
    x = x[..., max(0, lo[0]):, max(0, lo[1]):]
    out = F.max_pool2d(x, tuple(win), tuple(geo.stride))
    return out[:, 0, :geo.size[0], :geo.size[1]] > 0


# -- capturing post-ReLU maps -------------------------------------------------------------------------

class _Recorder(fx.Interpreter):
    """Runs the traced model and keeps the outputs of the named nodes."""

    def __init__(self, gm: fx.GraphModule, names: set[str]):
        super().__init__(gm)
        self.names = names
        self.out: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        value = super().run_node(n)
        if n.name in self.names:
            self.out[n.name] = value
        return value


@dataclass
class _Probe:
    """Where one unit member's post-ReLU map comes from, and what is accumulated for it per batch."""

    node: str
    relu_found: bool
    geo: Geometry | None  # None: no spatial map (linear layer)
    fg: dict[str, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))  # rule -> [B, C] means
    bg: dict[str, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))
    ok: dict[str, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))  # rule -> [B] usable
    mean: list[torch.Tensor] = field(default_factory=list)  # [B, C] mean over all cells


def _reduce(probe: _Probe, act: torch.Tensor, region: torch.Tensor, rules: tuple[str, ...], min_bg: int) -> None:
    act = act if probe.relu_found else F.relu(act)
    act = act.detach().double()
    if probe.geo is None:
        probe.mean.append(act.flatten(2).mean(2) if act.ndim > 2 else act)
        return
    probe.mean.append(act.mean((2, 3)))
    cells = act.shape[2] * act.shape[3]
    total = act.sum((2, 3))
    for rule in rules:
        m = grid_mask(region, probe.geo, rule).double()
        n_fg = m.sum((1, 2))
        fg_sum = torch.einsum("bchw,bhw->bc", act, m)
        probe.fg[rule].append(fg_sum / n_fg.clamp(min=1)[:, None])
        probe.bg[rule].append((total - fg_sum) / (cells - n_fg).clamp(min=1)[:, None])
        probe.ok[rule].append((n_fg >= 1) & (cells - n_fg >= min_bg))


def representation_scores(fg: torch.Tensor, bg: torch.Tensor, kind: str = "contrast") -> torch.Tensor:
    """Per-channel score from per-image foreground / background means [N, C] of usable images.

    [X] Ties are broken by response strength: "contrast" saturates at exactly 1 for every filter
    that is silent on the background (common where the background is blank, as on MNIST), and a
    stable sort would then cut them by index. A term below `TIE_BREAK` (relative mean response)
    orders them, stronger first, without reordering scores that differ by more than that."""
    strength = (fg + bg).mean(0)
    if kind == "contrast":
        s = (fg - bg).mean(0) / (strength + EPS)
    else:
        d = 0.01 * float(strength.mean()) / 2 + EPS
        s = torch.log((fg + d) / (bg + d)).mean(0)
    return s + TIE_BREAK * strength / (float(strength.max()) + EPS)


# -- the method -------------------------------------------------------------------------------------

@register
class FeatureMap(ScoreMethod):
    name = "feature_map"
    summary = "Map-EX: filters ranked by object-vs-background response on post-ReLU maps (adapted, §6)"

    def __init__(self, rule: Literal["map-ex", "map"] = "map-ex",
                 score: Literal["contrast", "ratio"] = "contrast",
                 foreground: Source = "auto",
                 box_width: Annotated[float, Range(0, 1, lo_open=True)] = 0.6,
                 box_height: Annotated[float, Range(0, 1, lo_open=True)] = 0.9,
                 gradcam_percentile: Annotated[float, Range(0, 100, lo_open=True, hi_open=True)] = 60.0,
                 boxes: str | None = None, min_bg_cells: Annotated[int, Range(1)] = 4,
                 min_images: Annotated[int, Range(1)] = 10, images: Annotated[int, Range(1)] = 2000,
                 split: Literal["train", "val"] = "train", linear_units: Literal["activation", "skip"] = "activation",
                 batch_size: Annotated[int, Range(1)] = 256):
        if (foreground == "boxes") != (boxes is not None):
            raise ConfigError("feature_map.boxes: give a boxes file exactly when foreground is 'boxes'")
        self.rule, self.kind, self.foreground = rule, score, foreground
        self.box_width, self.box_height, self.percentile = box_width, box_height, gradcam_percentile
        self.boxes, self.min_bg, self.min_images = boxes, int(min_bg_cells), int(min_images)
        self.images, self.split, self.linear_units, self.batch_size = int(images), split, linear_units, int(batch_size)
        self._regions: torch.Tensor | None = None  # bool [N, H, W], fixed by the first score() call
        self._calls = 0

    # -- data and foreground ----------------------------------------------------------------------
    def _source(self, dataset: str) -> str:
        if self.foreground != "auto":
            return self.foreground
        if dataset not in AUTO_SOURCE:
            raise ConfigError(f"feature_map.foreground: 'auto' has no default for dataset '{dataset}'; "
                              f"choose one of {', '.join(get_args(Source)[1:])}")
        return AUTO_SOURCE[dataset]

    def _images(self, task: Task) -> tuple[Split, torch.Tensor]:
        """The scoring images (a seeded subset of the split) and their indices in the split."""
        part: Split = getattr(task.data, self.split)
        idx = torch.arange(len(part))
        if self.images < len(part):
            idx = torch.randperm(len(part), generator=torch.Generator().manual_seed(task.seed))[:self.images]
        return Split(part.x[idx], part.y[idx]), idx

    def _load_boxes(self, idx: torch.Tensor, n_split: int) -> torch.Tensor:
        with np.load(self.boxes, allow_pickle=False) as z:
            if self.split not in z.files:
                raise ConfigError(f"feature_map.boxes: {self.boxes} has no array '{self.split}' "
                                  f"(boxes [N, 4] or [N, B, 4] aligned with the {self.split} split)")
            arr = torch.from_numpy(np.asarray(z[self.split], dtype=np.float64))
        if arr.shape[-1] != 4 or arr.ndim not in (2, 3) or len(arr) != n_split:
            raise ConfigError(f"feature_map.boxes: '{self.split}' in {self.boxes} has shape {tuple(arr.shape)}; "
                              f"expected [{n_split}, 4] or [{n_split}, B, 4] (x0, y0, x1, y1 in pixels)")
        return arr[idx]

    def regions(self, model: nn.Module, task: Task) -> torch.Tensor:
        """Foreground pixels of every scoring image, bool [N, H, W]; cached after the first call."""
        if self._regions is not None:
            return self._regions
        images, idx = self._images(task)
        n, (_, h, w) = len(images), task.data.info.shape
        source = self._source(task.data.info.name)
        if source == "stroke":
            region = stroke_mask(images.x)
        elif source == "center":
            region = center_mask(n, h, w, self.box_width, self.box_height)
        elif source == "boxes":
            region = boxes_mask(self._load_boxes(idx, len(getattr(task.data, self.split))), h, w)
        else:
            device = next(model.parameters()).device
            region = torch.cat([
                gradcam_mask(model, task.normalize(images.x[i:i + self.batch_size]).to(device),
                             images.y[i:i + self.batch_size].to(device), self.percentile).cpu()
                for i in range(0, n, self.batch_size)])
        self._regions = region
        return region

    # -- scoring -----------------------------------------------------------------------------------
    def score(self, model: nn.Module, task: Task) -> dict[str, torch.Tensor]:
        units = task.units(model)
        region = self.regions(model, task)
        images, _ = self._images(task)
        device = next(model.parameters()).device
        gm, geo = trace(model, task.example)
        modules = dict(model.named_modules())
        rules = (self.rule,) if self.rule == "map" else ("map-ex", "map")  # "map" is map-ex's fallback
        probes: dict[str, _Probe] = {}
        for unit in units.values():
            if isinstance(modules[unit.name], nn.Linear) and self.linear_units == "skip":
                continue
            for member in unit.members:
                node, relu = activation_node(gm, member)
                probes[member] = _Probe(node.name, relu, geo.get(node.name))
        by_node: dict[str, list[_Probe]] = {}
        for p in probes.values():
            by_node.setdefault(p.node, []).append(p)

        was = model.training
        gm.eval()  # gm shares its submodules with model: this switches model's BN to eval too
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = task.normalize(images.x[i:i + self.batch_size]).to(device)
                rec = _Recorder(gm, set(by_node))
                rec.run(x)
                reg = region[i:i + self.batch_size].to(device)
                for name, ps in by_node.items():
                    for p in ps:
                        _reduce(p, rec.out[name], reg, rules, self.min_bg)
        model.train(was)

        scores: dict[str, torch.Tensor] = {}
        notes: dict[str, str] = {}
        for unit in units.values():
            member_scores = []
            for member in unit.members:
                if member not in probes:
                    continue
                s, note = self._finish(probes[member], rules)
                member_scores.append(s)
                notes[member] = note
            if member_scores:
                scores[unit.name] = torch.stack(member_scores).mean(0).float().cpu()
        self._log(task, notes, region)
        return scores

    def _finish(self, p: _Probe, rules: tuple[str, ...]) -> tuple[torch.Tensor, str]:
        """A member's score and how it was obtained (rule used, usable images, or the fallback)."""
        mean = torch.cat(p.mean)
        if p.geo is None:
            return mean.mean(0), "activation-magnitude fallback (linear layer: no spatial map)"
        for rule in rules:
            ok = torch.cat(p.ok[rule])
            used = int(ok.sum())
            if used >= self.min_images:
                fg, bg = torch.cat(p.fg[rule])[ok], torch.cat(p.bg[rule])[ok]
                tag = "" if rule == self.rule else f" (fallback: {self.rule} left < {self.min_images} usable images)"
                return representation_scores(fg, bg, self.kind), f"{rule}{tag}; images {used}/{len(ok)}"
        return mean.mean(0), (f"activation-magnitude fallback: < {self.min_images} images with "
                              f">= {self.min_bg} background cells (rf {p.geo.rf[0]}, map {p.geo.size[0]})")

    def _log(self, task: Task, notes: dict[str, str], region: torch.Tensor) -> None:
        self._calls += 1
        task.log_metric("feature_map/foreground_fraction", float(region.float().mean()), self._calls)
        if self._calls > 1:  # what is logged below depends only on masks and geometry: fixed per run
            return
        source = self._source(task.data.info.name)
        described = {
            "stroke": f"stroke pixels > {STROKE_THRESHOLD} (adapted: no boxes)",
            "center": f"central pseudo-box {self.box_width:g}W x {self.box_height:g}H (adapted: no boxes)",
            "gradcam": f"Grad-CAM of the base model, true class, last conv, > {self.percentile:g}th percentile "
                       "(adapted: no boxes)",
            "boxes": f"explicit boxes from {self.boxes}",
        }
        task.log_param("feature_map/foreground", described[source])
        task.log_param("feature_map/rule", self.rule)
        task.log_param("feature_map/score", self.kind if self.kind == "contrast" else "ratio (adapted: per-image "
                       "log ratio)")
        task.log_param("feature_map/images", f"{len(region)} from {self.split}; skip images with < {self.min_bg} "
                       "background cells")
        task.log_param("feature_map/linear_units", "activation-magnitude fallback (adapted)"
                       if self.linear_units == "activation" else "not pruned")
        for member, note in notes.items():
            task.log_param(f"feature_map/layer/{member}", note)

    @classmethod
    def extra_cost_s(cls, spec) -> float | None:
        """Scoring cost for `bench plan`: one recording forward of `images` per round, plus
        Grad-CAM's forward and backward (about 3 forwards) once, where Grad-CAM marks the foreground."""
        from bench.api import forward_seconds

        m = cls(**dict(spec.method_args))
        source = AUTO_SOURCE.get(spec.dataset) if m.foreground == "auto" else m.foreground
        return forward_seconds(spec, m.images * (spec.pruning.rounds + (3 if source == "gradcam" else 0)))
