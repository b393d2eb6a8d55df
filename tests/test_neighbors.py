import importlib.util
import sys
import warnings

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from skcce import neighbors
from skcce.neighbors import augmentation_neighbors, check_neighbors, knn_indices


def _reference(X, k):
    d = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_matches_bruteforce(dtype, batch_size):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(53, 4)).astype(dtype)
    got = knn_indices(X, 5, batch_size=batch_size)
    assert got.shape == (53, 5)
    assert got.dtype == np.intp
    np.testing.assert_array_equal(got, _reference(X.astype(np.float64), 5))


def test_never_contains_self_and_chunking_is_invariant():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    full = knn_indices(X, 4, batch_size=200)
    chunked = knn_indices(X, 4, batch_size=13)
    np.testing.assert_array_equal(full, chunked)
    assert not (full == np.arange(200)[:, None]).any()


def test_exact_duplicates_do_not_return_self():
    X = np.array([[0.0, 0.0]] * 4 + [[5.0, 5.0]] * 3)
    got = knn_indices(X, 2)
    assert not (got == np.arange(7)[:, None]).any()
    # Each duplicate's neighbours are its copies.
    assert set(got[:4].ravel()) <= {0, 1, 2, 3}
    assert set(got[4:].ravel()) <= {4, 5, 6}
    # More duplicates than neighbours still gives k distinct non-self indices.
    got = knn_indices(np.zeros((6, 2)), 5)
    for i, row in enumerate(got):
        assert sorted(row.tolist()) == [j for j in range(6) if j != i]


def test_cosine_matches_sklearn_cosine_ranking():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 6)) * rng.uniform(0.1, 10, size=(60, 1))
    got = knn_indices(X, 3, metric="cosine", batch_size=17)
    nn = NearestNeighbors(n_neighbors=4, metric="cosine", algorithm="brute").fit(X)
    ref = nn.kneighbors(X, return_distance=False)[:, 1:]
    np.testing.assert_array_equal(got, ref)
    # Cosine ignores the norm of each row; euclidean does not.
    scaled = X * rng.uniform(0.1, 10, size=(60, 1))
    np.testing.assert_array_equal(knn_indices(scaled, 3, metric="cosine"), got)


def test_cosine_zero_rows_are_allowed():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.1], [0.0, 1.0]])
    got = knn_indices(X, 1, metric="cosine")
    assert got.shape == (4, 1)
    assert got[1, 0] == 2 and got[2, 0] == 1


def test_float32_input_is_not_upcast(monkeypatch):
    seen = {}
    original = NearestNeighbors.fit

    def spy(self, X, y=None):
        seen["dtype"] = X.dtype
        return original(self, X, y)

    monkeypatch.setattr(NearestNeighbors, "fit", spy)
    knn_indices(np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32), 2)
    assert seen["dtype"] == np.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_neighbors": 0}, "n_neighbors must be >= 1"),
        ({"n_neighbors": 10}, "smaller than n_samples"),
        ({"n_neighbors": 2.5}, "n_neighbors must be an int"),
        ({"n_neighbors": 2, "metric": "manhattan"}, "metric must be one of"),
        ({"n_neighbors": 2, "batch_size": 0}, "batch_size must be >= 1"),
        ({"n_neighbors": 2, "batch_size": 1.5}, "batch_size must be an int"),
    ],
)
def test_bad_parameters(kwargs, match):
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match=match):
        knn_indices(X, **kwargs)


def test_bad_input():
    X = np.random.default_rng(0).normal(size=(10, 2))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn_indices(X, 2)
    with pytest.raises(ValueError, match="2D array"):
        knn_indices(np.arange(10.0), 2)


