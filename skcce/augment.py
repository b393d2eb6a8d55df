"""Image inputs, batched self-augmentation, and the training loop's views.

Three concerns live here, all on the path from a user's array to a training
batch (the data sources themselves are in :mod:`skcce._sources`):

* **Input conversion.**  Images arrive as ``(n, C, H, W)``, ``(n, H, W)`` or
  ``(n, H, W, C)`` arrays, in ``uint8`` (0..255) or float (0..1), or as a
  2-D ``(n, C*H*W)`` array with ``image_shape=(C, H, W)`` so an image
  estimator still fits in a :class:`~sklearn.pipeline.Pipeline`.
  :func:`check_images` inspects the array without copying it (numpy memmaps
  stay on disk) and :func:`images_to_tensor` turns one batch of rows into a
  float ``(b, C, H, W)`` tensor on the training device.
* **Self-augmentation** (paper, section 5.2): the prediction of image
  :math:`x_i` is :math:`\\sigma_i = \\mathbb{E}_t[\\sigma(t(x_i))]`, averaged
  over random transforms *t*.  :class:`SelfAugment` draws an independent
  horizontal flip, rotation and color distortion for every image of a batch
  and applies them as batched tensor operations on the batch's device.
  (A :mod:`torchvision.transforms.v2` transform called on a batch tensor
  draws one set of parameters for the whole batch; :class:`PerSample`
  wraps one to draw per image, at the price of a Python loop.)
* **Views** of a batch, the ``views`` hook of the loop
  (:class:`skcce._training.ModelStep`): :class:`AugmentViews` gives
  ``n_augment`` transformed copies of images, :class:`NeighborViews` the
  batch and a random nearest neighbour of each feature vector.
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ImageLayout",
    "check_images",
    "images_to_tensor",
    "SelfAugment",
    "PerSample",
    "resolve_augment",
    "takes_generator",
    "call_augment",
    "AugmentViews",
    "NeighborViews",
    "random_neighbors",
]


class ImageLayout:
    """How the rows of an image array map to ``(C, H, W)`` tensors.

    Parameters
    ----------
    layout : {'nchw', 'nhwc', 'nhw', 'flat'}
        Memory layout of one row.
    shape : tuple of int
        ``(C, H, W)`` of one image.

    Examples
    --------
    >>> from skcce.augment import ImageLayout
    >>> ImageLayout("nhw", (1, 28, 28))
    ImageLayout(layout='nhw', shape=(1, 28, 28))
    """

    def __init__(self, layout, shape):
        self.layout = layout
        self.shape = tuple(int(s) for s in shape)

    def __repr__(self):
        return f"ImageLayout(layout={self.layout!r}, shape={self.shape})"

    def __eq__(self, other):
        return isinstance(other, ImageLayout) and (self.layout, self.shape) == (
            other.layout,
            other.shape,
        )

    def __hash__(self):
        return hash((self.layout, self.shape))


def _check_image_shape(image_shape):
    try:
        shape = tuple(int(s) for s in image_shape)
    except TypeError as exc:
        raise ValueError(f"image_shape must be a (C, H, W) tuple, got {image_shape!r}") from exc
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be a (C, H, W) tuple of positive ints, got {shape}")
    return shape


def check_images(X, image_shape=None) -> ImageLayout:
    """Work out how to read images from an array, without copying it.

    Parameters
    ----------
    X : ndarray or numpy memmap
        ``(n, C, H, W)`` (channels first, ``C`` in 1 or 3), ``(n, H, W, C)``
        (channels last), ``(n, H, W)`` (grey), or ``(n, C*H*W)`` flattened in
        ``C, H, W`` order together with ``image_shape``.  ``uint8`` values
        are read as 0..255, floats as 0..1.
    image_shape : tuple of int, optional
        ``(C, H, W)``; required for 2-D ``X``, checked against ``X``
        otherwise.

    Returns
    -------
    layout : ImageLayout

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.augment import check_images
    >>> check_images(np.zeros((5, 784), np.uint8), image_shape=(1, 28, 28))
    ImageLayout(layout='flat', shape=(1, 28, 28))
    >>> check_images(np.zeros((5, 32, 32, 3), np.float32))
    ImageLayout(layout='nhwc', shape=(3, 32, 32))
    """
    ndim = getattr(X, "ndim", None)
    dtype = getattr(X, "dtype", None)
    if ndim is None or dtype is None:
        raise ValueError(f"images must be a numpy array, got {type(X).__name__}")
    if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"images must be uint8 (0..255) or float (0..1), got dtype {dtype}")
    shape = None if image_shape is None else _check_image_shape(image_shape)
    if ndim == 2:
        if shape is None:
            raise ValueError(
                "2-D X holds flattened images: pass image_shape=(C, H, W), e.g. (1, 28, 28) "
                "for MNIST rows of 784 pixels"
            )
        if math.prod(shape) != X.shape[1]:
            raise ValueError(
                f"image_shape {shape} has {math.prod(shape)} pixels but X has {X.shape[1]} columns"
            )
        return ImageLayout("flat", shape)
    if ndim == 3:
        found, layout = (1, X.shape[1], X.shape[2]), "nhw"
    elif ndim == 4 and X.shape[1] in (1, 3):
        found, layout = tuple(X.shape[1:]), "nchw"
    elif ndim == 4 and X.shape[3] in (1, 3):
        found, layout = (X.shape[3], X.shape[1], X.shape[2]), "nhwc"
    else:
        raise ValueError(
            "images must be (n, C, H, W) or (n, H, W, C) with C in {1, 3}, (n, H, W), or "
            f"(n, C*H*W) with image_shape; got an array of shape {X.shape}"
        )
    if shape is not None and shape != found:
        raise ValueError(f"image_shape {shape} does not match images of shape {found}")
    return ImageLayout(layout, found)


def images_to_tensor(batch, layout, *, device="cpu", dtype=torch.float32, non_blocking=False):
    """Convert rows of an image array into a float ``(b, C, H, W)`` tensor.

    Parameters
    ----------
    batch : ndarray
        Rows of the array described by ``layout`` (a slice or fancy-indexed
        subset; a memmap slice is read here, once).
    layout : ImageLayout
        From :func:`check_images`.
    device : str or torch.device, default='cpu'
        Target device.  The uint8 -> float conversion happens there, so only
        bytes travel to a GPU.
    dtype : torch.dtype, default=torch.float32
        Floating dtype of the result.
    non_blocking : bool, default=False
        Use an asynchronous, pinned-memory copy (CUDA only).

    Returns
    -------
    images : torch.Tensor of shape (b, C, H, W)
        Values in [0, 1] for uint8 input, unchanged for float input.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.augment import check_images, images_to_tensor
    >>> X = np.full((2, 4, 4, 3), 255, np.uint8)
    >>> t = images_to_tensor(X, check_images(X))
    >>> tuple(t.shape), float(t.max())
    ((2, 3, 4, 4), 1.0)
    """
    arr = np.ascontiguousarray(batch)
    tensor = torch.from_numpy(arr)
    device = torch.device(device)
    if non_blocking and device.type == "cuda":
        tensor = tensor.pin_memory()
    tensor = tensor.to(device, non_blocking=non_blocking)
    c, h, w = layout.shape
    if layout.layout in ("flat", "nhw"):
        tensor = tensor.reshape(-1, c, h, w)
    elif layout.layout == "nhwc":
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.dtype == torch.uint8:
        return tensor.to(dtype).div_(255.0).contiguous()
    return tensor.to(dtype).contiguous()


def _uniform(n, low, high, generator):
    return low + (high - low) * torch.rand(n, generator=generator)


def _grey(x):
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


class SelfAugment(nn.Module):
    """Random flip, rotation and color distortion, drawn independently per image.

    Every operation is a batched tensor operation on the batch's own device
    (rotation by :func:`torch.nn.functional.grid_sample` with one affine
    matrix per image), so augmentation runs on the GPU when training does.
    Grey images get flip, rotation and brightness/contrast; RGB images also
    get saturation jitter.  Random numbers are drawn on the CPU from
    ``generator`` (a :class:`torch.Generator`), so a seeded fit is
    reproducible on any device.

    Parameters
    ----------
    flip : float, default=0.5
        Probability of a horizontal flip.
    degrees : float, default=15.0
        Rotation angle drawn uniformly from ``[-degrees, degrees]``.
    brightness, contrast, saturation : float, default=0.4
        Jitter strengths: factors drawn from ``[1 - s, 1 + s]``.
    color_p : float, default=0.8
        Probability that an image receives the color distortion.

    Examples
    --------
    >>> import torch
    >>> from skcce.augment import SelfAugment
    >>> aug = SelfAugment()
    >>> x = torch.rand(8, 3, 32, 32)
    >>> out = aug(x, generator=torch.Generator().manual_seed(0))
    >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
    (torch.Size([8, 3, 32, 32]), True, True)
    """

    def __init__(self, *, flip=0.5, degrees=15.0, brightness=0.4, contrast=0.4,
                 saturation=0.4, color_p=0.8):
        super().__init__()
        for name, value in [("flip", flip), ("color_p", color_p)]:
            if not (isinstance(value, numbers.Real) and 0 <= value <= 1):
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name, value in [("degrees", degrees), ("brightness", brightness),
                            ("contrast", contrast), ("saturation", saturation)]:
            if not (isinstance(value, numbers.Real) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        self.flip = flip
        self.degrees = degrees
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.color_p = color_p

    def extra_repr(self):
        return (f"flip={self.flip}, degrees={self.degrees}, brightness={self.brightness}, "
                f"contrast={self.contrast}, saturation={self.saturation}, color_p={self.color_p}")

    def _flip(self, x, generator):
        mask = torch.rand(x.shape[0], generator=generator) < self.flip
        return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)

    def _rotate(self, x, generator):
        angle = _uniform(x.shape[0], -self.degrees, self.degrees, generator) * (math.pi / 180)
        cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
        theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(-1, 2, 3)
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _color(self, x, generator):
        n = x.shape[0]
        on = (torch.rand(n, generator=generator) < self.color_p).to(x.dtype)

        def factor(strength):
            f = _uniform(n, max(0.0, 1 - strength), 1 + strength, generator)
            # images left out of the distortion get factor 1
            return (1 + on * (f - 1)).to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)

        x = x * factor(self.brightness)
        mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor(self.contrast) + mean
        if x.shape[1] == 3:
            grey = _grey(x)
            x = (x - grey) * factor(self.saturation) + grey
        return x.clamp_(0.0, 1.0)

    def forward(self, x, generator=None):
        """Augment a float batch ``(n, C, H, W)`` with values in [0, 1]."""
        if x.dim() != 4:
            raise ValueError(f"SelfAugment expects (n, C, H, W), got shape {tuple(x.shape)}")
        if self.flip > 0:
            x = self._flip(x, generator)
        if self.degrees > 0:
            x = self._rotate(x, generator)
        return self._color(x, generator)


class PerSample(nn.Module):
    """Apply a per-image transform (e.g. a torchvision v2 pipeline) to every image of a batch.

    A :mod:`torchvision.transforms.v2` transform given a batch tensor draws
    one random parameter set for all images; this wrapper loops so each
    image gets its own.  It is slower than :class:`SelfAugment`.

    Parameters
    ----------
    transform : callable
        Maps a ``(C, H, W)`` tensor to a tensor of the same shape.

    Examples
    --------
    >>> import torch
    >>> from torchvision.transforms import v2
    >>> from skcce.augment import PerSample
    >>> aug = PerSample(v2.RandomHorizontalFlip())
    >>> aug(torch.rand(3, 1, 8, 8)).shape
    torch.Size([3, 1, 8, 8])
    """

    def __init__(self, transform):
        super().__init__()
        if not callable(transform):
            raise ValueError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform

    def forward(self, x, generator=None):
        return torch.stack([self.transform(img) for img in x])


def resolve_augment(augment):
    """Turn the estimators' ``augment`` parameter into a callable or ``None``.

    Parameters
    ----------
    augment : None, 'default' or callable
        ``None`` disables augmentation; ``'default'`` gives
        :class:`SelfAugment`; a callable maps a float ``(n, C, H, W)`` batch
        to an augmented batch of the same shape.

    Returns
    -------
    augment : callable or None

    Examples
    --------
    >>> from skcce.augment import resolve_augment
    >>> resolve_augment("default")
    SelfAugment(flip=0.5, degrees=15.0, brightness=0.4, contrast=0.4, saturation=0.4, color_p=0.8)
    >>> resolve_augment(None) is None
    True
    """
    if augment is None:
        return None
    if isinstance(augment, str):
        if augment != "default":
            raise ValueError(f"augment must be None, 'default' or a callable, got {augment!r}")
        return SelfAugment()
    if not callable(augment):
        raise ValueError(f"augment must be None, 'default' or a callable, got {augment!r}")
    return augment


def takes_generator(augment) -> bool:
    """Whether a batch transform is called as ``augment(x, generator)``.

    :class:`SelfAugment` and :class:`PerSample` are; a user's callable is
    when it has a ``generator`` parameter or a second positional one.  A
    one-argument callable ``augment(x)`` draws from its own random source
    and cannot be reproduced by ``random_state``.

    Examples
    --------
    >>> from skcce.augment import SelfAugment, takes_generator
    >>> takes_generator(SelfAugment()), takes_generator(lambda x, g: x), takes_generator(abs)
    (True, True, False)
    """
    if isinstance(augment, (SelfAugment, PerSample)):
        return True
    target = augment.forward if isinstance(augment, nn.Module) else augment
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    positional = [p for p in params.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return "generator" in params or len(positional) >= 2


def call_augment(augment, x, generator=None):
    """Call ``augment`` on a batch, with ``generator`` when it takes one (:func:`takes_generator`).

    Examples
    --------
    >>> import torch
    >>> from skcce.augment import call_augment
    >>> call_augment(lambda x: x + 1, torch.zeros(1)).item()
    1.0
    """
    if not takes_generator(augment):
        return augment(x)
    if isinstance(augment, (SelfAugment, PerSample)):
        return augment(x, generator=generator)
    return augment(x, generator)


class AugmentViews:
    """``views`` hook of the training loop: ``n_augment`` augmented copies of each batch.

    The loop averages :math:`\\sigma` over the copies,
    :math:`\\sigma_i = \\frac1T\\sum_t \\sigma(t(x_i))` (paper, section 5.2).

    Parameters
    ----------
    augment : callable
        Batch transform ``augment(x)`` or ``augment(x, generator)``
        (:func:`call_augment`); with a generator the copies follow
        ``random_state``.
    n_augment : int, default=2
        Number of copies T.

    Examples
    --------
    >>> import torch
    >>> from skcce.augment import AugmentViews, SelfAugment
    >>> class B:  # a stand-in for skcce._training.Batch
    ...     x = torch.rand(4, 1, 28, 28)
    >>> views = AugmentViews(SelfAugment(), n_augment=3)
    >>> [tuple(v.shape) for v in views(B, None, torch.Generator().manual_seed(0))][0]
    (4, 1, 28, 28)
    """

    def __init__(self, augment, n_augment=2):
        if not (isinstance(n_augment, numbers.Integral) and n_augment >= 1):
            raise ValueError(f"n_augment must be a positive int, got {n_augment!r}")
        self.augment = augment
        self.n_augment = int(n_augment)

    def __call__(self, batch, rows, generator):
        """The copies of ``batch.x``; ``rows`` (a row loader) is not used."""
        return [call_augment(self.augment, batch.x, generator) for _ in range(self.n_augment)]


class NeighborViews:
    """``views`` hook for feature vectors: the batch and one random nearest neighbour of each row.

    With it the loop trains on :math:`\\sigma_i = (\\sigma(x_i) + \\sigma(x_j))/2`
    for a random :math:`j` among the k nearest neighbours of :math:`x_i`
    (feature-space self-augmentation: the paper's section 5.2 with
    neighbours as augmentations).

    Parameters
    ----------
    neighbors : ndarray of shape (n_samples, k)
        Neighbour ids of each training row.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcce.augment import NeighborViews
    >>> class B:  # a stand-in for skcce._training.Batch
    ...     indices, x = np.array([0, 1]), torch.zeros(2, 3)
    >>> views = NeighborViews(np.array([[1], [0]]))
    >>> rows = lambda ids: torch.ones(len(ids), 3)
    >>> [tuple(v.shape) for v in views(B, rows, torch.Generator().manual_seed(0))]
    [(2, 3), (2, 3)]
    """

    def __init__(self, neighbors):
        self.neighbors = neighbors

    def __call__(self, batch, rows, generator):
        """The batch and its drawn neighbours, loaded by ``rows(ids)``."""
        return [batch.x, rows(random_neighbors(self.neighbors, batch.indices, generator))]


def random_neighbors(neighbors, indices, generator):
    """One neighbour id per row of ``indices``, drawn uniformly with ``generator``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcce.augment import random_neighbors
    >>> random_neighbors(np.array([[1, 1], [0, 0]]), [1, 0], torch.Generator()).tolist()
    [0, 1]
    """
    k = neighbors.shape[1]
    pick = torch.randint(0, k, (len(indices),), generator=generator).numpy()
    return neighbors[np.asarray(indices), pick]


_MOVED = {"ImageSource", "DatasetSource", "image_source", "is_dataset"}


def __getattr__(name):
    # the data sources moved to skcce._sources; benchmarks still import them from here
    if name in _MOVED:
        from skcce import _sources

        return getattr(_sources, name)
    raise AttributeError(f"module 'skcce.augment' has no attribute {name!r}")
