"""Nearest-neighbour graphs for feature-space self-augmentation.

A point's nearest neighbours in a good feature space usually share its class,
so they serve as the "augmentations" of a feature vector: the estimator
trains on the prediction of a point together with that of a random
neighbour (cf. the expectation over augmentations in section 5.2 of the
paper, and SCAN's neighbour-consistency term, which is a collision
cross-entropy between neighbours' predictions).

The graph is computed once per fit, in the space of the features given.
Small inputs get the exact graph (scikit-learn's
:class:`~sklearn.neighbors.NearestNeighbors`, one chunk of query rows at a
time); large ones an approximate graph from a maintained library:
pynndescent on CPU, faiss on a GPU (``faiss-gpu``; ``faiss-cpu`` works too).
Both are optional dependencies, imported only when used (``pip install
"skcce[scale]"`` installs them). ``benchmarks/bench_neighbors.py`` measures
the recall and time of each choice (``docs/benchmarks/neighbors.md``): on
CPU, pynndescent reached a higher recall than faiss's IVF-Flat index in less
time at 70,000 and 1,000,000 rows.
"""

from __future__ import annotations

import importlib.util
import logging
import numbers
import warnings

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array

from skcce._progress import progress_bar

__all__ = ["knn_indices", "augmentation_neighbors", "check_neighbors"]

logger = logging.getLogger(__name__)

_METRICS = ("euclidean", "cosine")
ALGORITHMS = ("auto", "exact", "faiss", "nndescent")

# 'auto' searches exactly up to this many rows: the graph then takes seconds,
# and results on small data do not depend on an optional library.
EXACT_MAX_SAMPLES = 20_000
# Libraries 'auto' tries beyond EXACT_MAX_SAMPLES on CPU, best first. With a
# GPU build of faiss and a CUDA device, faiss comes first. Measured in
# docs/benchmarks/neighbors.md (benchmarks/bench_neighbors.py).
_CPU_AUTO_ORDER = ("nndescent", "faiss")
_INSTALL = {
    "faiss": "pip install faiss-cpu (or faiss-gpu on a CUDA machine)",
    "nndescent": "pip install pynndescent",
}
_MODULES = {"faiss": "faiss", "nndescent": "pynndescent"}

# IVF-Flat settings of the faiss index (CPU and GPU alike): sqrt-many lists
# times this factor, lists probed per query, k-means training rows per list
# (faiss asks for at least 39) and iterations. Chosen on the measurements of
# benchmarks/bench_neighbors.py (docs/benchmarks/neighbors.md) for
# recall@5 >= 0.9 at 70k and 1e6 rows in the least time.
_IVF_LISTS_PER_SQRT_N = 2.0
_IVF_NPROBE = 8
_IVF_TRAIN_PER_LIST = 40
_IVF_NITER = 10
_CHUNK = 4096


def _drop_self(indices, rows):
    """Remove each row's own index from its ``k + 1`` neighbours.

    No input validation. With duplicated points the query row need not come
    first among its neighbours, so the self index is looked up; a row whose
    self index is absent (more than ``k`` exact duplicates, or an
    approximate search that missed it) loses its last neighbour instead.
    """
    n_rows, k_plus_one = indices.shape
    is_self = indices == rows[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, k_plus_one - 1] = True
    # Exactly one True per row: keep the other k entries in their order.
    first = np.argmax(is_self, axis=1)
    is_self[:] = False
    is_self[np.arange(n_rows), first] = True
    return indices[~is_self].reshape(n_rows, k_plus_one - 1)


def _exact_knn(X, n_neighbors, batch_size, n_jobs, verbose=0):
    """Exact neighbours of every row among all rows, queried in chunks. No input validation."""
    n_samples = X.shape[0]
    nn = NearestNeighbors(n_neighbors=n_neighbors + 1, n_jobs=n_jobs).fit(X)
    out = np.empty((n_samples, n_neighbors), dtype=np.intp)
    starts = range(0, n_samples, batch_size)
    for start in progress_bar(starts, verbose=verbose, desc="exact neighbours", unit="chunk"):
        stop = min(start + batch_size, n_samples)
        indices = nn.kneighbors(X[start:stop], return_distance=False)
        out[start:stop] = _drop_self(indices, np.arange(start, stop))
    return out


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def _check_n_neighbors(n_neighbors, n_samples):
    _check_int("n_neighbors", n_neighbors, 1)
    if n_neighbors >= n_samples:
        raise ValueError(
            f"n_neighbors={n_neighbors} must be smaller than n_samples={n_samples} "
            "(a point is never its own neighbour)"
        )


