"""Losses of self-labeled classification: collision cross-entropy and its peers.

Torch functions work on logits (the model's raw outputs) and return a reduced
tensor; their ``*_np`` twins work on probabilities in numpy and return one
value per row, for the pseudo-label solvers.

All torch losses are evaluated in at least float32 and returned in the dtype
of ``logits``, so bfloat16 and float16 inputs under autocast stay finite.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skcce._simplex import KL_FLOOR, kl_prior_forward_np, kl_prior_reverse_np

__all__ = [
    "collision_cross_entropy",
    "shannon_cross_entropy",
    "kl_prior_reverse",
    "kl_prior_forward",
    "mutual_information_loss",
    "CollisionCrossEntropyLoss",
    "ShannonCrossEntropyLoss",
    "collision_cross_entropy_np",
    "shannon_cross_entropy_np",
    "kl_prior_reverse_np",
    "kl_prior_forward_np",
]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_tensor(x, name: str) -> None:
    # A numpy array would fail later with "no attribute 'dim'"; these losses
    # are autograd functions of tensors, their numpy twins end in ``_np``.
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; convert with "
            "torch.as_tensor, or use the numpy twins (e.g. collision_cross_entropy_np, "
            "which take probabilities)"
        )


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    _check_tensor(logits, "logits")
    _check_tensor(target, "target")
    if logits.dim() != 2:
        raise ValueError(
            f"logits must be 2-D (n_samples, n_classes), got shape {tuple(logits.shape)}"
        )
    if target.shape != logits.shape:
        raise ValueError(
            f"target must have the shape of logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )


class _CollisionCE(torch.autograd.Function):
    """H2(y, softmax(z)) per row, with a backward pass that is exactly zero for uniform y.

    d/dz_j [-ln s] = sigma_j - w_j  with s = sum_k y_k sigma_k and
    w_j = y_j sigma_j / s, both distributions (finite for any logits); rows with a
    uniform target, where the two agree only up to rounding, get an exact 0.
    Under ``create_graph=True`` the backward pass is recomputed from the inputs
    with differentiable torch operations, so second derivatives (Hessians,
    ``gradgradcheck``) are exact.
    """

    @staticmethod
    def forward(ctx, logits, target):
        log_sigma, log_s = _collision_logs(logits, target)
        ctx.save_for_backward(logits, target, log_sigma, log_s)
        return -log_s

    @staticmethod
    def backward(ctx, grad_out):
        logits, target, log_sigma, log_s = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward (create_graph=True)
            return _collision_grads_differentiable(ctx, grad_out, logits, target)
        log_s = log_s[:, None]
        grad_logits = grad_target = None
        if ctx.needs_input_grad[0]:
            # w = y * sigma / s, a distribution computed in log space (finite for
            # extreme logits); sigma - w is zero only up to rounding on a uniform row.
            w = torch.exp(log_sigma + _masked_log(target) - log_s)
            uniform = (target == target[:, :1]).all(dim=1, keepdim=True)
            grad_logits = grad_out[:, None] * torch.where(uniform, 0.0, log_sigma.exp() - w)
        if ctx.needs_input_grad[1]:
            grad_target = -grad_out[:, None] * torch.exp(log_sigma - log_s)
        return grad_logits, grad_target


def _collision_grads_differentiable(ctx, grad_out, logits, target):
    """The backward pass recomputed from the inputs with differentiable operations.

    ``s = sum_k y_k sigma_k`` is formed linearly in ``y`` (scaled by the
    largest sigma on y's support), so the derivatives with respect to ``y``
    are right at its exact zeros too; ``sigma / s`` is capped at ``e^700``,
    where float64 would overflow. A uniform row keeps a gradient of exactly 0
    in value but the derivative of ``sigma - w``.
    """
    log_sigma = F.log_softmax(logits, dim=1)
    ref = torch.where(target > 0, log_sigma, -torch.inf).amax(dim=1, keepdim=True).detach()
    scaled = (log_sigma - ref).clamp_max(700.0)
    log_s = ref + torch.log((target * torch.exp(scaled)).sum(dim=1, keepdim=True))
    ratio = torch.exp((log_sigma - log_s).clamp_max(700.0))  # sigma / s
    grad_logits = grad_target = None
    if ctx.needs_input_grad[0]:
        diff = log_sigma.exp() - target * ratio
        uniform = (target == target[:, :1]).all(dim=1, keepdim=True)
        grad_logits = grad_out[:, None] * torch.where(uniform, diff - diff.detach(), diff)
    if ctx.needs_input_grad[1]:
        grad_target = -grad_out[:, None] * ratio
    return grad_logits, grad_target


def _masked_log(target):
    """``ln y`` with ``-inf`` at exact zeros and a zero derivative there."""
    tiny = torch.finfo(target.dtype).tiny
    return torch.where(target > 0, torch.log(target.clamp_min(tiny)), -torch.inf)


def _collision_logs(logits, target):
    """``(log_softmax(logits), ln sum_k y_k sigma_k)`` (zeros of y handled by logsumexp)."""
    log_sigma = F.log_softmax(logits, dim=1)
    return log_sigma, torch.logsumexp(log_sigma + _masked_log(target), dim=1)


def collision_cross_entropy(logits, target, reduction="mean"):
    r"""Collision cross-entropy :math:`H_2(y, \sigma) = -\ln \sum_k y_k \sigma_k` (eq. 9).

    The negative log-probability that the class predicted by
    :math:`\sigma = \mathrm{softmax}(\text{logits})` equals the latent label
    drawn from ``target``.  It equals Shannon's cross-entropy for one-hot
    targets, is symmetric in its two distributions, and gives zero gradient
    for a uniform target.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Unnormalized model outputs.
    target : torch.Tensor of shape (n_samples, n_classes)
        Rows on the probability simplex (exact zeros allowed).  Gradients
        flow into it too when it requires grad.
    reduction : {'mean', 'sum', 'none'}, default='mean'
        How the per-row values are reduced.

    Returns
    -------
    loss : torch.Tensor
        A scalar, or one value per row for ``reduction='none'``, in the dtype
        of ``logits``.

    Examples
    --------
    >>> import torch
    >>> from skcce import collision_cross_entropy
    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> onehot = torch.tensor([[1.0, 0.0, 0.0]])
    >>> bool(torch.isclose(collision_cross_entropy(logits, onehot),
    ...                    torch.nn.functional.cross_entropy(logits, torch.tensor([0]))))
    True
    >>> float(collision_cross_entropy(logits, torch.full((1, 3), 1 / 3)))  # -ln(1/3)
    1.0986...
    """
    _check_pair(logits, target)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    dtype = _compute_dtype(logits)
    values = _CollisionCE.apply(logits.to(dtype), target.to(dtype))
    return _reduce(values, reduction).to(logits.dtype)


def shannon_cross_entropy(logits, target, reduction="mean"):
    r"""Shannon cross-entropy with soft targets, :math:`H(y, \sigma) = -\sum_k y_k \ln \sigma_k`.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Unnormalized model outputs.
    target : torch.Tensor of shape (n_samples, n_classes)
        Rows on the probability simplex.
    reduction : {'mean', 'sum', 'none'}, default='mean'
        How the per-row values are reduced.

    Returns
    -------
    loss : torch.Tensor
        Scalar, or per-row values for ``reduction='none'``.

    Examples
    --------
    >>> import torch
    >>> from skcce.losses import shannon_cross_entropy
    >>> round(float(shannon_cross_entropy(torch.zeros(1, 2), torch.tensor([[0.5, 0.5]]))), 4)
    0.6931
    """
    _check_pair(logits, target)
    dtype = _compute_dtype(logits)
    log_sigma = F.log_softmax(logits.to(dtype), dim=1)
    # 0 * log(0) := 0 ; xlogy-style masking keeps exact zeros out of the sum.
    values = -(torch.where(target > 0, target.to(dtype) * log_sigma, 0.0)).sum(dim=1)
    return _reduce(values, reduction).to(logits.dtype)


def _as_prior(prior, n_classes, like):
    if prior is None:
        return torch.full((n_classes,), 1.0 / n_classes, dtype=like.dtype, device=like.device)
    return torch.as_tensor(prior, dtype=like.dtype, device=like.device)


def kl_prior_reverse(mean_proba, prior=None, eps=KL_FLOOR):
    r"""Reverse fairness :math:`KL(u \| \bar y) = \sum_k u_k \ln(u_k / \bar y_k)` (eq. 11).

    Parameters
    ----------
    mean_proba : torch.Tensor of shape (n_classes,)
        The average prediction :math:`\bar y` over a batch.
    prior : array-like of shape (n_classes,), default=None
        Target cluster proportions :math:`u`; uniform when None.
    eps : float, default=1e-12
        Floor on :math:`\bar y`, so an empty cluster costs
        :math:`u_k \ln(u_k/\epsilon)` (finite); the numpy twin
        :func:`kl_prior_reverse_np` uses the same default.

    Returns
    -------
    kl : torch.Tensor
        A scalar.

    Examples
    --------
    >>> import torch
    >>> from skcce.losses import kl_prior_reverse
    >>> float(kl_prior_reverse(torch.tensor([0.5, 0.5])))
    0.0
    """
    _check_tensor(mean_proba, "mean_proba")
    u = _as_prior(prior, mean_proba.shape[-1], mean_proba)
    mask = u > 0
    return (u[mask] * (torch.log(u[mask]) - torch.log(mean_proba[mask].clamp_min(eps)))).sum()


def kl_prior_forward(mean_proba, prior=None, eps=KL_FLOOR):
    r"""Forward fairness :math:`KL(\bar y \| u) = \sum_k \bar y_k \ln(\bar y_k / u_k)` (eq. 10).

    Parameters
    ----------
    mean_proba : torch.Tensor of shape (n_classes,)
        The average prediction :math:`\bar y` over a batch.
    prior : array-like of shape (n_classes,), default=None
        Target cluster proportions :math:`u`; uniform when None.
    eps : float, default=1e-12
        Floor on :math:`u` inside the logarithm.

    Returns
    -------
    kl : torch.Tensor
        A scalar.

    Examples
    --------
    >>> import torch
    >>> from skcce.losses import kl_prior_forward
    >>> round(float(kl_prior_forward(torch.tensor([1.0, 0.0]))), 4)  # ln 2
    0.6931
    """
    _check_tensor(mean_proba, "mean_proba")
    u = _as_prior(prior, mean_proba.shape[-1], mean_proba)
    p = mean_proba
    log_ratio = torch.log(p.clamp_min(eps)) - torch.log(u.clamp_min(eps))
    return torch.where(p > 0, p * log_ratio, 0.0).sum()


def mutual_information_loss(logits, prior=None, lam=1.0):
    r"""MI-GD loss (Bridle 1991, Krause 2010): mean :math:`H(\sigma) + \lambda KL(\bar\sigma \| u)`.

    With a uniform prior and ``lam=1`` this is :math:`\overline{H(\sigma)} - H(\bar\sigma)`
    up to the constant :math:`\ln K`, i.e. the negative mutual information
    between inputs and cluster ids.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Unnormalized model outputs.
    prior : array-like of shape (n_classes,), default=None
        Target cluster proportions; uniform when None.
    lam : float, default=1.0
        Weight of the fairness term.

    Returns
    -------
    loss : torch.Tensor
        A scalar.

    Examples
    --------
    >>> import torch
    >>> from skcce.losses import mutual_information_loss
    >>> logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])
    >>> float(mutual_information_loss(logits)) < 1e-6  # confident and balanced
    True
    """
    _check_tensor(logits, "logits")
    dtype = _compute_dtype(logits)
    log_sigma = F.log_softmax(logits.to(dtype), dim=1)
    sigma = log_sigma.exp()
    cond_entropy = -(sigma * log_sigma).sum(dim=1).mean()
    return (cond_entropy + lam * kl_prior_forward(sigma.mean(dim=0), prior)).to(logits.dtype)


class _SoftTargetLoss(nn.Module):
    """Module form of a soft-target cross-entropy function (``_function``)."""

    _function = None

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits, target):
        """Compute the loss with this module's ``reduction``.

        Parameters
        ----------
        logits : torch.Tensor of shape (n_samples, n_classes)
            Unnormalized scores.
        target : torch.Tensor of shape (n_samples, n_classes)
            Soft labels, rows on the simplex.

        Returns
        -------
        loss : torch.Tensor
            A scalar, or one value per row for ``reduction='none'``.

        Examples
        --------
        >>> import torch
        >>> from skcce.losses import CollisionCrossEntropyLoss, ShannonCrossEntropyLoss
        >>> for module in (CollisionCrossEntropyLoss(), ShannonCrossEntropyLoss()):
        ...     print(round(float(module(torch.zeros(2, 2), torch.eye(2))), 4))  # -ln(1/2)
        0.6931
        0.6931
        """
        return type(self)._function(logits, target, reduction=self.reduction)


class CollisionCrossEntropyLoss(_SoftTargetLoss):
    """Module twin of :func:`collision_cross_entropy`.

    Parameters
    ----------
    reduction : {'mean', 'sum', 'none'}, default='mean'
        How the per-row values are reduced.

    Examples
    --------
    >>> import torch
    >>> from skcce.losses import CollisionCrossEntropyLoss
    >>> loss = CollisionCrossEntropyLoss()
    >>> float(loss(torch.zeros(2, 4), torch.full((2, 4), 0.25)))  # ln 4
    1.3862...
    """

    _function = staticmethod(collision_cross_entropy)


class ShannonCrossEntropyLoss(_SoftTargetLoss):
    """Module twin of :func:`shannon_cross_entropy` (soft targets).

    Parameters
    ----------
    reduction : {'mean', 'sum', 'none'}, default='mean'
        How the per-row values are reduced.

    Examples
    --------
    >>> import torch
    >>> from skcce.losses import ShannonCrossEntropyLoss
    >>> round(float(ShannonCrossEntropyLoss()(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))), 4)
    0.6931
    """

    _function = staticmethod(shannon_cross_entropy)


# --------------------------------------------------------------------------- numpy twins
_TINY = np.finfo(np.float64).tiny


def collision_cross_entropy_np(proba, target):
    r"""Row-wise :math:`H_2(y, \sigma) = -\ln \sum_k y_k \sigma_k` on probabilities (numpy).

    Parameters
    ----------
    proba : ndarray of shape (n_samples, n_classes)
        Predictions :math:`\sigma`, rows on the simplex.
    target : ndarray of shape (n_samples, n_classes)
        Pseudo-labels :math:`y`, rows on the simplex.

    Returns
    -------
    values : ndarray of shape (n_samples,)
        The cross-entropy of each row, in nats.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.losses import collision_cross_entropy_np
    >>> collision_cross_entropy_np(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]))
    array([0.69314718])
    """
    s = np.einsum("ik,ik->i", np.asarray(proba, dtype=float), np.asarray(target, dtype=float))
    return -np.log(np.maximum(s, _TINY))


def shannon_cross_entropy_np(proba, target):
    r"""Row-wise :math:`H(y, \sigma) = -\sum_k y_k \ln \sigma_k` on probabilities (numpy).

    Parameters
    ----------
    proba : ndarray of shape (n_samples, n_classes)
        Predictions :math:`\sigma`.
    target : ndarray of shape (n_samples, n_classes)
        Soft labels :math:`y`; ``0 * ln 0`` counts as 0.

    Returns
    -------
    values : ndarray of shape (n_samples,)
        The cross-entropy of each row, in nats.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.losses import shannon_cross_entropy_np
    >>> shannon_cross_entropy_np(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]))
    array([0.69314718])
    """
    p = np.asarray(proba, dtype=float)
    y = np.asarray(target, dtype=float)
    logp = np.log(np.maximum(p, _TINY))
    return -np.where(y > 0, y * logp, 0.0).sum(axis=1)
