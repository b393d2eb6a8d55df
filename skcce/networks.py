"""Model construction for the estimators: the paper's linear classifier, an MLP head, any module.

:func:`build_model` turns the estimator's ``model`` parameter into an
``nn.Module`` whose outputs are the ``n_clusters`` logits of
:math:`\\sigma = \\mathrm{softmax}(f(x))`.  Models that output features of a
different width get a linear head.

Random initialization draws only from the ``torch.Generator`` it is given:
the built-in models are initialized with ``torch.nn.init`` functions called
with ``generator=``, and third-party modules (whose constructors draw from
torch's global generator) are built inside :func:`seeded_global_rng`, which
restores the global state afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers

import torch
from torch import nn

from skcce.backbones import BACKBONES  # one list of backbone names

__all__ = ["build_model", "LinearClassifier", "MLPClassifier", "seeded_global_rng", "BACKBONES"]

logger = logging.getLogger(__name__)



@contextlib.contextmanager
def seeded_global_rng(generator):
    """Run a block with torch's global CPU generator seeded from ``generator``, then restore it.

    For constructors that draw their initial weights from the global
    generator.  The global state seen outside the block is left unchanged.

    Parameters
    ----------
    generator : torch.Generator
        A CPU generator; one 63-bit seed is drawn from it.

    Yields
    ------
    None

    Examples
    --------
    >>> import torch
    >>> from skcce.networks import seeded_global_rng
    >>> before = torch.random.get_rng_state()
    >>> with seeded_global_rng(torch.Generator().manual_seed(0)):
    ...     a = torch.nn.Linear(3, 2).weight.detach().clone()
    >>> with seeded_global_rng(torch.Generator().manual_seed(0)):
    ...     b = torch.nn.Linear(3, 2).weight.detach().clone()
    >>> bool(torch.equal(a, b)), bool(torch.equal(before, torch.random.get_rng_state()))
    (True, True)
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    state = torch.Generator().manual_seed(seed).get_state()
    with torch.random.fork_rng(devices=[]):
        torch.random.set_rng_state(state)
        yield


def _kaiming_linear_(layer: nn.Linear, generator) -> None:
    nn.init.kaiming_normal_(layer.weight, generator=generator)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class _FlatInputClassifier(nn.Module):
    """A classifier of flattened inputs; subclasses return their layers from ``_logits``."""

    def _logits(self):
        raise NotImplementedError

    def forward(self, x):
        """Return the logits of the flattened input.

        Parameters
        ----------
        x : torch.Tensor of shape (n, ...)
            Inputs; everything after the first axis is flattened.

        Returns
        -------
        logits : torch.Tensor of shape (n, n_outputs)
            One row of logits per input.

        Examples
        --------
        >>> import torch
        >>> from skcce.networks import LinearClassifier
        >>> LinearClassifier(4, 3)(torch.zeros(5, 2, 2)).shape
        torch.Size([5, 3])
        """
        return self._logits()(x.flatten(1))


class LinearClassifier(_FlatInputClassifier):
    """One linear layer, Kaiming-initialized with zero bias (the paper, appendix D).

    Parameters
    ----------
    n_features : int
        Input width.
    n_outputs : int
        Number of logits.
    generator : torch.Generator, default=None
        Source of the initial weights; torch's global generator when None.

    Examples
    --------
    >>> import torch
    >>> from skcce.networks import LinearClassifier
    >>> m = LinearClassifier(4, 3, generator=torch.Generator().manual_seed(0))
    >>> tuple(m(torch.zeros(2, 4)).shape), float(m.linear.bias.abs().sum())
    ((2, 3), 0.0)
    """

    def __init__(self, n_features, n_outputs, *, generator=None):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)
        _kaiming_linear_(self.linear, generator)

    def _logits(self):
        return self.linear


class MLPClassifier(_FlatInputClassifier):
    """Fully connected network: (Linear, [BatchNorm1d], ReLU) blocks and a linear output layer.

    Parameters
    ----------
    n_features : int
        Input width.
    n_outputs : int
        Number of logits.
    hidden_layer_sizes : sequence of int, default=(512,)
        Widths of the hidden layers.
    batch_norm : bool, default=True
        Whether a ``BatchNorm1d`` follows each hidden linear layer.
    generator : torch.Generator, default=None
        Source of the initial weights.

    Examples
    --------
    >>> import torch
    >>> from skcce.networks import MLPClassifier
    >>> m = MLPClassifier(4, 3, hidden_layer_sizes=(8,), generator=torch.Generator().manual_seed(0))
    >>> tuple(m.eval()(torch.zeros(5, 4)).shape)
    (5, 3)
    """

    def __init__(self, n_features, n_outputs, *, hidden_layer_sizes=(512,), batch_norm=True,
                 generator=None):
        super().__init__()
        if isinstance(hidden_layer_sizes, numbers.Integral):
            hidden_layer_sizes = (hidden_layer_sizes,)
        layers = []
        width = n_features
        for h in hidden_layer_sizes:
            if int(h) < 1:
                raise ValueError(
                    f"hidden_layer_sizes must be positive ints, got {hidden_layer_sizes}"
                )
            linear = nn.Linear(width, int(h), bias=not batch_norm)
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu", generator=generator)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
            layers.append(linear)
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(h)))
            layers.append(nn.ReLU())
            width = int(h)
        head = nn.Linear(width, n_outputs)
        _kaiming_linear_(head, generator)
        layers.append(head)
        self.net = nn.Sequential(*layers)

    def _logits(self):
        return self.net


