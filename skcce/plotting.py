"""Plots for clustering results, training curves, the paper's Figure 1 and solver convergence.

matplotlib is an optional dependency (it comes with the ``dev``, ``docs`` and
``bench`` extras); it is imported only when a plotting function is called.
Every function draws on new axes unless ``ax``/``axes`` is given, and returns
the :class:`matplotlib.figure.Figure` it drew on, so that callers can
``fig.savefig(path)``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "matched_confusion_matrix",
    "plot_confusion_matrix",
    "plot_training",
    "collision_and_shannon_curves",
    "plot_collision_vs_shannon",
    "plot_solver_convergence",
]

# The three pseudo-labels y of the paper's Figure 1: confident, soft and uniform.
FIGURE1_TARGETS = ((0.9, 0.1), (0.7, 0.3), (0.5, 0.5))


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "skcce.plotting needs matplotlib; install it with "
            "`pip install matplotlib` (or the 'dev' extra: `pip install -e \".[dev]\"`)"
        ) from exc
    return plt


def matched_confusion_matrix(y_true, y_pred):
    """Confusion matrix with clusters reordered by the best one-to-one matching.

    Column ``j`` is the cluster matched to ``classes[j]`` (Hungarian matching
    on the contingency table, as in :func:`skcce.metrics.clustering_accuracy`);
    clusters left unmatched follow in increasing id order. The diagonal then
    holds the correctly clustered samples, so ``trace / total`` is the
    clustering accuracy.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Class labels.
    y_pred : array-like of shape (n_samples,)
        Cluster ids.

    Returns
    -------
    table : ndarray of shape (n_classes, n_clusters)
        Counts, columns in matched order.
    classes : ndarray of shape (n_classes,)
        Row labels.
    clusters : ndarray of shape (n_clusters,)
        Column labels (cluster ids in matched order).

    Examples
    --------
    >>> from skcce.plotting import matched_confusion_matrix
    >>> table, classes, clusters = matched_confusion_matrix([0, 0, 1, 1, 2], [2, 2, 0, 0, 1])
    >>> table.tolist()
    [[2, 0, 0], [0, 2, 0], [0, 0, 1]]
    >>> clusters.tolist()
    [2, 0, 1]
    """
    from skcce.metrics import contingency

    table, classes, clusters = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    order = list(cols[np.argsort(rows)])
    order += [c for c in range(clusters.size) if c not in set(order)]
    return table[:, order], classes, clusters[order]


def plot_confusion_matrix(y_true, y_pred, *, normalize=False, show_sizes=True, title=None,
                          cmap="Blues", axes=None):
    """Plot the confusion matrix after Hungarian matching, with a cluster-size panel.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Class labels.
    y_pred : array-like of shape (n_samples,)
        Cluster ids (e.g. ``CollisionClustering().fit_predict(X)``).
    normalize : bool, default=False
        Show each row as fractions of its class instead of counts.
    show_sizes : bool, default=True
        Add a bar chart of the cluster sizes (matched order) beside the
        class sizes, which makes collapsed or empty clusters obvious.
    title : str, default=None
        Figure title; by default the clustering accuracy.
    cmap : str, default="Blues"
        Matplotlib colormap of the matrix.
    axes : matplotlib Axes or sequence of two Axes, default=None
        Where to draw (one Axes when ``show_sizes=False``). New figure when None.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure drawn on (the figure of ``axes`` or ``ax`` when given).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skcce.plotting import plot_confusion_matrix
    >>> fig = plot_confusion_matrix([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 2, 0])
    >>> len(fig.axes) >= 2
    True
    >>> fig.axes[0].get_title()
    'accuracy 0.833'
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    plt = _pyplot()
    table, classes, clusters = matched_confusion_matrix(y_true, y_pred)
    accuracy = np.trace(table) / table.sum()
    if axes is None:
        ncols = 2 if show_sizes else 1
        widths = [3, 2] if show_sizes else [1]
        fig, axes = plt.subplots(1, ncols, figsize=(5.5 + 4 * show_sizes, 4.5),
                                 gridspec_kw={"width_ratios": widths}, squeeze=False,
                                 layout="constrained")
        axes = axes[0]
    axes = np.atleast_1d(axes)
    ax = axes[0]
    shown = table / np.maximum(table.sum(axis=1, keepdims=True), 1) if normalize else table
    im = ax.imshow(shown, cmap=cmap, aspect="auto")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    ax.set_xticks(range(clusters.size), [str(c) for c in clusters])
    ax.set_yticks(range(classes.size), [str(c) for c in classes])
    ax.set_xlabel("cluster (matched order)")
    ax.set_ylabel("class")
    ax.set_title(f"accuracy {accuracy:.3f}")
    if table.size <= 400:
        fmt = "{:.2f}" if normalize else "{:d}"
        threshold = shown.max() / 2 if shown.max() > 0 else 1
        for (i, j), value in np.ndenumerate(shown):
            ax.text(j, i, fmt.format(value.item()), ha="center", va="center", fontsize=7,
                    color="white" if value > threshold else "black")
    if show_sizes:
        _plot_sizes(axes[1], table, clusters)
    if title is not None:
        ax.figure.suptitle(title)
    return ax.figure


