"""Data sources of the training loop: the rows of one mini-batch, read on demand.

A data source is what :class:`skcce._training.Trainer` iterates over.  It
has ``__len__``, ``input_shape``, ``rows(indices) -> torch.Tensor`` and
``labels(indices) -> torch.Tensor or None``.  Only the rows of one batch are
read (and converted) at a time, so memory stays O(batch) beyond the caller's
data: a numpy memmap is never loaded whole, a torch ``Dataset`` is indexed
one item at a time.

===============  ==============================================================
source           data
===============  ==============================================================
ArraySource      feature vectors (ndarray or memmap), optional partial labels
ImageSource      image arrays in any layout of :func:`skcce.augment.check_images`
DatasetSource    a map-style ``torch.utils.data.Dataset`` of images
TargetSource     another source whose labels are float (n, K) target rows
===============  ==============================================================

No input validation happens here beyond what a source needs to read its
rows: the estimators validate first (:mod:`skcce._base`).
"""

from __future__ import annotations

import numpy as np
import torch

from skcce.augment import images_to_tensor

__all__ = ["ArraySource", "DatasetSource", "ImageSource", "TargetSource", "image_source",
           "is_dataset"]


def _labels(y, indices):
    return None if y is None else torch.from_numpy(y[np.asarray(indices)])


class ArraySource:
    """Rows of an indexable array (ndarray or ``np.memmap``) with optional partial labels.

    Parameters
    ----------
    X : array-like of shape (n_samples, ...)
        Indexable with an integer array.
    y : ndarray of shape (n_samples,), default=None
        Partial labels, -1 for unlabeled rows.
    dtype : torch.dtype, default=torch.float32
        Dtype of the batches.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._sources import ArraySource
    >>> src = ArraySource(np.arange(6.0).reshape(3, 2))
    >>> len(src), src.input_shape, src.rows(np.array([2, 0])).tolist()
    (3, (2,), [[4.0, 5.0], [0.0, 1.0]])
    """

    def __init__(self, X, y=None, dtype=torch.float32):
        self.X = X
        self.y = None if y is None else np.asarray(y, dtype=np.int64)
        self.dtype = dtype
        self._np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        # An in-memory array already in the batch dtype is viewed as a tensor once (no
        # copy), and a batch is then one index_select; a memmap or another dtype is
        # read and converted one batch at a time.
        self._tensor = None
        if (type(X) is np.ndarray and X.dtype == self._np_dtype and X.ndim >= 1
                and X.flags.c_contiguous and X.flags.writeable):
            self._tensor = torch.from_numpy(X)

    def __len__(self):
        return len(self.X)

    @property
    def input_shape(self):
        return tuple(self.X.shape[1:])

    def rows(self, indices) -> torch.Tensor:
        if self._tensor is not None:  # a new tensor: writable, not a view of X
            index = torch.from_numpy(np.asarray(indices, dtype=np.int64).reshape(-1))
            return self._tensor.index_select(0, index)
        # Integer-array indexing copies just these rows; the copy is writable.
        chunk = np.asarray(self.X[np.asarray(indices)])
        return torch.from_numpy(np.array(chunk, dtype=self._np_dtype, copy=None, order="C"))

    def labels(self, indices):
        return _labels(self.y, indices)


class ImageSource:
    """Rows of an image array (ndarray or numpy memmap), converted one batch at a time.

    Parameters
    ----------
    X : ndarray
        Images, in any layout accepted by :func:`skcce.augment.check_images`.
    layout : ImageLayout
        From :func:`skcce.augment.check_images`.
    y : ndarray of shape (n_samples,) or (n_samples, K), default=None
        Partial labels (int, -1 = unlabeled) or soft targets (float).
    dtype : torch.dtype, default=torch.float32
        Dtype of the image batches.
    pin_memory : bool, default=False
        Return page-locked batches, for asynchronous copies to a GPU.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._sources import ImageSource
    >>> from skcce.augment import check_images
    >>> X = np.zeros((10, 784), np.uint8)
    >>> src = ImageSource(X, check_images(X, (1, 28, 28)))
    >>> len(src), src.input_shape, tuple(src.rows(np.array([3, 4])).shape)
    (10, (1, 28, 28), (2, 1, 28, 28))
    """

    def __init__(self, X, layout, y=None, *, dtype=torch.float32, pin_memory=False):
        self.X = X
        self.layout = layout
        self.y = None if y is None else np.asarray(y)
        self.dtype = dtype
        self.pin_memory = pin_memory

    def __len__(self):
        return len(self.X)

    @property
    def input_shape(self):
        return self.layout.shape

    def rows(self, indices) -> torch.Tensor:
        indices = np.asarray(indices)
        batch = images_to_tensor(self.X[indices], self.layout, dtype=self.dtype)
        return batch.pin_memory() if self.pin_memory else batch

    def labels(self, indices):
        return _labels(self.y, indices)


