"""Dataset loading: real files, validation split, augmentation, SVHN conversion, clear errors."""
import dataclasses

import numpy as np
import pytest
import scipy.io
import torch

from bench.core import datasets
from bench.errors import ConfigError, DataCorrupt, DataUnavailable


def write_npz(path, n=50, shape=(28, 28, 1), **override):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n, *shape), dtype=np.uint8), "y_train": rng.integers(0, 10, n),
              "x_test": rng.integers(0, 256, (n // 2, *shape), dtype=np.uint8), "y_test": rng.integers(0, 10, n // 2)}
    arrays.update(override)
    np.savez_compressed(path, **arrays)


def test_real_mnist_and_cifar_load_with_disjoint_seeded_validation(data_dir):
    d = datasets.load("mnist", data_dir, val_size=5000)
    assert d.train.x.dtype == torch.uint8 and d.train.x.shape[1:] == (1, 28, 28)
    assert len(d.train) == 55000 and len(d.val) == 5000 and len(d.test) == 10000
    again = datasets.load("mnist", data_dir, val_size=5000)
    assert torch.equal(d.val.y, again.val.y)  # fixed split, every method and seed sees the same
    # no validation image is also a training image (compare raw bytes of a sample)
    train_keys = {bytes(x.numpy()) for x in d.train.x[:20000]}
    assert not any(bytes(x.numpy()) in train_keys for x in d.val.x[:500])
    assert torch.bincount(d.test.y, minlength=10).min() > 800


def test_missing_file_offline_is_unavailable_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.delenv("BENCH_DATA", raising=False)
    with pytest.raises(DataUnavailable, match="BENCH_DATA"):
        datasets.load("svhn", tmp_path)


def test_failed_download_is_unavailable_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    monkeypatch.delenv("BENCH_DATA", raising=False)

    def no_network(folder):
        raise OSError("Name or service not known")
    monkeypatch.setitem(datasets.DATASETS, "mnist", dataclasses.replace(datasets.DATASETS["mnist"], fetch=no_network))
    with pytest.raises(DataUnavailable, match="download failed"):
        datasets.load("mnist", tmp_path)


@pytest.mark.parametrize("defect,match", [
    ("truncated", "unreadable"),
    ("missing_key", "missing arrays"),
    ("bad_shape", "expected uint8"),
    ("bad_labels", "outside 0..9"),
])
def test_corrupt_files_name_the_problem(tmp_path, monkeypatch, defect, match):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    path = tmp_path / "mnist.npz"
    if defect == "truncated":
        write_npz(path)
        path.write_bytes(path.read_bytes()[:100])
    elif defect == "missing_key":
        np.savez_compressed(path, x_train=np.zeros((2, 28, 28, 1), np.uint8))
    elif defect == "bad_shape":
        write_npz(path, shape=(32, 32, 3))
    else:
        write_npz(path, y_train=np.full(50, 10))
    with pytest.raises(DataCorrupt, match=match):
        datasets.load("mnist", tmp_path, val_size=10)


def test_unknown_dataset_lists_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError, match="allowed: mnist, cifar10, svhn"):
        datasets.load("imagenet", tmp_path)


def test_bench_data_env_wins_over_config(tmp_path, monkeypatch):
    write_npz(tmp_path / "mnist.npz")
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    d = datasets.load("mnist", "/nonexistent", val_size=10)
    assert len(d.train) == 40


def test_svhn_mat_conversion_official_layout(tmp_path, monkeypatch):
    """Official .mat: X is 32x32x3xN, labels 1..10 with 10 meaning digit 0."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 7), dtype=np.uint8)
    y = np.array([[10], [1], [2], [9], [10], [5], [3]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    xs, ys = datasets.svhn_mat_to_arrays(scipy.io.loadmat(tmp_path / "train_32x32.mat"))
    assert xs.shape == (7, 32, 32, 3) and xs.dtype == np.uint8
    np.testing.assert_array_equal(xs[3], x[:, :, :, 3])
    assert ys.tolist() == [0, 1, 2, 9, 0, 5, 3]
    # the converted arrays are a valid svhn.npz for the loader
    np.savez_compressed(tmp_path / "svhn.npz", x_train=xs, y_train=ys, x_test=xs, y_test=ys)
    monkeypatch.delenv("BENCH_DATA", raising=False)
    d = datasets.load("svhn", tmp_path, val_size=2)
    assert d.train.x.shape == (5, 3, 32, 32)


def test_augmentation_crops_and_flips_whole_batches_deterministically():
    info = datasets.DATASETS["cifar10"]
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.int32).reshape(2, 3, 32, 32).to(torch.uint8)
    a = datasets.augment(x, info, torch.Generator().manual_seed(0))
    b = datasets.augment(x, info, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    # every output row is a (possibly shifted / flipped) piece of the input or zero padding
    ones = torch.ones(64, 3, 8, 8, dtype=torch.uint8)
    out = datasets.augment(ones, info, torch.Generator().manual_seed(1))
    zeros_per_image = (out == 0).flatten(1).sum(1)
    assert (zeros_per_image > 0).any() and (zeros_per_image < ones[0].numel()).all()
    mnist = datasets.DATASETS["mnist"]
    assert torch.equal(datasets.augment(x[:, :1], mnist, torch.Generator()), x[:, :1])  # no augmentation for MNIST


def test_batches_normalise_and_cover_the_split_once():
    info = datasets.DATASETS["mnist"]
    split = datasets.Split(torch.full((10, 1, 28, 28), 255, dtype=torch.uint8), torch.arange(10))
    seen = []
    for xb, yb in datasets.batches(split, info, 4, shuffle=True, gen=torch.Generator().manual_seed(0)):
        assert xb.dtype == torch.float32
        torch.testing.assert_close(xb.max(), torch.tensor((1 - 0.1307) / 0.3081))
        seen += yb.tolist()
    assert sorted(seen) == list(range(10))
