"""Label-free model selection: scores for clusterings, restarts and the number of clusters.

Without labels, the training loss cannot choose between settings: it changes
with ``lam`` itself.  Three label-free criteria are provided:

* :func:`consensus_scores`: given several clusterings of the same rows
  (restarts, or fits over a grid of settings), each one's mean adjusted Rand
  index to the others.  It needs several fits; on the benchmark it tracked
  accuracy at least as well as the shipped single-fit score on each of its
  four datasets, and best of all candidates on the MNIST CNN features.
* :func:`neighbor_information_score`: a single-fit score for comparing
  clusterings with the same number of clusters, the mutual information
  between the clusters of neighbouring rows on the k-nearest-neighbour graph
  of ``X``.  It is what ``CollisionClustering.score`` and
  :func:`skcce.metrics.make_validity_scorer` compute for a label-free
  ``GridSearchCV``.
* :func:`validity_score`: the modularity of the clustering on the same
  graph.  It grows less with the number of clusters, and is the score
  :func:`select_n_clusters` chooses the number of clusters by, and that
  :func:`merge_clusters` merges the clusters of an over-clustered fit along.

The measurement behind these choices is ``benchmarks/bench_model_selection.py``
(``docs/benchmarks/model_selection.md``).
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_consistent_length, column_or_1d

from skcce._progress import progress_bar

__all__ = ["neighbor_information_score", "validity_score", "consensus_scores", "aligned_mean_proba",
           "neighbor_agreement", "select_n_clusters", "SelectionResult", "merge_clusters",
           "MergeResult"]


def _check_positive_int(value, name, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _labels_of(estimator_or_labels, X):
    if hasattr(estimator_or_labels, "predict"):
        return np.asarray(estimator_or_labels.predict(X))
    if hasattr(estimator_or_labels, "fit"):
        raise TypeError("the estimator has no predict method; pass its labels instead")
    return column_or_1d(estimator_or_labels)


def _embedding(X, n_components, random_state):
    """PCA of ``X`` to at most ``n_components`` dimensions (no input validation)."""
    n_components = min(n_components, X.shape[1], X.shape[0])
    if n_components >= X.shape[1]:
        return np.asarray(X, dtype=np.float32)
    pca = PCA(n_components, svd_solver="randomized", random_state=random_state)
    return pca.fit_transform(X).astype(np.float32)


def neighbor_agreement(labels, neighbors):
    """Per-cluster mean fraction of a point's neighbours that share its cluster.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Cluster ids.
    neighbors : ndarray of shape (n_samples, n_neighbors)
        Indices of each row's nearest neighbours (the row itself excluded).

    Returns
    -------
    agreement : ndarray of shape (n_found_clusters,)
        For each cluster present in ``labels`` (in sorted order), the mean
        over its points of the fraction of their neighbours in the same
        cluster.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.selection import neighbor_agreement
    >>> labels = np.array([0, 0, 1, 1])
    >>> neighbors = np.array([[1], [0], [3], [0]])
    >>> neighbor_agreement(labels, neighbors).tolist()
    [1.0, 0.5]
    """
    same = (labels[neighbors] == labels[:, None]).mean(axis=1)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return np.bincount(inverse, weights=same) / counts


def _neighbor_graph(estimator_or_labels, X, n_neighbors, n_components, max_samples,
                    random_state, caller, keep_ids=False):
    """Labels (as ids 0..K-1) and the k-NN graph of the rows they are scored on.

    Validates the arguments, draws at most ``max_samples`` rows, reduces them
    to ``n_components`` principal components (None: the features themselves)
    and finds each row's ``n_neighbors`` nearest neighbours (itself excluded).
    With ``keep_ids`` the drawn rows keep their own labels, and the labels
    of every row of ``X`` are returned third.
    """
    X = check_array(X, dtype=[np.float64, np.float32])
    labels = _labels_of(estimator_or_labels, X)
    check_consistent_length(X, labels)
    n_neighbors = _check_positive_int(n_neighbors, "n_neighbors")
    if n_components is not None:
        n_components = _check_positive_int(n_components, "n_components")
    max_samples = _check_positive_int(max_samples, "max_samples", minimum=2)
    if len(X) < 2:
        raise ValueError(f"{caller} needs at least 2 samples, got {len(X)}")
    all_labels = labels
    rng = check_random_state(random_state)
    if len(X) > max_samples:
        rows = np.sort(rng.choice(len(X), max_samples, replace=False))
        X, labels = X[rows], labels[rows]
    n_neighbors = min(n_neighbors, len(X) - 1)
    seed = rng.randint(np.iinfo(np.int32).max)
    Z = X if n_components is None else _embedding(X, n_components, seed)
    neighbors = _drop_self(NearestNeighbors(n_neighbors=n_neighbors + 1).fit(Z).kneighbors(Z)[1])
    if keep_ids:
        return labels, neighbors, all_labels
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse, neighbors


def neighbor_information_score(estimator_or_labels, X, *, n_neighbors=10, n_components=128,
                               max_samples=10000, random_state=None):
    """Label-free score of one clustering: the mutual information between neighbours' clusters.

    Each row's ``n_neighbors`` nearest neighbours are found in ``X`` (the
    graph is symmetrized: an edge counts from both ends).  The score is the
    mutual information, in nats, between the cluster of one end of a random
    edge and the cluster of the other end:

    .. math:: I = H(c) - H(c_j \\mid c_i),

    where :math:`H(c)` is the entropy of the cluster sizes seen from the
    edges and :math:`H(c_j \\mid c_i)` the uncertainty left about a
    neighbour's cluster once a row's cluster is known.  It rewards clusters
    that neighbours share (the second term) and that are balanced (the
    first: merging two clusters lowers it), with no parameter to weigh the
    two.  It depends only on the labels and ``X``: not on ``lam``, the loss
    or the model.  Higher is better; at most :math:`\\log K` for K clusters.

    It is meant for comparing clusterings **with the same number of
    clusters** (``lam``, restarts, other settings): :math:`H(c)` grows with
    K, so it prefers more clusters.  Choose the number of clusters with
    :func:`select_n_clusters` (it uses :func:`validity_score`).

    Parameters
    ----------
    estimator_or_labels : fitted estimator with ``predict``, or array-like of shape (n_samples,)
        A fitted clusterer (its ``predict(X)`` gives the labels) or the
        cluster labels of the rows of ``X``.
    X : array-like of shape (n_samples, n_features)
        The data the clustering is judged on (standardized features, as
        given to the estimator).
    n_neighbors : int, default=10
        Neighbours per point.
    n_components : int or None, default=128
        Features wider than this are first reduced to that many principal
        components (randomized PCA), and the neighbours are searched there;
        None searches them in the features themselves (exact, but on wide
        features it costs more than a third of a fit).
    max_samples : int, default=10000
        Above this many rows, a random subset of this size is scored (the
        cost is then bounded whatever the size of ``X``).
    random_state : int, RandomState instance or None, default=None
        Seeds the row subset and the PCA; the score is deterministic without
        them (at most ``max_samples`` rows and at most ``n_components``
        features, or ``n_components=None``).  ``CollisionClustering.score``
        passes 0, so that settings are compared on the same graph.

    Returns
    -------
    score : float
        Mutual information in nats, in [0, log K].

    See Also
    --------
    consensus_scores : The criterion to prefer when several fits are available.
    validity_score : The modularity, used to choose the number of clusters.

    Notes
    -----
    **Why this score.** It is the single-fit score that
    ``CollisionClustering.score`` and
    :func:`skcce.metrics.make_validity_scorer` return.  On the grid of
    ``benchmarks/bench_model_selection.py`` (default fits over ``lam`` and
    seeds on sklearn digits, EfficientNet-Lite0 features of MNIST and of
    Fashion-MNIST, and MNIST pixels) it tracked accuracy better than
    :func:`validity_score` on average, without losing digits, but not
    uniformly well: ``docs/benchmarks/model_selection.md`` has the
    correlation per dataset and the other candidates measured.  The choice of
    this score, and of ``n_components=128``, were made on those four
    datasets: on the 1280-D CNN features the graph of a 128-component PCA
    tracked accuracy as well as the features' own graph (the
    ``neighbor_information_features`` row of the report; the differences
    are within the noise of the correlations) at about a quarter of the cost,
    while 50 components tracked it less well (``neighbor_information_pca``).

    **Cost.** One randomized PCA (when ``X`` has more than ``n_components``
    features) and one exact neighbour search on at most ``max_samples``
    rows of at most ``n_components`` dimensions; the benchmark reports it
    as a fraction of a default fit (table "Cost" of the report).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_blobs
    >>> from skcce.selection import neighbor_information_score
    >>> X, y = make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=0)
    >>> round(neighbor_information_score(y, X), 2)  # about log(3): balanced, few edges cut
    1.1
    >>> merged = np.where(y == 2, 1, y)  # two blobs merged: the balance term drops
    >>> round(neighbor_information_score(merged, X), 2)
    0.63
    >>> random = np.random.default_rng(0).integers(0, 3, size=300)
    >>> neighbor_information_score(random, X) < 0.05
    True
    """
    labels, neighbors = _neighbor_graph(estimator_or_labels, X, n_neighbors, n_components,
                                        max_samples, random_state, "neighbor_information_score")
    k = int(labels.max()) + 1
    joint = np.bincount((labels[:, None] * k + labels[neighbors]).ravel(), minlength=k * k)
    joint = joint.reshape(k, k).astype(np.float64)
    joint = joint + joint.T
    joint /= joint.sum()
    marginal = joint.sum(axis=1)
    nonzero = joint > 0
    expected = np.outer(marginal, marginal)
    return float(max((joint[nonzero] * np.log(joint[nonzero] / expected[nonzero])).sum(), 0.0))


def validity_score(estimator_or_labels, X, *, n_neighbors=10, n_components=50,
                   max_samples=10000, random_state=None):
    """Label-free validity of one clustering: its modularity on the neighbour graph of ``X``.

    ``X`` is reduced to ``n_components`` principal components and each row's
    ``n_neighbors`` nearest neighbours are found there.  The score is the
    fraction of neighbour pairs that share a cluster minus the fraction
    expected by chance for clusters of the same sizes,
    :math:`\\sum_k p_k^2` (Newman's modularity of the directed k-NN graph).
    It rewards clusters that follow the neighbourhoods of the data and
    penalizes merging clusters into large ones.  It depends only on the
    labels and ``X``: not on ``lam``, the loss or the model.  Higher is
    better; at most :math:`1 - 1/K` for K equal clusters.

    Parameters
    ----------
    estimator_or_labels : fitted estimator with ``predict``, or array-like of shape (n_samples,)
        A fitted clusterer (its ``predict(X)`` gives the labels) or the
        cluster labels of the rows of ``X``.
    X : array-like of shape (n_samples, n_features)
        The data the clustering is judged on (standardized features, as
        given to the estimator).
    n_neighbors : int, default=10
        Neighbours per point.
    n_components : int, default=50
        PCA dimensions of the neighbour search (all features when ``X`` has
        fewer).
    max_samples : int, default=10000
        Above this many rows, a random subset of this size is scored (the
        cost is then bounded whatever the size of ``X``).
    random_state : int, RandomState instance or None, default=None
        Seeds the PCA and the row subset.

    Returns
    -------
    score : float
        Modularity, in [-1, 1).

    See Also
    --------
    consensus_scores : The criterion to prefer when several fits are available.
    neighbor_information_score : The score for clusterings with the same number of clusters.

    Notes
    -----
    **Why this score, and its limits.** It is the score
    :func:`select_n_clusters` chooses the number of clusters by: its chance
    term :math:`\\sum_k p_k^2` penalizes merging without rewarding more
    clusters as much as :func:`neighbor_information_score` does.  On the
    grid of ``benchmarks/bench_model_selection.py`` (default fits on sklearn
    digits, EfficientNet-Lite0 features of MNIST and of Fashion-MNIST, and
    MNIST pixels) its choice of the number of clusters is in the table
    "Choosing the number of clusters" of
    ``docs/benchmarks/model_selection.md``.  Between clusterings with the
    same number of clusters it tracked accuracy on digits but only
    moderately on the other three datasets, less well than
    :func:`neighbor_information_score`, which ``CollisionClustering.score``
    uses for that reason; agreement between fits (:func:`consensus_scores`)
    tracked it better than both on three of the four datasets (as well as
    :func:`neighbor_information_score` on digits).  With the
    default 10 neighbours the score can prefer cutting a small, dense
    cluster in two over keeping it whole.

    **Cost.** One randomized PCA and one exact neighbour search on at most
    ``max_samples`` rows of ``n_components`` dimensions; the benchmark
    reports it as a fraction of a default fit.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_blobs
    >>> from skcce.selection import validity_score
    >>> X, y = make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=0)
    >>> round(validity_score(y, X, random_state=0), 3)
    0.666
    >>> random = np.random.default_rng(0).integers(0, 3, size=300)
    >>> validity_score(random, X, random_state=0) < 0.1
    True
    """
    n_components = _check_positive_int(n_components, "n_components")
    labels, neighbors = _neighbor_graph(estimator_or_labels, X, n_neighbors, n_components,
                                        max_samples, random_state, "validity_score")
    same = labels[neighbors] == labels[:, None]
    sizes = np.bincount(labels) / len(labels)
    return float(same.mean() - (sizes ** 2).sum())


def consensus_scores(labelings):
    """Each clustering's mean adjusted Rand index to the other clusterings of the same rows.

    Fits that land on the structure of the data tend to agree with each
    other, while poor fits fail in different ways; the fit that agrees most
    with the rest (the medoid) is the one to keep.  Use it to choose among
    ``n_init`` restarts, or among all fits of a grid of settings (every
    setting x seed), without labels.

    Parameters
    ----------
    labelings : sequence of array-like of shape (n_samples,)
        At least two clusterings of the same rows (label values need not
        match between them).

    Returns
    -------
    scores : ndarray of shape (n_labelings,)
        Mean ARI of each clustering to the others; higher is better.

    Notes
    -----
    Costs n(n-1)/2 ARI computations (linear in the number of rows), no fit.
    On the benchmark it was the candidate most correlated with accuracy on
    every dataset (``docs/benchmarks/model_selection.md``).

    Examples
    --------
    >>> from skcce.selection import consensus_scores
    >>> consensus_scores([[0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1]]).round(2).tolist()
    [0.25, 0.25, -0.5]
    """
    labelings = [column_or_1d(labels) for labels in labelings]
    if len(labelings) < 2:
        raise ValueError(f"consensus_scores needs at least 2 clusterings, got {len(labelings)}")
    check_consistent_length(*labelings)
    n = len(labelings)
    ari = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            ari[i, j] = ari[j, i] = adjusted_rand_score(labelings[i], labelings[j])
    return ari.sum(axis=1) / (n - 1)


def aligned_mean_proba(probas, reference=0):
    """Mean of soft clusterings of the same rows after matching their clusters to one of them.

    Cluster ids are arbitrary in each clustering: cluster 3 of one restart
    may be cluster 7 of another.  Each clustering's columns are permuted to
    match the ``reference`` clustering (the permutation that maximises the
    soft co-occurrence ``P_ref.T @ P``, solved by
    :func:`scipy.optimize.linear_sum_assignment`), then the aligned
    memberships are averaged.  Rows of the result stay on the simplex.

    Parameters
    ----------
    probas : sequence of array-like of shape (n_samples, n_clusters)
        Soft memberships (rows summing to one) of at least one clustering,
        with the same number of clusters.
    reference : int, default=0
        Index in ``probas`` of the clustering whose cluster ids the result
        keeps (e.g. the medoid of :func:`consensus_scores`).

    Returns
    -------
    mean : ndarray of shape (n_samples, n_clusters)
        Float64 average of the aligned memberships.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.selection import aligned_mean_proba
    >>> a = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> b = a[:, ::-1]  # the same clustering with its clusters swapped
    >>> aligned_mean_proba([a, b]).tolist()
    [[0.9, 0.1], [0.2, 0.8]]
    """
    from scipy.optimize import linear_sum_assignment

    probas = [check_array(p, dtype=np.float64) for p in probas]
    if not probas:
        raise ValueError("aligned_mean_proba needs at least one clustering")
    if len({p.shape for p in probas}) != 1:
        raise ValueError("every clustering in probas must have the same shape, got "
                         f"{sorted({p.shape for p in probas})}")
    if not (isinstance(reference, numbers.Integral) and -len(probas) <= reference < len(probas)):
        raise ValueError(f"reference must index probas (0..{len(probas) - 1}), got {reference!r}")
    ref = probas[reference]
    total = np.zeros_like(ref)
    for p in probas:
        rows, cols = linear_sum_assignment(ref.T @ p, maximize=True)
        total[:, rows] += p[:, cols]
    return total / len(probas)


def _drop_self(neighbors):
    """Remove each row's own index from its neighbour list (duplicates may put it anywhere)."""
    n, k = neighbors.shape
    is_self = neighbors == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True  # the row was not found: drop the farthest
    return neighbors[~is_self].reshape(n, k - 1)


