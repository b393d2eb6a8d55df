"""Input and parameter checks shared by the estimators (they raise ``ValueError``)."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import column_or_1d

__all__ = ["check_n_clusters", "check_prior", "check_partial_labels", "seeds_from"]


def check_n_clusters(n_clusters, n_samples):
    """Raise if there are fewer samples than clusters.

    Examples
    --------
    >>> from skcce._validation import check_n_clusters
    >>> check_n_clusters(2, 5)
    """
    if n_samples < 2:
        raise ValueError(
            f"n_samples={n_samples} is too few: clustering needs at least 2 samples "
            f"(and at least n_clusters={n_clusters})"
        )
    if n_clusters < 2:
        raise ValueError(f"n_clusters must be >= 2, got {n_clusters}")
    if n_clusters > n_samples:
        raise ValueError(f"n_clusters={n_clusters} must be <= n_samples={n_samples}")


def check_prior(prior, n_clusters):
    """Return the prior as a float64 array, or None for uniform.

    A prior must have one finite, non-negative entry per cluster, at least
    one of them positive, and sum to 1 (within 1e-6).

    Examples
    --------
    >>> from skcce._validation import check_prior
    >>> check_prior([0.25, 0.75], 2).tolist()
    [0.25, 0.75]
    """
    if prior is None:
        return None
    try:
        u = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"prior must be an array of {n_clusters} proportions: {exc}") from None
    if u.shape != (n_clusters,):
        raise ValueError(f"prior must have shape ({n_clusters},) = (n_clusters,), got {u.shape}")
    if not np.all(np.isfinite(u)) or np.any(u < 0):
        raise ValueError(f"prior must be finite and non-negative, got {u.tolist()}")
    if abs(u.sum() - 1.0) > 1e-6:
        raise ValueError(f"prior must sum to 1, got sum {u.sum():.6g}")
    return u


def check_partial_labels(y, n_samples, n_clusters):
    """Return partial labels as int64 (-1 = unlabeled), or None when ``y`` is not semi-supervised.

    ``y`` is read as partial labels only when it holds a negative value
    (scikit-learn's semi-supervised convention marks unlabeled rows with
    -1).  A ``y`` without any negative value is a ground truth passed along
    by meta-estimators such as ``GridSearchCV`` for scoring, and is ignored,
    as every scikit-learn clusterer ignores it.

    Examples
    --------
    >>> from skcce._validation import check_partial_labels
    >>> check_partial_labels([0, -1, 1], 3, 2).tolist()
    [0, -1, 1]
    >>> check_partial_labels([0, 1, 1], 3, 2) is None
    True
    """
    if y is None:
        return None
    y = column_or_1d(y, warn=True)
    if y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} entries but X has {n_samples} samples")
    if y.dtype.kind not in "iuf" and y.dtype != bool:
        if y.dtype.kind == "O" or y.dtype.kind in "US":
            return None  # string class names: a ground truth, never partial labels
        raise ValueError(f"partial labels must be integers, got dtype {y.dtype}")
    if y.dtype.kind == "f":
        finite = np.isfinite(y)
        if not np.any(y[finite] < 0):
            return None
        if not finite.all() or np.any(y != np.round(y)):
            raise ValueError("partial labels must be finite integers (-1 for unlabeled rows)")
    y = y.astype(np.int64)
    if not np.any(y < 0):
        return None
    bad = (y < -1) | (y >= n_clusters)
    if np.any(bad):
        raise ValueError(
            f"partial labels must lie in [-1, n_clusters={n_clusters}) with -1 for unlabeled "
            f"rows; got value(s) {np.unique(y[bad])[:5].tolist()}"
        )
    return y


def seeds_from(random_state, n):
    """``n`` int seeds drawn from a ``check_random_state``-compatible ``random_state``.

    Examples
    --------
    >>> from skcce._validation import seeds_from
    >>> seeds_from(0, 2) == seeds_from(0, 2)
    True
    """
    from sklearn.utils import check_random_state

    rs = check_random_state(random_state)
    return [int(s) for s in rs.randint(0, np.iinfo(np.int32).max, size=n)]
