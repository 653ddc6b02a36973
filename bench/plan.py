"""`bench plan`: a grid's cells and bases, what is done, and what the rest costs on this device.

Costs come from bench.probe (real steps timed here) scaled by the epoch budgets, plus each
method's `extra_cost_s` hook; nothing is a constant in the code. Every figure says where it comes
from: `measured` (probe at the recipe's batch, or MLflow durations), `extrapolated` (per-image
probe time carried to another batch, pruned sizes, epochs). Finished cells are compared with
their estimate, so a user sees how far to trust the rest.
"""
from __future__ import annotations

import heapq
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from bench.baselines import base_key, base_path
from bench.config import GridConfig, RunSpec, TrainConfig
from bench.datasets import DATASETS
from bench.probe import Probe, probe
from bench.registry import get_method
from bench.training import default_device

# (train, test) images of the official splits; validation is held out of train
SPLIT_SIZES = {"mnist": (60000, 10000), "cifar10": (50000, 10000), "svhn": (73257, 26032)}


@dataclass
class CellCost:
    train_s: float
    eval_s: float
    extra_s: float
    extra_source: str        # "hook" | "none"


@dataclass
class Plan:
    cfg: GridConfig
    specs: list[RunSpec]
    done: dict[str, float]                     # run id -> measured duration, seconds
    cached_bases: set[str]
    probes: dict[tuple, Probe]
    base_cost: dict[str, float]                # base key -> seconds
    cell_cost: dict[str, CellCost]             # run id -> cost
    device: str
    notes: list[str] = field(default_factory=list)

    @property
    def bases(self) -> dict[str, RunSpec]:
        out: dict[str, RunSpec] = {}
        for s in self.specs:
            out.setdefault(base_key(s), s)
        return out

    def remaining(self) -> list[RunSpec]:
        return [s for s in self.specs if s.run_id not in self.done]


def train_size(spec: RunSpec) -> int:
    n = SPLIT_SIZES[spec.dataset][0] - spec.val_size
    return min(n, spec.train_subset) if spec.train_subset else n


def test_size(spec: RunSpec) -> int:
    n = SPLIT_SIZES[spec.dataset][1]
    return min(n, spec.test_subset) if spec.test_subset else n


def _probe(spec: RunSpec, recipe: TrainConfig, device: str) -> Probe:
    return probe(spec.model, spec.model_args, DATASETS[spec.dataset].shape, recipe.batch_size,
                 recipe.precision, device)