@dataclass
class SelectionResult:
    """Outcome of :func:`select_n_clusters`.

    Parameters
    ----------
    n_clusters : int
        The chosen number of clusters (the best score).
    candidates : ndarray of shape (n_candidates,)
        The numbers of clusters tried, in the order given.
    scores : ndarray of shape (n_candidates,)
        The score of each candidate: the mean score of its restarts, or
        the mean pairwise ARI between them for ``scoring='stability'``.
    best_estimator : estimator
        The chosen candidate's fitted restart that agrees most with its
        other restarts (its only restart when ``n_init=1``).

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.selection import SelectionResult
    >>> res = SelectionResult(3, np.array([2, 3]), np.array([0.2, 0.5]), None)
    >>> res.n_clusters, float(res.scores.max())
    (3, 0.5)
    """

    n_clusters: int
    candidates: np.ndarray
    scores: np.ndarray
    best_estimator: object


def select_n_clusters(X, candidates, estimator=None, *, scoring="validity", n_init=1,
                      random_state=None, verbose=0):
    """Choose the number of clusters without labels: fit each candidate, keep the best score.

    Each candidate number of clusters is fitted ``n_init`` times from
    different seeds and scored:

    * ``scoring='validity'`` (default): the mean :func:`validity_score` of
      its restarts (the modularity of the clustering on the neighbour graph
      of ``X``; larger clusters are penalized by the chance term);
    * ``scoring='stability'``: the mean pairwise adjusted Rand index between
      its restarts (Lange, Roth, Braun and Buhmann 2004); needs ``n_init >= 2``;
    * a callable ``scoring(fitted_estimator, X) -> float``, averaged over
      the restarts.

    The candidate with the highest score is chosen.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Training data (standardized features).
    candidates : iterable of int
        Numbers of clusters to try (each >= 2).
    estimator : estimator with an ``n_clusters`` parameter, default=None
        Cloned and fitted ``n_init`` times per candidate; None means
        ``CollisionClustering()`` with its defaults.
    scoring : {'validity', 'stability'} or callable, default='validity'
        How a candidate is scored (higher is better).
    n_init : int, default=1
        Restarts per candidate.
    random_state : int, RandomState instance or None, default=None
        Seeds the restarts (when the estimator has ``random_state``).
    verbose : int, default=0
        > 0 shows a progress bar over the candidates.

    Returns
    -------
    result : SelectionResult
        The chosen ``n_clusters``, every candidate's score and the chosen
        fitted estimator.

    See Also
    --------
    merge_clusters : The number of clusters from one over-clustered fit.

    Notes
    -----
    The convergence warnings of the candidates' fits are gathered into one
    :class:`~sklearn.exceptions.ConvergenceWarning`, issued after the search,
    that names the candidates whose fits warned; other warnings pass through.

    The cost is ``n_init`` fits per candidate.  On the benchmark
    (``docs/benchmarks/model_selection.md``, default estimator, one seed per
    candidate) the validity score and stability both landed within 2 of the
    true number of classes on some datasets and not on others (table
    "Choosing the number of clusters"); :func:`merge_clusters` did so for
    most seeds from one fit with twice the clusters
    (``docs/benchmarks/merge.md``).  On small, well-separated blobs the
    validity score can prefer cutting a blob in two (10 neighbours see
    little of the cut) and stability does better there.

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> from sklearn.datasets import make_blobs
    >>> from skcce.selection import select_n_clusters
    >>> X, _ = make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=0)
    >>> result = select_n_clusters(X, [3, 4, 5], KMeans(n_init=1), scoring="stability",
    ...                            n_init=3, random_state=0)
    >>> result.n_clusters
    3
    """
    X = check_array(X, dtype=[np.float64, np.float32])
    try:
        candidates = np.array([_check_positive_int(k, "each candidate", minimum=2)
                               for k in candidates], dtype=np.int64)
    except TypeError as exc:
        raise TypeError(f"candidates must be an iterable of integers, got {candidates!r}") from exc
    if candidates.size == 0:
        raise ValueError("candidates is empty")
    n_init = _check_positive_int(n_init, "n_init")
    if scoring == "validity":
        def scoring(est, data):
            return validity_score(est, data, random_state=0)
    elif scoring == "stability":
        if n_init < 2:
            raise ValueError("scoring='stability' needs n_init >= 2")
        scoring = None
    elif not callable(scoring):
        raise ValueError(f"scoring must be 'validity', 'stability' or a callable, got {scoring!r}")
    if estimator is None:
        from skcce.cluster import CollisionClustering

        estimator = CollisionClustering()
    params = estimator.get_params()
    if "n_clusters" not in params:
        raise ValueError(f"{type(estimator).__name__} has no n_clusters parameter")
    rng = check_random_state(random_state)
    scores = np.empty(candidates.size)
    chosen = []
    unconverged = {}  # n_clusters -> the first ConvergenceWarning of its fits
    for i, k in enumerate(progress_bar(candidates, verbose=verbose, desc="n_clusters",
                                       leave=True)):
        fits, labelings = [], []
        for _ in range(n_init):
            est = clone(estimator).set_params(n_clusters=int(k))
            if "random_state" in params:
                est.set_params(random_state=rng.randint(np.iinfo(np.int32).max))
            with warnings.catch_warnings(record=True) as caught:
                # other warnings keep the caller's filters; they are re-issued below
                warnings.simplefilter("always", ConvergenceWarning)
                fits.append(est.fit(X))
                labelings.append(est.predict(X))
            _rewarn(caught, unconverged, int(k))
        agreement = consensus_scores(labelings) if n_init > 1 else np.zeros(1)
        if scoring is None:
            scores[i] = agreement.mean()
        else:
            scores[i] = np.mean([scoring(est, X) for est in fits])
        chosen.append(fits[int(np.argmax(agreement))])
    if unconverged:
        first = next(iter(unconverged.values()))
        warnings.warn(f"fits for {len(unconverged)} of {candidates.size} candidates warned of "
                      f"convergence (n_clusters = {', '.join(map(str, unconverged))}); "
                      f"the first said: {first}", ConvergenceWarning, stacklevel=2)
    best = int(np.argmax(scores))
    return SelectionResult(int(candidates[best]), candidates, scores, chosen[best])


