import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler

from skcce import CollisionClustering
from skcce.metrics import make_validity_scorer
from skcce.selection import (
    SelectionResult,
    consensus_scores,
    merge_clusters,
    neighbor_agreement,
    neighbor_information_score,
    select_n_clusters,
    validity_score,
)


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(n_samples=300, centers=3, cluster_std=0.5, random_state=0)


def test_perfect_clustering_beats_random_labels(blobs):
    X, y = blobs
    random = np.random.default_rng(0).integers(0, 3, size=len(y))
    perfect = validity_score(y, X, random_state=0)
    # modularity of three equal, separated clusters on a k-NN graph: 1 - 3 * (1/3) ** 2
    assert perfect == pytest.approx(2 / 3, abs=1e-3)
    assert abs(validity_score(random, X, random_state=0)) < 0.05


def test_score_is_invariant_to_relabelling(blobs):
    X, y = blobs
    assert validity_score((y + 1) % 3, X, random_state=0) == validity_score(y, X, random_state=0)


def test_merging_blobs_scores_lower(blobs):
    X, y = blobs
    merged = np.where(y == 2, 1, y)
    # every neighbour pair still agrees, but the chance term grows: 1 - (1/9 + 4/9)
    assert validity_score(merged, X, random_state=0) == pytest.approx(4 / 9, abs=1e-3)


def test_information_of_separated_balanced_blobs_is_log_k(blobs):
    X, y = blobs
    # three equal blobs that few neighbour pairs cross: I = H(c) - H(c_j | c_i) ~ log 3
    assert neighbor_information_score(y, X) == pytest.approx(np.log(3), abs=0.01)
    random = np.random.default_rng(0).integers(0, 3, size=len(y))
    assert 0 <= neighbor_information_score(random, X) < 0.01


def test_information_of_merged_blobs_is_the_entropy_of_their_sizes(blobs):
    X, y = blobs
    merged = np.where(y == 2, 1, y)
    # every neighbour pair still agrees; what is left is the entropy of sizes (1/3, 2/3)
    sizes = np.array([1 / 3, 2 / 3])
    assert neighbor_information_score(merged, X) == pytest.approx(-(sizes * np.log(sizes)).sum(),
                                                                  abs=0.01)
    assert neighbor_information_score(merged, X) < neighbor_information_score(y, X)


def test_information_ranks_a_good_clustering_above_bad_ones_with_the_same_k():
    X, y = make_blobs(n_samples=400, centers=4, cluster_std=0.6, random_state=1)
    good = KMeans(4, n_init=10, random_state=0).fit_predict(X)
    assert adjusted_rand_score(y, good) > 0.95
    # a blob cut in two and two blobs merged: still four clusters
    split_merge = y.copy()
    split_merge[y == 1] = 0
    first = np.flatnonzero(y == 2)
    split_merge[first[X[first, 0] > np.median(X[first, 0])]] = 1
    random = np.random.default_rng(0).integers(0, 4, size=len(y))
    scores = [neighbor_information_score(labels, X) for labels in (good, split_merge, random)]
    assert scores[0] > scores[1] > scores[2]


def test_information_is_label_free_and_deterministic(blobs):
    X, y = blobs
    # relabelling changes nothing; no labels of the truth enter
    assert neighbor_information_score((y + 1) % 3, X) == neighbor_information_score(y, X)
    km = KMeans(3, n_init=3, random_state=0).fit(X)
    assert neighbor_information_score(km, X) == neighbor_information_score(km.predict(X), X)
    # subsampled and reduced by PCA: fixed by random_state
    kw = dict(max_samples=150, n_components=1)
    first = neighbor_information_score(y, X, random_state=0, **kw)
    assert first == neighbor_information_score(y, X, random_state=0, **kw)
    others = {neighbor_information_score(y, X, random_state=seed, **kw) for seed in range(1, 6)}
    assert others != {first}  # the subset does depend on the seed


