"""`bench plan`: a grid's cells and bases, what is done, and what the rest costs on this device.

Costs come from bench.core.probe (real steps timed here, at the executor's torch threads) scaled by
the epoch budgets, plus each method's hooks (`train_cost_factor` for costlier or shrinking
training, `extra_cost_s` for searches and feature extraction); nothing is a constant in the code.
Pruned models are priced by a probe of a uniformly pruned copy, not by their MACs share: on small
nets per-layer overhead keeps a -50 % MACs model well above half the time. Cells whose dataset
file is absent are not priced: they end `skipped` in seconds unless a download succeeds. Finished
cells are compared with their estimate, so a user sees how far to trust the rest.
"""
from __future__ import annotations

import heapq
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from bench.core import probe as probe_module
from bench.core.datasets import DATASETS, resolve_data_dir
from bench.core.probe import Probe, probe, probe_pruned
from bench.core.registry import get_method
from bench.core.spec import RunSpec, TrainConfig
from bench.core.training import default_device
from bench.run.baselines import base_key, base_path
from bench.run.config import GridConfig
from bench.run.runner import finetune_split

TEST_PASSES = 2                    # test passes of the pruned model per cell; the base's is cached per base
VAL_PASSES = 2                     # validation evaluations of the pruned model (acc_val_pruned, acc_val_final)


@dataclass
class CellCost:
    train_s: float
    eval_s: float
    extra_s: float
    extra_source: str        # "hook" | "none"
    train_factor: float = 1.0  # the method's train_cost_factor

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + self.extra_s


@dataclass
class Finished:
    """A done cell as MLflow recorded it."""

    seconds: float           # whole run, wall (includes training the base for the cell that did)
    method_s: float          # prune_time_s + finetune_time_s: the method's training and search


@dataclass
class Plan:
    cfg: GridConfig
    specs: list[RunSpec]
    done: dict[str, Finished]                  # run id -> what MLflow measured
    cached_bases: set[str]
    probes: dict[tuple, Probe]                 # (model, dataset, batch, precision) -> unpruned probe
    base_cost: dict[str, float]                # base key -> seconds
    cell_cost: dict[str, CellCost]             # run id -> cost
    device: str
    threads: int = 0
    load: float = 0.0                          # 1-minute load average when probed (CPU)
    missing_data: dict[str, str] = field(default_factory=dict)   # dataset -> why its cells will skip
    notes: list[str] = field(default_factory=list)

    @property
    def bases(self) -> dict[str, RunSpec]:
        out: dict[str, RunSpec] = {}
        for s in self.specs:
            out.setdefault(base_key(s), s)
        return out

    def remaining(self) -> list[RunSpec]:
        """Cells still to run that will train: not done, and with their data on disk."""
        return [s for s in self.specs if s.run_id not in self.done and s.dataset not in self.missing_data]

    def remaining_s(self) -> float:
        """Device seconds of the remaining cells and the bases they still need."""
        todo = self.remaining()
        bases = {base_key(s) for s in todo} - self.cached_bases
        return sum(self.cell_cost[s.run_id].total_s for s in todo) + sum(self.base_cost[k] for k in bases)

    def unpriced(self) -> list[RunSpec]:
        return [s for s in self.specs if s.run_id not in self.done and s.dataset in self.missing_data]


def train_size(spec: RunSpec) -> int:
    n = DATASETS[spec.dataset].train_images - spec.val_size  # validation is held out of train
    return min(n, spec.train_subset) if spec.train_subset else n


def test_size(spec: RunSpec) -> int:
    n = DATASETS[spec.dataset].test_images
    return min(n, spec.test_subset) if spec.test_subset else n


def data_missing(cfg: GridConfig, name: str) -> str | None:
    """Why cells of dataset `name` will end `skipped`, or None when `<data dir>/<name>.npz` exists.

    A missing file is fetched by the run only when downloads are on and the network answers; the
    plan does not probe the network, so it prices neither case and says which one applies."""
    path = resolve_data_dir(cfg.data_dir) / f"{name}.npz"
    if path.exists():
        return None
    if os.environ.get("BENCH_OFFLINE") == "1":
        return f"{path} missing and BENCH_OFFLINE=1: its cells will be skipped"
    return f"{path} missing: its cells will try the official download and be skipped if it fails"


