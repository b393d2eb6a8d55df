"""Pretrained-CNN features for clustering: the "precomputed ResNet-50 features" workflow.

The paper's shallow experiments (Table 5) cluster fixed features of a
pretrained network with a linear model.  :func:`extract_features` computes
such features: the globally average-pooled output of a torchvision ResNet's
last stage (the input of its ``fc`` layer), 2048 floats per image for
ResNet-50 and 512 for ResNet-18.

On a machine with network access the whole workflow is::

    import skcce
    F = skcce.extract_features(images, model="resnet50", weights="DEFAULT")
    labels = skcce.CollisionClustering(n_clusters=10).fit_predict(F)

Without network access, copy a ResNet state_dict file (``torch.save(
torchvision.models.resnet50(weights="DEFAULT").state_dict(), path)`` on a
connected machine) and pass ``weights=path``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from skcce._progress import progress_bar
from skcce.augment import check_images, images_to_tensor
from skcce.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone

__all__ = ["extract_features", "IMAGE_EXTENSIONS"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def _list_image_files(images):
    """Return a list of file paths, or None when ``images`` is an array."""
    if isinstance(images, (str, os.PathLike)):
        root = Path(images)
        if not root.is_dir():
            raise ValueError(f"{os.fspath(images)!r} is not a directory of images")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {os.fspath(images)!r}"
            )
        return [str(p) for p in files]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list")
        if not all(isinstance(p, (str, os.PathLike)) for p in images):
            raise ValueError("a list of images must hold file paths (str or os.PathLike)")
        missing = [os.fspath(p) for p in images if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"{len(missing)} image files do not exist, e.g. {missing[0]!r}")
        return [os.fspath(p) for p in images]
    return None


def _import_pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is in the dev extra
        raise ImportError(
            "reading image files needs Pillow: pip install pillow (or skcce[dev])"
        ) from exc
    return Image


def _read_files(paths):
    """Read image files into a float (b, 3, H, W) list of tensors in [0, 1]."""
    Image = _import_pil()
    out = []
    for path in paths:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0))
    return out


def _preprocess(batch, size):
    """Resize to ``size`` x ``size``, replicate grey to RGB and normalize for ImageNet."""
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    if batch.shape[-2:] != (size, size):
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def _check_float_range(batch):
    if batch.dtype != torch.uint8:
        lo, hi = float(batch.min()), float(batch.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"float images must be scaled to [0, 1], found values in [{lo:.3g}, {hi:.3g}]; "
                "divide by 255 or pass uint8"
            )


def _batches(images, files, image_shape, batch_size, device):
    """Yield float batches (b, C, H, W) in [0, 1], or lists of image tensors for files."""
    if files is not None:
        for start in range(0, len(files), batch_size):
            yield _read_files(files[start : start + batch_size])
        return
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    if not hasattr(images, "ndim"):
        raise ValueError(
            "images must be an array, a list of image file paths or a directory, "
            f"got {type(images).__name__}"
        )
    layout = check_images(images, image_shape)
    non_blocking = torch.device(device).type == "cuda"
    for start in range(0, images.shape[0], batch_size):
        rows = np.asarray(images[start : start + batch_size])
        if rows.dtype != np.uint8:
            _check_float_range(torch.from_numpy(np.ascontiguousarray(rows)))
        yield images_to_tensor(rows, layout, device=device, non_blocking=non_blocking)


def _extract_into(out, net, batches, size, device, bar):
    """Fill ``out`` with the pooled features of each batch."""
    start = 0
    with torch.inference_mode():
        for batch in batches:
            if isinstance(batch, list):  # files: resize each before stacking
                batch = torch.cat([_preprocess(b[None].to(device), size) for b in batch])
            else:
                batch = _preprocess(batch, size)
            feats = net.forward_features(batch).float().cpu().numpy()
            out[start : start + len(feats)] = feats
            start += len(feats)
            bar.update(len(feats))


def _default_device(device):
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def extract_features(images, model="resnet50", *, weights="DEFAULT", batch_size=64,
                     device=None, image_shape=None, size=224, progress=True):
    """Pooled penultimate-layer features of a torchvision ResNet.

    Each image is resized to ``size`` x ``size`` (bilinear, antialiased; no
    cropping, so small centred objects such as digits stay whole), grey
    images are replicated to three channels, and the ImageNet mean/std
    normalization is applied.  Images are processed ``batch_size`` at a time
    under :func:`torch.inference_mode`; memory beyond the output is
    O(batch_size), so a numpy memmap or a directory of any size works.

    Parameters
    ----------
    images : ndarray, list of paths, or directory path
        * a ``uint8`` (0..255) or float (0..1) array of shape
          ``(n, H, W, C)``, ``(n, C, H, W)`` (``C`` in 1 or 3), ``(n, H, W)``,
          or ``(n, C*H*W)`` with ``image_shape``;
        * a list of image file paths, or a directory searched recursively
          for image files (sorted by path), read with Pillow.
    model : {'resnet50', 'resnet18'}, default='resnet50'
        The network.
    weights : None, str or os.PathLike, default='DEFAULT'
        A torchvision weights name (``'DEFAULT'``, ``'IMAGENET1K_V2'``, ...,
        downloaded by torchvision on a connected machine), the path of a
        local state_dict file, or ``None`` for random weights (only useful
        for testing; warns that the features come from a random network).
    batch_size : int, default=64
        Images per forward pass.
    device : str or torch.device, optional
        Defaults to CUDA when available, else CPU.
    image_shape : tuple of int, optional
        ``(C, H, W)`` for 2-D flattened ``images``.
    size : int, default=224
        Side of the square network input.
    progress : bool, default=True
        Show a tqdm progress bar.

    Returns
    -------
    features : ndarray of shape (n, 2048) or (n, 512), dtype float32
        One row per image, in the order of ``images`` (sorted paths for a
        directory).

    Examples
    --------
    >>> import numpy as np
    >>> from skcce import extract_features
    >>> X = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    >>> F = extract_features(X, "resnet18", weights=None, size=32, progress=False)
    >>> F.shape, F.dtype
    ((3, 512), dtype('float32'))
    """
    if model not in ("resnet18", "resnet50"):
        raise ValueError(f"model must be 'resnet18' or 'resnet50', got {model!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (isinstance(size, int) and size >= 32):
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    device = _default_device(device)
    if weights is None:
        warnings.warn(
            f"weights=None: these are the features of a {model} with random weights, not "
            "of a pretrained network, so they carry little information about the images "
            "(use only for testing); pass weights='DEFAULT' or a weights file for real "
            "features", UserWarning, stacklevel=2)
    net = build_backbone(model, (3, size, size), None, weights=weights)
    net.normalize = False  # _preprocess normalizes, also for weights=None
    net.to(device).eval()
    files = _list_image_files(images)
    n = len(files) if files is not None else len(images)
    out = np.empty((n, net.n_features), dtype=np.float32)
    bar = progress_bar(total=n, verbose=progress, desc=f"{model} features", leave=True,
                       unit="img")
    try:
        _extract_into(out, net, _batches(images, files, image_shape, batch_size, device),
                      size, device, bar)
    finally:
        bar.close()  # ends the bar's line, also when a batch fails
    logger.info("extracted %s features from %d images", out.shape, n)
    return out