def test_neighbor_information_reduces_only_wide_features():
    # three blobs in 8 informative dimensions, rotated into 300 with noise
    rng = np.random.default_rng(0)
    X8, y = make_blobs(n_samples=400, centers=3, n_features=8, cluster_std=1.0, random_state=0)
    rotation = np.linalg.qr(rng.normal(size=(300, 300)))[0][:, :8]
    X = X8 @ rotation.T + 0.05 * rng.normal(size=(400, 300))
    random = rng.integers(0, 3, size=len(y))
    # wide: the default searches a 128-component PCA, reproducibly for a given seed
    wide = neighbor_information_score(y, X, random_state=0)
    assert wide == neighbor_information_score(y, X, random_state=0)
    assert wide == neighbor_information_score(y, X, n_components=128, random_state=0)
    assert wide == pytest.approx(np.log(3), abs=0.02)
    assert neighbor_information_score(random, X, random_state=0) < 0.02
    # the PCA graph is not the features' graph, but it rates the labels alike
    exact = neighbor_information_score(y, X, n_components=None)
    assert wide == pytest.approx(exact, abs=0.01)
    # narrow (at most n_components features): no PCA, whatever the seed
    narrow = [neighbor_information_score(y, X8, random_state=seed) for seed in range(3)]
    assert narrow == [neighbor_information_score(y, X8, n_components=None)] * 3
    # the scorer seeds the PCA with 0 unless told otherwise
    km = KMeans(3, n_init=3, random_state=0).fit(X)
    assert make_validity_scorer()(km, X) == neighbor_information_score(km, X, random_state=0)


@pytest.mark.parametrize("bad, match", [
    ({"n_neighbors": 0}, "n_neighbors"),
    ({"n_components": 1.5}, "n_components"),
    ({"max_samples": 1}, "max_samples"),
])
def test_information_bad_parameters(blobs, bad, match):
    X, y = blobs
    with pytest.raises(ValueError, match=match):
        neighbor_information_score(y, X, **bad)
    with pytest.raises(ValueError, match="at least 2 samples"):
        neighbor_information_score(y[:1], X[:1])


def test_consensus_scores_by_hand():
    a = [0, 0, 1, 1, 2, 2]
    b = [1, 1, 0, 0, 2, 2]  # the same partition as a
    c = [0, 1, 2, 0, 1, 2]  # disagrees with both
    scores = consensus_scores([a, b, c])
    assert scores[0] == scores[1] > scores[2]
    np.testing.assert_allclose(scores[0], (1.0 + adjusted_rand_score(a, c)) / 2)
    with pytest.raises(ValueError, match="at least 2"):
        consensus_scores([a])
    with pytest.raises(ValueError):
        consensus_scores([a, a[:-1]])


def test_fitted_estimator_is_scored_on_its_predictions(blobs):
    X, _ = blobs
    km = KMeans(3, n_init=3, random_state=0).fit(X)
    assert validity_score(km, X, random_state=0) == validity_score(km.predict(X), X,
                                                                   random_state=0)


def test_subsampling_bounds_the_rows_scored(blobs):
    X, y = blobs
    sub = validity_score(y, X, max_samples=100, random_state=0)
    assert sub == pytest.approx(2 / 3, abs=0.02)


def test_neighbor_agreement_by_hand():
    labels = np.array([0, 0, 0, 1, 1])
    neighbors = np.array([[1, 2], [0, 2], [0, 3], [4, 0], [3, 1]])
    # cluster 0: 1, 1, 0.5 -> 5/6; cluster 1: 0.5, 0.5 -> 0.5
    np.testing.assert_allclose(neighbor_agreement(labels, neighbors), [5 / 6, 0.5])


@pytest.mark.parametrize("bad, match", [
    ({"n_neighbors": 0}, "n_neighbors"),
    ({"n_components": 1.5}, "n_components"),
    ({"max_samples": 1}, "max_samples"),
])
def test_bad_parameters(blobs, bad, match):
    X, y = blobs
    with pytest.raises(ValueError, match=match):
        validity_score(y, X, **bad)


def test_bad_input(blobs):
    X, y = blobs
    with pytest.raises(ValueError):
        validity_score(y[:-1], X)
    with pytest.raises(TypeError, match="predict"):
        validity_score(KMeans, X)
    with pytest.raises(TypeError, match="unexpected"):
        make_validity_scorer(lam=1.0)
    with pytest.raises(ValueError, match="criterion"):
        make_validity_scorer(criterion="loss")


def test_scorer_in_grid_search_without_y(blobs):
    X, _ = blobs
    # max_iter=1 from a single random start often leaves K-means between blobs
    km = KMeans(3, init="random", n_init=1, random_state=3)
    search = GridSearchCV(km, {"max_iter": [1, 300]}, scoring=make_validity_scorer(random_state=0),
                          cv=3)
    search.fit(X)  # no y anywhere
    assert search.best_params_ == {"max_iter": 300}
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0]
    scorer = make_validity_scorer(random_state=0)
    best = search.best_estimator_
    assert scorer(best, X) == neighbor_information_score(best, X, random_state=0)
    assert "random_state=0" in repr(scorer)
    modularity = make_validity_scorer(criterion="modularity", random_state=0)
    assert modularity(best, X) == validity_score(best, X, random_state=0)


