"""Convolutional backbones: the paper's VGG-4 and torchvision ResNets.

Every backbone built here maps a float batch ``(n, C, H, W)`` to
``(n, n_outputs)`` logits, and exposes

* ``forward_features(x)``: the pooled penultimate representation,
  ``(n, n_features)``;
* ``head``: the final linear layer (``nn.Identity`` when ``n_outputs=None``,
  in which case ``forward`` returns the features);
* ``n_features``: the width of the representation.

VGG-4 follows appendix D, Table 7 of the paper exactly, with batch
normalization after every convolution and ReLU activations.  The variant is
picked from the input shape: grey 28x28 (MNIST), RGB 32x32 (CIFAR) or RGB
96x96 (STL10).

ResNets come from :mod:`torchvision.models`.  ``weights`` is ``None`` (random
initialization), a torchvision weights name such as ``'DEFAULT'`` or
``'IMAGENET1K_V2'`` (downloaded by torchvision on a connected machine), or
the path of a local ``state_dict`` file saved with :func:`torch.save`.
Grey inputs are replicated to three channels, and when pretrained weights
are used the ImageNet normalization is applied inside the module, so inputs
are always images scaled to [0, 1].
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

__all__ = [
    "VGG4",
    "ResNetBackbone",
    "build_backbone",
    "load_state_dict_file",
    "count_parameters",
    "WeightsDownloadError",
    "BACKBONES",
    "VGG4_SHAPES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

logger = logging.getLogger(__name__)

BACKBONES = ("vgg4", "resnet18", "resnet50")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Table 7: (channels, stride of every conv, final spatial size) per input shape (C, H, W).
VGG4_SHAPES = {
    (1, 28, 28): {"widths": (64, 128, 256, 512), "stride": 1, "out_side": 3},
    (3, 32, 32): {"widths": (32, 64, 128, 256), "stride": 1, "out_side": 4},
    (3, 96, 96): {"widths": (128, 256, 512, 1024), "stride": 2, "out_side": 1},
}


class WeightsDownloadError(RuntimeError):
    """Raised when torchvision cannot download pretrained weights (no network access).

    Parameters
    ----------
    arch : str
        The architecture, e.g. ``'resnet50'``.
    weights : str
        The torchvision weights that were asked for.
    reason : str
        Why the download failed.

    Examples
    --------
    >>> from skcce.backbones import WeightsDownloadError
    >>> err = WeightsDownloadError("resnet50", "IMAGENET1K_V2", "no network")
    >>> err.arch, err.reason
    ('resnet50', 'no network')
    """

    def __init__(self, arch, weights, reason):
        self.arch, self.weights, self.reason = arch, weights, reason
        super().__init__(
            f"could not download {arch} weights {weights}: {reason}. On a machine without "
            f"network access, copy the weights file from a connected machine (torchvision "
            f"keeps it in ~/.cache/torch/hub/checkpoints/) and pass weights=<that path>."
        )


def _check_shape(input_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError as exc:
        raise ValueError(f"input_shape must be a (C, H, W) tuple, got {input_shape!r}") from exc
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be a (C, H, W) tuple of positive ints, got {shape}")
    return shape


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=5, stride=stride, padding=2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class _Backbone(nn.Module):
    """A network with ``forward_features`` and a ``head``; ``forward`` chains the two."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits ``head(forward_features(x))``, ``(n, n_outputs)``.

        Parameters
        ----------
        x : torch.Tensor of shape (n, C, H, W)
            The images, as :meth:`forward_features` takes them.

        Returns
        -------
        logits : torch.Tensor of shape (n, n_outputs)
            The features themselves when ``n_outputs`` is None.

        Examples
        --------
        >>> import torch
        >>> from skcce.backbones import VGG4
        >>> VGG4((1, 28, 28), 10).eval()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        """
        return self.head(self.forward_features(x))


class VGG4(_Backbone):
    """The paper's VGG-4 network (appendix D, Table 7).

    Four 5x5 convolutions (each followed by batch normalization and ReLU),
    with 2x2 max-pooling after the first three, then one linear layer.

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, H, W)``; one of ``(1, 28, 28)``, ``(3, 32, 32)``, ``(3, 96, 96)``.
    n_outputs : int or None
        Width of the linear head (the number of clusters K).  ``None`` leaves
        the head out, so ``forward`` returns the flattened features.
    logit_norm : bool, default=False
        Standardize the logits over the batch (see :func:`make_head`).

    Attributes
    ----------
    n_features : int
        Width of the flattened last feature map (512*3*3, 256*4*4 or 1024).
    head : nn.Module
        The final ``nn.Linear`` (or ``nn.Identity``).

    Examples
    --------
    >>> import torch
    >>> from skcce.backbones import VGG4
    >>> net = VGG4((1, 28, 28), 10)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> net.n_features
    4608
    """

    def __init__(self, input_shape, n_outputs, *, logit_norm=False):
        super().__init__()
        shape = _check_shape(input_shape)
        if shape not in VGG4_SHAPES:
            supported = ", ".join(str(s) for s in VGG4_SHAPES)
            raise ValueError(
                f"VGG-4 has no variant for input shape (C, H, W) = {shape}; "
                f"supported shapes are {supported} (Table 7 of the paper). "
                "Resize the images, or use model='resnet18' or any nn.Module."
            )
        spec = VGG4_SHAPES[shape]
        layers: list[nn.Module] = []
        c_in = shape[0]
        for i, width in enumerate(spec["widths"]):
            layers += _conv_bn_relu(c_in, width, spec["stride"])
            if i < 3:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            c_in = width
        self.body = nn.Sequential(*layers)
        self.n_features = c_in * spec["out_side"] ** 2
        self.head = make_head(self.n_features, n_outputs, logit_norm)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the flattened output of the last convolution block.

        Parameters
        ----------
        x : torch.Tensor of shape (n, C, H, W)
            Images scaled to [0, 1].

        Returns
        -------
        features : torch.Tensor of shape (n, n_features)
            The representation the head reads.

        Examples
        --------
        >>> import torch
        >>> from skcce.backbones import VGG4
        >>> VGG4((3, 32, 32), None).forward_features(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 4096])
        """
        return torch.flatten(self.body(x), 1)


