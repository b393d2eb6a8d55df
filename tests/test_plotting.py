"""Tests of skcce.plotting: what is drawn matches the numbers it is drawn from."""

import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from skcce.metrics import clustering_accuracy  # noqa: E402
from skcce.plotting import (  # noqa: E402
    collision_and_shannon_curves,
    matched_confusion_matrix,
    plot_collision_vs_shannon,
    plot_confusion_matrix,
    plot_solver_convergence,
    plot_training,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("n_clusters", [3, 4, 6])
def test_matched_confusion_diagonal_is_accuracy(n_clusters):
    rng = np.random.default_rng(n_clusters)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.7, (y_true + 1) % n_clusters,
                      rng.integers(0, n_clusters, 200))
    table, classes, clusters = matched_confusion_matrix(y_true, y_pred)
    assert table.sum() == 200
    assert np.trace(table) / table.sum() == pytest.approx(clustering_accuracy(y_true, y_pred))
    assert sorted(clusters.tolist()) == sorted(np.unique(y_pred).tolist())
    assert classes.tolist() == [0, 1, 2, 3]


def test_matched_confusion_undoes_a_permutation():
    y_true = np.repeat(np.arange(5), 10)
    perm = np.array([3, 0, 4, 1, 2])
    table, _, clusters = matched_confusion_matrix(y_true, perm[y_true])
    assert np.array_equal(table, 10 * np.eye(5, dtype=int))
    assert clusters.tolist() == perm.tolist()


def test_plot_confusion_matrix_panels_and_title():
    y_true = [0, 0, 1, 1, 2, 2]
    fig = plot_confusion_matrix(y_true, [1, 1, 0, 0, 2, 0], title="demo")
    assert isinstance(fig, Figure)
    matrix_ax, sizes_ax = fig.axes[0], fig.axes[1]
    assert matrix_ax.get_title() == "accuracy 0.833"
    assert fig._suptitle.get_text() == "demo"
    # the bars are the cluster sizes in matched order (clusters 1, 0, 2)
    heights = [p.get_height() for p in sizes_ax.patches]
    assert heights == [2, 3, 1]


def test_plot_confusion_matrix_normalized_on_given_axes():
    fig, ax = plt.subplots()
    out = plot_confusion_matrix([0, 1, 1, 1], [0, 1, 1, 0], normalize=True, show_sizes=False,
                                axes=ax)
    assert out is fig
    image = ax.get_images()[0].get_array()
    assert np.allclose(np.asarray(image).sum(axis=1), 1.0)


def test_plot_training_from_fitted_estimator():
    from sklearn.datasets import make_blobs

    from skcce import CollisionClustering

    X, _ = make_blobs(120, centers=3, n_features=4, random_state=0)
    est = CollisionClustering(n_clusters=3, max_epochs=3, tol=None, random_state=0).fit(X)
    fig = plot_training(est)
    loss_ax, sizes_ax = fig.axes
    assert np.allclose(loss_ax.lines[0].get_ydata(), est.loss_curve_)
    assert loss_ax.get_title() == "training loss"
    assert sizes_ax.get_title() == "cluster sizes"
    # the estimator keeps per-epoch sizes: one stacked area per cluster, whose top edge is
    # the number of points (120) at every epoch
    history = est.cluster_sizes_history_
    assert history.shape == (len(est.loss_curve_), 3)
    assert not sizes_ax.patches and len(sizes_ax.collections) == 3
    assert sizes_ax.get_xlabel() == "epoch"
    for k, area in enumerate(sizes_ax.collections):
        top = area.get_paths()[0].vertices[:, 1].max()
        assert top == pytest.approx(history[:, : k + 1].sum(axis=1).max())
    top = sizes_ax.collections[-1].get_paths()[0].vertices[:, 1]
    assert np.allclose(top.max(), 120) and np.allclose(history.sum(axis=1), 120)


def test_plot_training_bars_without_a_size_history():
    class Fitted:
        loss_curve_ = [1.0, 0.5]
        cluster_sizes_ = np.array([6, 4])

    fig = plot_training(Fitted())
    sizes_ax = fig.axes[1]
    assert [p.get_height() for p in sizes_ax.patches] == [6, 4]
    assert not sizes_ax.collections and sizes_ax.get_xlabel() == "cluster"


def test_plot_training_unfitted_raises():
    from skcce import CollisionClustering

    with pytest.raises(ValueError, match="fit the estimator"):
        plot_training(CollisionClustering())


def test_figure1_curves_match_the_losses():
    from skcce.losses import collision_cross_entropy_np, shannon_cross_entropy_np

    x = np.linspace(0.05, 0.95, 19)
    sigma = np.column_stack([x, 1 - x])
    for y in [(0.9, 0.1), (0.7, 0.3), (0.5, 0.5)]:
        target = np.tile(y, (x.size, 1))
        h2, h = collision_and_shannon_curves(y, x)
        assert np.allclose(h2, collision_cross_entropy_np(sigma, target))
        assert np.allclose(h, shannon_cross_entropy_np(sigma, target))


def test_figure1_properties():
    x = np.linspace(0, 1, 101)
    h2, h = collision_and_shannon_curves((0.5, 0.5), x)
    assert np.allclose(h2, np.log(2))  # flat: zero gradient for the uniform label
    h2, h = collision_and_shannon_curves((0.9, 0.1), x)
    assert h2[0] == pytest.approx(-np.log(0.1)) and np.isfinite(h2).all()  # bounded
    assert np.isinf(h[0]) and np.isinf(h[-1])
    assert x[np.argmin(h)] == pytest.approx(0.9)  # Shannon copies the label
    with pytest.raises(ValueError, match="distribution"):
        collision_and_shannon_curves((0.7, 0.7), x)


def test_plot_collision_vs_shannon_draws_both_losses():
    fig = plot_collision_vs_shannon(n_points=11)
    lines = fig.axes[0].lines
    assert len(lines) == 6
    solid_blue = lines[4]
    assert np.allclose(solid_blue.get_ydata(), np.log(2))
    assert lines[1].get_linestyle() == "--"


def test_plot_solver_convergence_with_real_histories():
    from skcce import solve_pseudo_labels

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(60, 5))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    results = {m: solve_pseudo_labels(proba, 0.4, method=m, max_iter=50, tol=0,
                                      record_history=True) for m in ("em", "pgd")}
    fig = plot_solver_convergence(results, tol=1e-4, log_time=True)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [line.get_label() for line in ax.lines[:2]] == ["em", "pgd"]
    gaps = np.asarray(results["em"].history, dtype=float)[:, 2]
    assert np.allclose(ax.lines[0].get_ydata(), np.maximum(gaps, np.finfo(float).tiny))
    assert ax.get_yscale() == "log"


def test_plot_solver_convergence_bad_input():
    with pytest.raises(ValueError, match="empty"):
        plot_solver_convergence({})
    with pytest.raises(ValueError, match="seconds, objective, gap"):
        plot_solver_convergence({"em": [1.0, 2.0]})


def test_missing_matplotlib_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_collision_vs_shannon()
