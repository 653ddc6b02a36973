"""Base checkpoints: trained once per (dataset, model, seed, recipe, threads) and shared by every method.

Fairness rests on this: every method of a grid cell starts from the very same weights. The cache
key hashes everything that changes the trained weights; a file lock makes concurrent workers
wait for one training instead of racing, and a per-epoch checkpoint lets a killed pretraining
resume.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from torch import nn

from bench.core import models
from bench.core.datasets import DatasetInfo, Split, TrainVal
from bench.core.measure import paired_latency_ms
from bench.core.spec import RunSpec
from bench.core.training import evaluate, fit
from bench.utils import atomic_write


def base_key(spec: RunSpec) -> str:
    """Hash of every setting that changes the base's weights: the recipe (its precision included)
    and the torch threads it trains with, whose count changes the order of float sums."""
    blob = json.dumps({"dataset": spec.dataset, "model": spec.model, "model_args": dict(spec.model_args),
                       "seed": spec.seed, "pretrain": dataclasses.asdict(spec.pretrain),
                       "val_size": spec.val_size, "train_subset": spec.train_subset, "threads": spec.threads},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def base_path(spec: RunSpec, results_dir: str | os.PathLike) -> Path:
    return Path(results_dir) / "baselines" / f"{spec.dataset}-{spec.model_label}-s{spec.seed}-{base_key(spec)}.pt"


def fresh_model(spec: RunSpec, data: TrainVal) -> nn.Module:
    """The spec's architecture, sized for the dataset's entry, with seeded initial weights."""
    torch.manual_seed(spec.seed)
    model = models.build_for(spec.model, data.info, spec.model_args)
    models.init_weights(model)
    return model


def get_or_train(spec: RunSpec, data: TrainVal, results_dir: str | os.PathLike, *, device: str,
                 progress: bool = True) -> tuple[nn.Module, dict]:
    """(base model, info) from the cache, training and caching it first if needed."""
    path = base_path(spec, results_dir)
    with FileLock(path.with_suffix(".lock")):
        if not path.exists():
            model = fresh_model(spec, data)
            result = fit(model, data, spec.pretrain, seed=spec.seed, device=device, progress=progress,
                         desc=f"pretrain {spec.dataset}/{spec.model_label}/s{spec.seed}",
                         checkpoint=path.with_suffix(".ckpt"))
            with atomic_write(path) as tmp:
                torch.save({"model": result.model.cpu(), "history": result.history, "seconds": result.seconds}, tmp)
            path.with_suffix(".ckpt").unlink(missing_ok=True)
        state = torch.load(path, weights_only=False, map_location="cpu")
    return state["model"].to(device), {"history": state["history"], "seconds": state["seconds"], "path": str(path)}


def cpu_latency_ms(spec: RunSpec, base: nn.Module, example: torch.Tensor, results_dir: str | os.PathLike
                   ) -> dict[int, float]:
    """Batch size -> the base's median CPU latency (ms), measured once per base and cached next to it.

    Every cell of a base reports the same base latency instead of re-timing it (docs/decisions.md,
    issue 20). The key holds what the number depends on besides the weights: the passes, the torch
    threads, the host and the torch version, so a cluster node or another thread count re-measures."""
    lat = spec.latency
    blob = json.dumps({"latency": dataclasses.asdict(lat), "threads": torch.get_num_threads(),
                       "host": socket.gethostname(), "torch": torch.__version__}, sort_keys=True)
    path = base_path(spec, results_dir).with_suffix(f".latency-{hashlib.sha256(blob.encode()).hexdigest()[:12]}.json")
    def measure() -> dict:
        ms = {b: paired_latency_ms([base], example, b, repeats=reps, warmup=lat.warmup)[0]
              for b, reps in lat.repeats().items()}
        return {"ms": ms, "key": json.loads(blob)}

    return {int(b): v for b, v in cached_json(path, measure)["ms"].items()}


def accuracy_on_test(spec: RunSpec, base: nn.Module, test: Split, info: DatasetInfo,
                     results_dir: str | os.PathLike, *, device: str) -> float:
    """The base's top-1 test accuracy, evaluated once per base and test split and cached next to it.

    Every cell of a base (methods x targets) reports this one number as `acc_base`; re-evaluating
    it per cell cost a full pass over the test split each time (issue 19). The key holds the test
    split's size, the one input besides the weights that changes it."""
    path = base_path(spec, results_dir).with_suffix(f".acc-test{len(test.y)}.json")
    saved = cached_json(path, lambda: {"acc_test": evaluate(base, test, info, device=device)[1],
                                       "images": len(test.y)})
    return float(saved["acc_test"])


def cached_json(path: Path, compute: Callable[[], dict]) -> dict:
    """`path`'s JSON, computed and written first if missing. The lock makes concurrent workers wait
    for one computation; the atomic replace means a kill never leaves a half-written file."""
    with FileLock(path.with_suffix(".lock")):
        if not path.exists():
            with atomic_write(path) as tmp:
                tmp.write_text(json.dumps(compute(), indent=1))
        return json.loads(path.read_text())
