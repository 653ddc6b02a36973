"""One training loop for pretraining and fine-tuning, with hooks instead of copies.

Methods that change the optimizer step (RLS, C-SGD) or the model mid-training (RLS prunes
between epochs) do it through `Hook` callbacks on a mutable `FitContext`: a hook may transform
gradients before `optimizer.step()`, or replace `ctx.model` / `ctx.optimizer` at an epoch end.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.core.datasets import Data, DatasetInfo, Split, TrainVal, batches
from bench.core.spec import TrainConfig
from bench.errors import DivergenceError
from bench.interrupts import raise_pending
from bench.utils import atomic_write, eval_mode


@dataclass
class FitContext:
    """Mutable state a hook may read and change. `data` holds train and validation only."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    data: TrainVal
    device: str
    epoch: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    loss: torch.Tensor | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)
    stop: bool = False
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None


class Hook:
    """Override what you need; every method is a no-op by default.

    A hook with state that outlives one epoch (RLS's cut history, C-SGD's logging position) may
    add `state_dict() -> dict` and `load_state_dict(dict)`: `fit` saves that with every epoch
    checkpoint and, on resume, loads it *before* `on_fit_start`, which must then not redo work
    the first attempt already did (e.g. measure a base that has been pruned since).
    """

    def on_fit_start(self, ctx: FitContext) -> None: ...
    def transform_grads(self, ctx: FitContext) -> None: ...
    def on_step_end(self, ctx: FitContext) -> None: ...
    def on_epoch_end(self, ctx: FitContext) -> None: ...
    def on_fit_end(self, ctx: FitContext) -> None: ...


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict]
    seconds: float       # training time, including that of attempts before a resume
    images: int = 0      # training images seen (the budget is counted in images / train size)
    resumed_s: float = 0.0  # the part of `seconds` restored from a checkpoint



KILL_ENV = "BENCH_TEST_SIGKILL_AT"
_steps_seen: dict[str, int] = {}


def _maybe_kill_self(desc: str) -> None:
    """Test hook for the kill -9 tests: `BENCH_TEST_SIGKILL_AT=finetune:5` SIGKILLs this process
    at the 5th optimizer step of a `fit` whose desc contains 'finetune', a point reached the same
    way in every run, so a test can kill any phase mid-epoch without racing a timer."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    phase, _, n = spec.rpartition(":")
    if phase in desc:
        _steps_seen[phase] = _steps_seen.get(phase, 0) + 1
        if _steps_seen[phase] >= int(n):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def _rng_state() -> dict:
    import random

    import numpy as np

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _save_checkpoint(path: Path, ctx: "FitContext", hooks: Sequence["Hook"], gen: torch.Generator,
                     seconds: float) -> None:
    """Write atomically; an optimizer that hooks into the model (RLS) is detached while pickling."""
    detach = getattr(ctx.optimizer, "remove_hooks", None)
    if detach:
        detach()
    try:
        state = {"model": ctx.model, "optimizer": ctx.optimizer.state_dict(), "epoch": ctx.epoch + 1,
                 "history": ctx.history, "gen": gen.get_state(), "rng": _rng_state(), "seconds": seconds,
                 "hooks": [h.state_dict() if hasattr(h, "state_dict") else None for h in hooks]}
        with atomic_write(path) as tmp:
            torch.save(state, tmp)
    finally:
        if detach:
            ctx.optimizer.attach_hooks()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sgd(model: nn.Module, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """SGD + momentum; no weight decay on BN and biases (the usual CIFAR recipe)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr or cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """Multiplier of the base LR at `progress` in [0, 1) of training."""
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":  # x0.1 at 50% and 75%, as in the CIFAR ResNet papers
        return 0.1 ** (int(progress >= 0.5) + int(progress >= 0.75))
    return 1.0