def knn_indices(X, n_neighbors, *, metric="euclidean", batch_size=4096, n_jobs=None):
    """Exact indices of each point's nearest neighbours, the point itself excluded.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Feature vectors. float32 input is kept in float32.
    n_neighbors : int
        Number of neighbours per point, ``1 <= n_neighbors < n_samples``.
    metric : {'euclidean', 'cosine'}, default='euclidean'
        Distance. ``'cosine'`` ranks by the angle between vectors; it is
        computed as the euclidean distance between L2-normalised rows, which
        gives the same order. Zero rows are left as they are.
    batch_size : int, default=4096
        Number of query rows per chunk. Memory besides the result is about
        ``batch_size * n_samples`` distances for brute-force search.
    n_jobs : int, default=None
        Parallel jobs for :class:`~sklearn.neighbors.NearestNeighbors`
        (``None`` means 1 unless in a joblib context).

    Returns
    -------
    indices : ndarray of shape (n_samples, n_neighbors), dtype=intp
        ``indices[i]`` lists the neighbours of ``X[i]``, nearest first.
        ``i`` never appears in its own row.

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array, or a parameter is out of range.

    See Also
    --------
    augmentation_neighbors : The graph the estimators use, approximate on large data.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.neighbors import knn_indices
    >>> X = np.array([[0.0], [1.0], [10.0], [11.5]])
    >>> knn_indices(X, 1).ravel().tolist()
    [1, 0, 3, 2]
    >>> knn_indices(X, 2).tolist()
    [[1, 2], [0, 2], [3, 1], [2, 1]]
    """
    X = check_array(X, dtype=[np.float64, np.float32], ensure_min_samples=2)
    _check_n_neighbors(n_neighbors, X.shape[0])
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    _check_int("batch_size", batch_size, 1)
    if metric == "cosine":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(norms > 0, norms, 1).astype(X.dtype, copy=False)
    return _exact_knn(X, n_neighbors, batch_size, n_jobs)


def _import(name):
    """Import the optional library behind ``algorithm=name``, or say how to install it."""
    module = _MODULES[name]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"algorithm={name!r} needs the optional package {module!r}, which is not "
            f"installed: {_INSTALL[name]}, or pip install \"skcce[scale]\" for both "
            "neighbour-search libraries"
        ) from exc


def _installed(name):
    return importlib.util.find_spec(_MODULES[name]) is not None


def _auto_order():
    """Libraries 'auto' tries beyond ``EXACT_MAX_SAMPLES`` rows, best first."""
    if _installed("faiss") and _faiss_gpu(importlib.import_module("faiss")):
        return ("faiss",) + tuple(name for name in _CPU_AUTO_ORDER if name != "faiss")
    return _CPU_AUTO_ORDER


def _auto_rule():
    """What ``algorithm='auto'`` does, in words (for reports)."""
    first, second = _CPU_AUTO_ORDER
    return (f"exact search up to {EXACT_MAX_SAMPLES:,} rows; beyond, faiss on a GPU "
            f"(faiss-gpu and CUDA), else {first} on CPU, else {second} if {first} is not "
            "installed, else exact with a warning")


def _resolve_algorithm(algorithm, n_samples):
    """The search 'auto' stands for on ``n_samples`` rows, with the installed libraries."""
    if algorithm != "auto":
        return algorithm
    if n_samples <= EXACT_MAX_SAMPLES:
        return "exact"
    order = _auto_order()
    for name in order:
        if _installed(name):
            if name != order[0]:
                warnings.warn(
                    f"{_MODULES[order[0]]} is not installed; the neighbour graph of "
                    f"{n_samples} rows uses {name} instead ({_INSTALL[order[0]]} for the "
                    "faster default)", UserWarning, stacklevel=3)
            return name
    warnings.warn(
        f"no approximate neighbour-search library is installed: the neighbour graph of "
        f"{n_samples} rows is searched exactly, in O(n_samples**2) time. Install one with "
        "pip install \"skcce[scale]\" (faiss-cpu and pynndescent)",
        UserWarning, stacklevel=3)
    return "exact"


def _chunks(X, dtype=np.float32):
    """Contiguous ``dtype`` copies of consecutive row chunks of ``X`` (a memmap stays on disk)."""
    for start in range(0, X.shape[0], _CHUNK):
        stop = min(start + _CHUNK, X.shape[0])
        yield start, stop, np.ascontiguousarray(X[start:stop], dtype=dtype)


