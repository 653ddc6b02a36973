"""Feature-representation pruning, "Map-EX" (Ge, Lu, Gao 2021; docs/methods.md §6, reconstruction [X]).

A filter earns its place by responding more on the object than on the background. For every
prunable conv unit, a per-image foreground region (input pixels) is carried onto the unit's
feature-map grid with its receptive field and cumulative stride (`bench.core.receptive_field`):
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
  receptive field covers the whole image: everything is foreground), that layer moves on to the
  "map" rule, then to "pooled" (the pixel mask average-pooled down to the map's stride tiles, a
  cell foreground when its tile is mostly foreground; one background cell suffices, since a deep
  cell is a whole tile: on VGG's 2x2 maps "map" needs 4 background cells of 4), and only then
  to mean activation (the fallback); the rule used is logged per unit, and
  `feature_map.fallback_share` logs the share of the removed MACs that fallback-scored units cut;
- `scoring: activation` (the `feature_map@activation` ablation) scores every layer by mean
  post-ReLU activation, the fallback everywhere;
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
from torch import nn

from bench.api import (ConfigError, Geometry, PaperResult, Range, ScoreMethod, Split, Task, eval_mode, register,
                       trace)
from methods._fx import activation_node
from methods._masks import (RULES, STROKE_THRESHOLD, Recorder, boxes_mask, center_mask, gradcam_mask, grid_mask,
                            stroke_mask)

Source = Literal["auto", "stroke", "center", "gradcam", "boxes"]
AUTO_SOURCE = {"mnist": "stroke", "svhn": "center", "cifar10": "gradcam"}
FALLBACK = "activation-magnitude fallback"
# Precondition of a Map-EX row: its own rule, not the fallback, decided most of what was removed;
# above this share the row measures activation magnitude more than Map-EX.
MAX_FALLBACK_SHARE = 0.5
EPS = 1e-8
TIE_BREAK = 1e-3


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
        need_bg = 1 if rule == "pooled" else min_bg  # a pooled cell is a whole stride tile of background
        probe.ok[rule].append((n_fg >= 1) & (cells - n_fg >= need_bg))


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
    display_name = "Map-EX"
    variant_labels = {"activation": "activation scores"}
    paper_results = (PaperResult("6", "Map-EX", "not found", None, None, source="[X]",
                                 note="paper numbers n/f; 'adapted'"),)

    def __init__(self, rule: Literal["map-ex", "map"] = "map-ex",
                 score: Literal["contrast", "ratio"] = "contrast",
                 foreground: Source = "auto",
                 box_width: Annotated[float, Range(0, 1, lo_open=True)] = 0.6,
                 box_height: Annotated[float, Range(0, 1, lo_open=True)] = 0.9,
                 gradcam_percentile: Annotated[float, Range(0, 100, lo_open=True, hi_open=True)] = 60.0,
                 boxes: str | None = None, min_bg_cells: Annotated[int, Range(1)] = 4,
                 min_images: Annotated[int, Range(1)] = 10, images: Annotated[int, Range(1)] = 2000,
                 split: Literal["train", "val"] = "train", linear_units: Literal["activation", "skip"] = "activation",
                 batch_size: Annotated[int, Range(1)] = 256, scoring: Literal["mapex", "activation"] = "mapex"):
        if (foreground == "boxes") != (boxes is not None):
            raise ConfigError("feature_map.boxes: give a boxes file exactly when foreground is 'boxes'")
        self.rule, self.kind, self.foreground = rule, score, foreground
        self.box_width, self.box_height, self.percentile = box_width, box_height, gradcam_percentile
        self.boxes, self.min_bg, self.min_images = boxes, int(min_bg_cells), int(min_images)
        self.images, self.split, self.linear_units, self.batch_size = int(images), split, linear_units, int(batch_size)
        self.scoring = scoring
        self._regions: torch.Tensor | None = None  # bool [N, H, W], fixed by the first score() call
        self._calls = 0
        self._removed = [0.0, 0.0]  # MACs removed so far: by all cuts, by the cuts of fallback-scored units

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
        images, _ = self._images(task)
        if self.scoring == "activation":  # the ablation: mean activation everywhere, no foreground needed
            rules, region = (), torch.zeros(len(images), *task.data.info.shape[1:], dtype=torch.bool)
        else:  # each rule falls back to the next where it leaves too few usable images
            rules, region = RULES[RULES.index(self.rule):], self.regions(model, task)
        device = next(model.parameters()).device
        gm, geo = trace(model, task.example)
        modules = dict(model.named_modules())
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

        # gm shares its submodules with model: this switches model's BN to eval too
        with eval_mode(gm), torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = task.normalize(images.x[i:i + self.batch_size]).to(device)
                rec = Recorder(gm, set(by_node))
                rec.run(x)
                reg = region[i:i + self.batch_size].to(device)
                for name, ps in by_node.items():
                    for p in ps:
                        _reduce(p, rec.out[name], reg, rules, self.min_bg)

        scores: dict[str, torch.Tensor] = {}
        notes: dict[str, str] = {}
        fallback: set[str] = set()
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
                if any(notes[m].startswith(FALLBACK) for m in unit.members if m in notes):
                    fallback.add(unit.name)
        self._log(task, notes, region)
        self._log_fallback_share(model, task, units, scores, fallback)
        return scores

    def _log_fallback_share(self, model: nn.Module, task: Task, units, scores, fallback: set[str]) -> None:
        """`feature_map.fallback_share`: the share of the removed MACs (over all rounds so far) that the
        cuts of fallback-scored units remove on their own. The harness plans from these scores with the
        run's target and pruning settings, so the same plan is recomputed here (deterministic)."""
        plan = task.plan(model, scores, comparable=self.comparable_scores)
        macs = task.predictor(model, units, kind="macs")
        kept = {n: len(k) for n, k in plan.keep.items()}
        full = macs({})
        self._removed[0] += full - macs(kept)
        self._removed[1] += full - macs({n: k for n, k in kept.items() if n in fallback})
        share = self._removed[1] / self._removed[0] if self._removed[0] > 0 else 0.0
        task.log_metric("feature_map.fallback_share", share, self._calls)
        if self.scoring == "mapex":  # the `activation` ablation is the fallback everywhere, on purpose
            task.check("mapex_decided", share, share < MAX_FALLBACK_SHARE,
                       f"fallback decided < {MAX_FALLBACK_SHARE:.0%} of the removed MACs", step=self._calls)

    def _finish(self, p: _Probe, rules: tuple[str, ...]) -> tuple[torch.Tensor, str]:
        """A member's score and how it was obtained (rule used, usable images, or the fallback)."""
        mean = torch.cat(p.mean)
        if p.geo is None:
            return mean.mean(0), f"{FALLBACK} (linear layer: no spatial map)"
        for rule in rules:
            ok = torch.cat(p.ok[rule])
            used = int(ok.sum())
            if used >= self.min_images:
                fg, bg = torch.cat(p.fg[rule])[ok], torch.cat(p.bg[rule])[ok]
                tag = "" if rule == rules[0] else f" ({rules[0]} left < {self.min_images} usable images)"
                return representation_scores(fg, bg, self.kind), f"{rule}{tag}; images {used}/{len(ok)}"
        if not rules:
            return mean.mean(0), f"{FALLBACK} (scoring: activation)"
        return mean.mean(0), (f"{FALLBACK}: < {self.min_images} usable images under every rule "
                              f"(rf {p.geo.rf[0]}, map {p.geo.size[0]})")

    def _log(self, task: Task, notes: dict[str, str], region: torch.Tensor) -> None:
        self._calls += 1
        if self.scoring == "mapex":
            task.log_metric("feature_map/foreground_fraction", float(region.float().mean()), self._calls)
        if self._calls > 1:  # what is logged below depends only on masks and geometry: fixed per run
            return
        task.log_param("feature_map/scoring", "Map-EX (object vs background)" if self.scoring == "mapex" else
                       "activation only (ablation: mean post-ReLU activation in every layer)")
        for member, note in notes.items():
            task.log_param(f"feature_map/layer/{member}", note)
        if self.scoring == "activation":
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

    @classmethod
    def extra_cost_s(cls, spec) -> float | None:
        """Scoring cost for `bench plan`: one recording forward of `images` per round, plus
        Grad-CAM's forward and backward (about 3 forwards) once, where Grad-CAM marks the foreground."""
        from bench.api import forward_seconds

        m = cls(**dict(spec.method_args))
        source = AUTO_SOURCE.get(spec.dataset) if m.foreground == "auto" else m.foreground
        source = None if m.scoring == "activation" else source
        return forward_seconds(spec, m.images * (spec.pruning.rounds + (3 if source == "gradcam" else 0)))