def _rewarn(caught, unconverged, n_clusters):
    """Re-issue the warnings of one candidate's fit, keeping its ConvergenceWarnings for a summary.

    A search over many candidates would otherwise print one convergence
    warning per fit; :func:`select_n_clusters` gathers them into one.
    """
    for record in caught:
        if issubclass(record.category, ConvergenceWarning):
            unconverged.setdefault(n_clusters, str(record.message))
        else:
            warnings.warn_explicit(record.message, record.category, record.filename,
                                   record.lineno, source=record.source)


@dataclass
class MergeResult:
    """Outcome of :func:`merge_clusters`.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Merged cluster of every row of ``X``, in ``0 .. n_clusters - 1``.
    mapping : ndarray of shape (n_input_clusters,)
        ``mapping[c]`` is the merged cluster of input cluster ``c``.
    n_clusters : int
        Number of merged clusters.
    modularity : ndarray of shape (n_input_clusters + 1,)
        ``modularity[m]``: the modularity of the merge path's partition into
        ``m`` clusters, on the graph the merges were chosen on (NaN for the
        numbers of clusters the path did not visit).

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.selection import MergeResult
    >>> res = MergeResult(np.array([0, 0, 1]), np.array([0, 0, 1]), 2, np.full(4, np.nan))
    >>> proba = np.array([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9]])
    >>> res.merge_proba(proba).round(2).tolist()
    [[0.8, 0.2], [0.9, 0.1], [0.1, 0.9]]
    """

    labels: np.ndarray
    mapping: np.ndarray
    n_clusters: int
    modularity: np.ndarray

    def merge_proba(self, proba):
        """Memberships of the merged clusters: the columns of ``proba`` summed per merged cluster.

        Parameters
        ----------
        proba : array-like of shape (n_rows, n_input_clusters)
            Memberships of the input clusters (``predict_proba``).

        Returns
        -------
        merged : ndarray of shape (n_rows, n_clusters)
            Rows still sum to one when those of ``proba`` do.
        """
        proba = check_array(proba, dtype=[np.float64, np.float32])
        if proba.shape[1] != len(self.mapping):
            raise ValueError(f"proba has {proba.shape[1]} columns, the merge maps "
                             f"{len(self.mapping)} clusters")
        onehot = np.zeros((len(self.mapping), self.n_clusters), dtype=proba.dtype)
        onehot[np.arange(len(self.mapping)), self.mapping] = 1
        return proba @ onehot


