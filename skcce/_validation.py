"""Input and parameter checks shared by the estimators (they raise ``ValueError``), and warnings.

:func:`warn` is the one way the package warns a user: it points the warning
at the first frame outside skcce and scikit-learn (:func:`user_stacklevel`),
i.e. at the caller's own line.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
from sklearn.utils.validation import column_or_1d

from skcce._simplex import check_prior as check_simplex_prior

__all__ = ["check_n_clusters", "check_float32_range", "check_prior",
           "check_partial_labels", "seeds_from", "user_stacklevel", "warn"]


def _package_dir(name):
    module = sys.modules.get(name)
    return os.path.dirname(module.__file__) + os.sep if module is not None else None


def user_stacklevel():
    """The ``stacklevel`` that makes a warning point at the first frame outside the library.

    Frames of skcce, scikit-learn (its ``_fit_context`` and meta-estimators
    wrap ``fit``) and :mod:`contextlib` are skipped; counting starts at the
    function that calls :func:`warnings.warn`, i.e. the caller of this one.

    Examples
    --------
    >>> from skcce._validation import user_stacklevel
    >>> user_stacklevel() >= 1
    True
    """
    internal = tuple(d for d in (_package_dir("skcce"), _package_dir("sklearn"),
                                 os.path.dirname(warnings.__file__) + os.sep + "contextlib")
                     if d is not None)
    frame = sys._getframe(1)  # the function that warns: stacklevel 1
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame = frame.f_back
        level += 1
    return level


def warn(message, category=UserWarning):
    """Issue a warning attributed to the user's line (see :func:`user_stacklevel`).

    Examples
    --------
    >>> import warnings
    >>> from skcce._validation import warn
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn("careful")
    >>> str(w[0].message)
    'careful'
    """
    # user_stacklevel counts from this function; warnings.warn is called from here
    warnings.warn(message, category, stacklevel=user_stacklevel())


def check_n_clusters(n_clusters, n_samples):
    """Raise if there are fewer samples than clusters (or fewer than 2 samples).

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
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    if n_clusters > n_samples:
        raise ValueError(f"n_clusters={n_clusters} must be <= n_samples={n_samples}")


def check_float32_range(X):
    """Raise when ``X`` holds values beyond float32's range (the networks compute in float32).

    Examples
    --------
    >>> import numpy as np
    >>> from skcce._validation import check_float32_range
    >>> check_float32_range(np.array([[1.0, -2.0]]))
    """
    if X.dtype != np.float64 or X.size == 0:
        return
    limit = float(np.finfo(np.float32).max)
    largest = max(float(X.max()), -float(X.min()))
    if largest > limit:
        raise ValueError(
            f"X holds values of magnitude up to {largest:.3g}, beyond float32's range "
            f"({limit:.3g}); the network computes in float32. Rescale X, e.g. with "
            "sklearn.preprocessing.StandardScaler.")


def check_prior(prior, n_clusters, fairness="reverse"):
    """Return the prior as a float64 array, or None for uniform.

    The one prior check is :func:`skcce._simplex.check_prior` (finite,
    non-negative, one entry per cluster, summing to 1 within the dtype's
    tolerance); the forward fairness :math:`KL(\\bar y\\|u)` needs every
    entry positive.

    Examples
    --------
    >>> from skcce._validation import check_prior
    >>> check_prior([0.25, 0.75], 2).tolist()
    [0.25, 0.75]
    """
    if prior is None:
        return None
    return check_simplex_prior(prior, n_clusters, strictly_positive=fairness == "forward")


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

    ``None`` draws fresh seeds from the operating system's entropy (a new
    :class:`numpy.random.SeedSequence`), leaving numpy's global generator
    untouched.

    Examples
    --------
    >>> from skcce._validation import seeds_from
    >>> seeds_from(0, 2) == seeds_from(0, 2)
    True
    """
    if random_state is None:
        rng = np.random.default_rng(np.random.SeedSequence())
        return [int(s) for s in rng.integers(0, np.iinfo(np.int32).max, size=n)]
    from sklearn.utils import check_random_state

    rs = check_random_state(random_state)
    return [int(s) for s in rs.randint(0, np.iinfo(np.int32).max, size=n)]
