"""RLS vs SGD: cost per step and speed of learning (not a test; prints a table).

1. Step time on LeNet-5 (MNIST shape) and CIFAR VGG-11 width 0.25, batch 128, side by side in
   one process: the optimizer's `step()` alone and a whole training iteration (forward with the
   RLS input hooks, backward, step); median of repeats after warm-up; P in float64 (the default)
   and float32. The papers claim RLS costs "only several times" SGD.
2. Epochs to 97 % validation accuracy on real MNIST (LeNet-5, 55k train / 5k val, batch 128,
   constant LR so the answer does not depend on a schedule's horizon), evaluated every quarter
   epoch, for SGD (the quick preset's lr 0.05, momentum 0.9) and RLS (the `rls` method defaults).

    python benchmarks/rls_speed.py [--repeats 20] [--max-epochs 3] [--skip-mnist]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import models  # noqa: E402
from bench.core.datasets import load  # noqa: E402
from bench.core.spec import TrainConfig  # noqa: E402
from bench.core.training import Hook, evaluate, fit, sgd  # noqa: E402
from methods.rls import RLSPrune  # noqa: E402

CFG = TrainConfig(epochs=1, lr=0.05, batch_size=128, augment=False, schedule="constant")


class _Spec:
    pretrain = CFG


class _Task:
    """Just enough of bench.api.Task for RLSPrune.make_optimizer."""
    spec = _Spec()


def make_opt(kind: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    """'sgd': the preset's SGD; 'rls': the `rls` method's optimizer (fp64 P); 'rls32': same with fp32 P."""
    if kind == "sgd":
        return sgd(model, CFG)
    return RLSPrune(dtype="float32" if kind == "rls32" else "float64").make_optimizer(_Task())(model)


def step_times(name: str, args: dict, shape: tuple[int, int], repeats: int) -> dict[str, tuple[float, float]]:
    """{optimizer: (median step() ms, median full iteration ms)} on one fixed random batch.

    The optimizers take turns iteration by iteration, so load drift on a shared machine hits all alike."""
    x = torch.randn(CFG.batch_size, shape[0], shape[1], shape[1])
    y = torch.randint(0, 10, (CFG.batch_size,))
    runs = {}
    for kind in ("sgd", "rls", "rls32"):
        torch.manual_seed(0)
        model = models.build(name, shape[0], shape[1], 10, **args)
        models.init_weights(model)
        runs[kind] = (model, make_opt(kind, model), [], [])
    warmup = 5
    for i in range(repeats + warmup):
        for model, opt, steps, iters in runs.values():
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            if i >= warmup:
                steps.append((t2 - t1) * 1e3)
                iters.append((t2 - t0) * 1e3)
    return {k: (statistics.median(s), statistics.median(it)) for k, (_, _, s, it) in runs.items()}


class FirstCrossing(Hook):
    """Evaluates every quarter epoch; records when validation accuracy first reaches `goal`."""

    def __init__(self, data, goal: float):
        self.data, self.goal, self.hit = data, goal, None

    def on_step_end(self, ctx) -> None:
        quarter = max(1, ctx.steps_per_epoch // 4)
        if self.hit is None and (ctx.step + 1) % quarter == 0:
            acc = evaluate(ctx.model, self.data.val, self.data.info)[1]
            ctx.model.train()
            if acc >= self.goal:
                self.hit = (ctx.step + 1) / ctx.steps_per_epoch
                ctx.stop = True


def epochs_to(goal: float, max_epochs: int) -> dict[str, float | None]:
    data = load("mnist", Path(__file__).resolve().parents[2] / "shared" / "datasets", val_size=5000)
    out = {}
    for kind in ("sgd", "rls"):
        torch.manual_seed(0)
        model = models.build("lenet5", 1, 28, 10)
        models.init_weights(model)
        hook = FirstCrossing(data, goal)
        fit(model, data, CFG, seed=0, epochs=max_epochs, hooks=[hook], make_optimizer=lambda m, k=kind: make_opt(k, m),
            device="cpu", progress=False)
        out[kind] = hook.hit
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--max-epochs", type=int, default=3)
    ap.add_argument("--skip-mnist", action="store_true", help="only the step-time table")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {CFG.batch_size}, "
          f"median of {a.repeats}")
    print("step = optimizer.step() alone; iter = forward + backward + step; ratio = RLS / SGD")
    print(f"{'model':<13}{'P dtype':<9}{'SGD step':>10}{'RLS step':>10}{'ratio':>8}"
          f"{'SGD iter':>11}{'RLS iter':>11}{'ratio':>8}")
    for label, name, args, shape in (("lenet5", "lenet5", {}, (1, 28)),
                                     ("vgg11-w0.25", "vgg", {"depth": 11, "width": 0.25}, (3, 32))):
        t = step_times(name, args, shape, a.repeats)
        ss, si = t["sgd"]
        for kind, dtype in (("rls", "float64"), ("rls32", "float32")):
            rs, ri = t[kind]
            print(f"{label:<13}{dtype:<9}{ss:>8.2f}ms{rs:>8.2f}ms{rs / ss:>7.1f}x"
                  f"{si:>9.1f}ms{ri:>9.1f}ms{ri / si:>7.2f}x")
    if not a.skip_mnist:
        e = epochs_to(0.97, a.max_epochs)
        fmt = lambda v: f"{v:.2f}" if v is not None else f">{a.max_epochs}"  # noqa: E731
        print(f"epochs to 97% val acc on MNIST (LeNet-5, constant lr): SGD {fmt(e['sgd'])}, RLS {fmt(e['rls'])}")


if __name__ == "__main__":
    main()
