"""Label-free model selection: which score tracks the accuracy of a fit?

Fits the default :class:`~skcce.CollisionClustering` over a grid of ``lam``
and seeds (and, for the number of clusters, over ``n_clusters``) on each
dataset, keeps every fit's labels, ``predict_proba`` and pseudo-labels in a
cache outside the repository, and computes candidate label-free validity
scores on the same fits.  The report gives

* the Spearman correlation of every candidate with the Hungarian accuracy,
  per dataset (over the ``lam`` x seed grid);
* what a label-free ``GridSearchCV`` over ``lam`` picks with the shipped
  scores, against the best ``lam``;
* ``n_init=5`` chosen by the score against single fits;
* the scores of simulated ``n_init=3`` estimators (every 3 seeds of a
  ``lam``), to judge restart-based scores as a setting's score;
* the number of clusters chosen by :func:`skcce.selection.select_n_clusters`'s
  rule over ``n_clusters`` in 5..20;
* a figure of score against accuracy per dataset.

Datasets: ``digits`` (scikit-learn, 1797 x 64), ``effnet`` (the dev
features), ``mnist`` (MNIST-70k raw pixels, a fixed random subsample of
``--mnist-samples`` rows), ``fashion`` (Fashion-MNIST training images through
EfficientNet-Lite0, made by ``make_fashion_features.py``).  Features are
standardized and float32, as in ``bench_fixed_features.py``.

Usage::

    python benchmarks/bench_model_selection.py --quick        # digits, seconds, temp folder
    python benchmarks/bench_model_selection.py --fit-only     # fill the cache
    python benchmarks/bench_model_selection.py                # fit what is missing, report
    python benchmarks/bench_model_selection.py --report-only  # report on the cached fits
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _selection_candidates as candidates  # noqa: E402
import update_readme  # noqa: E402  (reads the label-free reports' tables)
from _common import machine_description, write_markdown  # noqa: E402

from skcce import CollisionClustering  # noqa: E402
from skcce.metrics import clustering_accuracy  # noqa: E402
from skcce.selection import neighbor_information_score, validity_score  # noqa: E402

# ../shared beside the project's root (a worktree one level deeper looks two levels up).
_DATA_DIRS = [os.path.join(ROOT, *[".."] * up, "shared", "data") for up in (1, 2)]
DEFAULT_DATA_DIR = next((d for d in _DATA_DIRS if os.path.isdir(d)), _DATA_DIRS[0])
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "skcce", "model_selection")
DEFAULT_FASHION = os.path.join(os.path.expanduser("~"), ".cache", "skcce",
                               "fashion_train_effnet_lite0.npz")
DEFAULT_OUTPUT = os.path.join(ROOT, "docs", "benchmarks", "model_selection.md")
DATASETS = ("digits", "effnet", "fashion", "mnist")
LAMS = (0.25, 0.5, 1.0, 2.0, 4.0)
K_RANGE = tuple(range(5, 21))


def load_dataset(name, data_dir=DEFAULT_DATA_DIR, fashion=DEFAULT_FASHION, mnist_samples=10000):
    """Standardized float32 features and labels of a named dataset.

    Parameters
    ----------
    name : {'digits', 'effnet', 'fashion', 'mnist'}
        Dataset.
    data_dir : str
        Folder of the shared data.
    fashion : str
        ``.npz`` made by ``make_fashion_features.py``.
    mnist_samples : int
        Rows of the fixed random MNIST-70k subsample (seed 0).

    Returns
    -------
    X : ndarray of float32
    y : ndarray of int64
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
    else:
        path = {"effnet": os.path.join(data_dir, "mnist_train10k_effnet_lite0.npz"),
                "mnist": os.path.join(data_dir, "mnist70k.npz"), "fashion": fashion}[name]
        if not os.path.exists(path):
            raise ValueError(f"dataset {name!r}: file {path} not found")
        with np.load(path) as data:
            X, y = data["X"], data["y"]
        if name == "mnist" and mnist_samples < len(X):
            keep = np.sort(np.random.default_rng(0).permutation(len(X))[:mnist_samples])
            X, y = X[keep], y[keep]
    X = StandardScaler().fit_transform(np.asarray(X, dtype=np.float64).reshape(len(X), -1))
    return X.astype(np.float32), np.asarray(y).astype(np.int64)


def _fit_path(cache, dataset, lam, seed, n_clusters):
    return os.path.join(cache, f"{dataset}_K{n_clusters}_lam{lam:g}_seed{seed}.npz")