class ResNetBackbone(_Backbone):
    """A torchvision ResNet with a fresh linear head of ``n_outputs`` units.

    Parameters
    ----------
    resnet : torchvision.models.ResNet
        The network; its ``fc`` layer is replaced.
    n_outputs : int or None
        Width of the new head; ``None`` gives ``nn.Identity`` (features out).
    in_channels : int, default=3
        Channels of the inputs; 1 is replicated to 3.
    normalize : bool, default=False
        Apply the ImageNet mean/std normalization inside ``forward`` (used
        with pretrained weights, which expect it).
    logit_norm : bool, default=False
        Standardize the logits over the batch (see :func:`make_head`).

    Examples
    --------
    >>> import torch, torchvision
    >>> from skcce.backbones import ResNetBackbone
    >>> net = ResNetBackbone(torchvision.models.resnet18(), 4, in_channels=1)
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 4])
    """

    def __init__(self, resnet, n_outputs, *, in_channels=3, normalize=False, logit_norm=False):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"ResNet backbones take 1 or 3 channels, got {in_channels}")
        self.n_features = resnet.fc.in_features
        resnet.fc = nn.Identity()
        self.resnet = resnet
        self.in_channels = in_channels
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.head = make_head(self.n_features, n_outputs, logit_norm)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the globally average-pooled output of the last residual stage.

        Parameters
        ----------
        x : torch.Tensor of shape (n, C, H, W)
            Images scaled to [0, 1]; one channel is replicated to three.

        Returns
        -------
        features : torch.Tensor of shape (n, n_features)
            512 values per image for ResNet-18, 2048 for ResNet-50.

        Examples
        --------
        >>> import torch, torchvision
        >>> from skcce.backbones import ResNetBackbone
        >>> net = ResNetBackbone(torchvision.models.resnet18(), None, in_channels=1)
        >>> net.forward_features(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 512])
        """
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.resnet(x)


def make_head(n_features, n_outputs, logit_norm=False):
    """Linear head, optionally followed by a batch normalization of the logits.

    ``logit_norm=True`` appends ``BatchNorm1d(n_outputs, affine=False)``: each
    cluster's logit is standardized over the batch, so no cluster's softmax
    output can shrink to ~0 on every image.  Under the collision
    cross-entropy the gradient for a logit is proportional to its softmax
    output, so a cluster that is empty at initialization (a network trained
    from scratch starts with nearly every image in one cluster) otherwise
    never recovers; see ``docs/guide/deep.rst`` for the measurement.

    Parameters
    ----------
    n_features : int
        Input width.
    n_outputs : int or None
        Number of logits; ``None`` gives ``nn.Identity`` (features out).
    logit_norm : bool, default=False
        Standardize the logits over the batch.

    Returns
    -------
    head : nn.Module
        ``nn.Linear``, ``nn.Sequential(Linear, BatchNorm1d)`` or ``nn.Identity``.

    Examples
    --------
    >>> from skcce.backbones import make_head
    >>> [type(layer).__name__ for layer in make_head(8, 3, logit_norm=True)]
    ['Linear', 'BatchNorm1d']
    """
    if n_outputs is None:
        return nn.Identity()
    linear = nn.Linear(n_features, n_outputs)
    if not logit_norm:
        return linear
    return nn.Sequential(linear, nn.BatchNorm1d(n_outputs, affine=False))


def _is_path_like(weights) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    suffixes = (".pt", ".pth", ".bin")
    return os.path.sep in weights or weights.endswith(suffixes) or os.path.exists(weights)


def load_state_dict_file(path) -> dict:
    """Read a ``state_dict`` saved with :func:`torch.save`, safely (``weights_only``).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    state_dict : dict
        Parameter name to tensor.  A checkpoint dict holding the weights
        under ``'state_dict'`` or ``'model'`` is unwrapped.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from skcce.backbones import load_state_dict_file
    >>> path = os.path.join(tempfile.mkdtemp(), "lin.pt")
    >>> torch.save(torch.nn.Linear(2, 1).state_dict(), path)
    >>> sorted(load_state_dict_file(path))
    ['bias', 'weight']
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"weights file {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises KeyError, UnpicklingError, ...
        raise ValueError(
            f"{path!r} is not a weights file saved with torch.save "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} does not hold a state_dict (got {type(state).__name__})")
    return state