def _item_to_tensor(item):
    if isinstance(item, (tuple, list)):
        item = item[0]  # (image, target) pairs: the target is not used
    if not isinstance(item, torch.Tensor):
        item = torch.from_numpy(np.array(item))  # ndarray or PIL image (H, W[, C])
        if item.dim() == 3 and item.shape[-1] in (1, 3) and item.shape[0] not in (1, 3):
            item = item.permute(2, 0, 1)
    if item.dim() == 2:
        item = item.unsqueeze(0)
    if item.dtype == torch.uint8:
        return item.float().div_(255.0)
    return item.float()


class DatasetSource:
    """Items of a map-style ``torch.utils.data.Dataset`` of images.

    Each item is an image, or a tuple whose first element is the image (the
    rest, e.g. a class target, is ignored: pass labels through ``y``).  An
    image may be a tensor ``(C, H, W)`` or ``(H, W)``, an ndarray or a PIL
    image; ``uint8`` is scaled to [0, 1].

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Supports ``len()`` and integer indexing.
    y : ndarray of shape (n_samples,) or (n_samples, K), default=None
        Partial labels or soft targets, aligned with the dataset.
    pin_memory : bool, default=False
        Return page-locked batches.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from skcce._sources import DatasetSource
    >>> ds = TensorDataset(torch.rand(6, 1, 28, 28), torch.zeros(6))
    >>> src = DatasetSource(ds)
    >>> len(src), src.input_shape
    (6, (1, 28, 28))
    """

    def __init__(self, dataset, y=None, *, pin_memory=False):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise ValueError(
                "dataset must be a map-style torch Dataset (with __len__ and __getitem__), "
                f"got {type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError("dataset is empty")
        self.dataset = dataset
        self.y = None if y is None else np.asarray(y)
        self.pin_memory = pin_memory
        first = _item_to_tensor(dataset[0])
        if first.dim() != 3:
            raise ValueError(
                f"dataset items must be images (C, H, W) or (H, W), got shape {tuple(first.shape)}"
            )
        self._shape = tuple(first.shape)

    def __len__(self):
        return len(self.dataset)

    @property
    def input_shape(self):
        return self._shape

    def rows(self, indices) -> torch.Tensor:
        batch = torch.stack([_item_to_tensor(self.dataset[int(i)]) for i in indices])
        return batch.pin_memory() if self.pin_memory else batch

    def labels(self, indices):
        return _labels(self.y, indices)


class TargetSource:
    """Another source's rows with float (n, K) target rows as its labels.

    Parameters
    ----------
    inner : data source
        Gives the rows and the input shape.
    targets : ndarray of shape (n_samples, K)
        Soft targets of the rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._sources import ArraySource, TargetSource
    >>> src = TargetSource(ArraySource(np.zeros((2, 3))), np.eye(2, dtype=np.float32))
    >>> src.labels([1]).tolist()
    [[0.0, 1.0]]
    """

    def __init__(self, inner, targets):
        self.inner = inner
        self.targets = targets

    def __len__(self):
        return len(self.inner)

    @property
    def input_shape(self):
        return self.inner.input_shape

    def rows(self, indices):
        return self.inner.rows(indices)

    def labels(self, indices):
        return torch.from_numpy(self.targets[np.asarray(indices)])


def is_dataset(X) -> bool:
    """Whether ``X`` is a map-style torch Dataset (not an array or tensor).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcce._sources import is_dataset
    >>> is_dataset(torch.utils.data.TensorDataset(torch.zeros(2, 1))), is_dataset(np.zeros(2))
    (True, False)
    """
    return isinstance(X, torch.utils.data.Dataset) and not isinstance(X, torch.Tensor)


def image_source(X, layout, y=None, *, pin_memory=False):
    """The source of prepared images: :class:`ImageSource`, or :class:`DatasetSource` (no layout).

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._sources import image_source
    >>> from skcce.augment import check_images
    >>> X = np.zeros((4, 1, 28, 28), np.float32)
    >>> type(image_source(X, check_images(X))).__name__
    'ImageSource'
    """
    if layout is None:
        return DatasetSource(X, y, pin_memory=pin_memory)
    return ImageSource(X, layout, y, pin_memory=pin_memory)