def _merge_path(labels, neighbors, n_input, stop):
    """Greedy modularity merges of ``n_input`` clusters down to ``stop`` (no validation).

    The cluster-level graph ``E[a, b]`` is the fraction of neighbour pairs
    (row in ``a``, neighbour in ``b``), symmetrized, and ``p`` the cluster
    sizes: the modularity of a partition is ``sum_g E_gg - sum_g p_g^2``, as
    :func:`validity_score` computes it, and merging ``g`` and ``h`` changes it
    by ``2 (E_gh - p_g p_h)``. Returns the mapping after every merge (from
    ``n_input`` down to ``stop`` clusters) and the modularity of each.
    """
    pairs = labels[:, None] * n_input + labels[neighbors]
    E = np.bincount(pairs.ravel(), minlength=n_input * n_input).reshape(n_input, n_input)
    E = E.astype(np.float64)
    E = (E + E.T) / (2.0 * pairs.size)
    p = np.bincount(labels, minlength=n_input) / len(labels)
    mapping = np.arange(n_input)  # input cluster -> its group's row of E
    mappings, scores = {}, {}
    while True:
        m = len(p)
        mappings[m] = mapping.copy()
        scores[m] = float(np.trace(E) - (p ** 2).sum())
        if m <= stop:
            break
        gain = E - np.outer(p, p)
        np.fill_diagonal(gain, -np.inf)
        g, h = np.unravel_index(int(np.argmax(gain)), gain.shape)
        g, h = min(g, h), max(g, h)
        E[g] += E[h]
        E[:, g] += E[:, h]
        E = np.delete(np.delete(E, h, axis=0), h, axis=1)
        p[g] += p[h]
        p = np.delete(p, h)
        mapping[mapping == h] = g
        mapping[mapping > h] -= 1
    return mappings, scores


