"""In-memory uint8 tensor pipeline vs torchvision Dataset + DataLoader with PIL transforms.

Both produce normalised, augmented CIFAR-10 batches (random crop 32 with padding 4 + horizontal
flip); no model, so this is the pipeline alone. Goal: >= 3x.
Run: python benchmarks/data_pipeline.py
"""
from __future__ import annotations

import sys

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from bench.core import datasets  # noqa: E402
from benchmarks._common import data_dir, hardware, median_time  # noqa: E402

N, BATCH = 10000, 128


class PILCifar(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def main() -> None:
    import torchvision.transforms as T

    arrays = datasets.load_arrays("cifar10", data_dir())
    x, y = arrays["x_train"][:N], arrays["y_train"][:N]
    info = datasets.DATASETS["cifar10"]
    split = datasets.Split(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y))
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(info.mean, info.std)])

    def ours():
        for _ in datasets.batches(split, info, BATCH, shuffle=True, augment_data=True, gen=torch.Generator().manual_seed(0)):
            pass

    print(f"# CIFAR-10 pipeline, {N} images, batch {BATCH}, augmented; median of 3; {hardware()}")
    t_ours = median_time(ours, 3)
    print(f"{'pipeline':<40} {'img/s':>9} {'ours / it':>10}")
    print(f"{'in-memory tensors (bench.core.datasets)':<40} {N / t_ours:>9.0f} {'':>10}")
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(PILCifar(x, y, tf), batch_size=BATCH, shuffle=True, num_workers=workers)

        def theirs():
            for _ in loader:
                pass
        t = median_time(theirs, 3)
        print(f"{f'torchvision PIL DataLoader, {workers} workers':<40} {N / t:>9.0f} {t / t_ours:>9.1f}x")


if __name__ == "__main__":
    main()