def _faiss_gpu(faiss):
    """True when this faiss build has GPU support and sees a CUDA device."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return (hasattr(faiss, "StandardGpuResources") and get_num_gpus is not None
            and get_num_gpus() > 0)


def _faiss_index(faiss, X, rng, verbose):
    """A trained faiss IVF-Flat index holding the rows of ``X``, on the GPU when available.

    No input validation. Rows are added one float32 chunk at a time.
    """
    n_samples, n_features = X.shape
    nlist = int(max(1, min(_IVF_LISTS_PER_SQRT_N * np.sqrt(n_samples),
                           n_samples // _IVF_TRAIN_PER_LIST)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(n_features), n_features, nlist)
    index.cp.seed = int(rng.randint(2**31 - 1))
    index.cp.niter = _IVF_NITER
    index.cp.max_points_per_centroid = _IVF_TRAIN_PER_LIST
    n_train = min(n_samples, nlist * _IVF_TRAIN_PER_LIST)
    rows = np.sort(rng.choice(n_samples, n_train, replace=False))
    sample = np.empty((n_train, n_features), dtype=np.float32)
    for start in range(0, n_train, _CHUNK):  # gathered in chunks: no float64 copy
        sample[start:start + _CHUNK] = X[rows[start:start + _CHUNK]]
    index.train(sample)
    del sample
    index.nprobe = min(_IVF_NPROBE, nlist)
    if _faiss_gpu(faiss):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        index.nprobe = min(_IVF_NPROBE, nlist)
    total = -(-n_samples // _CHUNK)
    for _, _, chunk in progress_bar(_chunks(X), verbose=verbose, desc="faiss index",
                                     total=total, unit="chunk"):
        index.add(chunk)
    return index


def _faiss_knn(X, n_neighbors, random_state, verbose):
    """Approximate neighbours from a faiss index. No input validation."""
    faiss = _import("faiss")
    index = _faiss_index(faiss, X, check_random_state(random_state), verbose)
    out = np.empty((X.shape[0], n_neighbors + 1), dtype=np.int64)
    total = -(-X.shape[0] // _CHUNK)
    for start, stop, chunk in progress_bar(_chunks(X), verbose=verbose,
                                                desc="faiss search", total=total, unit="chunk"):
        out[start:stop] = index.search(chunk, n_neighbors + 1)[1]
    return out


def _nndescent_knn(X, n_neighbors, random_state, verbose):
    """Approximate neighbours from pynndescent's NN-descent graph. No input validation."""
    pynndescent = _import("nndescent")
    seed = check_random_state(random_state).randint(2**31 - 1)
    index = pynndescent.NNDescent(X, n_neighbors=max(n_neighbors + 1, 15), random_state=seed,
                                  low_memory=True, compressed=True, verbose=verbose > 1)
    return np.asarray(index.neighbor_graph[0][:, : n_neighbors + 1], dtype=np.int64)


def _complete(X, indices, n_neighbors):
    """Drop self from ``k + 1`` candidates; rows with missing (-1) ones are searched exactly.

    An approximate index may return fewer than ``k + 1`` candidates for a
    row (faiss pads with -1); those rows, rare in practice, get their exact
    neighbours, so the graph always has ``n_neighbors`` valid, distinct ids.
    """
    n_samples = X.shape[0]
    incomplete = np.flatnonzero((indices < 0).any(axis=1))
    if len(incomplete):
        logger.info("%d rows with missing approximate neighbours searched exactly",
                    len(incomplete))
        nn = NearestNeighbors(n_neighbors=n_neighbors + 1, algorithm="brute").fit(X)
        indices[incomplete] = nn.kneighbors(X[incomplete], return_distance=False)
    return _drop_self(indices, np.arange(n_samples)).astype(np.int64, copy=False)


