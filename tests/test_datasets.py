"""Data lookup: only an explicit path or SKCCE_DATA, plus torchvision's MNIST download folder."""

import gzip

import numpy as np
import pytest

from skcce import datasets
from skcce.datasets import MNIST_FILE, DataNotFoundError, find_data_file, load_mnist


def _write_idx(path, array, compress=False):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


def _torchvision_layout(root, compress=False):
    """What torchvision.datasets.MNIST(root, download=True) leaves: root/MNIST/raw/*-ubyte."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train = np.arange(2 * 784).reshape(2, 28, 28) % 256
    test = np.full((1, 28, 28), 7)
    _write_idx(raw / "train-images-idx3-ubyte", train, compress)
    _write_idx(raw / "train-labels-idx1-ubyte", [3, 1], compress)
    _write_idx(raw / "t10k-images-idx3-ubyte", test, compress)
    _write_idx(raw / "t10k-labels-idx1-ubyte", [9], compress)
    return train, test


@pytest.mark.parametrize("compress", [False, True])
def test_reads_torchvision_mnist_folder(tmp_path, monkeypatch, compress):
    monkeypatch.delenv("SKCCE_DATA", raising=False)
    train, test = _torchvision_layout(tmp_path, compress)
    for where in (tmp_path, tmp_path / "MNIST", tmp_path / "MNIST" / "raw"):
        X, y = load_mnist(where)
        assert X.shape == (3, 784) and X.dtype == np.uint8
        assert np.array_equal(X[:2], train.reshape(2, 784))  # training rows first
        assert np.array_equal(X[2], test.reshape(784))
        assert y.tolist() == [3, 1, 9]
    monkeypatch.setenv("SKCCE_DATA", str(tmp_path))
    assert load_mnist()[1].tolist() == [3, 1, 9]


def test_truncated_idx_file_is_named(tmp_path):
    _torchvision_layout(tmp_path)
    labels = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte is truncated"):
        load_mnist(tmp_path)


def test_no_lookup_beside_the_source_tree(tmp_path, monkeypatch):
    # a development-machine layout ../shared/data beside the package must not be used
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    np.savez(shared / MNIST_FILE, X=np.zeros((2, 784), np.uint8), y=np.zeros(2))
    monkeypatch.setattr(datasets, "__file__", str(tmp_path / "repo" / "skcce" / "datasets.py"))
    monkeypatch.delenv("SKCCE_DATA", raising=False)
    assert find_data_file(MNIST_FILE) is None
    with pytest.raises(DataNotFoundError) as info:
        load_mnist()
    message = str(info.value)
    assert "\n" not in message  # one line
    assert "SKCCE_DATA is not set" in message
    assert "torchvision.datasets.MNIST('DIR', download=True)" in message
    assert "set SKCCE_DATA=DIR" in message


def test_not_found_names_the_places(tmp_path, monkeypatch):
    monkeypatch.setenv("SKCCE_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError, match="env"):
        load_mnist()
    with pytest.raises(DataNotFoundError, match="nowhere"):
        datasets.load_mnist_features(tmp_path / "nowhere")
