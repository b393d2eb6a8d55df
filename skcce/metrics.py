"""Clustering metrics with Hungarian matching (scipy's ``linear_sum_assignment``).

Cluster ids are arbitrary, so accuracy is measured after the best one-to-one
mapping of clusters to classes (the standard protocol of the paper, section 5).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import make_scorer
from sklearn.utils.validation import check_consistent_length, column_or_1d

__all__ = [
    "contingency",
    "hungarian_match",
    "clustering_accuracy",
    "many_to_one_accuracy",
    "hungarian_accuracy_scorer",
    "make_validity_scorer",
]


def contingency(y_true, y_pred):
    """Count the (class, cluster) pairs.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Class labels (any hashable values).
    y_pred : array-like of shape (n_samples,)
        Cluster ids (any hashable values).

    Returns
    -------
    table : ndarray of shape (n_classes, n_clusters)
        ``table[i, j]`` counts samples of ``classes[i]`` in ``clusters[j]``.
    classes : ndarray of shape (n_classes,)
        Sorted unique values of ``y_true``.
    clusters : ndarray of shape (n_clusters,)
        Sorted unique values of ``y_pred``.

    Examples
    --------
    >>> from skcce.metrics import contingency
    >>> table, classes, clusters = contingency([0, 0, 1], [5, 5, 7])
    >>> table.tolist()
    [[2, 0], [0, 1]]
    """
    y_true = column_or_1d(y_true)
    y_pred = column_or_1d(y_pred)
    check_consistent_length(y_true, y_pred)
    if y_true.size == 0:
        raise ValueError("y_true and y_pred are empty")
    classes, ti = np.unique(y_true, return_inverse=True)
    clusters, pi = np.unique(y_pred, return_inverse=True)
    table = np.zeros((classes.size, clusters.size), dtype=np.int64)
    np.add.at(table, (ti, pi), 1)
    return table, classes, clusters


def hungarian_match(y_true, y_pred):
    """Best one-to-one mapping from cluster ids to class labels.

    Solves the assignment problem on the contingency table with
    :func:`scipy.optimize.linear_sum_assignment`.  When there are more
    clusters than classes, the surplus clusters stay unmatched (absent from
    the mapping); when there are fewer, some classes get no cluster.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Class labels.
    y_pred : array-like of shape (n_samples,)
        Cluster ids.

    Returns
    -------
    mapping : dict
        ``{cluster_id: class_label}`` for the matched clusters.

    Examples
    --------
    >>> from skcce.metrics import hungarian_match
    >>> m = hungarian_match([0, 0, 1, 1], [1, 1, 0, 0])
    >>> sorted((int(k), int(v)) for k, v in m.items())
    [(0, 1), (1, 0)]
    """
    table, classes, clusters = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {clusters[c].item(): classes[r].item() for r, c in zip(rows, cols, strict=True)}


def clustering_accuracy(y_true, y_pred):
    """Accuracy after Hungarian one-to-one matching of clusters to classes.

    Samples in clusters left unmatched (more clusters than classes) count as
    errors.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Class labels.
    y_pred : array-like of shape (n_samples,)
        Cluster ids.

    Returns
    -------
    accuracy : float
        In [0, 1].

    Examples
    --------
    >>> from skcce.metrics import clustering_accuracy
    >>> clustering_accuracy([0, 0, 1, 1, 2], [2, 2, 0, 0, 0])
    0.8
    """
    table, _, _ = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def many_to_one_accuracy(y_true, y_pred):
    """Accuracy when each cluster is mapped to its majority class (over-clustering).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Class labels.
    y_pred : array-like of shape (n_samples,)
        Cluster ids; there may be more clusters than classes.

    Returns
    -------
    accuracy : float
        In [0, 1]; never below :func:`clustering_accuracy`.

    Examples
    --------
    >>> from skcce.metrics import many_to_one_accuracy
    >>> many_to_one_accuracy([0, 0, 1, 1], [0, 1, 2, 2])
    1.0
    """
    table, _, _ = contingency(y_true, y_pred)
    return float(table.max(axis=0).sum() / table.sum())


hungarian_accuracy_scorer = make_scorer(clustering_accuracy)
hungarian_accuracy_scorer.__doc__ = """Hungarian-accuracy scorer for ``GridSearchCV(scoring=...)``.

Calls ``estimator.predict(X)`` and returns :func:`clustering_accuracy`
against ``y``.
"""


class _ValidityScorer:
    """Scorer ``scorer(estimator, X, y=None)`` returning a label-free score of the predictions."""

    def __init__(self, kwargs):
        self._kwargs = kwargs

    def __call__(self, estimator, X, y=None):
        from skcce import selection

        kwargs = dict(self._kwargs)
        kwargs.setdefault("random_state", 0)  # every candidate scored on the same graph
        criterion = kwargs.pop("criterion", "information")
        score = {"information": selection.neighbor_information_score,
                 "modularity": selection.validity_score}[criterion]
        return score(estimator, X, **kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"make_validity_scorer({args})"


def make_validity_scorer(**kwargs):
    """Label-free scorer for ``GridSearchCV(scoring=...)``: the validity of the predicted clusters.

    The scorer calls ``estimator.predict(X)`` on the held-out rows and
    returns :func:`skcce.selection.neighbor_information_score` of those
    labels on ``X`` (the mutual information between the clusters of
    neighbouring rows, the score ``CollisionClustering.score`` returns);
    ``y`` is ignored, so a search runs without labels.  Higher is better.
    Compare settings with the same number of clusters only (the score grows
    with it), and read ``docs/benchmarks/model_selection.md`` for how well
    it tracks accuracy: when several fits per setting can be afforded,
    :func:`skcce.selection.consensus_scores` over all of them tracked it
    better.

    Parameters
    ----------
    **kwargs
        ``criterion``: ``'information'`` (default,
        :func:`skcce.selection.neighbor_information_score`) or
        ``'modularity'`` (:func:`skcce.selection.validity_score`); the
        other keyword arguments go to that function (``n_neighbors``,
        ``n_components``, ``max_samples``, ``random_state``).  Without
        ``random_state`` the scorer passes 0, as ``CollisionClustering.score``
        does: every candidate of a search is then scored on the same row
        subset and PCA of a given ``X``.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y=None) -> float``.

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> from sklearn.datasets import make_blobs
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skcce.metrics import make_validity_scorer
    >>> X, _ = make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=0)
    >>> search = GridSearchCV(KMeans(3, random_state=0), {"n_init": [1, 3]},
    ...                       scoring=make_validity_scorer(random_state=0), cv=3).fit(X)
    >>> bool(search.best_score_ > 1.0)  # log(3) = 1.099 for three separated blobs
    True
    """
    from skcce.selection import neighbor_information_score  # noqa: F401  (fails early)

    allowed = {"criterion", "n_neighbors", "n_components", "max_samples", "random_state"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"make_validity_scorer got unexpected arguments {unknown}; "
                        f"allowed: {sorted(allowed)}")
    criterion = kwargs.get("criterion", "information")
    if criterion not in ("information", "modularity"):
        raise ValueError("criterion must be 'information' or 'modularity', "
                         f"got {criterion!r}")
    return _ValidityScorer(dict(kwargs))
