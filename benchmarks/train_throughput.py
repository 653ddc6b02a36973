"""fp32 vs bf16 training throughput of the harness's own loop (bench.core.training.fit), side by side.

Each repeat runs one short fit per precision, in alternating order, so a burst of load on a
shared machine hits both sides alike; the table gives median images/s and the bf16/fp32 ratio.
A hook times from the end of the first step (warm-up: kernels, allocator) to the end of the
last, synchronising the GPU, so the figure is steady-state training, augmentation included, and
excludes the validation pass. Pixel values do not change a step's cost, so the data are random
uint8 tensors of the dataset's shape: no dataset needed.
On CPU, whether bf16 autocast pays off depends on the vector units: with AMX or AVX512-BF16 it
can beat fp32, without them it emulates bf16 and is several times slower. The header names the
features this CPU has (bench.run.cpu), beside the figures measured on it; --threads sets the torch
threads (a grid cell runs at the grid's `threads`, 1 by default).
Run: python benchmarks/train_throughput.py [--device cuda] [--models lenet5,vgg11] [--threads 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.core import models  # noqa: E402
from bench.core.datasets import DATASETS, Data, Split  # noqa: E402
from bench.core.spec import TrainConfig  # noqa: E402
from bench.core.training import FitContext, Hook, default_device, fit  # noqa: E402
from bench.run.cpu import FEATURES, cpu_features  # noqa: E402
from benchmarks._common import hardware  # noqa: E402

# name -> (dataset whose shape is used, model, model args, augment as the presets do)
CASES = {
    "lenet5": ("mnist", "lenet5", {}, False),
    "vgg11-w0.25": ("cifar10", "vgg", {"depth": 11, "width": 0.25}, True),
    "resnet56": ("cifar10", "resnet56", {}, True),
}
PRECISIONS = ("fp32", "bf16")


def synthetic_data(dataset: str, n_train: int, seed: int = 0) -> Data:
    """Random uint8 images and labels of `dataset`'s shape; one validation image."""
    info = DATASETS[dataset]
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, *info.shape), dtype=torch.uint8, generator=gen),
                     torch.randint(0, 10, (n,), generator=gen))
    return Data(info, split(n_train), split(1), None)


class StepClock(Hook):
    """Wall time from the end of the first step to the end of the last (GPU synchronised)."""

    def __init__(self):
        self.first: float | None = None
        self.last: float | None = None
        self.steps = 0

    def on_step_end(self, ctx: FitContext) -> None:
        if ctx.device.startswith("cuda"):
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.steps += 1


def fit_images_per_s(case: str, precision: str, *, batch: int, steps: int, device: str,
                     data: Data | None = None) -> float:
    """Images/s of `steps` - 1 steady-state training steps of a fresh model of `case`."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (the first step is warm-up), got {steps}")
    dataset, name, args, aug = CASES[case]
    data = data or synthetic_data(dataset, steps * batch)
    c, h, _ = data.info.shape
    torch.manual_seed(0)
    model = models.build(name, c, h, 10, **args)
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=batch, augment=aug, precision=precision)
    clock = StepClock()
    fit(model, data, cfg, seed=0, hooks=[clock], device=device, progress=False)
    return (clock.steps - 1) * batch / (clock.last - clock.first)


def compare(case: str, *, batch: int, steps: int, repeats: int, device: str,
            precisions: tuple[str, ...] = PRECISIONS) -> dict:
    """Interleaved repeats per precision (order alternating each repeat) after one warm-up fit
    each; medians of images/s and, with both precisions, bf16 / fp32."""
    data = synthetic_data(CASES[case][0], steps * batch)
    for p in precisions:  # warm-up: first-use costs (autocast kernels, cuDNN plans) are not measured
        fit_images_per_s(case, p, batch=batch, steps=2, device=device, data=data)
    samples: dict[str, list[float]] = {p: [] for p in precisions}
    for r in range(repeats):
        for p in (precisions if r % 2 == 0 else precisions[::-1]):
            samples[p].append(fit_images_per_s(case, p, batch=batch, steps=steps, device=device, data=data))
    med = {p: statistics.median(v) for p, v in samples.items()}
    out = {"case": case, "device": device, "batch": batch, "steps": steps, "repeats": repeats,
           "images_per_s": med, "samples": samples}
    if {"fp32", "bf16"} <= set(med):
        out["bf16_over_fp32"] = med["bf16"] / med["fp32"]
    return out


def render(rows: list[dict]) -> str:
    lines = [f"{'model':<14} {'batch':>5} {'fp32 img/s':>11} {'bf16 img/s':>11} {'bf16/fp32':>10}"]
    for r in rows:
        ips = r["images_per_s"]
        ratio = f"{r['bf16_over_fp32']:.2f}x" if "bf16_over_fp32" in r else "-"
        lines.append(f"{r['case']:<14} {r['batch']:>5} {ips.get('fp32', float('nan')):>11.0f} "
                     f"{ips.get('bf16', float('nan')):>11.0f} {ratio:>10}")
    return "\n".join(lines)


def features_line() -> str:
    """The bf16-relevant CPU features present, and those missing, in one line."""
    have = cpu_features()
    missing = [f for f in FEATURES.values() if f not in have]
    return f"{', '.join(have) or 'none'}" + (f" (no {', '.join(missing)})" if missing else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--models", default="lenet5,vgg11-w0.25", help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="steps per fit (default: 50 on cuda, 8 on cpu)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, every core)")
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args(argv)
    device = a.device or default_device()
    if a.threads:
        torch.set_num_threads(a.threads)
    steps = a.steps or (50 if device.startswith("cuda") else 8)
    cases = [c.strip() for c in a.models.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"--models: '{unknown[0]}' is unknown; allowed: {', '.join(CASES)}")
    gpu = f", {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ""
    print(f"# fp32 vs bf16 training throughput (bench.core.training.fit, synthetic data) on {device}{gpu}; "
          f"median of {a.repeats} interleaved repeats of {steps} steps; {hardware()}")
    print(f"# CPU features: {features_line()}")
    rows = [compare(c, batch=a.batch, steps=steps, repeats=a.repeats, device=device) for c in cases]
    for r in rows:
        r.update(threads=torch.get_num_threads(), cpu_features=cpu_features())
    print(render(rows))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