def epoch_s(spec: RunSpec, recipe: TrainConfig, p: Probe, scale: float = 1.0) -> float:
    """One epoch as fit runs it: drop_last training steps, then a validation pass."""
    n = train_size(spec)
    images = (n // recipe.batch_size) * recipe.batch_size if n >= recipe.batch_size else n
    return scale * (images * p.step_img_s + spec.val_size * p.forward_img_s)


def remaining_fraction(spec: RunSpec) -> float:
    """Cost of the pruned model relative to the base: the target's remaining MACs (or params,
    taken as the MACs share: extrapolated)."""
    return 1 - spec.target


def estimate_cell(spec: RunSpec, p_pre: Probe, p_ft: Probe) -> CellCost:
    """Training by the method's budget, test evaluations and latency passes, plus the hook's extra."""
    cls = get_method(spec.method)
    pruned = remaining_fraction(spec)
    if not cls.needs_pretrained:   # trains from scratch within pretrain + fine-tune epochs
        train = (spec.pretrain.epochs + spec.finetune.epochs) * epoch_s(spec, spec.pretrain, p_pre)
    elif cls.kind == "full":       # trains the whole model (C-SGD) or shrinks it on the way (RL agent)
        train = spec.finetune.epochs * epoch_s(spec, spec.finetune, p_ft)
    else:                          # score methods fine-tune the pruned model
        train = spec.finetune.epochs * epoch_s(spec, spec.finetune, p_ft, pruned)
    tests = test_size(spec) * p_ft.forward_img_s * (2 + pruned)   # base, pruned, final
    # the pruned model's passes; the base is timed once per base (baselines.cpu_latency_ms), not per cell
    latency = sum((reps + spec.latency.warmup) * (p_ft.forward_b1_s if b == 1 else b * p_ft.forward_img_s) * pruned
                  for b, reps in spec.latency.repeats().items())
    extra = cls.extra_cost_s(spec)
    return CellCost(train, tests + latency, extra or 0.0, "hook" if extra is not None else "none")


def finished_runs(cfg: GridConfig) -> dict[str, float]:
    """Run id -> duration (s) of every cell whose latest run ended done; no store, no runs."""
    from bench.tracking import STATUS_DONE, Tracker, may_hold_runs

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
            if r.info.end_time and r.info.start_time:
                out[r.data.tags["run_id"]] = (r.info.end_time - r.info.start_time) / 1000
        token = page.token
        if not token:
            return out


def make_plan(cfg: GridConfig, *, device: str | None = None, probe_steps: int = 2) -> Plan:
    from bench import probe as probe_module

    probe_module.STEPS = probe_steps
    device = device or default_device()
    specs = cfg.expand()
    done = finished_runs(cfg)
    cached = {base_key(s) for s in specs if base_path(s, cfg.results_dir).exists()}
    probes: dict[tuple, Probe] = {}
    base_cost: dict[str, float] = {}
    cell_cost: dict[str, CellCost] = {}
    for s in specs:
        p_pre, p_ft = _probe(s, s.pretrain, device), _probe(s, s.finetune, device)
        for recipe, p in ((s.pretrain, p_pre), (s.finetune, p_ft)):
            probes[(s.model_label, s.dataset, recipe.batch_size, recipe.precision)] = p
        key = base_key(s)
        if key not in base_cost:
            base_cost[key] = s.pretrain.epochs * epoch_s(s, s.pretrain, p_pre) + test_size(s) * p_pre.forward_img_s
        cell_cost[s.run_id] = estimate_cell(s, p_pre, p_ft)
    return Plan(cfg, specs, done, cached, probes, base_cost, cell_cost, device)


def simulate_wall(plan: Plan, workers: int, kind: str) -> float:
    """Wall seconds for the remaining cells: each worker takes the next cell (spread over bases
    as the pool does); the first cell of an untrained base trains it, the others wait on its lock."""
    from bench.grid import spread_bases

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
        c = plan.cell_cost[s.run_id]
        finish = max(t, ready[key]) + c.train_s + c.eval_s + c.extra_s
        heapq.heappush(free, finish)
        end = max(end, finish)
    return end


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def render(plan: Plan, *, executor: str, workers: int) -> str:
    """The plan as text: grid, done, probe figures, remaining cost, estimate vs measured."""
    specs, bases = plan.specs, plan.bases
    lines = [f"plan {plan.cfg.name}: {len(specs)} cells, {len(bases)} distinct base checkpoints"]
    by_model: dict[str, int] = defaultdict(int)
    for s in specs:
        by_model[f"{s.dataset}/{s.model_label}"] += 1
    for k, n in by_model.items():
        lines.append(f"  {k:<32} {n:>5} cells")
    lines.append(f"done: {len(plan.done)}/{len(specs)} cells in the store; bases cached: "
                 f"{len(plan.cached_bases)}/{len(bases)}")
    lines.append(f"probe on {plan.device} (synthetic input; per image):")
    lines.append(f"  {'model':<24} {'dataset':<8} {'batch':>5} {'prec':<5} {'step ms':>8} {'fwd ms':>7}  source")
    for (label, ds, batch, prec), p in plan.probes.items():
        src = "measured" if not p.extrapolated else f"measured at batch {p.measured_batch}, extrapolated"
        lines.append(f"  {label:<24} {ds:<8} {batch:>5} {prec:<5} {p.step_img_s * 1e3:>8.3f} "
                     f"{p.forward_img_s * 1e3:>7.3f}  {src}")
    todo = plan.remaining()
    todo_bases = {base_key(s) for s in todo} - plan.cached_bases
    base_s = sum(plan.base_cost[k] for k in todo_bases)
    lines.append(f"remaining: {len(todo)} cells, {len(todo_bases)} bases to train ({_h(base_s)})")
    lines.append(f"  {'method':<16} {'cells':>5} {'train':>10} {'eval+lat':>10} {'extra':>10}  extra from")
    rows: dict[str, list[CellCost]] = defaultdict(list)
    for s in todo:
        rows[getattr(s, "variant", s.method)].append(plan.cell_cost[s.run_id])
    total = base_s
    for m, costs in rows.items():
        tr, ev, ex = (sum(getattr(c, f) for c in costs) for f in ("train_s", "eval_s", "extra_s"))
        total += tr + ev + ex
        src = "cost hook (extrapolated)" if costs[0].extra_source == "hook" else "none declared"
        lines.append(f"  {m:<16} {len(costs):>5} {_h(tr):>10} {_h(ev):>10} {_h(ex):>10}  {src}")
    unit = "GPU-hours" if plan.device.startswith("cuda") else "device-hours (this CPU)"
    wall = simulate_wall(plan, workers, executor)
    note = ""
    if executor != "local" and not plan.device.startswith("cuda"):
        wall = simulate_wall(plan, 1, executor)
        note = (f" (CPU: {workers} workers share the cores; assumes no throughput gain, an upper bound: "
                "README measured 1.6x with 2 workers)")
    lines.append(f"estimate: {total / 3600:.2f} {unit}; wall {_h(wall)} with --executor {executor} "
                 f"--workers {workers}{note}")
    lines.append("  (epochs x probe time per image; pruned models priced at their remaining MACs share; "
                 "method extras from their cost hooks: all extrapolated from the probe)")
    lines += _compare(plan)
    return "\n".join(lines)


def _compare(plan: Plan) -> list[str]:
    """Estimate vs MLflow-measured duration of the finished cells, per method (medians: the one
    run per base that trained the base is an outlier) and in total (bases included)."""
    done = [s for s in plan.specs if s.run_id in plan.done]
    if not done:
        return ["estimate vs measured: no finished cells yet"]
    lines = ["estimate vs measured (finished cells; measured = MLflow run durations):",
             f"  {'method':<16} {'cells':>5} {'est. median':>12} {'meas. median':>13} {'ratio':>6}"]
    groups: dict[str, list[RunSpec]] = defaultdict(list)
    for s in done:
        groups[getattr(s, "variant", s.method)].append(s)
    for m, ss in groups.items():
        est = statistics.median(sum((c.train_s, c.eval_s, c.extra_s)) for c in (plan.cell_cost[s.run_id] for s in ss))
        meas = statistics.median(plan.done[s.run_id] for s in ss)
        lines.append(f"  {m:<16} {len(ss):>5} {est:>11.1f}s {meas:>12.1f}s {meas / est if est else float('nan'):>5.2f}x")
    est_total = sum(sum((c.train_s, c.eval_s, c.extra_s)) for c in (plan.cell_cost[s.run_id] for s in done))
    est_total += sum(plan.base_cost[k] for k in {base_key(s) for s in done})
    meas_total = sum(plan.done[s.run_id] for s in done)
    lines.append(f"  total incl. bases: estimate {_h(est_total)}, measured {_h(meas_total)} "
                 f"(measured/estimate {meas_total / est_total:.2f}x)")
    return lines