# ---------------------------------------------------------------- augmentation_neighbors
def _blobs(n, d=16, n_blobs=8, seed=0, dtype=np.float32):
    """Gaussian blobs with a decaying spectrum, like embeddings (low intrinsic dimension)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4, size=(n_blobs, d))
    scales = np.arange(1, d + 1) ** -1.0
    X = centers[rng.integers(n_blobs, size=n)] + rng.normal(size=(n, d)) * scales
    return X.astype(dtype)


def _recall(got, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, truth, strict=True)])


def _check_graph(graph, n, k):
    assert graph.shape == (n, k)
    assert graph.dtype == np.int64
    assert graph.min() >= 0 and graph.max() < n
    assert not (graph == np.arange(n)[:, None]).any()
    # k distinct neighbours per row
    assert (np.diff(np.sort(graph, axis=1), axis=1) > 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_augmentation_neighbors_small_data_is_exact(dtype):
    X = _blobs(150, dtype=dtype)
    got = augmentation_neighbors(X, 4)
    _check_graph(got, 150, 4)
    np.testing.assert_array_equal(got, _reference(X.astype(np.float64), 4))
    np.testing.assert_array_equal(augmentation_neighbors(X, 4, algorithm="exact"), got)


@pytest.mark.parametrize("algorithm", ["faiss", "nndescent"])
def test_approximate_graph_recall_against_exact(algorithm):
    pytest.importorskip("faiss" if algorithm == "faiss" else "pynndescent")
    X = _blobs(3000)
    truth = knn_indices(X, 5)
    got = augmentation_neighbors(X, 5, algorithm=algorithm, random_state=0)
    _check_graph(got, 3000, 5)
    assert _recall(got, truth) >= 0.95
    again = augmentation_neighbors(X, 5, algorithm=algorithm, random_state=0)
    np.testing.assert_array_equal(got, again)


def test_faiss_float64_memmap_is_read_in_chunks(tmp_path):
    pytest.importorskip("faiss")
    import tracemalloc

    X = _blobs(40_000, d=64, dtype=np.float64)
    path = tmp_path / "X.dat"
    X.tofile(path)
    mm = np.memmap(path, dtype=np.float64, mode="r", shape=X.shape)
    tracemalloc.start()
    try:
        got = augmentation_neighbors(mm, 3, algorithm="faiss")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _check_graph(got, 40_000, 3)
    # no float32 (10 MB) or float64 (20 MB) copy of the whole array in numpy: chunks,
    # the IVF training sample (2 * 40 * sqrt(n) rows) and the graph itself
    assert peak < 0.5 * X.nbytes, peak
    rows = np.arange(500)
    truth = neighbors._drop_self(
        NearestNeighbors(n_neighbors=4).fit(X).kneighbors(X[rows], return_distance=False), rows)
    assert _recall(got[rows], truth) >= 0.9


@pytest.fixture
def searches(monkeypatch):
    """Replace both approximate searches by recorders that return valid candidates."""
    calls = []

    def recorder(name):
        def search(X, k, random_state, verbose):
            calls.append(name)
            return np.asarray(knn_indices(X, k + 1), dtype=np.int64)  # k + 1 candidates
        return search

    monkeypatch.setattr(neighbors, "_faiss_knn", recorder("faiss"))
    monkeypatch.setattr(neighbors, "_nndescent_knn", recorder("nndescent"))
    return calls


def test_auto_rule(monkeypatch, searches):
    X = _blobs(300)
    monkeypatch.setattr(neighbors, "EXACT_MAX_SAMPLES", 300)
    monkeypatch.setattr(neighbors, "_installed", lambda name: True)
    np.testing.assert_array_equal(augmentation_neighbors(X, 3), _reference(X, 3))
    assert searches == []
    monkeypatch.setattr(neighbors, "EXACT_MAX_SAMPLES", 299)
    _check_graph(augmentation_neighbors(X, 3), 300, 3)
    assert searches == [neighbors._CPU_AUTO_ORDER[0]]
    if importlib.util.find_spec("faiss") is not None:  # the GPU check imports faiss
        monkeypatch.setattr(neighbors, "_faiss_gpu", lambda faiss: True)
        augmentation_neighbors(X, 3)
        assert searches[-1] == "faiss"
    assert "exact search up to 299 rows" in neighbors._auto_rule()


@pytest.mark.parametrize("available", ["faiss", "nndescent"])
def test_auto_falls_back_with_a_warning(monkeypatch, searches, available):
    X = _blobs(300)
    monkeypatch.setattr(neighbors, "EXACT_MAX_SAMPLES", 100)
    monkeypatch.setattr(neighbors, "_CPU_AUTO_ORDER", ("nndescent", "faiss"))
    monkeypatch.setattr(neighbors, "_installed", lambda name: name == available)
    if available == "nndescent":
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the first choice: no warning
            got = augmentation_neighbors(X, 3)
    else:
        with pytest.warns(UserWarning, match="pynndescent is not installed.*uses faiss"):
            got = augmentation_neighbors(X, 3)
    assert searches == [available]
    _check_graph(got, 300, 3)
    monkeypatch.setattr(neighbors, "_installed", lambda name: False)
    with pytest.warns(UserWarning, match="searched exactly.*skcce\\[scale\\]"):
        got = augmentation_neighbors(X, 3)
    np.testing.assert_array_equal(got, _reference(X, 3))
    assert searches == [available]


@pytest.mark.parametrize("algorithm, package", [("faiss", "faiss-cpu"),
                                                ("nndescent", "pynndescent")])
def test_missing_library_says_what_to_install(monkeypatch, algorithm, package):
    monkeypatch.setitem(sys.modules, neighbors._MODULES[algorithm], None)  # import fails
    with pytest.raises(ImportError, match=f"pip install {package}"):
        augmentation_neighbors(_blobs(50), 2, algorithm=algorithm)


def test_faiss_takes_the_gpu_index_when_available(monkeypatch):
    faiss = pytest.importorskip("faiss")
    moved = []

    class FakeGpuFaiss:
        """faiss with GPU support: the 'GPU' index is the CPU one, moved by index_cpu_to_gpu."""

        def __getattr__(self, name):
            return getattr(faiss, name)

        StandardGpuResources = object

        @staticmethod
        def get_num_gpus():
            return 1

        @staticmethod
        def index_cpu_to_gpu(resources, device, index):
            moved.append((device, type(index).__name__))
            return index

    monkeypatch.setattr(neighbors, "_import", lambda name: FakeGpuFaiss())
    X = _blobs(2000)
    got = augmentation_neighbors(X, 5, algorithm="faiss", random_state=0)
    assert moved == [(0, "IndexIVFFlat")]
    _check_graph(got, 2000, 5)
    assert _recall(got, knn_indices(X, 5)) >= 0.9


def test_missing_approximate_neighbours_are_searched_exactly():
    X = _blobs(60)
    truth = np.asarray(knn_indices(X, 4), dtype=np.int64)
    candidates = np.hstack([np.arange(60)[:, None], truth])  # self first, as faiss returns
    candidates[[3, 17], 2:] = -1  # a search that found too few candidates for two rows
    got = neighbors._complete(X, candidates, 4)
    _check_graph(got, 60, 4)
    np.testing.assert_array_equal(got, truth)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_neighbors": 0}, "n_neighbors must be >= 1"),
        ({"n_neighbors": 10}, "smaller than n_samples"),
        ({"n_neighbors": 2, "algorithm": "annoy"}, "algorithm must be one of"),
        ({"n_neighbors": 2, "verbose": -1}, "verbose must be >= 0"),
    ],
)
def test_augmentation_neighbors_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        augmentation_neighbors(_blobs(10), **kwargs)


def test_progress_bars_only_when_verbose(capsys):
    pytest.importorskip("faiss")
    X = _blobs(500)
    augmentation_neighbors(X, 2, algorithm="faiss")
    assert capsys.readouterr().err == ""
    augmentation_neighbors(X, 2, algorithm="faiss", verbose=1)
    assert "faiss search" in capsys.readouterr().err


# ---------------------------------------------------------------------- check_neighbors
def test_check_neighbors_accepts_a_valid_graph():
    graph = np.array([[1, 2], [2, 0], [0, 1]], dtype=np.int32)
    got = check_neighbors(graph, 3)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, graph)
    same = np.array([[1], [0]], dtype=np.int64)
    assert check_neighbors(same, 2) is same  # no copy when already int64


@pytest.mark.parametrize(
    "graph, n_samples, match",
    [
        ([1, 0], 2, "2-D array"),
        ([[1], [0]], 3, "has 2 rows but the data has 3 samples"),
        (np.empty((2, 0), dtype=int), 2, "at least one neighbour"),
        ([[1.0], [0.0]], 2, "integer row ids, got dtype float64"),
        ([[1], [2]], 2, r"neighbors\[1\] holds id 2, outside \[0, 2\)"),
        ([[1], [-1]], 2, "-1 marks a missing neighbour"),
        ([[1], [1]], 2, r"neighbors\[1\] lists sample 1 as its own neighbour"),
        ([[1], [0]], 0, "n_samples must be >= 1"),
    ],
)
def test_check_neighbors_errors(graph, n_samples, match):
    with pytest.raises(ValueError, match=match):
        check_neighbors(graph, n_samples)