def merge_clusters(estimator_or_labels, X, n_clusters=None, *, n_neighbors=10, n_components=50,
                   max_samples=10000, random_state=None):
    """Merge the clusters of an over-clustered fit on the neighbour graph of ``X``.

    Fit with more clusters than you expect (say twice as many), then merge:
    starting from the fit's clusters, the two clusters whose merge raises
    the modularity of the clustering on the k-nearest-neighbour graph of
    ``X`` the most (the score of :func:`validity_score`) are joined, again
    and again. With ``n_clusters`` the merging stops there; without it the
    whole path down to 2 clusters is scored and the number of clusters with
    the highest modularity is kept: a choice of the number of clusters from
    a single fit, where :func:`select_n_clusters` fits every candidate.

    Parameters
    ----------
    estimator_or_labels : fitted estimator with ``predict``, or array-like of shape (n_samples,)
        A fitted clusterer (its ``predict(X)`` gives the labels; its
        ``n_clusters`` the number of input clusters when it has one) or
        non-negative integer cluster labels of the rows of ``X``.
    X : array-like of shape (n_samples, n_features)
        The data the clustering is merged on (standardized features, as
        given to the estimator).
    n_clusters : int or None, default=None
        Number of clusters to merge down to; None chooses it (the highest
        modularity along the merge path, from the input number down to 2).
    n_neighbors : int, default=10
        Neighbours per point.
    n_components : int or None, default=50
        PCA dimensions of the neighbour search (None or more than the
        features: the features themselves).
    max_samples : int, default=10000
        Above this many rows, the graph is built on a random subset of this
        size (the merges are then chosen there and applied to every row).
    random_state : int, RandomState instance or None, default=None
        Seeds the PCA and the row subset.

    Returns
    -------
    result : MergeResult
        The merged labels of every row, the mapping of the input clusters
        (apply it to ``predict_proba`` with :meth:`MergeResult.merge_proba`),
        the number of clusters and the modularity along the merge path.

    See Also
    --------
    select_n_clusters : One fit per candidate number of clusters.
    validity_score : The modularity the merges increase.

    Notes
    -----
    Clusters that no sampled row belongs to (empty ones of the input) have
    no edges and no size: merging them changes nothing, so they go where
    the merge ties put them. Like :func:`validity_score`, the modularity of
    a k-NN graph favours cutting clusters in low dimensions (few edges cross
    a cut through a 2-D blob), so on low-dimensional data the chosen number
    of clusters can be too large; on embeddings with tens of dimensions
    or more, neighbours inside a cluster are spread over it and a cut costs
    many edges. The measurement of over-clustering and merging
    against direct fits, and of the number of clusters it chooses, is
    ``benchmarks/bench_merge.py`` (``docs/benchmarks/merge.md``).
    **Cost:** the neighbour graph of :func:`validity_score` plus
    ``O(K^3)`` for ``K`` input clusters.

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> from sklearn.datasets import make_blobs
    >>> from skcce.selection import merge_clusters
    >>> X, y = make_blobs(n_samples=600, n_features=16, centers=3, random_state=0)
    >>> over = KMeans(n_clusters=9, n_init=1, random_state=0).fit(X)  # three times too many
    >>> res = merge_clusters(over, X, random_state=0)
    >>> res.n_clusters, res.mapping.shape
    (3, (9,))
    >>> res.modularity[2:].round(2).tolist()  # the path from 2 to 9 clusters peaks at 3
    [0.44, 0.67, 0.65, 0.63, 0.61, 0.6, 0.55, 0.5]
    >>> from skcce.metrics import clustering_accuracy
    >>> float(clustering_accuracy(y, res.labels))
    1.0
    """
    if n_clusters is not None:
        n_clusters = _check_positive_int(n_clusters, "n_clusters")
    sub_labels, neighbors, labels = _neighbor_graph(
        estimator_or_labels, X, n_neighbors, n_components, max_samples, random_state,
        "merge_clusters", keep_ids=True)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.mod(labels, 1) == 0):
            raise ValueError("merge_clusters needs integer cluster labels")
        labels, sub_labels = labels.astype(np.int64), sub_labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"merge_clusters needs non-negative cluster labels, got {labels.min()}")
    n_input = int(labels.max()) + 1
    declared = getattr(estimator_or_labels, "n_clusters", None)
    if isinstance(declared, numbers.Integral) and declared >= n_input:
        n_input = int(declared)
    if n_input < 2:
        raise ValueError(f"merge_clusters needs at least 2 input clusters, got {n_input}")
    if n_clusters is not None and n_clusters > n_input:
        raise ValueError(f"n_clusters={n_clusters} is more than the {n_input} input clusters")
    mappings, scores = _merge_path(sub_labels, neighbors, n_input,
                                   n_clusters if n_clusters is not None else 2)
    if n_clusters is None:
        n_clusters = max(scores, key=lambda m: (scores[m], -m))
    modularity = np.full(n_input + 1, np.nan)
    for m, q in scores.items():
        modularity[m] = q
    mapping = mappings[n_clusters]
    return MergeResult(mapping[labels], mapping, int(n_clusters), modularity)
