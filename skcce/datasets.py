"""Locating and loading the data sets used by the benchmarks and tests.

skcce does not download data.  Files are looked up, in order:

1. the ``path`` argument (a file, or a directory holding the file);
2. the ``SKCCE_DATA`` environment variable (a directory);
3. ``../shared/data`` next to the source checkout (the layout of the
   project's development machines).

When nothing is found a :class:`DataNotFoundError` says where it looked;
tests use :func:`find_data_file` to skip with that reason instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "DataNotFoundError",
    "find_data_file",
    "load_mnist",
    "load_mnist_features",
    "MNIST_FILE",
    "MNIST_FEATURES_FILE",
]

MNIST_FILE = "mnist70k.npz"
MNIST_FEATURES_FILE = "mnist_train10k_effnet_lite0.npz"


class DataNotFoundError(FileNotFoundError):
    """A data file is not where skcce looks for it."""


def _candidates(name, path=None):
    if path is not None:
        path = Path(path)
        yield path / name if path.is_dir() else path
        return
    env = os.environ.get("SKCCE_DATA")
    if env:
        yield Path(env) / name
    repo = Path(__file__).resolve().parents[1]
    yield repo.parent / "shared" / "data" / name


def find_data_file(name, path=None):
    """Return the first existing location of data file ``name``, or ``None``.

    Parameters
    ----------
    name : str
        File name, e.g. ``'mnist70k.npz'``.
    path : str or os.PathLike, optional
        An explicit file or directory; when given, only it is checked.

    Returns
    -------
    path : pathlib.Path or None

    Examples
    --------
    >>> from skcce.datasets import find_data_file
    >>> find_data_file("no-such-file.npz") is None
    True
    """
    for candidate in _candidates(name, path):
        if candidate.is_file():
            return candidate
    return None


def _not_found(name, path):
    places = ", ".join(str(p) for p in _candidates(name, path))
    return DataNotFoundError(
        f"{name} not found (looked in: {places}); pass path=..., or set the SKCCE_DATA "
        "environment variable to the directory that holds it"
    )


def _load_npz(name, path):
    found = find_data_file(name, path)
    if found is None:
        raise _not_found(name, path)
    with np.load(found) as data:
        if "X" not in data or "y" not in data:
            raise ValueError(f"{found} must hold arrays 'X' and 'y', has {sorted(data.files)}")
        return data["X"], data["y"]


def load_mnist(path=None):
    """Load the 70,000 MNIST digits (train and test sets together).

    Parameters
    ----------
    path : str or os.PathLike, optional
        ``mnist70k.npz`` itself or its directory; see the module docstring
        for the default search.

    Returns
    -------
    X : ndarray of shape (70000, 784), dtype uint8
        Flattened 28x28 grey images (use ``image_shape=(1, 28, 28)``); the
        first 60,000 rows are the usual training set.
    y : ndarray of shape (70000,)
        Digit labels 0..9.

    Raises
    ------
    DataNotFoundError
        When the file is not found.

    Examples
    --------
    >>> from skcce.datasets import load_mnist
    >>> try:
    ...     X, y = load_mnist()
    ... except FileNotFoundError:
    ...     X = None
    >>> X is None or X.shape == (70000, 784)
    True
    """
    return _load_npz(MNIST_FILE, path)


def load_mnist_features(path=None):
    """Load 10,000 MNIST training digits as 1280-d pretrained EfficientNet-Lite0 features.

    Parameters
    ----------
    path : str or os.PathLike, optional
        ``mnist_train10k_effnet_lite0.npz`` itself or its directory.

    Returns
    -------
    X : ndarray of shape (10000, 1280), dtype float32
    y : ndarray of shape (10000,)

    Examples
    --------
    >>> from skcce.datasets import load_mnist_features
    >>> try:
    ...     X, y = load_mnist_features()
    ... except FileNotFoundError:
    ...     X = None
    >>> X is None or X.shape == (10000, 1280)
    True
    """
    return _load_npz(MNIST_FEATURES_FILE, path)