def fit_cached(cache, dataset, X, y, lam, seed, n_clusters, refit=False, params=None):
    """One default fit, from the cache when it is there.

    Returns
    -------
    fit : dict
        ``labels``, ``proba``, ``pseudo``, ``loss``, ``neg_score`` (the
        current ``score``), ``acc``, ``time`` (seconds), ``lam``, ``seed``,
        ``n_clusters``.
    """
    path = _fit_path(cache, dataset, lam, seed, n_clusters)
    if os.path.exists(path) and not refit:
        with np.load(path) as data:
            fit = {k: data[k] for k in data.files}
        return {k: (v.item() if v.ndim == 0 else v) for k, v in fit.items()}
    est = CollisionClustering(n_clusters, lam=lam, random_state=seed, **(params or {}))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    seconds = time.perf_counter() - start
    fit = {"labels": est.labels_, "proba": est.predict_proba(X).astype(np.float32),
           "pseudo": est.pseudo_labels_.astype(np.float32), "loss": float(est.loss_),
           "acc": clustering_accuracy(y, est.labels_), "time": seconds, "lam": float(lam),
           "seed": int(seed), "n_clusters": int(n_clusters)}
    os.makedirs(cache, exist_ok=True)
    np.savez_compressed(path, **fit)
    return fit


def fit_plan(datasets, seeds, lams=LAMS, k_range=K_RANGE):
    """The (dataset, lam, seed, n_clusters) fits of a run, most informative first.

    The ``lam`` grid with the first three seeds; the remaining seeds at the
    default ``lam=1`` (restarts); a coarse then a fine pass over
    ``n_clusters`` (``lam=1``, first seed); the remaining seeds at every
    ``lam``; the second seed over ``n_clusters`` (for the stability of K).
    """
    first, rest = list(seeds[:3]), list(seeds[3:])
    coarse = [k for k in (5, 8, 12, 15, 20) if k in k_range]
    fine = [k for k in k_range if k not in coarse and k != 10]
    plan = [(d, lam, s, 10) for d in datasets for s in first for lam in lams]
    plan += [(d, 1.0, s, 10) for d in datasets for s in rest]
    plan += [(d, 1.0, first[0], k) for k in coarse for d in datasets]
    plan += [(d, lam, s, 10) for d in datasets for s in rest for lam in lams if lam != 1.0]
    plan += [(d, 1.0, first[0], k) for k in fine for d in datasets]
    plan += [(d, 1.0, s, k) for s in seeds[1:2] for k in k_range if k != 10 for d in datasets]
    return plan


