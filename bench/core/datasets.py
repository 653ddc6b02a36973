"""MNIST / CIFAR-10 / SVHN as whole uint8 tensors in memory.

Why in memory: the three datasets fit in RAM many times over, and indexing a uint8 tensor by a
random permutation then augmenting the whole batch at once is several times faster than a
per-sample PIL pipeline (see benchmarks/). Sources, in order: `<data_dir>/<name>.npz` (our
offline mirror and our cache format), else torchvision's official download, converted and
written back as the same npz.
"""
from __future__ import annotations

import os
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.errors import DataCorrupt, DataUnavailable
from bench.utils import atomic_write

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pad: int  # random-crop padding used for augmentation; 0 = no crop
    hflip: bool


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), (0.1307,), (0.3081,), 0, False),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True),
    # Digits are not mirror-symmetric, so SVHN gets crop only.
    "svhn": DatasetInfo("svhn", (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, False),
}

HOW_TO_GET = (
    "Point BENCH_DATA (or the config's data_dir) at a folder holding {name}.npz with arrays "
    "x_train, y_train, x_test, y_test (uint8 NHWC images, int64 labels 0..9), e.g. the project's "
    "../shared/datasets; on a machine with internet the official files are fetched with torchvision "
    "and cached there automatically."
)


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


def read_npz(path: Path, name: str, parts: tuple[str, ...] = ("train", "test")) -> dict[str, np.ndarray]:
    """Read and validate one `<name>.npz` (only the arrays of `parts`: an npz member is read on
    access); any defect raises DataCorrupt naming the file and fix."""
    info = DATASETS[name]
    fix = f"Delete or replace {path}. " + HOW_TO_GET.format(name=name)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataCorrupt(f"{path}: missing arrays {missing}. {fix}")
            arrays = {f"{xy}_{part}": z[f"{xy}_{part}"] for part in parts for xy in ("x", "y")}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DataCorrupt(f"{path}: unreadable npz ({e}). {fix}") from e
    c, h, w = info.shape
    for part in parts:
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (h, w, c):
            raise DataCorrupt(f"{path}: x_{part} is {x.dtype}{x.shape}, expected uint8[N,{h},{w},{c}]. {fix}")
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DataCorrupt(f"{path}: y_{part} is {y.dtype}{y.shape}, expected int labels [{len(x)}]. {fix}")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataCorrupt(f"{path}: y_{part} has labels outside 0..9. {fix}")
    return arrays


def svhn_mat_to_arrays(mat: dict) -> tuple[np.ndarray, np.ndarray]:
    """Official SVHN .mat layout (X: 32x32x3xN, y: Nx1 with 10 meaning digit 0) -> NHWC uint8, labels 0..9."""
    x = np.ascontiguousarray(np.transpose(mat["X"], (3, 0, 1, 2))).astype(np.uint8)
    y = np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    y[y == 10] = 0
    return x, y


def _fetch_official(name: str, root: Path) -> dict[str, np.ndarray]:
    """Download the official files with torchvision (needs internet) and return the npz arrays."""
    import torchvision

    dl = root / f"{name}-download"
    if name == "svhn":
        import scipy.io

        arrays = {}
        for part, split in (("train", "train"), ("test", "test")):
            torchvision.datasets.SVHN(str(dl), split=split, download=True)
            x, y = svhn_mat_to_arrays(scipy.io.loadmat(str(dl / f"{split}_32x32.mat")))
            arrays[f"x_{part}"], arrays[f"y_{part}"] = x, y
        return arrays
    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    arrays = {}
    for part in ("train", "test"):
        ds = cls(str(dl), train=part == "train", download=True)
        x = np.asarray(ds.data)
        x = x[..., None] if x.ndim == 3 else x
        arrays[f"x_{part}"] = x.astype(np.uint8)
        arrays[f"y_{part}"] = np.asarray(ds.targets, dtype=np.int64)
    return arrays


def load_arrays(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                parts: tuple[str, ...] = ("train", "test")) -> dict[str, np.ndarray]:
    """The arrays of `parts` of `name` (all four by default), from `<dir>/<name>.npz`, fetching and
    caching the file if absent."""
    if name not in DATASETS:
        from bench.errors import ConfigError

        raise ConfigError(f"dataset '{name}' is unknown; allowed: {', '.join(DATASETS)}")
    root = resolve_data_dir(data_dir)
    path = root / f"{name}.npz"
    if path.exists():
        return read_npz(path, name, parts)
    if not download or os.environ.get("BENCH_OFFLINE") == "1":
        raise DataUnavailable(f"{path} not found and downloads are off. " + HOW_TO_GET.format(name=name))
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # an offline machine should fail in seconds, not hang
    try:
        root.mkdir(parents=True, exist_ok=True)
        arrays = _fetch_official(name, root)
    except Exception as e:  # any network / mirror failure means: not available here
        raise DataUnavailable(
            f"{path} not found and the official download failed ({type(e).__name__}: {e}). "
            + HOW_TO_GET.format(name=name)
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