def loss_fn(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "ce":
        return F.cross_entropy
    if kind == "mse":  # MSE on one-hot targets, the loss classical RLS minimises
        return lambda out, y: F.mse_loss(out, F.one_hot(y, out.shape[1]).to(out.dtype), reduction="sum") / len(y)
    raise ValueError(f"loss '{kind}' is unknown; allowed: ce, mse")


def use_channels_last(model: nn.Module, device: str) -> bool:
    """channels_last made CIFAR VGG steps ~20% faster on this CPU (benchmarks/), and it is the
    layout cuDNN's tensor-core convolutions want on a GPU; only for conv nets."""
    return (device == "cpu" or device.startswith("cuda")) and any(isinstance(m, nn.Conv2d) for m in model.modules()) \
        and os.environ.get("BENCH_CHANNELS_LAST", "1") == "1"


def autocast(device: str, precision: str):
    """The forward/loss context of a recipe's precision: bf16 autocast (weights, gradients and the
    optimizer stay fp32, so no loss scaling is needed), or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    raise ValueError(f"precision '{precision}' is unknown; allowed: fp32, bf16")


def on_device(split: Split, device: str) -> Split:
    """On a GPU the whole uint8 split moves there once per fit; on CPU it stays as it is."""
    return split.to(device) if device.startswith("cuda") else split


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, info: DatasetInfo, *, device: str = "cpu",
             batch_size: int = 1000, loss: str = "ce", precision: str = "fp32") -> tuple[float, float]:
    """(mean loss, top-1 accuracy) of `model` on `split`."""
    fn = loss_fn(loss)
    total_loss, correct, n = 0.0, 0, 0
    with eval_mode(model.to(device)):
        for x, y in batches(on_device(split, device), info, batch_size, device=device):
            with autocast(device, precision):
                out = model(x).float()
            total_loss += float(fn(out, y)) * len(y)
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
            raise_pending()
    return total_loss / max(n, 1), correct / max(n, 1)


def _set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for g in opt.param_groups:
        g.setdefault("base_lr", g["lr"])
        g["lr"] = g["base_lr"] * factor


def fit(model: nn.Module, data: Data | TrainVal, cfg: TrainConfig, *, seed: int, epochs: int | None = None,
        hooks: Sequence[Hook] = (), make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
        loss: str = "ce", device: str | None = None, desc: str = "train", progress: bool = True,
        checkpoint: str | os.PathLike | None = None) -> FitResult:
    """Train `model` for `epochs` (default cfg.epochs) and evaluate on validation after each epoch.

    `checkpoint`: a file written after every epoch; if present at start, training resumes from it
    (model, optimizer, epoch, history, every RNG, elapsed time and hook state), so a killed run
    loses at most one epoch and continues exactly as if it had not been killed. A checkpoint of a
    finished fit is kept: calling `fit` again with it returns that result at once.
    """
    device = device or default_device()
    epochs = cfg.epochs if epochs is None else epochs
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    make_optimizer = make_optimizer or (lambda m: sgd(m, cfg))
    start_epoch, resumed_s, hook_states = 0, 0.0, [None] * len(hooks)
    ckpt = Path(checkpoint) if checkpoint else None
    history: list[dict] = []
    if ckpt and ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=device)
        model, history, start_epoch = state["model"], state["history"], state["epoch"]
        gen.set_state(state["gen"])
        _set_rng_state(state["rng"])
        resumed_s, hook_states = state["seconds"], state["hooks"]
    model.to(device)
    # Hooks see train and validation only: the test split is for the reported numbers.
    ctx = FitContext(model=model, optimizer=make_optimizer(model), cfg=cfg,
                     data=TrainVal(data.info, data.train, data.val), device=device, make_optimizer=make_optimizer,
                     history=history)
    if start_epoch:
        ctx.optimizer.load_state_dict(state["optimizer"])
    n_train = len(data.train)
    ctx.steps_per_epoch = max(1, n_train // cfg.batch_size) if n_train >= cfg.batch_size else 1
    images = start_epoch * ctx.steps_per_epoch * min(cfg.batch_size, n_train)  # resumed: epochs already trained
    total_steps = max(1, epochs * ctx.steps_per_epoch)
    fn = loss_fn(loss)
    t0 = time.perf_counter() - resumed_s
    for h, saved in zip(hooks, hook_states):
        if saved is not None:
            h.load_state_dict(saved)
    ctx.step = start_epoch * ctx.steps_per_epoch
    for h in hooks:
        h.on_fit_start(ctx)
    train = on_device(data.train, device)
    bar = tqdm(total=total_steps, initial=ctx.step, desc=desc, disable=not progress, leave=False,
               unit="step", dynamic_ncols=True)
    for epoch in range(start_epoch, epochs):
        ctx.epoch = epoch
        ctx.model.train()
        cl = use_channels_last(ctx.model, device)
        if cl:
            ctx.model.to(memory_format=torch.channels_last)
        running, seen = 0.0, 0
        for x, y in batches(train, data.info, cfg.batch_size, shuffle=True, augment_data=cfg.augment,
                            gen=gen, device=device, drop_last=True):
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            ctx.x, ctx.y = x, y
            _set_lr(ctx.optimizer, lr_factor(cfg, ctx.step / total_steps))
            ctx.optimizer.zero_grad(set_to_none=True)
            with autocast(device, cfg.precision):
                ctx.loss = fn(ctx.model(x).float(), y)
            if not torch.isfinite(ctx.loss):
                bar.close()
                raise DivergenceError(f"{desc}: loss became {ctx.loss.item()} at epoch {epoch + 1}, step {ctx.step}; "
                                      f"lower the learning rate (lr={cfg.lr})")
            ctx.loss.backward()
            for h in hooks:
                h.transform_grads(ctx)
            ctx.optimizer.step()
            for h in hooks:
                h.on_step_end(ctx)
            running += ctx.loss.item() * len(y)
            seen += len(y)
            images += len(y)
            ctx.step += 1
            bar.update(1)
            _maybe_kill_self(desc)
            raise_pending()
            if ctx.step % 20 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{running / seen:.3f}")
        val_loss, val_acc = evaluate(ctx.model, data.val, data.info, device=device, loss=loss, precision=cfg.precision)
        ctx.history.append({"epoch": epoch + 1, "train_loss": running / max(seen, 1),
                            "val_loss": val_loss, "val_acc": val_acc,
                            "lr": ctx.optimizer.param_groups[0]["lr"]})
        bar.set_postfix(epoch=epoch + 1, val_acc=f"{val_acc:.4f}")
        for h in hooks:
            h.on_epoch_end(ctx)
        if ckpt:
            _save_checkpoint(ckpt, ctx, hooks, gen, time.perf_counter() - t0)
        if ctx.stop:
            break
    bar.close()
    for h in hooks:
        h.on_fit_end(ctx)
    ctx.model.to(memory_format=torch.contiguous_format)
    return FitResult(ctx.model, ctx.history, time.perf_counter() - t0, images=images, resumed_s=resumed_s)