def run_fits(plan, cache, data_kwargs, log=print, params=None):
    """Fill the cache with every fit of ``plan`` (datasets loaded once)."""
    loaded = {}
    for dataset, lam, seed, k in plan:
        if dataset not in loaded:
            loaded[dataset] = load_dataset(dataset, **data_kwargs)
        X, y = loaded[dataset]
        n_classes = len(np.unique(y))
        k = k if k != 10 else n_classes
        path = _fit_path(cache, dataset, lam, seed, k)
        os.makedirs(cache, exist_ok=True)
        try:  # several workers may share one cache: each fit is claimed by one of them
            fd = os.open(path + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.close(fd)
        try:
            fit = fit_cached(cache, dataset, X, y, lam, seed, k, params=params)
        finally:
            os.remove(path + ".lock")
        log(f"{dataset} lam={lam:g} seed={seed} K={fit['n_clusters']}: acc {fit['acc']:.3f} "
            f"loss {fit['loss']:.4f} ({fit['time']:.1f} s)")


def load_fits(cache, dataset, n_clusters=None, lam=None):
    """Every cached fit of ``dataset`` (optionally one K and one lam), sorted by (K, lam, seed)."""
    fits = []
    prefix = f"{dataset}_K"
    for name in sorted(os.listdir(cache)) if os.path.isdir(cache) else []:
        if not (name.startswith(prefix) and name.endswith(".npz")):
            continue
        with np.load(os.path.join(cache, name)) as data:
            fit = {k: (data[k].item() if data[k].ndim == 0 else data[k]) for k in data.files}
        fit["path"] = os.path.join(cache, name)
        if n_clusters is not None and fit["n_clusters"] != n_clusters:
            continue
        if lam is not None and fit["lam"] != lam:
            continue
        fits.append(fit)
    return sorted(fits, key=lambda f: (f["n_clusters"], f["lam"], f["seed"]))


def context_cached(cache, dataset, X, umap=True):
    """:func:`_selection_candidates.dataset_context`, with the UMAP embedding cached."""
    path = os.path.join(cache, f"context_{dataset}_{len(X)}.npz")
    ctx = candidates.dataset_context(X, umap=False)
    if umap:
        if os.path.exists(path):
            with np.load(path) as data:
                ctx["U"], ctx["times"]["umap"] = data["U"], float(data["umap_time"])
        else:
            full = candidates.dataset_context(X, umap=True)
            ctx["U"], ctx["times"]["umap"] = full["U"], full["times"]["umap"]
            os.makedirs(cache, exist_ok=True)
            np.savez(path, U=ctx["U"], umap_time=ctx["times"]["umap"])
    return ctx


#: Scores computed by the library's functions: (name, function, keyword arguments).
#: ``neighbor_information_features`` is the shipped score on the features'
#: own neighbour graph (no PCA), the default before ``n_components=128``.
SHIPPED_FUNCTIONS = (("validity", validity_score, {}),
                     ("neighbor_information", neighbor_information_score, {}),
                     ("neighbor_information_features", neighbor_information_score,
                      {"n_components": None}))


def _config(function, kwargs):
    """The arguments a library score runs with (its defaults, updated by ``kwargs``), as text.

    Cached values computed with other arguments (e.g. before a default
    changed) are recomputed.
    """
    params = {name: p.default for name, p in inspect.signature(function).parameters.items()
              if p.default is not inspect.Parameter.empty and name != "random_state"}
    params.update(kwargs)
    return f"{function.__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})"


def score_fits(fits, ctx):
    """Candidates of every fit (single-fit ones, then restart-based ones), with timing.

    Single-fit candidates are cached beside each fit (``*.scores.json``), so
    a report is rebuilt without recomputing them; a group of candidates
    missing from the cache (one added since) is computed and added to it.
    The shipped scores are computed by the library's functions, timed.
    """
    configs = [_config(function, kwargs) for _, function, kwargs in SHIPPED_FUNCTIONS]
    rows = []
    for fit in fits:
        row = {"lam": fit["lam"], "seed": fit["seed"], "K": fit["n_clusters"], "acc": fit["acc"],
               "fit_time": fit["time"], "labels": fit["labels"]}
        cached = fit.get("path", "") + ".scores.json"
        scores = {}
        if os.path.exists(cached):
            with open(cached, encoding="utf-8") as fh:
                scores = json.load(fh)
        before = dict(scores)
        if "neg_loss" not in scores:
            scores.update(candidates.single_fit_candidates(fit, ctx))
        if not all(name in scores for name in candidates.GRAPH_NAMES):
            scores.update(candidates.graph_candidates(fit, ctx))
        for (name, function, kwargs), config in zip(SHIPPED_FUNCTIONS, configs, strict=True):
            if scores.get(f"{name}_config") != config:  # missing, or computed with other defaults
                start = time.perf_counter()
                scores[name] = function(fit["labels"], ctx["X"], random_state=0, **kwargs)
                scores[f"{name}_time"] = time.perf_counter() - start
                scores[f"{name}_config"] = config
        if scores != before and "path" in fit:
            with open(cached, "w", encoding="utf-8") as fh:
                json.dump(scores, fh)
        row.update(scores)
        rows.append(row)
    for row, extra in zip(rows, candidates.consensus_candidates(fits), strict=True):
        row.update(extra)
    return rows


def spearman_table(rows, names):
    """Spearman correlation of each candidate with the accuracy."""
    acc = [r["acc"] for r in rows]
    out = {}
    for name in names:
        values = [r[name] for r in rows]
        if np.ptp(values) == 0 or not np.all(np.isfinite(values)):
            out[name] = float("nan")
        else:
            out[name] = float(spearmanr(values, acc).statistic)
    return out


#: The score ``CollisionClustering.score`` and ``make_validity_scorer`` return.
SHIPPED = "neighbor_information"
#: The score ``select_n_clusters`` chooses the number of clusters by.
K_SCORE = "validity"
#: Scores followed through the lam, restart and simulated-estimator tables.
FOLLOWED = (SHIPPED, K_SCORE, "consensus", "neg_loss")
META = ("lam", "seed", "K", "acc", "labels")


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return f"{100 * values.mean():.1f} +- {100 * values.std():.1f}"


def lam_selection(rows, names=FOLLOWED):
    """The lam each score picks (its mean over the seeds of each lam) vs the best lam."""
    lams = sorted({r["lam"] for r in rows})
    acc = {lam: np.mean([r["acc"] for r in rows if r["lam"] == lam]) for lam in lams}
    best = max(lams, key=acc.get)
    out = {"best lam": best, "its acc": 100 * acc[best]}
    for name in names:
        means = {lam: np.mean([r[name] for r in rows if r["lam"] == lam]) for lam in lams}
        pick = max(lams, key=means.get)
        out[f"lam by {name}"] = pick
        out[f"gap, {name} (points)"] = 100 * (acc[best] - acc[pick])
    return out


def restart_selection(rows, n_init=5, names=FOLLOWED):
    """n_init restarts chosen by a score: every n_init-subset of the seeds at one lam.

    Returns the accuracies of the chosen restart over the subsets, per score,
    and those of the single fits.
    """
    from itertools import combinations

    n_init = min(n_init, len(rows))
    out = {"single fits": [r["acc"] for r in rows]}
    for name in names:
        chosen = []
        for subset in combinations(range(len(rows)), n_init):
            group = [rows[i] for i in subset]
            if name == "consensus":  # the medoid of the subset (mean ARI to the others)
                values = _subset_consensus(group)
            else:
                values = [r[name] for r in group]
            chosen.append(group[int(np.argmax(values))]["acc"])
        out[f"n_init={n_init} by {name}"] = chosen
    return out


def simulated_estimators(rows, n_init=3):
    """Estimators with ``n_init`` restarts, simulated from the fits of one dataset.

    Every ``n_init``-subset of the seeds of each ``lam`` is one estimator;
    it keeps the restart that agrees most with the others (as
    ``CollisionClustering`` does with three or more), and its accuracy is
    that restart's.  Each estimator gets the restart-based scores
    ``restart_stability`` (mean pairwise ARI of its restarts: what
    ``score`` could return for an estimator that kept its restarts) and
    ``restart_consensus`` (the kept restart's mean ARI to the others), and
    the single-fit scores of its kept restart.

    Returns
    -------
    estimators : list of dict
        ``lam``, ``acc`` and the scores of each simulated estimator.
    """
    from itertools import combinations

    out = []
    for lam in sorted({r["lam"] for r in rows}):
        group = [r for r in rows if r["lam"] == lam]
        for subset in combinations(group, min(n_init, len(group))):
            agreement = _subset_consensus(list(subset)) / max(len(subset) - 1, 1)
            kept = subset[int(np.argmax(agreement))]
            m = len(subset)
            stability = float(agreement.sum() / m) if m > 1 else float("nan")
            est = {"lam": lam, "acc": kept["acc"], "restart_stability": stability,
                   "restart_consensus": float(agreement.max())}
            est.update({name: kept[name] for name in (SHIPPED, K_SCORE, "neg_loss")})
            out.append(est)
    return out


def _subset_consensus(group):
    from sklearn.metrics import adjusted_rand_score

    n = len(group)
    ari = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            ari[i, j] = ari[j, i] = adjusted_rand_score(group[i]["labels"], group[j]["labels"])
    return ari.sum(axis=1)


def baseline_accuracies(cache, dataset, ctx, y, n_clusters):
    """K-means (n_init=10) on the features and on the UMAP-10 embedding (seed 0), cached.

    Returns
    -------
    acc : dict
        ``{'K-means': float, 'UMAP(10)+K-means': float or None}``.
    """
    from sklearn.cluster import KMeans

    path = os.path.join(cache, f"baselines_{dataset}_{len(y)}.npz")
    if os.path.exists(path):
        with np.load(path) as data:
            km, um = float(data["kmeans"]), float(data["umap_kmeans"])
    else:
        km = clustering_accuracy(y, KMeans(n_clusters, n_init=10, random_state=0)
                                 .fit_predict(ctx["X"]))
        um = np.nan
        if ctx["U"] is not None:
            um = clustering_accuracy(y, KMeans(n_clusters, n_init=10, random_state=0)
                                     .fit_predict(ctx["U"]))
        if ctx["U"] is not None:
            np.savez(path, kmeans=km, umap_kmeans=um)
    return {"K-means": km, "UMAP(10)+K-means": None if np.isnan(um) else um}


def k_selection(k_rows, names):
    """The K with the best value of each single-fit score (first seed of each K)."""
    first = min(r["seed"] for r in k_rows)
    rows = sorted([r for r in k_rows if r["seed"] == first], key=lambda r: r["K"])
    out = {}
    for name in names:
        values = [r[name] for r in rows]
        out[name] = int(rows[int(np.nanargmax(values))]["K"])
    stab = k_stability(k_rows)
    # only a choice when every K tried has at least two seeds
    complete = len(stab) == len({r["K"] for r in k_rows}) and len(stab) > 1
    out["stability"] = max(stab, key=stab.get) if complete else "n/a"
    return out


def k_stability(k_rows):
    """Mean pairwise ARI between the seeds of each K that has at least two seeds."""
    from sklearn.metrics import adjusted_rand_score

    out = {}
    for k in sorted({r["K"] for r in k_rows}):
        group = [r["labels"] for r in k_rows if r["K"] == k]
        if len(group) >= 2:
            pairs = [adjusted_rand_score(group[i], group[j])
                     for i in range(len(group)) for j in range(i + 1, len(group))]
            out[k] = float(np.mean(pairs))
    return out


def candidate_names(rows):
    """Candidate score names of a list of scored rows, in their order."""
    return [k for k in rows[0] if k not in META and not k.endswith(("_time", "_config"))]


def plot_scores(path, results, scores=(SHIPPED, K_SCORE, "consensus")):
    """Figure: each score in ``scores`` against accuracy, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(scores), len(results), squeeze=False,
                             figsize=(3.6 * len(results), 3.4 * len(scores)))
    fig.subplots_adjust(hspace=0.45, wspace=0.35)
    for row, score in enumerate(scores):
        for ax, (dataset, res) in zip(axes[row], results.items(), strict=True):
            rows = res["rows"]
            lams = np.array([r["lam"] for r in rows])
            sc = ax.scatter([r[score] for r in rows], [100 * r["acc"] for r in rows],
                            c=np.log2(lams), cmap="viridis", vmin=-2, vmax=2, s=28)
            rho = spearman_table(rows, [score])[score]
            ax.set_title(f"{dataset}: Spearman {rho:+.2f}", fontsize=10)
            ax.set_xlabel(f"{score} score")
            ax.set_ylabel("accuracy (%)")
    fig.colorbar(sc, ax=axes.ravel().tolist(), label="log2(lam)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _spearman_rows(results):
    names = candidate_names(next(iter(results.values()))["rows"])
    table = {d: spearman_table(r["rows"], names) for d, r in results.items()}
    rows = []
    for name in names:
        row = {"candidate": name}
        row.update({d: table[d][name] for d in results})
        row["mean"] = float(np.nanmean([table[d][name] for d in results]))
        rows.append(row)
    return sorted(rows, key=lambda r: -np.nan_to_num(r["mean"], nan=-9))


def write_report(path, results, argv, args):
    """Write the markdown report and the figure next to it."""
    figure = os.path.splitext(path)[0] + ".png"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    plot_scores(figure, results)
    spear = _spearman_rows(results)
    lam_rows, restart_rows, k_rows, cost_rows, sim_rows = [], [], [], [], []
    for dataset, res in results.items():
        rows = res["rows"]
        per_lam = " ".join(str(sum(r["lam"] == lam for r in rows))
                           for lam in sorted({r["lam"] for r in rows}))
        lam_rows.append({"dataset": dataset, "fits": len(rows), "seeds per lam": per_lam,
                         "acc range": f"{100 * min(r['acc'] for r in rows):.1f}-"
                                      f"{100 * max(r['acc'] for r in rows):.1f}",
                         **lam_selection(rows)})
        default = [r for r in rows if r["lam"] == 1.0]
        picked = restart_selection(default)
        restart_rows.append({"dataset": dataset, "seeds": len(default),
                             **{k: _mean_std(v) for k, v in picked.items()}})
        names = [K_SCORE, SHIPPED, "knn_agree_balanced", "silhouette_pca", "calinski_pca",
                 "probe_pca", "neg_loss"]
        if res["k_rows"]:
            chosen = k_selection(res["k_rows"], [n for n in names if n in res["k_rows"][0]])
            ks = sorted({r["K"] for r in res["k_rows"]})
            stab = k_stability(res["k_rows"])
            k_rows.append({"dataset": dataset, "true K": res["n_classes"],
                           "K tried": f"{ks[0]}..{ks[-1]} ({len(ks)} values)",
                           "K with 2 seeds": " ".join(map(str, stab)) or "none",
                           **{f"by {k}": v for k, v in chosen.items()}})
        fit_t = np.median([r["fit_time"] for r in rows])
        info_t = np.median([r["neighbor_information_time"] for r in rows])
        val_t = np.median([r["validity_time"] for r in rows])
        cost_rows.append({"dataset": dataset, "median fit (s)": fit_t,
                          "median neighbor_information_score (s)": info_t,
                          "neighbor_information / fit": info_t / fit_t,
                          "median validity_score (s)": val_t, "validity / fit": val_t / fit_t,
                          "neighbor_information_features / fit": np.median(
                              [r["neighbor_information_features_time"] for r in rows]) / fit_t,
                          "UMAP-10 once (s)": res["ctx_times"].get("umap", float("nan"))})
        estimators = simulated_estimators(rows)
        sim_names = ["restart_stability", "restart_consensus", SHIPPED, K_SCORE, "neg_loss"]
        sim = spearman_table(estimators, sim_names)
        sim_rows.append({"dataset": dataset, "estimators": len(estimators),
                         "of which at lam=1": sum(e["lam"] == 1.0 for e in estimators),
                         **{name: sim[name] for name in sim_names}})
    best_cfg = []
    for dataset, res in results.items():
        rows = res["rows"]
        sel = lam_selection(rows)
        by_lam = {lam: np.mean([r["acc"] for r in rows if r["lam"] == lam])
                  for lam in {r["lam"] for r in rows}}
        medoid = max(rows, key=lambda r: r["consensus"])
        base = {f"{k} (seed 0)": 100 * v if v is not None else "n/a"
                for k, v in res["baselines"].items()}
        best_cfg.append({"dataset": dataset,
                         "CCE, lam by consensus (mean acc)": 100 * by_lam[sel["lam by consensus"]],
                         "CCE, grid fit with the best consensus": 100 * medoid["acc"],
                         "CCE, best lam (mean acc)": sel["its acc"], **base})
    header = _header_text(argv, args, results)
    body = [
        "",
        "## Spearman correlation with accuracy, every candidate",
        "",
        "Over the fits at the true number of clusters (every `lam` x seed); higher is better. "
        f"`{SHIPPED}` is what `CollisionClustering.score` and `make_validity_scorer` return "
        f"(`skcce.selection.neighbor_information_score`), `{K_SCORE}` what `select_n_clusters` "
        "chooses the number of clusters by (`skcce.selection.validity_score`). "
        "`neighbor_information_features` is the same score on the features' own neighbour "
        "graph (`n_components=None`), `neighbor_information_pca` on a 50-component PCA's; "
        "the shipped one searches a 128-component PCA. "
        "`consensus`, `stability_restarts`, `agreement_same_lam` and "
        "`agreement_same_lam_x_size_entropy` need several fits (restarts); every other "
        "candidate scores one fit. `agreement_same_lam_x_size_entropy` and the `res2` "
        "(resolution 2) modularities were set after looking at these datasets; the other "
        "candidates have no parameter fitted to them. Approximate standard error of a "
        "Spearman correlation near 0 (sqrt(1.06 / (n - 3)), Fieller, Hartley and Pearson "
        "1957; smaller for larger correlations), from the number n of fits: "
        + ", ".join(f"{d} {np.sqrt(1.06 / (len(r['rows']) - 3)):.2f}"
                    for d, r in results.items())
        + "; differences of that size between candidates are within the noise.",
        "",
        _markdown_table(spear, "{:+.2f}"),
        "",
        f"![{SHIPPED}, {K_SCORE} and consensus scores against accuracy]"
        f"({os.path.basename(figure)})",
        "",
    ]
    text = write_markdown(path, "Label-free model selection", header, [])
    sections = [("Choosing lam without labels (mean over seeds per lam)", lam_rows),
                ("Restarts: n_init chosen by a score (every n_init-subset of the seeds at "
                 "lam=1; accuracy mean +- std in points)", restart_rows),
                ("Scoring an estimator that kept its restarts (simulated n_init=3: every 3 "
                 "seeds of a lam are one estimator, which keeps its medoid restart; Spearman "
                 "with the kept restart's accuracy over the estimators; the subsets of one lam "
                 "overlap, and on fashion and mnist most estimators are at lam=1)", sim_rows),
                ("Choosing the number of clusters (lam=1; single-fit scores on the first seed of "
                 "each K, stability = ARI between seeds where a K has two)", k_rows),
                ("Against K-means and UMAP(10)+K-means (accuracy, %)", best_cfg),
                ("Cost", cost_rows)]
    for title, rows in sections:
        if rows:
            fmt = "{:+.2f}" if rows is sim_rows else "{:.4g}"
            body += [f"## {title}", "", _markdown_table(rows, fmt), ""]
    targets = _targets(results, spear, k_rows, best_cfg, cost_rows)
    body += ["## Targets of issue 13", "", *targets, ""]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text + "\n".join(body))


def _markdown_table(rows, fmt="{:.4g}"):
    """Pipe table of a list of dicts (floats through ``fmt``)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt.format(row[c]) if isinstance(row[c], float) else str(row[c])
                                for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(ok):
    return "met" if ok else "**not met**"


#: Reports of ``bench_fixed_features.py`` that run the documented label-free
#: configuration beside UMAP+K-means and TEMI on the four datasets.
LABEL_FREE_REPORTS = ("fixed_features_label_free_cnn.md", "fixed_features_label_free_pixels.md")
LABEL_FREE_CONFIG = "CCE default, n_init=5 + refine"


def _label_free_lines(folder=None):
    """Target lines read from the label-free reports' tables (mean accuracy per method).

    The documented configuration against UMAP+K-means of the same run, with
    TEMI beside; a missing report is said to be missing.  ``folder`` holds
    the reports (default: ``docs/benchmarks``).
    """
    folder = os.path.dirname(DEFAULT_OUTPUT) if folder is None else folder
    lines = []
    for name in LABEL_FREE_REPORTS:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            lines.append(f"- `{name}`: not generated yet.")
            continue
        with open(path, encoding="utf-8") as fh:
            table = update_readme.first_table(fh.read())
        header = update_readme._cells(table[0])
        acc = {}
        for line in table[2:]:
            cells = dict(zip(header, update_readme._cells(line), strict=True))
            acc[cells["dataset"], cells["method"]] = float(cells["accuracy"].split()[0])
        for dataset in dict.fromkeys(d for d, _ in acc):
            ours, umap = acc[dataset, LABEL_FREE_CONFIG], acc[dataset, "UMAP+K-means"]
            temi = acc.get((dataset, "TEMI"), float("nan"))
            mlp = acc.get((dataset, "CCE MLP head, n_init=5 + refine"), float("nan"))
            shown = "fashion" if dataset.startswith("fashion") else dataset
            lines.append(f"- {shown}: `n_init=5, refine_epochs=5` (mean over seeds) {ours:.1f} "
                         f"vs UMAP(10)+K-means {umap:.1f} in the same run (`{name}`): "
                         f"{_verdict(ours >= umap)}; with `model='mlp'` {mlp:.1f}; "
                         f"TEMI {temi:.1f}.")
    return lines


def _targets(results, spear, k_rows, best_cfg, cost_rows):
    """One line per target of the issue, computed from the tables (met or not)."""
    lines = []
    by_name = {r["candidate"]: r for r in spear}
    for name in (SHIPPED, K_SCORE, "consensus"):
        values = {d: by_name[name][d] for d in results}
        ok = all(v >= 0.6 for v in values.values())
        cells = ", ".join(f"{d} {v:+.2f}" for d, v in values.items())
        lines.append(f"- Spearman >= 0.6 on each dataset, `{name}`: {_verdict(ok)} ({cells}).")
    for name in (SHIPPED, K_SCORE, "consensus"):
        gaps = {d: lam_selection(r["rows"])[f"gap, {name} (points)"] for d, r in results.items()}
        ok = all(g <= 2 for g in gaps.values())
        cells = ", ".join(f"{d} {g:.1f}" for d, g in gaps.items())
        lines.append(f"- lam chosen by `{name}` within 2 points of the best lam: "
                     f"{_verdict(ok)} (gap in points: {cells}).")
    for dataset in ("effnet", "fashion"):
        if dataset not in results:
            continue
        default = [r for r in results[dataset]["rows"] if r["lam"] == 1.0]
        picked = restart_selection(default)
        single = np.mean(picked["single fits"])
        for key, accs in picked.items():
            if key == "single fits":
                continue
            ok = np.mean(accs) >= single + 0.02 and np.std(accs) <= 0.015 and len(default) >= 5
            lines.append(f"- {dataset}, {key}: mean {100 * np.mean(accs):.1f} vs single fits "
                         f"{100 * single:.1f}, std {100 * np.std(accs):.1f} over "
                         f"{len(accs)} subsets of {len(default)} seeds: {_verdict(ok)}"
                         + ("" if len(default) >= 5 else " (fewer than 5 seeds were fitted)"))
    lines.append("- The restarts above are chosen among single fits, without refinement. "
                 "The documented configuration, `n_init=5, refine_epochs=5` (the consensus "
                 "restart refined on the restarts' aligned mean), is measured over 6 seeds on "
                 "all four datasets, beside UMAP(10)+K-means and TEMI, by "
                 "`bench_fixed_features.py` in `fixed_features_label_free_cnn.md` and "
                 "`fixed_features_label_free_pixels.md`; the last target below is judged there "
                 "as well.")
    for name in (K_SCORE, "stability"):
        measured = [r for r in k_rows if r[f"by {name}"] != "n/a"]
        hits = sum(abs(r[f"by {name}"] - r["true K"]) <= 2 for r in measured)
        lines.append(f"- n_clusters by `{name}` within +-2 of the truth on 3 of 4 datasets: "
                     f"{_verdict(hits >= 3)} ({hits} of {len(measured)} measured: "
                     + ", ".join(f"{r['dataset']} {r[f'by {name}']}" for r in measured) + ").")
    lines += _label_free_lines()
    for row in best_cfg:
        umap = row.get("UMAP(10)+K-means (seed 0)")
        if isinstance(umap, float):
            ours = row["CCE, lam by consensus (mean acc)"]
            lines.append(f"- {row['dataset']}: label-free CCE (lam by consensus) {ours:.1f} vs "
                         f"UMAP(10)+K-means {umap:.1f}: {_verdict(ours >= umap)}.")
    for name in (SHIPPED, "neighbor_information_features"):
        ratios = {r["dataset"]: r[f"{name} / fit"] for r in cost_rows}
        cells = ", ".join(f"{d} {v:.2f}" for d, v in ratios.items())
        lines.append(f"- `{name}` costs at most 20% of a default fit (median over the fits): "
                     f"{_verdict(all(v <= 0.2 for v in ratios.values()))} ({cells}).")
    lines.append("- TEMI baseline: an objective of the same training loop (`loss='temi'`), "
                 "measured by `benchmarks/bench_fixed_features.py` beside K-means and "
                 "UMAP+K-means in `fixed_features_temi.md`, and beside the label-free "
                 "configurations on all four datasets in the reports named above.")
    return lines


def _grid_text(results):
    """What the cached grid holds, in words: seeds per lam and per number of clusters."""
    lam_seeds = {d: {lam: sum(r["lam"] == lam for r in res["rows"]) for lam in LAMS}
                 for d, res in results.items()}
    counts = {n for per in lam_seeds.values() for n in per.values()}
    if len(counts) == 1:
        text = f"Every dataset has {counts.pop()} seeds at every `lam`. "
    else:
        text = ("The number of seeds differs between datasets and `lam` values (the lam table "
                "lists them). ")
    k_seeds = {}
    for d, res in results.items():
        per_k = {}
        for r in res["k_rows"]:
            per_k[r["K"]] = per_k.get(r["K"], 0) + 1
        k_seeds[d] = per_k
    full = [d for d, per in k_seeds.items() if per and set(per) == set(K_RANGE)
            and min(per.values()) >= 2]
    if full:
        text += (f"The grid over `n_clusters` ({min(K_RANGE)}..{max(K_RANGE)}, `lam=1`) has "
                 f"two seeds per K on {', '.join(full)}")
        rest = [d for d in k_seeds if d not in full]
        text += (f"; on {', '.join(rest)} it is partial (the K table lists it). " if rest
                 else ". ")
    else:
        text += "The grid over `n_clusters` is partial (the K table lists it). "
    return text


def _header_text(argv, args, results):
    return (
        "Default `CollisionClustering` fits (one thread) over `lam` in "
        f"{{{', '.join(f'{lam:g}' for lam in LAMS)}}} and several seeds on each dataset; "
        "each fit's labels, `predict_proba` and pseudo-labels are cached, and every candidate "
        "score is computed on the same fits (`benchmarks/_selection_candidates.py`). "
        "Accuracy is the Hungarian-matched accuracy against the true classes, used only to "
        "judge the scores. The `lam` choice is simulated from full-data fits: the mean score "
        "of the seeds of each `lam`, as a label-free `GridSearchCV` would average folds. "
        f"MNIST is a fixed random subsample of {args.mnist_samples} of the 70,000 rows "
        "(seed 0); Fashion-MNIST is the first 10,000 training images through "
        "EfficientNet-Lite0 (`benchmarks/make_fashion_features.py`). "
        + _grid_text(results) +
        "The restart table draws every `n_init`-subset of the seeds at `lam=1`, so its "
        "subsets overlap and its std understates the spread of independent `n_init` runs. "
        "Times are wall-clock on a machine shared with other jobs; "
        "compare them only as ratios within a dataset. A score is timed when it is first "
        "computed for a fit and cached with it (and again when the library's defaults "
        "for it change), so scores added after the fits (such as `neighbor_information`) "
        "were timed in a later run, under another load.\n\n"
        f"Machine: {machine_description()}\n\n"
        f"Command: `python benchmarks/bench_model_selection.py {' '.join(argv)}`"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="per-fit cache (outside the repo)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--fashion", default=DEFAULT_FASHION)
    parser.add_argument("--mnist-samples", type=int, default=10000)
    parser.add_argument("--fit-only", action="store_true", help="only fill the cache")
    parser.add_argument("--report-only", action="store_true",
                        help="no new fit: report on the fits already in the cache")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: digits, 2 seeds, 3 lams, K in 8..12, 3 epochs, "
                             "no UMAP, in a temporary folder")
    parser.add_argument("--output", default=None)
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP silhouette")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    data_kwargs = {"data_dir": args.data_dir, "fashion": args.fashion,
                   "mnist_samples": args.mnist_samples}
    if args.quick:
        tmp = tempfile.mkdtemp(prefix="skcce_model_selection_")
        args.cache = os.path.join(tmp, "cache")
        args.output = args.output or os.path.join(tmp, "model_selection.md")
        args.no_umap = True
        plan = fit_plan(["digits"], [0, 1], lams=(0.25, 1.0, 4.0), k_range=range(8, 13))
    else:
        plan = fit_plan(args.datasets, list(range(args.seeds)))
    params = {"max_epochs": 3} if args.quick else None
    if not args.report_only:
        run_fits(plan, args.cache, data_kwargs, log=lambda m: print(m, flush=True),
                 params=params)
    if args.fit_only:
        return
    datasets = ["digits"] if args.quick else args.datasets
    results = {}
    for dataset in datasets:
        X, y = load_dataset(dataset, **data_kwargs)
        ctx = context_cached(args.cache, dataset, X, umap=not args.no_umap)
        fits = load_fits(args.cache, dataset)
        n_classes = len(np.unique(y))
        rows = score_fits([f for f in fits if f["n_clusters"] == n_classes], ctx)
        k_fits = [f for f in fits if f["lam"] == 1.0 and f["seed"] <= 1]
        k_rows = score_fits(k_fits, ctx) if len({f["n_clusters"] for f in k_fits}) > 1 else []
        baseline = baseline_accuracies(args.cache, dataset, ctx, y, n_classes)
        results[dataset] = {"rows": rows, "k_rows": k_rows, "n_classes": n_classes,
                            "baselines": baseline, "ctx_times": ctx["times"]}
        print(f"{dataset}: {len(rows)} fits at K={n_classes}, {len(k_rows)} over K", flush=True)
    output = args.output or DEFAULT_OUTPUT
    write_report(output, results, argv if argv is not None else sys.argv[1:], args)
    if args.quick:  # the smoke run's fits are not worth keeping
        shutil.rmtree(args.cache, ignore_errors=True)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
