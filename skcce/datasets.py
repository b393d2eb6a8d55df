"""Locating and loading the data sets used by the examples, benchmarks and tests.

skcce does not download data, and the installed package knows nothing of the
machine it runs on: data files are found only where the user says.  A file
is looked up, in order:

1. the ``path`` argument (a file, or a directory holding the file);
2. the directory named by the ``SKCCE_DATA`` environment variable.

For MNIST, :func:`load_mnist` also reads torchvision's download folder
(``torchvision.datasets.MNIST(root, download=True)`` writes
``root/MNIST/raw/``), given as ``path`` or ``SKCCE_DATA``.  When nothing is
found, a :class:`DataNotFoundError` says in one line where it looked and
what to download; tests use :func:`find_data_file` to skip with that reason.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = [
    "DataNotFoundError",
    "find_data_file",
    "load_mnist",
    "load_mnist_features",
    "DATA_ENV",
    "MNIST_FILE",
    "MNIST_FEATURES_FILE",
]

# The environment variable naming the directory that holds the data files.
DATA_ENV = "SKCCE_DATA"
MNIST_FILE = "mnist70k.npz"
MNIST_FEATURES_FILE = "mnist_train10k_effnet_lite0.npz"

# torchvision's MNIST files, in the order of mnist70k.npz (training set first).
_IDX_FILES = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


class DataNotFoundError(FileNotFoundError):
    """A data file is not where skcce was told to look for it.

    A :class:`FileNotFoundError`, so ``except FileNotFoundError`` catches it.

    Examples
    --------
    >>> import tempfile
    >>> from skcce.datasets import DataNotFoundError, load_mnist
    >>> try:
    ...     load_mnist(tempfile.mkdtemp())
    ... except DataNotFoundError as exc:
    ...     print(str(exc).split(" (")[0])
    MNIST not found
    """


def _search_dirs(path=None):
    """The places to look: ``path`` when given, else ``$SKCCE_DATA`` when set."""
    if path is not None:
        return [Path(path)]
    env = os.environ.get(DATA_ENV)
    return [Path(env)] if env else []


def _candidates(name, path=None):
    for place in _search_dirs(path):
        yield place / name if place.is_dir() or path is None else place


def find_data_file(name, path=None):
    """Return the location of data file ``name``, or ``None`` when it is not found.

    Parameters
    ----------
    name : str
        File name, e.g. ``'mnist70k.npz'``.
    path : str or os.PathLike, optional
        An explicit file or directory; when given, only it is checked.
        Otherwise the directory in the ``SKCCE_DATA`` environment variable.

    Returns
    -------
    path : pathlib.Path or None
        The file, or None.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from skcce.datasets import find_data_file
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "demo.npz"), X=np.zeros(1))
    >>> find_data_file("demo.npz", folder).name
    'demo.npz'
    >>> find_data_file("no-such-file.npz", folder) is None
    True
    """
    for candidate in _candidates(name, path):
        if candidate.is_file():
            return candidate
    return None


def _looked_in(path):
    places = [str(p) for p in _search_dirs(path)]
    if not places:
        return f"no path given and {DATA_ENV} is not set"
    return "looked in " + ", ".join(places)


def _load_npz(found):
    with np.load(found) as data:
        if "X" not in data or "y" not in data:
            raise ValueError(f"{found} must hold arrays 'X' and 'y', has {sorted(data.files)}")
        return data["X"], data["y"]


def _read_idx(path):
    """An IDX file of MNIST (``.gz`` or not) as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):  # 0x08: unsigned bytes
        raise ValueError(f"{path} is not an MNIST IDX file of unsigned bytes")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, "
                         f"found {data.size}")
    return data.reshape(dims)


def _idx_file(folder, name):
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_torchvision_mnist(path=None):
    """The ``MNIST/raw`` folder torchvision downloads into, or None."""
    for place in _search_dirs(path):
        for folder in (place / "MNIST" / "raw", place / "raw", place):
            if all(_idx_file(folder, name) for pair in _IDX_FILES for name in pair):
                return folder
    return None


def _load_torchvision_mnist(folder):
    X, y = [], []
    for images, labels in _IDX_FILES:
        X.append(_read_idx(_idx_file(folder, images)).reshape(-1, 28 * 28))
        y.append(_read_idx(_idx_file(folder, labels)))
    return np.concatenate(X), np.concatenate(y)


def load_mnist(path=None):
    """Load the 70,000 MNIST digits (training and test sets together).

    Reads ``mnist70k.npz`` (arrays ``X`` and ``y``) or the files that
    ``torchvision.datasets.MNIST(root, download=True)`` writes under
    ``root/MNIST/raw/``, from ``path`` or else from the directory in the
    ``SKCCE_DATA`` environment variable.

    Parameters
    ----------
    path : str or os.PathLike, optional
        ``mnist70k.npz`` itself, its directory, or torchvision's MNIST
        ``root`` (or its ``MNIST`` or ``MNIST/raw`` folder).  Default: the
        ``SKCCE_DATA`` environment variable.

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
        When neither is found; the message says what to download and where
        to put it.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from skcce.datasets import load_mnist
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "mnist70k.npz"),
    ...          X=np.zeros((3, 784), np.uint8), y=np.array([7, 2, 1]))
    >>> X, y = load_mnist(folder)
    >>> X.shape, y.tolist()
    ((3, 784), [7, 2, 1])
    """
    found = find_data_file(MNIST_FILE, path)
    if found is not None:
        return _load_npz(found)
    folder = _find_torchvision_mnist(path)
    if folder is not None:
        return _load_torchvision_mnist(folder)
    raise DataNotFoundError(
        f"MNIST not found ({_looked_in(path)}): download it once with python -c \"import "
        f"torchvision; torchvision.datasets.MNIST('DIR', download=True)\", then pass "
        f"path='DIR' or set {DATA_ENV}=DIR (a folder holding {MNIST_FILE} works too)"
    )


def load_mnist_features(path=None):
    """Load 10,000 MNIST training digits as 1280-d pretrained EfficientNet-Lite0 features.

    Parameters
    ----------
    path : str or os.PathLike, optional
        ``mnist_train10k_effnet_lite0.npz`` itself or its directory.
        Default: the directory in the ``SKCCE_DATA`` environment variable.

    Returns
    -------
    X : ndarray of shape (10000, 1280), dtype float32
        Globally average-pooled features of the ImageNet-trained
        EfficientNet-Lite0 for MNIST rows 0-9999.
    y : ndarray of shape (10000,)
        Digit labels 0..9.

    Raises
    ------
    DataNotFoundError
        When the file is not found.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from skcce.datasets import load_mnist_features
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "mnist_train10k_effnet_lite0.npz"),
    ...          X=np.ones((2, 1280), np.float32), y=np.array([5, 0]))
    >>> X, y = load_mnist_features(folder)
    >>> X.shape, y.tolist()
    ((2, 1280), [5, 0])
    """
    found = find_data_file(MNIST_FEATURES_FILE, path)
    if found is None:
        raise DataNotFoundError(
            f"{MNIST_FEATURES_FILE} not found ({_looked_in(path)}); pass path=... or set "
            f"{DATA_ENV} to the folder that holds it"
        )
    return _load_npz(found)