def epoch_s(spec: RunSpec, recipe: TrainConfig, p: Probe, factor: float = 1.0) -> float:
    """One epoch as fit runs it: drop_last training steps (x `factor`), then a validation pass."""
    n = train_size(spec)
    images = (n // recipe.batch_size) * recipe.batch_size if n >= recipe.batch_size else n
    return factor * images * p.step_img_s + spec.val_size * p.forward_img_s


def _probes(spec: RunSpec, recipe: str, device: str, threads: int, pruned: bool = False) -> Probe:
    r = getattr(spec, recipe)
    return probe(spec.model, spec.model_args, DATASETS[spec.dataset], r.batch_size, r.precision,
                 device, threads=threads, reduction=(spec.target_kind, spec.target) if pruned else None)


def estimate_cell(spec: RunSpec, p_pre: Probe, p_ft: Probe, p_ft_pruned: Probe) -> CellCost:
    """Training by the method's budget (x its train_cost_factor), test/validation evaluations and
    latency passes of runner.measure_record, plus the method's extra (search) cost."""
    cls = get_method(spec.method)
    factor = cls.train_cost_factor(spec)
    if not cls.needs_pretrained:   # trains from scratch within pretrain + fine-tune epochs
        train = (spec.pretrain.epochs + spec.finetune.epochs) * epoch_s(spec, spec.pretrain, p_pre, factor)
    elif not cls.needs_finetune:   # trains the whole model with the fine-tune budget (C-SGD)
        train = spec.finetune.epochs * epoch_s(spec, spec.finetune, p_ft, factor)
    else:                          # fine-tunes the pruned model (rounds share the budget; intermediate
        # sizes are priced at the final one, a slight under-estimate for iterative schedules)
        between, final = finetune_split(spec.finetune.epochs, spec.pruning.rounds)
        epochs = between * (spec.pruning.rounds - 1) + final
        train = epochs * epoch_s(spec, spec.finetune, p_ft_pruned, factor)
    tests = test_size(spec) * TEST_PASSES * p_ft_pruned.forward_img_s
    vals = spec.val_size * VAL_PASSES * p_ft_pruned.forward_img_s
    # the pruned model's passes; the base is timed once per base (baselines.cpu_latency_ms), not per cell
    latency = sum((reps + spec.latency.warmup) * (p_ft_pruned.forward_b1_s if b == 1 else b * p_ft_pruned.forward_img_s)
                  for b, reps in spec.latency.repeats().items())
    extra = cls.extra_cost_s(spec)
    return CellCost(train, tests + vals + latency, extra or 0.0, "hook" if extra is not None else "none", factor)


def finished_runs(cfg: GridConfig) -> dict[str, Finished]:
    """Run id -> measured durations of every cell whose latest run ended done; no store, no runs."""
    from bench.run.tracking import STATUS_DONE, Tracker, may_hold_runs

    if not may_hold_runs(cfg.results_dir):
        return {}
    tracker = Tracker(cfg.results_dir)
    exp = tracker.client.get_experiment_by_name(cfg.name)
    if exp is None:
        return {}
    out, token = {}, None
    while True:
        page = tracker.client.search_runs([exp.experiment_id], f"tags.status = '{STATUS_DONE}'",
                                          max_results=1000, page_token=token)
        for r in page:
            if r.info.end_time and r.info.start_time and "run_id" in r.data.tags:
                m = r.data.metrics
                out[r.data.tags["run_id"]] = Finished((r.info.end_time - r.info.start_time) / 1000,
                                                      m.get("prune_time_s", 0.0) + m.get("finetune_time_s", 0.0))
        token = page.token
        if not token:
            return out


def make_plan(cfg: GridConfig, *, device: str | None = None, probe_steps: int | None = None) -> Plan:
    if probe_steps is not None:
        probe_module.STEPS = probe_steps
    device = device or default_device()
    threads = cfg.threads if device == "cpu" else 0  # every executor runs a cell at the grid's threads
    probe_module.THREADS = threads  # methods' hooks price their work at the same threads
    specs = cfg.expand()
    done = finished_runs(cfg)
    missing = {d: why for d in sorted({s.dataset for s in specs}) if (why := data_missing(cfg, d))}
    cached = {base_key(s) for s in specs if base_path(s, cfg.results_dir).exists()}
    reductions: dict[tuple, set] = defaultdict(set)  # all targets of one model and recipe probed together
    for s in specs:  # cells without data are costed too (probes are shared by shape and classes), not counted
        for recipe in ("pretrain", "finetune"):
            r = getattr(s, recipe)
            reductions[s.model, s.model_args, DATASETS[s.dataset], r.batch_size, r.precision].add(
                (s.target_kind, s.target))
    for (model, margs, info, batch, prec), rs in reductions.items():
        probe_pruned(model, margs, info, batch, prec, device, threads=threads, reductions=tuple(sorted(rs)))
    probes: dict[tuple, Probe] = {}
    base_cost: dict[str, float] = {}
    cell_cost: dict[str, CellCost] = {}
    for s in specs:
        p_pre, p_ft = _probes(s, "pretrain", device, threads), _probes(s, "finetune", device, threads)
        for recipe, p in ((s.pretrain, p_pre), (s.finetune, p_ft)):
            probes[(s.model_label, s.dataset, recipe.batch_size, recipe.precision)] = p
        key = base_key(s)
        if key not in base_cost:
            base_cost[key] = s.pretrain.epochs * epoch_s(s, s.pretrain, p_pre) + test_size(s) * p_pre.forward_img_s
        cell_cost[s.run_id] = estimate_cell(s, p_pre, p_ft, _probes(s, "finetune", device, threads, pruned=True))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return Plan(cfg, specs, done, cached, probes, base_cost, cell_cost, device, threads, load, missing)


def simulate_wall(plan: Plan, workers: int, kind: str) -> float:
    """Wall seconds for the remaining cells: each worker takes the next cell (spread over bases
    as the pool does); the first cell of an untrained base trains it, the others wait on its lock."""
    from bench.run.grid import spread_bases

    todo = plan.remaining()
    if kind != "local":
        todo = spread_bases(todo)
    free = [0.0] * max(1, workers)
    ready: dict[str, float] = {k: 0.0 for k in plan.cached_bases}
    end = 0.0
    for s in todo:
        t = heapq.heappop(free)
        key = base_key(s)
        if key not in ready:
            ready[key] = t + plan.base_cost[key]
        finish = max(t, ready[key]) + plan.cell_cost[s.run_id].total_s
        heapq.heappush(free, finish)
        end = max(end, finish)
    return end


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def render(plan: Plan, *, executor: str, workers: int) -> str:
    """The plan as text: grid, done, probe figures, remaining cost, estimate vs measured. `bench plan`
    adds the report layer's forecast below it (bench.report.plan_power.forecast_lines: which paper
    rows the grid grades, and the power of its primary comparisons), which this layer never imports."""
    specs, bases = plan.specs, plan.bases
    lines = [f"plan {plan.cfg.name}: {len(specs)} cells, {len(bases)} distinct base checkpoints"]
    by_model: dict[str, int] = defaultdict(int)
    for s in specs:
        by_model[f"{s.dataset}/{s.model_label}"] += 1
    for k, n in by_model.items():
        lines.append(f"  {k:<32} {n:>5} cells")
    lines.append(f"done: {len(plan.done)}/{len(specs)} cells in the store; bases cached: "
                 f"{len(plan.cached_bases)}/{len(bases)}")
    for ds, why in plan.missing_data.items():
        cells = [s for s in plan.unpriced() if s.dataset == ds]
        extra = sum(plan.cell_cost[s.run_id].total_s for s in cells)
        extra += sum(plan.base_cost[k] for k in {base_key(s) for s in cells} - plan.cached_bases)
        lines.append(f"not priced: {len(cells)} {ds} cells ({why}; with the data they would add {_h(extra)})")
    threads = f", {plan.threads} torch threads" if plan.threads else ""
    lines.append(f"probe on {plan.device}{threads} (synthetic input; per image; median of "
                 f"{probe_module.STEPS} steps after {probe_module.WARMUP} warm-up):")
    cores = os.cpu_count() or 1
    if plan.device == "cpu" and plan.load > cores:
        lines.append(f"  WARNING: load average {plan.load:.1f} on {cores} cores while probing: other jobs share "
                     "this CPU, so every figure below is inflated; plan again on an idle machine")
    lines.append(f"  {'model':<24} {'dataset':<8} {'batch':>5} {'prec':<5} {'step ms':>8} {'fwd ms':>7}  source")
    for (label, ds, batch, prec), p in plan.probes.items():
        src = "measured" if not p.extrapolated else f"measured at batch {p.measured_batch}, extrapolated"
        lines.append(f"  {label:<24} {ds:<8} {batch:>5} {prec:<5} {p.step_img_s * 1e3:>8.3f} "
                     f"{p.forward_img_s * 1e3:>7.3f}  {src}")
    todo = plan.remaining()
    todo_bases = {base_key(s) for s in todo} - plan.cached_bases
    base_s = sum(plan.base_cost[k] for k in todo_bases)
    lines.append(f"remaining: {len(todo)} cells, {len(todo_bases)} bases to train ({_h(base_s)})")
    lines.append(f"  {'method':<16} {'cells':>5} {'train':>10} {'eval+lat':>10} {'extra':>10}  from hooks")
    rows: dict[str, list[CellCost]] = defaultdict(list)
    for s in todo:
        rows[s.variant].append(plan.cell_cost[s.run_id])
    for m, costs in rows.items():
        tr, ev, ex = (sum(getattr(c, f) for c in costs) for f in ("train_s", "eval_s", "extra_s"))
        src = "extra_cost_s (extrapolated)" if costs[0].extra_source == "hook" else ""
        factor = statistics.median(c.train_factor for c in costs)
        if factor != 1.0:
            src = f"train_cost_factor {factor:.2f}x (probed)" + (f"; {src}" if src else "")
        lines.append(f"  {m:<16} {len(costs):>5} {_h(tr):>10} {_h(ev):>10} {_h(ex):>10}  {src}")
    unit = "GPU-hours" if plan.device.startswith("cuda") else "device-hours (this CPU)"
    wall = simulate_wall(plan, workers, executor)
    note = ""
    if executor != "local" and not plan.device.startswith("cuda") and workers > 1:
        note = (f" (CPU: {workers} workers x {plan.threads} threads, priced per cell at those threads; "
                "shared memory bandwidth makes this a lower bound)")
    lines.append(f"estimate: {plan.remaining_s() / 3600:.2f} {unit}; wall {_h(wall)} with --executor {executor} "
                 f"--workers {workers}{note}")
    lines.append("  (train: epochs x probed step time per image, pruned models probed on a uniformly pruned "
                 "copy, x the method's train_cost_factor; method extras from their cost hooks: extrapolated "
                 "from the probe)")
    lines += _compare(plan)
    return "\n".join(lines)


def _compare(plan: Plan) -> list[str]:
    """Estimate vs MLflow-measured cost of the finished cells: per method the method's own time
    (prune + fine-tune, as the run logged it) against train + extra, and in total the run
    durations against the full estimate, bases included (one cell per base trained it)."""
    done = [s for s in plan.specs if s.run_id in plan.done and s.run_id in plan.cell_cost]
    if not done:
        return ["estimate vs measured: no finished cells yet"]
    lines = ["estimate vs measured (finished cells; measured = MLflow prune + fine-tune times, run durations):",
             f"  {'method':<16} {'cells':>5} {'est. median':>12} {'meas. median':>13} {'meas/est':>8}"]
    groups: dict[str, list[RunSpec]] = defaultdict(list)
    for s in done:
        groups[s.variant].append(s)
    for m, ss in groups.items():
        est = statistics.median(plan.cell_cost[s.run_id].train_s + plan.cell_cost[s.run_id].extra_s for s in ss)
        meas = statistics.median(plan.done[s.run_id].method_s for s in ss)
        ratio = f"{meas / est:>7.2f}x" if est else "      - "
        lines.append(f"  {m:<16} {len(ss):>5} {est:>11.1f}s {meas:>12.1f}s {ratio}")
    est_total = sum(plan.cell_cost[s.run_id].total_s for s in done)
    est_total += sum(plan.base_cost[k] for k in {base_key(s) for s in done})
    meas_total = sum(plan.done[s.run_id].seconds for s in done)
    lines.append(f"  total incl. bases: estimate {_h(est_total)}, measured {_h(meas_total)} "
                 f"(measured/estimate {meas_total / est_total:.2f}x)")
    return lines