def test_scorer_with_collision_clustering(blobs):
    X, _ = blobs
    est = CollisionClustering(3, lr=0.05, max_epochs=5, random_state=0)
    search = GridSearchCV(est, {"lam": [0.5, 2.0]}, scoring=make_validity_scorer(), cv=2)
    search.fit(X)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    # without scoring, the search uses CollisionClustering.score: the same score
    default = GridSearchCV(est, {"lam": [0.5, 2.0]}, cv=2).fit(X)
    np.testing.assert_allclose(default.cv_results_["mean_test_score"],
                               search.cv_results_["mean_test_score"])


def test_select_n_clusters_finds_three_blobs(blobs):
    X, _ = blobs
    result = select_n_clusters(X, [3, 4, 5, 6], KMeans(n_init=1), scoring="stability",
                               n_init=4, random_state=0)
    assert isinstance(result, SelectionResult)
    assert result.n_clusters == 3
    assert result.best_estimator.n_clusters == 3
    assert result.scores.shape == (4,)
    assert result.scores[0] == pytest.approx(1.0)
    assert result.scores[1:].max() < 1.0


def test_select_n_clusters_with_collision_clustering(blobs):
    # With equal cluster sizes asked for, 2 or 4 clusters must cut a blob, wherever
    # the start puts it; 3 is the stable answer.
    X = StandardScaler().fit_transform(blobs[0])
    est = CollisionClustering(lr=0.05, max_epochs=20)
    result = select_n_clusters(X, [2, 3, 4], est, scoring="stability", n_init=3,
                               random_state=0)
    assert result.n_clusters == 3
    assert result.scores[1] == pytest.approx(1.0)


def test_select_n_clusters_default_validity_does_not_merge_blobs(blobs):
    X, y = blobs
    result = select_n_clusters(X, [2, 3], KMeans(n_init=3, random_state=0))
    assert result.n_clusters == 3
    np.testing.assert_allclose(result.scores, [validity_score(e, X, random_state=0) for e in (
        KMeans(2, n_init=3, random_state=0).fit(X), KMeans(3, n_init=3, random_state=0).fit(X))])


def test_select_n_clusters_custom_scoring_and_errors(blobs):
    X, _ = blobs
    km = KMeans(n_init=1, random_state=0)
    result = select_n_clusters(X, [2, 4], km, n_init=1,
                               scoring=lambda est, data: est.n_clusters)
    assert result.n_clusters == 4
    with pytest.raises(ValueError, match="n_init >= 2"):
        select_n_clusters(X, [2, 3], km, scoring="stability")
    with pytest.raises(ValueError, match="scoring must be"):
        select_n_clusters(X, [2, 3], km, scoring="loss")
    with pytest.raises(ValueError, match="empty"):
        select_n_clusters(X, [], km)
    with pytest.raises(ValueError, match="candidate"):
        select_n_clusters(X, [1, 3], km)
    with pytest.raises(ValueError, match="n_clusters parameter"):
        from sklearn.cluster import DBSCAN

        select_n_clusters(X, [2, 3], DBSCAN())


def test_aligned_mean_proba_undoes_permutations_and_averages():
    from skcce.selection import aligned_mean_proba

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=50)
    q = rng.dirichlet(np.ones(4), size=50) * 0.2 + p * 0.8  # close to p
    mean = aligned_mean_proba([p, p[:, [2, 0, 3, 1]], q[:, [1, 3, 0, 2]]])
    assert np.allclose(mean, (2 * p + q) / 3)
    assert np.allclose(mean.sum(axis=1), 1)
    # the reference's cluster ids are kept
    assert np.allclose(aligned_mean_proba([p[:, ::-1], p], reference=0), p[:, ::-1])


def test_aligned_mean_proba_rejects_bad_input():
    from skcce.selection import aligned_mean_proba

    p = np.full((5, 2), 0.5)
    with pytest.raises(ValueError, match="at least one"):
        aligned_mean_proba([])
    with pytest.raises(ValueError, match="same shape"):
        aligned_mean_proba([p, np.full((5, 3), 1 / 3)])
    with pytest.raises(ValueError, match="reference"):
        aligned_mean_proba([p, p], reference=2)


# --------------------------------------------------------------------------- merge_clusters


@pytest.fixture(scope="module")
def blobs16():
    X, y = make_blobs(n_samples=600, n_features=16, centers=3, random_state=0)
    return X, y


def test_merge_of_an_over_clustering_recovers_the_blobs(blobs16):
    X, y = blobs16
    over = KMeans(n_clusters=9, n_init=1, random_state=0).fit(X)
    res = merge_clusters(over, X, random_state=0)
    assert res.n_clusters == 3  # chosen without labels: the peak of the merge path
    assert adjusted_rand_score(y, res.labels) == 1.0
    # the labels are the mapping applied to the input clusters
    np.testing.assert_array_equal(res.labels, res.mapping[over.labels_])
    assert np.nanargmax(res.modularity) == 3
    assert np.isnan(res.modularity[:2]).all() and not np.isnan(res.modularity[2:]).any()


