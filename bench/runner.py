"""`run_one(spec)`: the single path every grid cell takes, wherever it runs.

data -> shared base checkpoint -> method (score: plan + surgery per round; full: method.prune)
-> fine-tune -> measure -> MLflow. Stage files under results/runs/<run_id>/stage-<code key>/
make a killed run resume: every training through `Task.train` and the final fine-tune checkpoint
each epoch, the pruned model is kept before fine-tuning, and what the method logged is kept in
a journal that the rerun replays into its fresh MLflow run. The code key hashes the method's
source and the harness's, so a stage never outlives a fix; a failed cell's stage is discarded.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import shutil
import time
import traceback
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from bench import baselines
from bench.api import FullMethod, ScoreMethod, Target, Task
from bench.config import RunSpec
from bench.datasets import Data, TrainVal, load, normalize
from bench.driver import achieved_reduction, prune_to_target
from bench.errors import DataUnavailable
from bench.measure import cost, count_macs, count_params, paired_latency_ms, widths
from bench.surgery import kept_channels
from bench.registry import get_method
from bench.tracking import STATUS_DONE, STATUS_FAILED, STATUS_INTERRUPTED, STATUS_SKIPPED, RunLogger, Tracker
from bench.training import default_device, evaluate, fit
from bench.utils import atomic_write

BUDGET_SLACK = 0.01  # epochs: rounding of images seen (drop_last) never flags a run as over budget


INTERRUPTED_REASON = "interrupted (Ctrl-C or SIGTERM); run the grid again to resume it"


@functools.lru_cache(maxsize=4)
def load_data(name: str, data_dir: str | None, val_size: int, train_subset: int | None,
              test_subset: int | None) -> Data:
    return load(name, data_dir, val_size=val_size, train_subset=train_subset, test_subset=test_subset)


def run_one(spec: RunSpec, *, data_dir: str | None = None, results_dir: str | os.PathLike = "results",
            tracker: Tracker | None = None, progress: bool = True) -> str:
    """Run one cell unless it is already done; returns 'cached', 'done', 'skipped' or 'failed'."""
    tracker = tracker or Tracker(results_dir)
    if tracker.is_done(spec.experiment, spec.run_id):
        return "cached"
    log = tracker.start(spec)
    workdir = Path(results_dir) / "runs" / spec.run_id
    (workdir / "traceback.txt").unlink(missing_ok=True)  # an earlier attempt's: its run was just replaced
    stage = stage_dir(spec, workdir)
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


# The harness code a staged model or checkpoint depends on, besides the method's own file.
HARNESS_FILES = ("api.py", "runner.py", "training.py", "driver.py", "surgery.py", "baselines.py", "datasets.py")


@functools.lru_cache(maxsize=None)
def harness_version() -> str:
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / f).read_bytes() for f in HARNESS_FILES)).hexdigest()[:12]


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


def stage_key(method: str) -> str:
    """Hash of the method's source file and of the harness version: a staged artifact is reused
    only by the same code that made it."""
    source = Path(inspect.getsourcefile(get_method(method))).read_bytes()
    return hashlib.sha256(source + harness_version().encode()).hexdigest()[:12]


def stage_dir(spec: RunSpec, workdir: Path) -> Path:
    return workdir / f"stage-{stage_key(spec.method)}"


class JournalLogger:
    """What the method logs through `Task`, mirrored into a journal file in the stage folder.

    A killed run's MLflow run is deleted on rerun, but the method's metrics from before the kill
    (logged by hooks in epochs the rerun restores instead of repeating) must survive: the rerun
    replays the journal into its new MLflow run, and drops each repeated (key, value, step) that
    the replay already logged, so the record equals an uninterrupted run's.
    """

    def __init__(self, log: RunLogger, path: Path):
        self.log, self.path = log, path
        self.replayed: Counter = Counter()
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = tuple(json.loads(line))
                except json.JSONDecodeError:  # the line a kill cut short
                    continue
                self._send(entry)
                self.replayed[entry] += 1

    def _send(self, entry: tuple) -> None:
        kind, key, value, step = entry
        if kind == "metric":
            self.log.metric(key, value, step)
        else:
            self.log.param(key, value)

    def _record(self, entry: tuple) -> None:
        if self.replayed[entry]:
            self.replayed[entry] -= 1
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        self._send(entry)

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        self._record(("metric", key, float(value), step or 0))

    def param(self, key: str, value) -> None:
        self._record(("param", key, str(value), None))


class StagedReferences(dict):
    """`Task.references` that survive a kill: each model is written to the stage when the method
    hands it over (RLS does so mid-training, in an epoch a resumed run restores rather than
    repeats), and a rerun starts with the ones already written."""

    def __init__(self, stage: Path):
        super().__init__()
        self.stage = stage
        for path in sorted(stage.glob("reference-*.pt")):
            super().__setitem__(path.stem.removeprefix("reference-"), torch.load(path, weights_only=False))

    def __setitem__(self, key: str, model: nn.Module) -> None:
        with atomic_write(self.stage / f"reference-{key}.pt") as tmp:
            torch.save(model, tmp)
        super().__setitem__(key, model)


def _trainer(spec: RunSpec, data: Data, device: str, log: RunLogger, progress: bool, stage: Path):
    """Task.train: the fine-tune recipe (or the pretrain recipe for methods that start from scratch).

    The n-th call of a run checkpoints into `stage`/train<n>-<desc>.ckpt every epoch. A method
    is deterministic, so a rerun makes the same calls in the same order: calls that had finished
    return their saved result at once, the one a kill cut short resumes from its last epoch.
    `train.resumed_s` sums the training time restored from before a kill; `train.curves` keeps
    each call's curve, staged with the pruned model so a rerun past the pruning logs them again.
    """
    calls = [0]

    def train(model, epochs, *, hooks=(), make_optimizer=None, lr=None, loss="ce", desc="train", from_scratch=False):
        cfg = spec.pretrain if from_scratch else spec.finetune
        if lr is not None:
            cfg = dataclasses.replace(cfg, lr=lr)
        calls[0] += 1
        ckpt = stage / f"train{calls[0]:02d}-{desc}.ckpt"
        result = fit(model, data, cfg, seed=spec.seed, epochs=epochs, hooks=hooks, make_optimizer=make_optimizer,
                     loss=loss, device=device, desc=f"{spec.method} {desc}", progress=progress, checkpoint=ckpt)
        train.resumed_s += result.resumed_s
        train.curves.append((desc, result.history))
        log.curve(desc, result.history)
        return result
    train.resumed_s, train.curves = 0.0, []
    return train


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
    data = load_data(spec.dataset, data_dir, spec.val_size, spec.train_subset, spec.test_subset)
    device = default_device()
    workdir = results_dir / "runs" / spec.run_id
    stage = stage_dir(spec, workdir)
    for old in workdir.glob("stage-*"):  # made by other code: never reused
        if old != stage:
            shutil.rmtree(old, ignore_errors=True)
    stage.mkdir(parents=True, exist_ok=True)
    example = normalize(data.train.x[:2], data.info).to(device)
    base, base_info = baselines.get_or_train(spec, data, results_dir, device=device, progress=progress)
    log.curve("pretrain", base_info["history"])
    log.param("base_checkpoint", base_info["path"])
    log.param("device", torch.cuda.get_device_name(device) if device.startswith("cuda") else device)
    log.param("threads", torch.get_num_threads())  # intra-op threads change the numbers, so they are recorded
    log.params(code_version())
    cls = get_method(spec.method)
    method = cls(**dict(spec.method_args))
    target = Target(spec.target_kind, spec.target, spec.pruning.tolerance)
    visible = TrainVal(data.info, data.train, data.val)  # nothing a method or hook can reach holds test
    trainer = _trainer(spec, visible, device, log, progress, stage)
    task = Task(spec=spec, data=visible, device=device, example=example,
                logger=JournalLogger(log, stage / "journal.jsonl"), trainer=trainer, target=target)
    task.references = StagedReferences(stage)

    staged = stage / "pruned_before_finetune.pt"
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
            start = copy.deepcopy(base) if cls.needs_pretrained else baselines.fresh_model(spec, data).to(device)
            pruned = method.prune(start, task, target)
        else:
            raise TypeError(f"{cls.__name__} must subclass ScoreMethod or FullMethod")
        # training time from before a kill counts; the rest of the phase was redone, and is timed now
        prune_time = time.perf_counter() - t0 + trainer.resumed_s
        with atomic_write(staged) as tmp:
            torch.save({"model": pruned, "prune_time_s": prune_time, "curves": trainer.curves,
                        "images_seen": task.images_seen, "checks": task.checks}, tmp)
    pruned.to(device)
    acc_pruned = evaluate(pruned, data.test, data.info, device=device)[1]
    acc_val_pruned = evaluate(pruned, data.val, data.info, device=device)[1]  # for choices; test is reported only

    finetune_time = 0.0
    # One budget per method (docs/methods.md §0): the fine-tune epochs after the shared base, or pretrain +
    # fine-tune for a method that trains from scratch. The harness fine-tunes only a method that asks
    # (needs_finetune), with what its pruning phase left of the budget (rounds, a full method's training).
    budget = spec.finetune.epochs + (0 if cls.needs_pretrained else spec.pretrain.epochs)
    final_epochs = max(0, math.floor(budget - task.epochs_used + BUDGET_SLACK)) if cls.needs_finetune else 0
    if final_epochs > 0:
        result = fit(pruned, data, spec.finetune, seed=spec.seed, epochs=final_epochs, device=device,
                     progress=progress, desc=f"{spec.method} finetune", checkpoint=stage / "finetune.ckpt")
        pruned, finetune_time = result.model, result.seconds
        task.images_seen += result.images
        log.curve("finetune", result.history)
    record = measure_record(base, pruned, data, example, spec, acc_pruned, prune_time, finetune_time, log, workdir,
                            results_dir)
    record.update({"epochs_used": task.epochs_used, "budget_epochs": float(budget),
                   "budget_met": float(task.epochs_used <= budget + BUDGET_SLACK)})
    for key, ref in task.references.items():  # e.g. RLS's own unpruned net: a second Δacc reference
        record[f"acc_{key}"] = evaluate(ref, data.test, data.info, device=device)[1]
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


def measure_record(base: nn.Module, pruned: nn.Module, data: Data, example: torch.Tensor, spec: RunSpec,
                   acc_pruned: float, prune_time: float, finetune_time: float, log: RunLogger,
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
        "acc_base": baselines.accuracy_on_test(spec, base, data, results_dir, device=device),  # once per base
        "acc_pruned": acc_pruned,
        "acc_final": evaluate(pruned, data.test, data.info, device=device)[1],
        "acc_val_final": evaluate(pruned, data.val, data.info, device=device)[1],
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