class _WithHead(nn.Module):
    """A feature extractor followed by a linear layer to ``n_outputs`` logits."""

    def __init__(self, body, n_in, n_outputs, generator):
        super().__init__()
        self.body = body
        with torch.random.fork_rng(devices=[]):
            self.head = nn.Linear(n_in, n_outputs)
        _kaiming_linear_(self.head, generator)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


def _output_width(module, input_shape):
    """Width of ``module``'s flattened output for two zero inputs (eval mode, no grad)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros((2, *input_shape)))
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise ValueError(
            "a custom model must map a batch (n, *input_shape) to a tensor (n, ...), got "
            f"{type(out).__name__} of shape {getattr(out, 'shape', None)}"
        )
    return int(out[0].numel())


def _custom_module(spec, params, input_shape):
    if isinstance(spec, nn.Module):
        if params:
            raise ValueError("model_params must be empty when model is an nn.Module instance")
        return copy.deepcopy(spec)
    if callable(spec):
        module = spec(**params)
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"model factory {spec!r} must return an nn.Module, got {type(module).__name__}"
            )
        return module
    raise ValueError(
        f"model must be one of 'linear', 'mlp', {', '.join(map(repr, BACKBONES))}, "
        f"an nn.Module class, a factory or an instance; got {spec!r}"
    )


def build_model(spec, input_shape, n_clusters, *, generator, model_params=None):
    """Build the network whose outputs are the logits of :math:`\\sigma` (Algorithm 1's model).

    Parameters
    ----------
    spec : {'linear', 'mlp', 'vgg4', 'resnet18', 'resnet50'}, nn.Module class, callable or \
nn.Module
        ``'linear'`` is the paper's one-layer classifier (Kaiming init, zero
        bias); ``'mlp'`` is :class:`MLPClassifier`; the backbone names are
        built by :func:`skcce.backbones.build_backbone`.  A class or factory
        is called as ``spec(**model_params)``; an instance is deep-copied.
        When a custom module's output width differs from ``n_clusters``, a
        linear head is appended.
    input_shape : tuple of int
        Shape of one sample, e.g. ``(n_features,)`` or ``(C, H, W)``.
    n_clusters : int
        Number of output logits.
    generator : torch.Generator
        Source of all initial weights; torch's global state is left unchanged.
    model_params : dict, default=None
        Keyword arguments for the model (e.g. ``hidden_layer_sizes`` and
        ``batch_norm`` for ``'mlp'``).

    Returns
    -------
    model : nn.Module
        On the CPU, in float32.

    Examples
    --------
    >>> import torch
    >>> from skcce.networks import build_model
    >>> g = torch.Generator().manual_seed(0)
    >>> m = build_model("mlp", (6,), 3, generator=g, model_params={"hidden_layer_sizes": (4,)})
    >>> tuple(m.eval()(torch.zeros(2, 6)).shape)
    (2, 3)
    >>> m = build_model(torch.nn.Identity, (6,), 3, generator=g)  # 6 features -> linear head
    >>> tuple(m(torch.zeros(2, 6)).shape)
    (2, 3)
    """
    params = dict(model_params or {})
    input_shape = tuple(int(s) for s in input_shape)
    n_features = 1
    for s in input_shape:
        n_features *= s
    if isinstance(spec, str):
        if spec == "linear":
            if params:
                raise ValueError(f"model='linear' takes no model_params, got {sorted(params)}")
            with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws globally
                return LinearClassifier(n_features, n_clusters, generator=generator)
        if spec == "mlp":
            allowed = {"hidden_layer_sizes", "batch_norm"}
            if set(params) - allowed:
                raise ValueError(
                    f"model='mlp' accepts model_params {sorted(allowed)}, "
                    f"got {sorted(set(params) - allowed)}"
                )
            with torch.random.fork_rng(devices=[]):
                return MLPClassifier(n_features, n_clusters, generator=generator, **params)
        if spec in BACKBONES:
            from skcce.backbones import build_backbone  # torchvision is imported only here

            with seeded_global_rng(generator):
                return build_backbone(spec, input_shape, n_outputs=n_clusters, **params)
        raise ValueError(
            f"model must be 'linear', 'mlp', one of {BACKBONES}, or an nn.Module class, "
            f"factory or instance; got {spec!r}"
        )
    with seeded_global_rng(generator):
        body = _custom_module(spec, params, input_shape)
    return _attach_head(body, input_shape, n_clusters, generator)


def _attach_head(body, input_shape, n_clusters, generator):
    with seeded_global_rng(generator):  # lazy modules initialize on this first call
        width = _output_width(body, input_shape)
    if width == n_clusters:
        return body
    logger.debug("model outputs %d features: adding a linear head to %d logits", width, n_clusters)
    return _WithHead(body, width, n_clusters, generator)

