"""Harness training loop vs a bare PyTorch loop: same model, batch size, data and step count.

The harness adds per-batch augmentation, normalisation, LR scheduling, NaN checks, hooks and a
progress bar; this measures what that costs. Goal: >= 0.95x the bare loop's images/s.
Run: python benchmarks/harness_overhead.py
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from bench.core import datasets, models  # noqa: E402
from bench.core.spec import TrainConfig  # noqa: E402
from bench.core.training import fit, sgd  # noqa: E402
from benchmarks._common import data_dir, hardware, median_time  # noqa: E402

STEPS, BATCH = 40, 128
CASES = [("mnist", "lenet5", {}), ("cifar10", "vgg", {"depth": 11, "width": 0.25}), ("cifar10", "resnet20", {})]


def main() -> None:
    print(f"# train throughput, {STEPS} steps of batch {BATCH}, median of 3; {hardware()}")
    print(f"{'model':<28} {'bare img/s':>11} {'harness img/s':>14} {'ratio':>7}")
    for ds, name, args in CASES:
        data = datasets.load(ds, data_dir(), val_size=BATCH, train_subset=STEPS * BATCH)
        data.val = data.val.subset(BATCH)
        c, h, _ = data.info.shape
        aug = ds != "mnist"
        cfg = TrainConfig(epochs=1, lr=0.01, batch_size=BATCH, augment=aug)

        def harness():
            torch.manual_seed(0)
            m = models.build(name, c, h, 10, **args)
            fit(m, data, cfg, seed=0, device="cpu", progress=False)

        def bare():
            torch.manual_seed(0)
            m = models.build(name, c, h, 10, **args).to(memory_format=torch.channels_last)
            opt = sgd(m, cfg)
            gen = torch.Generator().manual_seed(0)
            m.train()
            for x, y in datasets.batches(data.train, data.info, BATCH, shuffle=True, augment_data=aug, gen=gen):
                x = x.contiguous(memory_format=torch.channels_last)
                opt.zero_grad()
                F.cross_entropy(m(x), y).backward()
                opt.step()

        tb, th = median_time(bare, 3), median_time(harness, 3)
        n = STEPS * BATCH
        print(f"{name + str(args or ''):<28} {n / tb:>11.0f} {n / th:>14.0f} {tb / th:>6.2f}x")


if __name__ == "__main__":
    main()
