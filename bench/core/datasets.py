"""The dataset registry, and datasets as whole uint8 tensors in memory.

A dataset is one `register_dataset` entry at the end of this file: its shape, classes,
normalisation, official split sizes, fetcher and default recipes; everything else (model
building, `bench plan`, the report's resolution, config defaults) reads the entry.

Why in memory: the datasets fit in RAM many times over, and indexing a uint8 tensor by a
random permutation then augmenting the whole batch at once is several times faster than a
per-sample PIL pipeline (see benchmarks/). Sources, in order: `<data_dir>/<name>.npz` (our
offline mirror and our cache format), else the entry's fetcher (the official download),
written back as the same npz.
"""
from __future__ import annotations

import os
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.core.spec import TrainConfig
from bench.errors import ConfigError, DataCorrupt, DataUnavailable
from bench.utils import atomic_write

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# What a fetcher returns and the npz holds: NPZ_KEYS -> uint8 NHWC images, int labels 0..num_classes-1
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the harness knows of one dataset. `fetch(folder)` downloads the official files
    into `folder` and returns them as NPZ_KEYS arrays; `pretrain` / `finetune` are the recipes a
    config's `pretrain:` / `finetune:` fields override."""

    name: str
    shape: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pad: int  # random-crop padding used for augmentation; 0 = no crop
    hflip: bool
    num_classes: int = 10
    train_images: int = 0  # official split sizes: `bench plan` prices epochs by the first,
    test_images: int = 0   # the report's resolution (one test image in pp) is the second
    fetch: Callable[[Path], Arrays] | None = field(default=None, compare=False, repr=False)
    pretrain: TrainConfig = TrainConfig()
    finetune: TrainConfig = TrainConfig()


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the registry (a test's synthetic one too); a malformed entry fails here,
    not in the first run that reads it."""
    c = info.shape[0]
    sizes = min(info.train_images, info.test_images)
    if len(info.mean) != c or len(info.std) != c or info.num_classes < 2 or sizes < 1:
        raise ValueError(f"dataset '{info.name}': mean and std need one value per channel ({c}), num_classes >= 2 "
                         f"and the official split sizes (train_images, test_images) > 0")
    DATASETS[info.name] = info
    return info


def how_to_get(info: DatasetInfo) -> str:
    """Where the loader looks for `info`'s file and what it must hold: the fix an error names."""
    return (f"Point BENCH_DATA (or the config's data_dir) at a folder holding {info.name}.npz with arrays "
            f"x_train, y_train, x_test, y_test (uint8 NHWC images, int64 labels 0..{info.num_classes - 1}), e.g. "
            "the project's ../shared/datasets; on a machine with internet the dataset's fetcher downloads the "
            "official files and caches them there automatically.")


@dataclass
class Split:
    """Images as uint8 NCHW, labels as int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "Split":
        """The split on `device`: on a GPU the uint8 images (150 MB for CIFAR) live there, so a
        batch is indexed, augmented and normalised without a host-to-device copy per step."""
        return self if self.x.device == torch.device(device) else Split(self.x.to(device), self.y.to(device))

    def subset(self, n: int | None, seed: int = 0) -> "Split":
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return Split(self.x[idx], self.y[idx])


@dataclass
class Data:
    """Train / validation / test splits of one dataset. Validation is held out from train."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split


SEEN_SPLITS = "methods see the 'train' and 'val' splits only"
TEST_REFUSED = f"test is for the final numbers only: {SEEN_SPLITS}"


@dataclass(frozen=True)
class TrainVal:
    """What a method and its training hooks see of a dataset. `test` raises with the reason
    instead of being a None that fails later, far from the cause."""

    info: DatasetInfo
    train: Split
    val: Split

    @property
    def test(self) -> Split:
        raise AttributeError(TEST_REFUSED)


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prunebench" / "datasets"


def resolve_data_dir(configured: str | os.PathLike | None) -> Path:
    """BENCH_DATA wins over the config's data_dir, which wins over the user cache folder."""
    env = os.environ.get("BENCH_DATA")
    if env:
        return Path(env).expanduser()
    if configured:
        return Path(configured).expanduser()
    return default_data_dir()


def read_npz(path: Path, name: str, parts: tuple[str, ...] = ("train", "test")) -> Arrays:
    """Read and validate one `<name>.npz` (only the arrays of `parts`: an npz member is read on
    access); any defect raises DataCorrupt naming the file and fix."""
    info = DATASETS[name]
    fix = f"Delete or replace {path}. " + how_to_get(info)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataCorrupt(f"{path}: missing arrays {missing}. {fix}")
            arrays = {f"{xy}_{part}": z[f"{xy}_{part}"] for part in parts for xy in ("x", "y")}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DataCorrupt(f"{path}: unreadable npz ({e}). {fix}") from e
    c, h, w = info.shape
    last = info.num_classes - 1
    for part in parts:
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (h, w, c):
            raise DataCorrupt(f"{path}: x_{part} is {x.dtype}{x.shape}, expected uint8[N,{h},{w},{c}]. {fix}")
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DataCorrupt(f"{path}: y_{part} is {y.dtype}{y.shape}, expected int labels [{len(x)}]. {fix}")
        if len(y) and (y.min() < 0 or y.max() > last):
            raise DataCorrupt(f"{path}: y_{part} has labels outside 0..{last}. {fix}")
    return arrays


def load_arrays(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                parts: tuple[str, ...] = ("train", "test")) -> Arrays:
    """The arrays of `parts` of `name` (all four by default), from `<dir>/<name>.npz`, fetching and
    caching the file if absent."""
    if name not in DATASETS:
        raise ConfigError(f"dataset '{name}' is unknown; allowed: {', '.join(DATASETS)}")
    info = DATASETS[name]
    root = resolve_data_dir(data_dir)
    path = root / f"{name}.npz"
    if path.exists():
        return read_npz(path, name, parts)
    if info.fetch is None or not download or os.environ.get("BENCH_OFFLINE") == "1":
        off = "the dataset has no fetcher" if info.fetch is None else "downloads are off"
        raise DataUnavailable(f"{path} not found and {off}. " + how_to_get(info))
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # an offline machine should fail in seconds, not hang
    try:
        root.mkdir(parents=True, exist_ok=True)
        arrays = info.fetch(root / f"{name}-download")
    except Exception as e:  # any network / mirror failure means: not available here
        raise DataUnavailable(
            f"{path} not found and the official download failed ({type(e).__name__}: {e}). " + how_to_get(info)
        ) from e
    finally:
        socket.setdefaulttimeout(old)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.savez adds no `.npz`
        np.savez_compressed(fh, **arrays)
    return read_npz(path, name, parts)


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    val_size: int = 5000,
    split_seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> Data:
    """Load `name` with a fixed, seeded validation split held out of train.

    The split seed is independent of the run seed, so every method and seed sees the same
    validation images; the test set is used only for the final numbers.
    """
    seen = load_trainval(name, data_dir, val_size=val_size, split_seed=split_seed, train_subset=train_subset)
    test = load_test(name, data_dir, split_seed=split_seed, test_subset=test_subset)
    return Data(seen.info, seen.train, seen.val, test)


def load_trainval(name: str, data_dir: str | os.PathLike | None = None, *, val_size: int = 5000,
                  split_seed: int = 0, train_subset: int | None = None) -> TrainVal:
    """What a method may see of `name`: train and the seeded validation split held out of it
    (the same images for every method and seed). The runner caches this, never the test split."""
    arrays = load_arrays(name, data_dir, parts=("train",))
    x = torch.from_numpy(arrays["x_train"]).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(arrays["y_train"].astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    if val_size >= len(y):
        raise DataCorrupt(f"{name}: val_size={val_size} leaves no training images (train has {len(y)})")
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    train = Split(x[train_idx], y[train_idx]).subset(train_subset, split_seed)
    return TrainVal(DATASETS[name], train, Split(x[val_idx], y[val_idx]))


def load_test(name: str, data_dir: str | os.PathLike | None = None, *, split_seed: int = 0,
              test_subset: int | None = None) -> Split:
    """The test split of `name` (its seeded `test_subset`), for the final numbers only. Read on
    its own, so a cell can hold it for its measurements alone and drop it with them."""
    arrays = load_arrays(name, data_dir, parts=("test",))
    return Split(torch.from_numpy(arrays["x_test"]).permute(0, 3, 1, 2).contiguous(),
                 torch.from_numpy(arrays["y_test"].astype(np.int64))).subset(test_subset, split_seed)


def normalize(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 NCHW -> float32, standardised per channel."""
    mean = torch.tensor(info.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255) - mean) / std


def augment(x: torch.Tensor, info: DatasetInfo, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and optional horizontal flip, on a whole uint8 batch at once.

    Runs on `x`'s device; the random draws come from the CPU generator `gen`, so a seed gives the
    same crops and flips on CPU and GPU."""
    n, c, h, w = x.shape
    dev = x.device
    if info.crop_pad:
        p = info.crop_pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(dev)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=gen).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        x = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                   rows, cols]
    if info.hflip:
        flip = (torch.rand(n, generator=gen) < 0.5).to(dev)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    return x


def batches(split: Split, info: DatasetInfo, batch_size: int, *, shuffle: bool = False,
            augment_data: bool = False, gen: torch.Generator | None = None,
            device: torch.device | str = "cpu", drop_last: bool = False):
    """Yield normalised (x, y) batches by index permutation; augmentation happens per batch."""
    n = len(split)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size].to(split.x.device)
        xb = split.x[idx]
        if augment_data:
            xb = augment(xb, info, gen if gen is not None else torch.Generator())
        yield normalize(xb.to(device, non_blocking=True), info), split.y[idx].to(device, non_blocking=True)