def augmentation_neighbors(X, n_neighbors, *, algorithm="auto", random_state=None, verbose=0):
    """Find the neighbours for feature-space self-augmentation, exact or approximate.

    The euclidean nearest neighbours of each row of ``X`` among all rows, in
    the space of ``X`` itself (no projection). Exact search costs
    O(n_samples**2 * n_features), so beyond ``EXACT_MAX_SAMPLES`` (20,000)
    rows ``'auto'`` uses an approximate nearest-neighbour library instead.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Feature vectors (standardized, as for the estimator). A
        :class:`numpy.memmap` is read in chunks of rows; float64 rows are
        converted to float32 one chunk at a time for the approximate
        searches.
    n_neighbors : int
        Neighbours per point, ``1 <= n_neighbors < n_samples``.
    algorithm : {'auto', 'exact', 'faiss', 'nndescent'}, default='auto'
        - ``'exact'``: brute-force or tree search with scikit-learn's
          :class:`~sklearn.neighbors.NearestNeighbors`, in chunks of rows.
        - ``'faiss'``: a faiss IVF-Flat index (k-means cells, about
          ``2 * sqrt(n_samples)`` of them, 8 probed per query), on the GPU
          with ``faiss-gpu`` and a CUDA device. The index holds a float32
          copy of ``X`` while the graph is built.
        - ``'nndescent'``: pynndescent's nearest-neighbour descent (its
          Numba code compiles on first use in a process, which takes tens
          of seconds once).
        - ``'auto'``: ``'exact'`` up to 20,000 rows. Beyond, ``'faiss'``
          when faiss has GPU support and sees a CUDA device, else
          ``'nndescent'`` (faster and more accurate than faiss on CPU in
          ``docs/benchmarks/neighbors.md``); the other library if that one
          is not installed, with a warning; ``'exact'`` with a warning if
          neither is.
    random_state : int, RandomState instance or None, default=None
        Seeds the approximate searches (faiss's k-means training sample and
        initialisation, NN-descent's initialisation).
    verbose : int, default=0
        Above 0, progress bars over the chunks of rows.

    Returns
    -------
    indices : ndarray of shape (n_samples, n_neighbors), dtype=int64
        Neighbour ids of each row, nearest first, never the row itself.

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-D array, or a parameter is out of range.
    ImportError
        If ``algorithm`` names a library that is not installed (the message
        says what to install).

    See Also
    --------
    check_neighbors : Validate a neighbour graph computed elsewhere.
    knn_indices : The exact graph, with a cosine option.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.neighbors import augmentation_neighbors, knn_indices
    >>> X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    >>> exact = augmentation_neighbors(X, 3)
    >>> exact.shape, exact.dtype.name
    ((300, 3), 'int64')
    >>> bool((exact == knn_indices(X, 3)).all())
    True
    """
    X = check_array(X, dtype=[np.float64, np.float32], ensure_min_samples=2)
    n_samples = X.shape[0]
    _check_n_neighbors(n_neighbors, n_samples)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    _check_int("verbose", verbose, 0)
    algorithm = _resolve_algorithm(algorithm, n_samples)
    logger.info("neighbour graph of %d rows, %d neighbours: %s", n_samples, n_neighbors,
                algorithm)
    if algorithm == "exact":
        return _exact_knn(X, n_neighbors, 4096, None, verbose).astype(np.int64, copy=False)
    search = _faiss_knn if algorithm == "faiss" else _nndescent_knn
    return _complete(X, search(X, n_neighbors, random_state, verbose), n_neighbors)


def check_neighbors(neighbors, n_samples):
    """Validate a precomputed neighbour graph.

    For users who already have the graph of their data (from their own
    search, or saved from an earlier fit).

    Parameters
    ----------
    neighbors : array-like of shape (n_samples, n_neighbors)
        Integer row ids: ``neighbors[i]`` lists neighbours of sample ``i``,
        in ``[0, n_samples)``, never ``i`` itself.
    n_samples : int
        Number of samples of the data the graph belongs to.

    Returns
    -------
    neighbors : ndarray of shape (n_samples, n_neighbors), dtype=int64
        The graph as an int64 array (a copy only when the input is not
        already one).

    Raises
    ------
    ValueError
        If the graph does not have one row per sample, holds no neighbour,
        holds non-integer values, ids out of range, or lists a sample as its
        own neighbour; the message names the first offending row.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.neighbors import check_neighbors
    >>> check_neighbors([[1, 2], [0, 2], [1, 0]], 3).dtype.name
    'int64'
    >>> check_neighbors([[1], [1]], 2)
    Traceback (most recent call last):
    ...
    ValueError: neighbors[1] lists sample 1 as its own neighbour; ...
    """
    _check_int("n_samples", n_samples, 1)
    graph = np.asarray(neighbors)
    if graph.ndim != 2:
        raise ValueError(f"neighbors must be a 2-D array of shape (n_samples, n_neighbors), got "
                         f"an array of shape {graph.shape}")
    if graph.shape[0] != n_samples:
        raise ValueError(f"neighbors has {graph.shape[0]} rows but the data has {n_samples} "
                         "samples: give one row of neighbour ids per sample")
    if graph.shape[1] < 1:
        raise ValueError("neighbors has no columns: give at least one neighbour per sample")
    if graph.dtype.kind not in "iu":
        raise ValueError(f"neighbors must hold integer row ids, got dtype {graph.dtype} "
                         "(convert with neighbors.astype(np.int64) if the values are whole)")
    bad = np.flatnonzero(((graph < 0) | (graph >= n_samples)).any(axis=1))
    if len(bad):
        row = graph[bad[0]]
        value = row[(row < 0) | (row >= n_samples)][0]
        hint = " (-1 marks a missing neighbour in faiss results)" if value == -1 else ""
        raise ValueError(f"neighbors[{bad[0]}] holds id {value}, outside [0, {n_samples}) "
                         f"for {n_samples} samples{hint}")
    own = np.flatnonzero((graph == np.arange(n_samples)[:, None]).any(axis=1))
    if len(own):
        raise ValueError(f"neighbors[{own[0]}] lists sample {own[0]} as its own neighbour; a "
                         "sample's neighbours must be other samples")
    return graph.astype(np.int64, copy=False)