def _torchvision_weights(arch: str, name: str):
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum.DEFAULT if name == "DEFAULT" else enum[name]
    except KeyError:
        options = ["DEFAULT"] + [w.name for w in enum]
        raise ValueError(
            f"unknown weights {name!r} for {arch}; use None, a path to a state_dict file, "
            f"or one of {options}"
        ) from None


def _load_resnet_file(resnet, state: dict, path) -> None:
    # A file saved from a ResNetBackbone carries the "resnet." prefix and maybe a head.
    if any(k.startswith("resnet.") for k in state):
        state = {k[len("resnet.") :]: v for k, v in state.items() if k.startswith("resnet.")}
    own = resnet.state_dict()
    fc = {k: v for k, v in state.items() if k.startswith("fc.")}
    if fc and any(own[k].shape != v.shape for k, v in fc.items() if k in own):
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"state_dict in {os.fspath(path)!r} does not match this ResNet: "
            f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}"
        )


def _build_resnet(arch, shape, n_outputs, weights, logit_norm):
    import torchvision

    builder = getattr(torchvision.models, arch)
    normalize = weights is not None
    if weights is None or _is_path_like(weights):
        resnet = builder(weights=None)
        if weights is not None:
            _load_resnet_file(resnet, load_state_dict_file(weights), weights)
    else:
        resolved = _torchvision_weights(arch, str(weights))
        try:
            resnet = builder(weights=resolved)
        except OSError as exc:  # URLError is an OSError
            raise WeightsDownloadError(arch, str(resolved), str(exc)) from exc
    return ResNetBackbone(resnet, n_outputs, in_channels=shape[0], normalize=normalize,
                          logit_norm=logit_norm)


def build_backbone(name, input_shape, n_outputs=None, *, weights=None,
                   logit_norm=False) -> nn.Module:
    """Build a named convolutional network for images of ``input_shape``.

    Parameters
    ----------
    name : {'vgg4', 'resnet18', 'resnet50'}
        The architecture.
    input_shape : tuple of int
        ``(C, H, W)`` of the input images.  VGG-4 supports only the three
        shapes of Table 7; ResNets take 1 or 3 channels and any size of at
        least 32x32.
    n_outputs : int or None, default=None
        Number of logits (clusters or classes).  ``None`` builds a feature
        extractor whose ``forward`` returns ``(n, n_features)`` (the
        estimators then add their own Kaiming-initialized linear head).
    weights : None, str or os.PathLike, default=None
        ``None`` for random initialization; a torchvision weights name
        (``'DEFAULT'``, ``'IMAGENET1K_V1'``, ...; ResNets only, downloaded by
        torchvision); or the path of a local state_dict file.  A ResNet
        state_dict whose ``fc`` layer does not fit ``n_outputs`` is loaded
        without it.
    logit_norm : bool, default=False
        Standardize the logits over the batch (see :func:`make_head`);
        :class:`~skcce.CollisionClustering` turns it on for backbones.

    Returns
    -------
    module : nn.Module
        With ``forward``, ``forward_features``, ``head`` and ``n_features``.

    Examples
    --------
    >>> import torch
    >>> from skcce.backbones import build_backbone
    >>> net = build_backbone("vgg4", (3, 32, 32), 10)
    >>> net(torch.rand(4, 3, 32, 32)).shape
    torch.Size([4, 10])
    >>> build_backbone("resnet18", (3, 32, 32), None).n_features
    512
    """
    if not isinstance(name, str) or name.lower() not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    name = name.lower()
    shape = _check_shape(input_shape)
    if n_outputs is not None and (int(n_outputs) != n_outputs or n_outputs < 1):
        raise ValueError(f"n_outputs must be a positive int or None, got {n_outputs!r}")
    if name == "vgg4":
        net = VGG4(shape, n_outputs, logit_norm=logit_norm)
        if weights is not None:
            if not _is_path_like(weights):
                raise ValueError(
                    f"VGG-4 has no published weights; weights must be None or a path to a "
                    f"state_dict file, got {weights!r}"
                )
            net.load_state_dict(load_state_dict_file(weights))
        return net
    if shape[0] not in (1, 3):
        raise ValueError(f"{name} takes 1- or 3-channel images, got input_shape {shape}")
    if min(shape[1:]) < 32:
        raise ValueError(
            f"{name} needs images of at least 32x32 (five stride-2 stages), got {shape[1:]}; "
            "resize the images or use model='vgg4'"
        )
    return _build_resnet(name, shape, n_outputs, weights, logit_norm)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Count the (trainable) scalar parameters of ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    trainable_only : bool, default=True
        Count only parameters with ``requires_grad``.

    Returns
    -------
    count : int
        The number of scalars.

    Examples
    --------
    >>> from torch import nn
    >>> from skcce.backbones import count_parameters
    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

