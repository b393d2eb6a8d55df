import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from skcce.neighbors import knn_indices


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


def test_blocks_search_within_random_blocks():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(101, 3))
    got = knn_indices(X, 4, block_size=30, random_state=0)
    assert got.shape == (101, 4)
    assert not (got == np.arange(101)[:, None]).any()
    # 4 blocks of 25-26 rows: each row's neighbours share its block, and within the
    # block they are the exact nearest ones.
    blocks = np.array_split(np.random.RandomState(0).permutation(101), 4)
    for rows in blocks:
        assert set(got[rows].ravel()) <= set(rows.tolist())
        np.testing.assert_array_equal(got[rows], rows[_reference(X[rows], 4)])
    np.testing.assert_array_equal(got, knn_indices(X, 4, block_size=30, random_state=0))
    # A block as large as the data is the exact search.
    np.testing.assert_array_equal(knn_indices(X, 4, block_size=101), _reference(X, 4))


def test_blocks_too_small():
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="too few"):
        knn_indices(X, 5, block_size=4)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        knn_indices(X, 2, block_size=0)


def test_augmentation_neighbors_exact_then_approximate():
    from skcce.neighbors import augmentation_neighbors

    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 10)).astype(np.float32)
    np.testing.assert_array_equal(augmentation_neighbors(X, 3), _reference(X, 3))
    approx = augmentation_neighbors(X, 3, max_exact_samples=50, n_components=4, random_state=0)
    assert approx.shape == (120, 3)
    assert not (approx == np.arange(120)[:, None]).any()
    again = augmentation_neighbors(X, 3, max_exact_samples=50, n_components=4, random_state=0)
    np.testing.assert_array_equal(approx, again)
    # Well separated groups keep their neighbours inside the group.
    centers = rng.normal(scale=50, size=(3, 10))
    labels = np.repeat(np.arange(3), 60)
    Xg = centers[labels] + rng.normal(size=(180, 10))
    nb = augmentation_neighbors(Xg, 4, max_exact_samples=70, n_components=3, random_state=1)
    assert (labels[nb] == labels[:, None]).all()