def _plot_sizes(ax, table, clusters):
    positions = np.arange(clusters.size)
    ax.bar(positions, table.sum(axis=0), color="tab:blue", label="cluster size")
    class_sizes = table.sum(axis=1)
    ax.plot(positions[: class_sizes.size], class_sizes, "k_", markersize=14, mew=2,
            label="matched class size")
    ax.set_xticks(positions, [str(c) for c in clusters])
    ax.set_xlabel("cluster (matched order)")
    ax.set_ylabel("points")
    ax.set_title("cluster sizes")
    ax.legend(fontsize=7, loc="lower right")


def _training_attr(estimator, name):
    value = getattr(estimator, name, None)
    return None if value is None else np.asarray(value, dtype=float)


def _size_history(estimator):
    """Per-epoch cluster sizes ``cluster_sizes_history_``, or None."""
    return _training_attr(estimator, "cluster_sizes_history_")


def plot_training(estimator, *, axes=None):
    """Plot the training loss over epochs and the cluster sizes of a fitted estimator.

    Reads ``loss_curve_`` (one value per epoch) and, when the estimator
    keeps one, the per-epoch cluster sizes ``cluster_sizes_history_`` of
    shape (n_epochs, n_clusters), drawn as stacked areas; otherwise the
    final ``cluster_sizes_`` are drawn as bars.

    Parameters
    ----------
    estimator : fitted estimator
        Anything with a ``loss_curve_`` attribute, e.g. a fitted
        :class:`skcce.CollisionClustering`.
    axes : sequence of two matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure drawn on (the figure of ``axes`` or ``ax`` when given).

    Raises
    ------
    ValueError
        If the estimator has no ``loss_curve_`` (not fitted).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from types import SimpleNamespace
    >>> from skcce.plotting import plot_training
    >>> est = SimpleNamespace(loss_curve_=[1.2, 0.8, 0.7], cluster_sizes_=[40, 35, 25])
    >>> fig = plot_training(est)
    >>> [ax.get_title() for ax in fig.axes]
    ['training loss', 'cluster sizes']
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    plt = _pyplot()
    loss = _training_attr(estimator, "loss_curve_")
    if loss is None or loss.size == 0:
        raise ValueError(
            f"{type(estimator).__name__} has no loss_curve_; fit the estimator before plotting"
        )
    history = _size_history(estimator)
    sizes = _training_attr(estimator, "cluster_sizes_")
    if sizes is not None and sizes.ndim == 2:
        history, sizes = sizes, sizes[-1]
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_sizes = axes
    epochs = np.arange(1, loss.size + 1)
    ax_loss.plot(epochs, loss, marker="o", markersize=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    if history is not None and history.ndim == 2:
        steps = np.arange(1, history.shape[0] + 1)
        ax_sizes.stackplot(steps, history.T)
        ax_sizes.set_xlabel("epoch")
        ax_sizes.set_ylabel("points per cluster (stacked)")
    elif sizes is not None:
        ax_sizes.bar(np.arange(sizes.size), sizes)
        ax_sizes.set_xlabel("cluster")
        ax_sizes.set_ylabel("points (after training)")
    ax_sizes.set_title("cluster sizes")
    return ax_loss.figure


def collision_and_shannon_curves(y, x):
    r"""Compute :math:`H_2(y, \sigma)` (eq. 9) and :math:`H(y, \sigma)` (eq. 8) for binary σ.

    Parameters
    ----------
    y : sequence of two floats
        The fixed pseudo-label :math:`y = (y_1, y_2)` on the simplex.
    x : ndarray
        Points :math:`x \in [0, 1]`; the prediction is :math:`\sigma = (x, 1 - x)`.

    Returns
    -------
    h2 : ndarray
        :math:`-\ln(y_1 x + y_2 (1 - x))`; finite at the end points unless y is one-hot.
    h : ndarray
        :math:`-y_1 \ln x - y_2 \ln(1 - x)` (``0 \ln 0 = 0``); infinite at an end
        point where the matching :math:`y_k > 0`.

    Examples
    --------
    >>> import numpy as np
    >>> from skcce.plotting import collision_and_shannon_curves
    >>> h2, h = collision_and_shannon_curves((0.5, 0.5), np.array([0.0, 0.5, 1.0]))
    >>> np.round(h2, 4).tolist()
    [0.6931, 0.6931, 0.6931]
    >>> bool(np.isinf(h[0]))
    True
    """
    y1, y2 = (float(v) for v in y)
    if min(y1, y2) < 0 or abs(y1 + y2 - 1) > 1e-9:
        raise ValueError(f"y must be a distribution over two classes, got {tuple(y)}")
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        h2 = -np.log(y1 * x + y2 * (1 - x))
        h = -(np.where(y1 > 0, y1 * np.log(x), 0.0) + np.where(y2 > 0, y2 * np.log(1 - x), 0.0))
    return h2, h


def plot_collision_vs_shannon(targets=FIGURE1_TARGETS, *, n_points=401, ylim=(0.0, 3.0), ax=None):
    r"""The paper's Figure 1: :math:`H_2(y, \sigma)` against :math:`H(y, \sigma)` for binary σ.

    Solid curves are the collision cross-entropy (eq. 9), thin dashed curves
    Shannon's cross-entropy (eq. 8), both as functions of
    :math:`\sigma = (x, 1 - x)` for each fixed pseudo-label y. H2 is bounded for
    every non-one-hot y and flat for the uniform y (zero gradient), while H
    tends to infinity at both ends and is minimized at :math:`\sigma = y`,
    i.e. it trains σ to copy the uncertainty of y.

    Parameters
    ----------
    targets : sequence of (float, float), default=((0.9, 0.1), (0.7, 0.3), (0.5, 0.5))
        Pseudo-labels y, one pair of curves each.
    n_points : int, default=401
        Grid size on [0, 1].
    ylim : (float, float), default=(0.0, 3.0)
        Vertical range (H is unbounded).
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure drawn on (the figure of ``axes`` or ``ax`` when given).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skcce.plotting import plot_collision_vs_shannon
    >>> fig = plot_collision_vs_shannon(n_points=51)
    >>> len(fig.axes[0].lines)
    6
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    x = np.linspace(0.0, 1.0, n_points)
    colors = ("tab:red", "tab:green", "tab:blue", "tab:purple", "tab:orange")
    for i, y in enumerate(targets):
        h2, h = collision_and_shannon_curves(y, x)
        color = colors[i % len(colors)]
        label = f"y=({y[0]:g}, {y[1]:g})"
        ax.plot(x, h2, color=color, lw=2, label=f"$H_2$, {label}")
        ax.plot(x, h, color=color, lw=0.8, ls="--", label=f"$H$, {label}")
    ax.set_xlim(0, 1)
    ax.set_ylim(*ylim)
    ax.set_xlabel(r"$x$, prediction $\sigma = (x, 1-x)$")
    ax.set_ylabel("cross-entropy")
    ax.set_title(r"collision $H_2(y,\sigma)$ (solid) vs Shannon $H(y,\sigma)$ (dashed)",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return ax.figure


def _history_array(history):
    hist = getattr(history, "history", history)
    arr = np.asarray(hist if hist is not None else [], dtype=float)
    if arr.ndim != 2 or arr.shape[1] < 3 or arr.shape[0] == 0:
        raise ValueError(
            "each history must be a non-empty sequence of (seconds, objective, gap) rows "
            "(solve_pseudo_labels(..., record_history=True).history)"
        )
    return arr


def plot_solver_convergence(histories, *, tol=None, log_time=False, ax=None):
    """Plot the Frank-Wolfe gap against wall time for several pseudo-label solvers.

    This is the view behind the paper's Table 1 (EM against projected
    gradient descent): the gap bounds the distance to the optimal objective,
    so the curve that reaches a given gap first is the faster solver.

    Parameters
    ----------
    histories : dict
        ``{label: result}`` where ``result`` is a
        :class:`skcce.PseudoLabelResult` from
        ``solve_pseudo_labels(..., record_history=True)`` or directly a
        sequence of ``(seconds, objective, gap)`` rows.
    tol : float, default=None
        Draw a horizontal line at this gap (e.g. 1e-4, the benchmark's target).
    log_time : bool, default=False
        Logarithmic time axis, useful when the solvers' times differ by
        orders of magnitude.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure drawn on (the figure of ``axes`` or ``ax`` when given).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skcce.plotting import plot_solver_convergence
    >>> em = [(0.001, 1.0, 1e-1), (0.002, 0.9, 1e-4), (0.003, 0.9, 1e-8)]
    >>> pgd = [(0.001, 1.1, 5e-1), (0.004, 0.95, 1e-2), (0.009, 0.9, 1e-5)]
    >>> fig = plot_solver_convergence({"EM": em, "PGD": pgd}, tol=1e-4)
    >>> [line.get_label() for line in fig.axes[0].lines][:2]
    ['EM', 'PGD']
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    plt = _pyplot()
    if not histories:
        raise ValueError("histories is empty; pass {label: result_or_rows}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    for label, history in histories.items():
        arr = _history_array(history)
        gap = np.maximum(arr[:, 2], np.finfo(float).tiny)
        ax.plot(arr[:, 0], gap, marker=".", markersize=3, label=str(label))
    if tol is not None:
        ax.axhline(tol, color="gray", ls=":", lw=1, label=f"gap {tol:g}")
    ax.set_yscale("log")
    if log_time:
        ax.set_xscale("log")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("Frank-Wolfe gap")
    ax.set_title("pseudo-label solver convergence")
    ax.legend(fontsize=8)
    return ax.figure
