"""Probability-simplex helpers shared by the losses and the solvers (numpy only).

One home for what both need, importable without torch: the tolerance on a
row or prior that should sum to one, the prior check, and the numpy
fairness terms :math:`KL(u \\| \\bar y)` (eq. 11) and :math:`KL(\\bar y \\| u)`
(eq. 10). :mod:`skcce.losses` re-exports the two KL functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sum_tolerance", "check_prior", "kl_prior_reverse_np", "kl_prior_forward_np"]

# Tolerance on |sum - 1| for float64 and float32 input.
_SUM_TOL = 1e-4
# Floor on the mean pseudo-label inside the logarithm of the reverse KL: an
# empty cluster (Sinkhorn's one-hot labels on a small batch) then costs
# u_k ln(u_k / 1e-12) <= 27.7 u_k instead of infinity. The same floor as the
# torch twin's default (skcce.losses.kl_prior_reverse), far below the 1/M a
# batch of M points can represent and far above the solvers' 1e-200 floor.
KL_FLOOR = 1e-12


def sum_tolerance(dtype):
    """Tolerance on ``|sum - 1|`` for probabilities stored in ``dtype``.

    ``1e-4``, or the dtype's machine epsilon when larger: K probabilities
    rounded to a dtype with epsilon ``e`` sum to one within ``e / 2`` (each
    rounding error is at most ``e / 2`` times the value), so float16 rows,
    which may sum to 1.00013, are accepted.

    Parameters
    ----------
    dtype : numpy dtype
        The dtype the probabilities were stored in.

    Returns
    -------
    tol : float
        Largest accepted deviation of a row sum from 1.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._simplex import sum_tolerance
    >>> sum_tolerance(np.float64), sum_tolerance(np.float16)
    (0.0001, 0.0009765625)
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return _SUM_TOL
    return max(_SUM_TOL, float(np.finfo(dtype).eps))


def check_prior(prior, n_classes, *, strictly_positive=False):
    """Validate a prior and return it as a float64 distribution.

    Parameters
    ----------
    prior : array-like of shape (n_classes,) or None
        Cluster proportions; None means uniform.
    n_classes : int
        Number of classes K.
    strictly_positive : bool, default=False
        Reject zeros (the forward KL, eq. 10, needs ``u_k > 0``).

    Returns
    -------
    u : ndarray of shape (n_classes,)
        Finite, non-negative, renormalised to sum to exactly one.

    Raises
    ------
    ValueError
        With the reason: not numeric, wrong shape, not finite, negative,
        not summing to one within :func:`sum_tolerance`, or a zero where
        ``strictly_positive``.

    Examples
    --------
    >>> from skcce._simplex import check_prior
    >>> check_prior([0.25, 0.75], 2).tolist()
    [0.25, 0.75]
    >>> check_prior(None, 4).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    if prior is None:
        return np.full(n_classes, 1.0 / n_classes)
    try:
        raw = np.asarray(prior)
        u = raw.astype(np.float64)
    except (TypeError, ValueError):
        msg = f"prior must be an array of {n_classes} proportions, got {prior!r}"
        raise ValueError(msg) from None
    if u.ndim != 1 or u.shape[0] != n_classes:
        raise ValueError(f"prior must have shape ({n_classes},), got {u.shape}")
    if not np.isfinite(u).all() or (u < 0).any():
        raise ValueError(f"prior must be finite and non-negative, got {u.tolist()}")
    tol = sum_tolerance(raw.dtype)
    if abs(u.sum() - 1.0) > tol:
        raise ValueError(f"prior must sum to 1 (tolerance {tol:g}), got {u.sum():.6g}")
    if strictly_positive and (u <= 0).any():
        raise ValueError("prior must be strictly positive for fairness='forward'")
    return np.ascontiguousarray(u / u.sum())


def kl_prior_reverse_np(mean_proba, prior=None, eps=KL_FLOOR):
    r""":math:`KL(u \| \bar y) = \sum_k u_k \ln(u_k / \max(\bar y_k, \epsilon))` in numpy (eq. 11).

    Parameters
    ----------
    mean_proba : ndarray of shape (n_classes,)
        Average pseudo-label :math:`\bar y`.
    prior : ndarray of shape (n_classes,), default=None
        Cluster proportions :math:`u`; uniform when None.
    eps : float, default=1e-12
        Floor on :math:`\bar y` inside the logarithm, so an empty cluster
        with :math:`u_k > 0` costs :math:`u_k \ln(u_k / \epsilon)` (finite)
        rather than infinity; the torch twin
        :func:`skcce.losses.kl_prior_reverse` uses the same default.
        ``eps=0`` gives the exact value (``inf`` for an empty cluster), as
        the solvers' objective does.

    Returns
    -------
    kl : float
        The divergence, in nats (non-negative).

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.losses import kl_prior_reverse_np
    >>> kl_prior_reverse_np(np.array([0.25, 0.25, 0.25, 0.25]))
    0.0
    >>> round(kl_prior_reverse_np(np.array([1.0, 0.0])), 4)  # 0.5 ln 0.5 + 0.5 ln(0.5 / 1e-12)
    13.1224
    >>> kl_prior_reverse_np(np.array([1.0, 0.0]), eps=0)
    inf
    """
    ybar = np.asarray(mean_proba, dtype=float)
    u = _prior(prior, ybar.shape[-1])
    m = u > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(u[m] * (np.log(u[m]) - np.log(np.maximum(ybar[m], eps)))))


def kl_prior_forward_np(mean_proba, prior=None):
    r""":math:`KL(\bar y \| u) = \sum_k \bar y_k \ln(\bar y_k / u_k)` in numpy (eq. 10).

    ``0 ln 0 = 0``, so an empty cluster adds nothing (no floor needed).

    Parameters
    ----------
    mean_proba : ndarray of shape (n_classes,)
        Average pseudo-label :math:`\bar y`.
    prior : ndarray of shape (n_classes,), default=None
        Cluster proportions :math:`u`; uniform when None.

    Returns
    -------
    kl : float
        The divergence, in nats (non-negative).

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.losses import kl_prior_forward_np
    >>> round(kl_prior_forward_np(np.array([1.0, 0.0])), 4)
    0.6931
    """
    ybar = np.asarray(mean_proba, dtype=float)
    u = _prior(prior, ybar.shape[-1])
    m = ybar > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(ybar[m] * (np.log(ybar[m]) - np.log(u[m]))))


def _prior(prior, n_classes):
    if prior is None:
        return np.full(n_classes, 1.0 / n_classes)
    return np.asarray(prior, dtype=float)