# -- fetchers: the official files -> NPZ_KEYS arrays (need internet) -------------------------------

def torchvision_fetcher(dataset: str) -> Callable[[Path], Arrays]:
    """A fetcher for a torchvision dataset class with `train=` splits and `data` / `targets`
    arrays (MNIST, CIFAR-10)."""
    def fetch(folder: Path) -> Arrays:
        import torchvision

        cls = getattr(torchvision.datasets, dataset)
        arrays = {}
        for part in ("train", "test"):
            ds = cls(str(folder), train=part == "train", download=True)
            x = np.asarray(ds.data)
            arrays[f"x_{part}"] = (x[..., None] if x.ndim == 3 else x).astype(np.uint8)
            arrays[f"y_{part}"] = np.asarray(ds.targets, dtype=np.int64)
        return arrays
    return fetch


def svhn_mat_to_arrays(mat: dict) -> tuple[np.ndarray, np.ndarray]:
    """Official SVHN .mat layout (X: 32x32x3xN, y: Nx1 with 10 meaning digit 0) -> NHWC uint8, labels 0..9."""
    x = np.ascontiguousarray(np.transpose(mat["X"], (3, 0, 1, 2))).astype(np.uint8)
    y = np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    y[y == 10] = 0
    return x, y


def fetch_svhn(folder: Path) -> Arrays:
    import scipy.io
    import torchvision

    arrays = {}
    for part in ("train", "test"):
        torchvision.datasets.SVHN(str(folder), split=part, download=True)
        mat = scipy.io.loadmat(str(folder / f"{part}_32x32.mat"))
        arrays[f"x_{part}"], arrays[f"y_{part}"] = svhn_mat_to_arrays(mat)
    return arrays


# -- the registry: one entry per dataset ---------------------------------------------------------
# Default recipes are TrainConfig's own (what configs that leave a field out have always run);
# an entry may set others, e.g. TrainConfig(epochs=20, augment=False).

register_dataset(DatasetInfo("mnist", (1, 28, 28), (0.1307,), (0.3081,), 0, False, num_classes=10,
                             train_images=60000, test_images=10000, fetch=torchvision_fetcher("MNIST")))
register_dataset(DatasetInfo("cifar10", (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True,
                             num_classes=10, train_images=50000, test_images=10000,
                             fetch=torchvision_fetcher("CIFAR10")))
# Digits are not mirror-symmetric, so SVHN gets crop only.
register_dataset(DatasetInfo("svhn", (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, False,
                             num_classes=10, train_images=73257, test_images=26032, fetch=fetch_svhn))