def test_merge_path_modularity_is_the_validity_score(blobs16):
    # the modularity the merges climb is validity_score's, on the same graph
    X, _ = blobs16
    over = KMeans(n_clusters=6, n_init=1, random_state=0).fit_predict(X)
    for m in (6, 4, 2):
        res = merge_clusters(over, X, n_clusters=m, random_state=3)
        assert res.n_clusters == m and len(np.unique(res.labels)) == m
        assert res.modularity[m] == pytest.approx(validity_score(res.labels, X, random_state=3))
        assert np.isnan(res.modularity[: m]).all()


def test_first_merge_is_the_best_pair():
    # greedy: the first merge is the pair whose merge scores best, checked by brute force
    X, _ = make_blobs(n_samples=400, n_features=8, centers=4, cluster_std=3.0, random_state=1)
    labels = KMeans(n_clusters=4, n_init=1, random_state=0).fit_predict(X)
    res = merge_clusters(labels, X, n_clusters=3, random_state=0)
    scores = {}
    for g in range(4):
        for h in range(g + 1, 4):
            merged = np.where(labels == h, g, labels)
            scores[(g, h)] = validity_score(merged, X, random_state=0)
    best = max(scores, key=scores.get)
    assert res.mapping[best[0]] == res.mapping[best[1]]
    assert len(np.unique(res.mapping)) == 3
    assert res.modularity[3] == pytest.approx(scores[best])


def test_merge_proba_sums_columns_and_empty_input_clusters_are_mapped(blobs16):
    X, _ = blobs16
    est = CollisionClustering(n_clusters=6, max_epochs=3, random_state=0).fit(X)
    res = merge_clusters(est, X, n_clusters=3, random_state=0)
    assert res.mapping.shape == (6,)  # every cluster of the estimator, predicted or not
    merged = res.merge_proba(est.predict_proba(X))
    assert merged.shape == (len(X), 3)
    np.testing.assert_allclose(merged.sum(axis=1), 1.0, rtol=1e-5)
    proba = est.predict_proba(X)
    for c in range(6):  # each input column is part of its merged column
        assert np.all(merged[:, res.mapping[c]] >= proba[:, c] - 1e-6)
    with pytest.raises(ValueError, match="columns"):
        res.merge_proba(np.ones((3, 5)) / 5)


@pytest.mark.parametrize("labels, kwargs, match", [
    (np.r_[-1, np.zeros(599, int)], {}, "non-negative"),
    (np.r_[0.5, np.zeros(599)], {}, "integer"),
    (np.zeros(600, int), {}, "at least 2 input clusters"),
    (np.arange(600) % 3, {"n_clusters": 4}, "more than the 3 input"),
    (np.arange(600) % 3, {"n_clusters": 0}, "n_clusters"),
    (np.arange(600) % 3, {"n_neighbors": 0}, "n_neighbors"),
    (np.arange(500) % 3, {}, "inconsistent"),
])
def test_merge_clusters_bad_input(blobs16, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        merge_clusters(labels, blobs16[0], **kwargs)


class _WarningKMeans(KMeans):
    """KMeans whose fits warn of convergence (odd n_clusters only) and of something else."""

    def fit(self, X, y=None, sample_weight=None):
        if self.n_clusters % 2:
            warnings.warn(f"fit with {self.n_clusters} clusters did not converge",
                          ConvergenceWarning, stacklevel=2)
        warnings.warn("unrelated", UserWarning, stacklevel=2)
        return super().fit(X, y, sample_weight)


def test_select_n_clusters_gathers_convergence_warnings(blobs):
    X, _ = blobs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = select_n_clusters(X, [2, 3, 4, 5], _WarningKMeans(n_init=1), n_init=2,
                                   random_state=0)
    assert result.n_clusters in (2, 3, 4, 5) and np.isfinite(result.scores).all()
    convergence = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(convergence) == 1  # one summary instead of one per fit
    message = str(convergence[0].message)
    assert "2 of 4 candidates" in message and "n_clusters = 3, 5" in message
    assert "fit with 3 clusters did not converge" in message
    # other warnings pass through, one per fit
    assert sum(issubclass(w.category, UserWarning) and str(w.message) == "unrelated"
               for w in caught) == 8
    # a search whose fits all converge says nothing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        select_n_clusters(X, [2, 4], _WarningKMeans(n_init=1), random_state=0)
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
