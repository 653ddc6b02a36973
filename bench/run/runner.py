"""`run_one(spec)`: the single path every grid cell takes, wherever it runs.

data -> shared base checkpoint -> method (score: plan + surgery per round; full: method.prune)
-> fine-tune -> measure -> MLflow. Stage files under results/runs/<run_id>/stage-<code key>/
make a killed run resume: every training through `Task.train` and the final fine-tune checkpoint
each epoch, the pruned model is kept before fine-tuning, and what the method logged is kept in
a journal that the rerun replays into its fresh MLflow run. The code key hashes the source of
the harness and of the method with its helpers (bench.run.stage), so a stage never outlives a
fix; a failed cell's stage is discarded.

Methods see train and validation only. The per-process data cache holds those alone; the test
split is read per cell and held by `execute`'s frame, and the MLflow run logger stays here too:
the method's `Task` gets a write-only `LogSink` whose entries this module forwards.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import shutil
import time
import traceback
from pathlib import Path

import torch
from torch import nn

from bench.api import FullMethod, ScoreMethod, Target, Task
from bench.core.datasets import Split, TrainVal, load_test, load_trainval, normalize
from bench.core.driver import achieved_reduction, prune_to_target
from bench.core.measure import cost, count_macs, count_params, paired_latency_ms, widths
from bench.core.registry import get_method
from bench.core.spec import RunSpec
from bench.core.surgery import kept_channels
from bench.core.training import default_device, evaluate, fit
from bench.errors import DataUnavailable
from bench.run import baselines
from bench.run.stage import LogSink, StagedReferences, Trainer, stage_dir
from bench.run.tracking import STATUS_DONE, STATUS_FAILED, STATUS_INTERRUPTED, STATUS_SKIPPED, RunLogger, Tracker
from bench.utils import atomic_write

BUDGET_SLACK = 0.01  # epochs: rounding of images seen (drop_last) never flags a run as over budget


INTERRUPTED_REASON = "interrupted (Ctrl-C or SIGTERM); run the grid again to resume it"


@functools.lru_cache(maxsize=4)
def _seen_data(name: str, data_dir: str | None, val_size: int, train_subset: int | None) -> TrainVal:
    """Train and validation of a dataset, loaded once per process (a pool worker runs many cells).
    Never the test split: a cache is module state that outlives the cell, and a method must not
    find test images in anything it can reach (tests/test_isolation.py)."""
    return load_trainval(name, data_dir, val_size=val_size, train_subset=train_subset)


def run_one(spec: RunSpec, *, data_dir: str | None = None, results_dir: str | os.PathLike = "results",
            tracker: Tracker | None = None, progress: bool = True) -> str:
    """Run one cell unless it is already done; returns 'cached', 'done', 'skipped' or 'failed'."""
    tracker = tracker or Tracker(results_dir)
    if tracker.is_done(spec.experiment, spec.run_id):
        return "cached"
    log = tracker.start(spec)
    workdir = Path(results_dir) / "runs" / spec.run_id
    (workdir / "traceback.txt").unlink(missing_ok=True)  # an earlier attempt's: its run was just replaced
    stage = stage_dir(workdir, get_method(spec.method))
    try:
        record = execute(spec, log, data_dir=data_dir, results_dir=Path(results_dir), progress=progress)
    except DataUnavailable as e:
        log.finish(STATUS_SKIPPED, str(e))
        return STATUS_SKIPPED
    except KeyboardInterrupt:
        log.finish(STATUS_INTERRUPTED, INTERRUPTED_REASON)
        raise
    except Exception as e:
        log.finish(STATUS_FAILED, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "traceback.txt").write_text(traceback.format_exc())
        shutil.rmtree(stage, ignore_errors=True)  # a rerun after a fix must not reuse what the bug made
        return STATUS_FAILED
    log.metrics(record)
    log.finish(STATUS_DONE)
    shutil.rmtree(stage, ignore_errors=True)
    return STATUS_DONE


@functools.lru_cache(maxsize=None)
def code_version() -> dict[str, str]:
    """The git commit of the code that ran and whether its tree had uncommitted changes
    ("unknown" outside a git checkout), so every result can be traced to its code."""
    import subprocess

    here = Path(__file__).parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit or "unknown",
            "git_dirty": "unknown" if status is None else str(bool(status)).lower()}


def forward(sink: LogSink, log: RunLogger) -> None:
    """Send what the method logged through its task (and `Task.train`'s curves) to the MLflow run."""
    for kind, key, value, step in sink.drain():
        if kind == "metric":
            log.metric(key, value, step)
        elif kind == "param":
            log.param(key, value)
        else:
            log.curve(key, value)


def finetune_split(epochs: int, rounds: int) -> tuple[int, int]:
    """(epochs after each of the first K-1 rounds, epochs of the final fine-tune), summing to `epochs`.

    Iterative schedules share the one fine-tune budget instead of adding to it, so K rounds cost
    what one-shot costs and methods stay comparable.
    """
    between = epochs // rounds if rounds > 1 else 0
    return between, epochs - (rounds - 1) * between


def _score_rounds(method: ScoreMethod, model: nn.Module, task: Task, target: Target,
                  spec: RunSpec, example: torch.Tensor) -> tuple[nn.Module, float]:
    """K rounds of (score, cut to k/K of the target, fine-tune between rounds); one round = one-shot."""
    base = model
    rounds = spec.pruning.rounds
    per_round_ft = finetune_split(spec.finetune.epochs, rounds)[0]
    for k in range(1, rounds + 1):
        goal = target.reduction * k / rounds
        done = achieved_reduction(base, model, example, target.kind)
        step = dataclasses.replace(target, reduction=goal).relative_to(done)  # relative to the current model
        task.target = step
        model, _ = prune_to_target(model, example, method.score(model, task), step, spec.pruning,
                                   comparable=method.comparable_scores)
        if k < rounds and per_round_ft:
            model = task.train(model, per_round_ft, desc=f"round{k}").model
    task.target = target
    return model, achieved_reduction(base, model, example, target.kind)


def execute(spec: RunSpec, log: RunLogger, *, data_dir: str | None, results_dir: Path, progress: bool) -> dict:
    """Everything after the bookkeeping: returns the metrics record of the run."""
    seen = _seen_data(spec.dataset, data_dir, spec.val_size, spec.train_subset)
    test = load_test(spec.dataset, data_dir, test_subset=spec.test_subset)  # this frame's alone
    device = default_device()
    cls = get_method(spec.method)
    workdir = results_dir / "runs" / spec.run_id
    stage = stage_dir(workdir, cls)
    for old in workdir.glob("stage-*"):  # made by other code: never reused
        if old != stage:
            shutil.rmtree(old, ignore_errors=True)
    stage.mkdir(parents=True, exist_ok=True)
    example = normalize(seen.train.x[:2], seen.info).to(device)
    base, base_info = baselines.get_or_train(spec, seen, results_dir, device=device, progress=progress)
    log.curve("pretrain", base_info["history"])
    log.param("base_checkpoint", base_info["path"])
    log.param("device", torch.cuda.get_device_name(device) if device.startswith("cuda") else device)
    log.param("threads", torch.get_num_threads())  # intra-op threads change the numbers, so they are recorded
    log.params(code_version())
    method = cls(**dict(spec.method_args))
    target = Target(spec.target_kind, spec.target, spec.pruning.tolerance)
    sink = LogSink(stage / "journal.jsonl")  # the task's only way to MLflow: forwarded below
    trainer = Trainer(spec, seen, device, sink, progress, stage)
    task = Task(spec=spec, data=seen, device=device, example=example, logger=sink, trainer=trainer, target=target)
    task.references = StagedReferences(stage)

    staged = stage / "pruned_before_finetune.pt"
    try:
        if staged.exists():  # resumed: the pruning phase of a killed run already finished
            state = torch.load(staged, weights_only=False, map_location=device)
            pruned, prune_time = state["model"], state["prune_time_s"]
            task.images_seen = state.get("images_seen", 0)
            task.checks = state.get("checks", {})
            for name, history in state["curves"]:
                log.curve(name, history)
        else:
            t0 = time.perf_counter()
            if isinstance(method, ScoreMethod):
                pruned, _ = _score_rounds(method, copy.deepcopy(base), task, target, spec, example)
            elif isinstance(method, FullMethod):
                start = copy.deepcopy(base) if cls.needs_pretrained else baselines.fresh_model(spec, seen).to(device)
                pruned = method.prune(start, task, target)
            else:
                raise TypeError(f"{cls.__name__} must subclass ScoreMethod or FullMethod")
            # training time from before a kill counts; the rest of the phase was redone, and is timed now
            prune_time = time.perf_counter() - t0 + trainer.resumed_s
            with atomic_write(staged) as tmp:
                torch.save({"model": pruned, "prune_time_s": prune_time, "curves": trainer.curves,
                            "images_seen": task.images_seen, "checks": task.checks}, tmp)
    finally:  # what the method logged reaches its MLflow run also when it failed or was interrupted
        forward(sink, log)
    pruned.to(device)
    acc_pruned = evaluate(pruned, test, seen.info, device=device)[1]
    acc_val_pruned = evaluate(pruned, seen.val, seen.info, device=device)[1]  # for choices; test is reported only

    finetune_time = 0.0
    # One budget per method (docs/methods.md §0): the fine-tune epochs after the shared base, or pretrain +
    # fine-tune for a method that trains from scratch. The harness fine-tunes only a method that asks
    # (needs_finetune), with what its pruning phase left of the budget (rounds, a full method's training).
    budget = spec.finetune.epochs + (0 if cls.needs_pretrained else spec.pretrain.epochs)
    final_epochs = max(0, math.floor(budget - task.epochs_used + BUDGET_SLACK)) if cls.needs_finetune else 0
    if final_epochs > 0:
        result = fit(pruned, seen, spec.finetune, seed=spec.seed, epochs=final_epochs, device=device,
                     progress=progress, desc=f"{spec.method} finetune", checkpoint=stage / "finetune.ckpt")
        pruned, finetune_time = result.model, result.seconds
        task.images_seen += result.images
        log.curve("finetune", result.history)
    record = measure_record(base, pruned, seen, test, example, spec, acc_pruned, prune_time, finetune_time, log,
                            workdir, results_dir)
    record.update({"epochs_used": task.epochs_used, "budget_epochs": float(budget),
                   "budget_met": float(task.epochs_used <= budget + BUDGET_SLACK)})
    for key, ref in task.references.items():  # e.g. RLS's own unpruned net: a second Δacc reference
        record[f"acc_{key}"] = evaluate(ref, test, seen.info, device=device)[1]
    record["acc_val_pruned"] = acc_val_pruned
    record["preconditions_met"] = float(all(task.checks.values()))  # 1 when the method declares none
    log.json_artifact("kept_channels.json", {"base_widths": widths(base), "kept": kept_channels(pruned)}, workdir)
    return record


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights file (its state_dict saved with torch.save). Not the size of
    pruned_model.pt: pickling the whole module stores Python object sharing, which differs by a
    few bytes between a model built in one go and one resumed from a checkpoint."""
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def measure_record(base: nn.Module, pruned: nn.Module, seen: TrainVal, test: Split, example: torch.Tensor,
                   spec: RunSpec, acc_pruned: float, prune_time: float, finetune_time: float, log: RunLogger,
                   workdir: Path, results_dir: Path) -> dict:
    device = str(example.device)
    base.eval()
    pruned.eval()
    macs_b, macs_p = count_macs(base, example), count_macs(pruned, example)
    par_b, par_p = count_params(base), count_params(pruned)
    target = Target(spec.target_kind, spec.target, spec.pruning.tolerance)
    achieved = 1 - (cost(pruned, example, target.kind) / cost(base, example, target.kind))
    torch.save(pruned.cpu(), workdir / "pruned_model.pt")
    pruned.to(device)
    record = {
        "acc_base": baselines.accuracy_on_test(spec, base, test, seen.info, results_dir, device=device),  # per base
        "acc_pruned": acc_pruned,
        "acc_final": evaluate(pruned, test, seen.info, device=device)[1],
        "acc_val_final": evaluate(pruned, seen.val, seen.info, device=device)[1],
        "macs_base": macs_b, "macs_pruned": macs_p, "macs_reduction": 1 - macs_p / macs_b,
        "params_base": par_b, "params_pruned": par_p, "params_reduction": 1 - par_p / par_b,
        "target_achieved": achieved, "target_met": float(target.met(achieved)),
        "prune_time_s": prune_time, "finetune_time_s": finetune_time,
        "model_file_bytes_pruned": state_dict_bytes(pruned),
    }
    cpu_ex = example.cpu()
    base_cpu, pruned_cpu = copy.deepcopy(base).cpu(), copy.deepcopy(pruned).cpu()
    base_ms = baselines.cpu_latency_ms(spec, base_cpu, cpu_ex, results_dir)  # once per base
    for b, reps in spec.latency.repeats().items():
        record[f"latency_cpu_b{b}_base_ms"] = base_ms[b]
        record[f"latency_cpu_b{b}_pruned_ms"], = paired_latency_ms([pruned_cpu], cpu_ex, b, repeats=reps,
                                                                   warmup=spec.latency.warmup)
    if torch.cuda.is_available():
        for b in (1, 64):
            record[f"latency_gpu_b{b}_base_ms"], record[f"latency_gpu_b{b}_pruned_ms"] = paired_latency_ms(
                [base, pruned], example, b, device=device)
    log.json_artifact("widths.json", {"base": widths(base), "pruned": widths(pruned)}, workdir)
    log.artifact(workdir / "pruned_model.pt")
    return record
