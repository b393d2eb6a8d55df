"""Clustering fixed feature vectors: re-measure the paper's Tables 2 and 5 on data we have.

Runs K-means, UMAP + K-means, the self-labeling baselines in the same training
loop (MI-GD, SeLa, MI-ADM) and collision cross-entropy (reverse KL + EM, with
and without feature-space neighbour augmentation; forward KL + PGD) and
TEMI (Adaloglou et al. 2023, :mod:`skcce._temi`: a head trained on the fixed
features against its EMA teacher on neighbour pairs) on

* ``digits``: scikit-learn's 8x8 digits (1797 x 64),
* ``effnet``: 1280-d pretrained-CNN (EfficientNet-lite0) features of 10k
  MNIST training images (``--data-dir``/mnist_train10k_effnet_lite0.npz),
* ``mnist``: MNIST-70k raw pixels (``--data-dir``/mnist70k.npz),
* any ``.npz`` holding ``X`` and ``y`` (``--features path.npz``).

Features are standardized (``StandardScaler``) and cast to float32 for every
method. Each method runs with several seeds; the report gives the Hungarian
accuracy (mean +- std), NMI, ARI (means) and the median fit time, with its
ratio to ``KMeans(n_init=10)`` measured in the same run. The markdown report
(``docs/benchmarks/fixed_features.md`` by default) states the machine, the
date and the exact command.

Usage::

    python benchmarks/bench_fixed_features.py                   # everything
    python benchmarks/bench_fixed_features.py --quick           # smoke run (digits, 2 seeds)
    python benchmarks/bench_fixed_features.py --datasets effnet --seeds 6
    python benchmarks/bench_fixed_features.py --features feats.npz --n-clusters 10
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _common import machine_description, write_markdown  # noqa: E402

from skcce import CollisionClustering  # noqa: E402
from skcce.metrics import clustering_accuracy  # noqa: E402

DEFAULT_DATA_DIR = os.environ.get("SKCCE_DATA",
                                  os.path.join(os.path.dirname(ROOT), "shared", "data"))
DEFAULT_OUTPUT = os.path.join(ROOT, "docs", "benchmarks", "fixed_features.md")
DATASETS = ("digits", "effnet", "mnist")

# name -> (description, CollisionClustering parameters on top of the defaults).
# Baselines share the default model, optimizer and schedule; only the loss,
# the fairness form, the solver and the augmentation change.
CCE_METHODS = {
    "MI-GD": ("mutual information, gradient descent", {
        "loss": "mutual_information", "augment": None, "n_init": 1}),
    "SeLa": ("Shannon CE, Sinkhorn hard labels", {
        "loss": "shannon", "solver": "sinkhorn", "augment": None, "n_init": 1}),
    "MI-ADM": ("Shannon CE, soft labels, KL(y|u)", {
        "loss": "shannon", "fairness": "forward", "augment": None, "n_init": 1}),
    "CCE forward+PGD": ("collision CE, KL(y|u), PGD", {
        "fairness": "forward", "augment": None, "n_init": 1}),
    "CCE reverse+EM": ("collision CE, KL(u|y), EM", {"augment": None, "n_init": 1}),
    "CCE + neighbours (avg)": ("sigma averaged with a random kNN", {
        "augment": "neighbors", "n_init": 1}),
    "CCE + cross neighbours": ("y_i from sigma_j of a random kNN", {
        "augment": "cross_neighbors", "n_init": 1}),
    "CCE default": ("CollisionClustering() defaults", {}),
    "CCE default, n_init=3": ("defaults, 3 restarts, the one agreeing most with the others "
                              "kept (consensus)", {"n_init": 3}),
    "CCE default, n_init=5": ("defaults, 5 restarts, consensus", {"n_init": 5}),
    "CCE default, n_init=5 + refine": ("defaults, 5 restarts, consensus; the kept one refined "
                                       "for 5 epochs on the restarts' aligned mean",
                                       {"n_init": 5, "refine_epochs": 5}),
    "CCE default, solver_tol=1e-4": ("defaults with the solver tolerance of skcce 0.1", {
        "solver_tol": 1e-4}),
    "CCE default, solver_tol=1e-2": ("defaults with a 10x looser solver tolerance", {
        "solver_tol": 1e-2}),
    "CCE default, MLP head": ("defaults with model='mlp' (one hidden layer of 512)", {
        "model": "mlp"}),
    "CCE default + refine": ("defaults, then 5 epochs on neighbour-smoothed soft targets", {
        "refine_epochs": 5}),
    "CCE MLP head, n_init=5 + refine": ("model='mlp', 5 restarts, consensus, the kept one "
                                        "refined on the restarts' aligned mean",
                                        {"model": "mlp", "n_init": 5, "refine_epochs": 5}),
    "TEMI": ("Adaloglou et al. 2023: EMA teacher, weighted PMI on kNN pairs (skcce._temi)", {
        "loss": "temi", "augment": "cross_neighbors", "n_init": 1}),
}
QUICK_PARAMS = {"max_epochs": 3}


class UMAPKMeans:
    """UMAP(n_components=10) followed by KMeans(n_init=10): the common recipe on embeddings.

    Parameters
    ----------
    n_clusters : int
        Number of clusters.
    random_state : int
        Seed of UMAP and K-means.
    """

    def __init__(self, n_clusters, random_state):
        self.n_clusters = n_clusters
        self.random_state = random_state

    def fit_predict(self, X):
        """Embed with UMAP, then cluster with K-means; returns the labels."""
        try:
            import umap
        except ImportError as exc:  # a benchmark extra, not a dependency
            raise ImportError(
                "UMAP + K-means needs umap-learn: pip install 'skcce[bench]' "
                "(or skip it with --methods)") from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seeded UMAP warns that it runs single-threaded
            Z = umap.UMAP(n_components=10, random_state=self.random_state).fit_transform(X)
        km = KMeans(self.n_clusters, n_init=10, random_state=self.random_state)
        return km.fit_predict(Z)


def make_method(name, n_clusters, seed, extra):
    """Return an unfitted clusterer with ``fit_predict`` for method ``name``."""
    if name == "K-means":
        return KMeans(n_clusters, n_init=10, random_state=seed)
    if name == "UMAP+K-means":
        return UMAPKMeans(n_clusters, seed)
    params = {**CCE_METHODS[name][1], **extra}
    return CollisionClustering(n_clusters, random_state=seed, **params)


#: run only when named in --methods (the restart study of fixed_features_restarts.md)
OPT_IN_METHODS = ("CCE default, n_init=5", "CCE default, n_init=5 + refine",
                  "CCE MLP head, n_init=5 + refine")


def method_names():
    """All method names, in report order."""
    return ["K-means", "UMAP+K-means", *CCE_METHODS]


def default_method_names():
    """The methods run when --methods is not given: all but the opt-in ones."""
    return [m for m in method_names() if m not in OPT_IN_METHODS]


def load_dataset(name, data_dir, mnist_samples=None):
    """Return ``(X, y)`` for a named dataset or an ``.npz`` path (``X`` and ``y`` keys)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
    else:
        path = {"effnet": os.path.join(data_dir, "mnist_train10k_effnet_lite0.npz"),
                "mnist": os.path.join(data_dir, "mnist70k.npz")}.get(name, name)
        if not os.path.exists(path):
            raise ValueError(f"dataset {name!r}: file {path} not found (see --data-dir)")
        with np.load(path) as data:
            if "X" not in data or "y" not in data:
                raise ValueError(f"{path} must hold arrays 'X' and 'y', has {sorted(data)}")
            X, y = data["X"], data["y"]
        if name == "mnist" and mnist_samples is not None and mnist_samples < len(X):
            keep = np.random.default_rng(0).permutation(len(X))[:mnist_samples]
            X, y = X[keep], y[keep]
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    return X, np.asarray(y).astype(np.int64)


def run_one(name, X, y, n_clusters, seed, extra):
    """Fit one method with one seed; returns a dict of scores and the fit time."""
    est = make_method(name, n_clusters, seed, extra)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = est.fit_predict(X)
    seconds = time.perf_counter() - start
    return {"acc": clustering_accuracy(y, labels), "nmi": normalized_mutual_info_score(y, labels),
            "ari": adjusted_rand_score(y, labels), "time": seconds,
            "loss": getattr(est, "loss_", float("nan"))}


def warm_up(name, X, n_clusters, extra):
    """Untimed one-epoch fit on a few rows: compiles the Numba kernels before the timing."""
    if name in ("K-means", "UMAP+K-means"):
        return
    rows = X[: max(4 * n_clusters, min(len(X), 512))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_method(name, n_clusters, 0, {**extra, "max_epochs": 1, "n_init": 1}).fit(rows)


def summarize(dataset, name, runs, kmeans_time):
    """One table row from the runs of one method."""
    acc = np.array([r["acc"] for r in runs])
    median_time = statistics.median(r["time"] for r in runs)
    losses = np.array([r["loss"] for r in runs])
    picked = acc[int(np.nanargmin(losses))] if np.isfinite(losses).any() else float("nan")
    return {
        "dataset": dataset,
        "method": name,
        "accuracy": f"{100 * acc.mean():.2f} ± {100 * acc.std():.2f}",
        "min-max": f"{100 * acc.min():.1f}-{100 * acc.max():.1f}",
        "lowest-loss seed": "" if np.isnan(picked) else f"{100 * picked:.1f}",
        "NMI": float(np.mean([r["nmi"] for r in runs])),
        "ARI": float(np.mean([r["ari"] for r in runs])),
        "fit time (s)": median_time,
        "time / K-means": median_time / kmeans_time if kmeans_time else float("nan"),
        "seeds": len(runs),
    }


def run_dataset(dataset, X, y, n_clusters, methods, seeds, extra, log):
    """All methods on one dataset; K-means first, so the time ratio has its baseline."""
    rows, kmeans_time = [], None
    ordered = ["K-means"] + [m for m in methods if m != "K-means"]
    for name in ordered:
        warm_up(name, X, n_clusters, extra)
        runs = []
        for seed in seeds:
            runs.append(run_one(name, X, y, n_clusters, seed, extra))
            log(f"{dataset:>8s} {name:<24s} seed {seed}: acc {runs[-1]['acc']:.4f} "
                f"loss {runs[-1]['loss']:.4f} time {runs[-1]['time']:.1f}s")
        if name == "K-means":
            kmeans_time = statistics.median(r["time"] for r in runs)
            if name not in methods:
                continue
        rows.append(summarize(dataset, name, runs, kmeans_time))
    return rows


def _header(args, argv, datasets):
    lines = [
        "Hungarian accuracy in % (mean ± std over seeds, min-max), mean NMI and ARI, and the "
        "median fit time (wall-clock seconds); `time / K-means` divides by the median fit "
        "time of `KMeans(n_clusters, n_init=10)` measured in the same run on the same data. "
        "Wall-clock times move with whatever else the machine runs: two rows with the same "
        "settings (CCE default and CCE + cross neighbours) show how far. "
        "Each method is fitted once on a few rows before the timed fits, so Numba compilation "
        "is not timed. `lowest-loss seed` is the accuracy of the seed with the lowest final "
        "self-labeling loss (`loss_`), i.e. what restarts chosen by the lowest loss (the "
        "`n_init` rule of skcce 0.1) would keep. Features are "
        "standardized (StandardScaler) and float32.",
        "",
        f"Command: `python benchmarks/bench_fixed_features.py {shlex.join(argv)}`".rstrip(),
        "",
        f"Machine: {machine_description()}",
        "",
        "Datasets: " + "; ".join(f"{name} ({n} x {d}, {k} clusters)"
                                  for name, n, d, k in datasets),
        "",
        "CollisionClustering defaults: " + ", ".join(
            f"{k}={v!r}" for k, v in sorted(CollisionClustering().get_params().items())
            if k not in ("random_state", "verbose", "device")),
        "",
        "Methods: " + "; ".join(f"{n}: {d} {p}" for n, (d, p) in CCE_METHODS.items()),
    ]
    if args.max_epochs is not None or args.quick:
        lines += ["", f"Overrides for every CollisionClustering: {_extra(args)!r}"]
    if args.mnist_samples is not None:
        lines += ["", f"mnist: a fixed random subset of {args.mnist_samples} of the 70,000 rows."]
    return "\n".join(lines)


def _extra(args):
    extra = dict(QUICK_PARAMS) if args.quick else {}
    if args.max_epochs is not None:
        extra["max_epochs"] = args.max_epochs
    return extra


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS),
                        help="names among digits, effnet, mnist (default: all three; "
                             "none, to run only --features)")
    parser.add_argument("--features", nargs="+", default=[],
                        help=".npz files with X (n, d) and y (n,) to benchmark as well")
    parser.add_argument("--methods", nargs="+", default=None, choices=method_names(),
                        metavar="METHOD", help=f"subset of: {', '.join(method_names())}")
    parser.add_argument("--seeds", type=int, default=6, help="seeds per method (default 6)")
    parser.add_argument("--n-clusters", type=int, default=None,
                        help="number of clusters (default: number of classes in y)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="override max_epochs of every CollisionClustering")
    parser.add_argument("--mnist-samples", type=int, default=None,
                        help="use a fixed random subset of MNIST-70k of this size")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: digits only, 2 seeds, 3 epochs, no UMAP")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.quick:
        args.datasets = ["digits"] if not args.features else []
        args.seeds = min(args.seeds, 2)
        if args.methods is None:
            args.methods = [m for m in default_method_names() if m != "UMAP+K-means"]
    unknown = set(args.datasets) - set(DATASETS)
    if unknown:
        parser.error(f"unknown datasets {sorted(unknown)}; choose among {DATASETS}")
    return args


def main(argv=None):
    """Run the benchmark and write the markdown report; returns the table rows."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    methods = args.methods or default_method_names()
    extra, seeds = _extra(args), list(range(args.seeds))
    rows, described = [], []
    for dataset in [*args.datasets, *args.features]:
        X, y = load_dataset(dataset, args.data_dir, args.mnist_samples)
        k = args.n_clusters or int(np.unique(y).size)
        label = os.path.basename(dataset)
        described.append((label, X.shape[0], X.shape[1], k))
        rows += run_dataset(label, X, y, k, methods, seeds, extra, log=print)
    text = write_markdown(args.output, "Clustering fixed features (paper Tables 2 and 5)",
                          _header(args, argv, described), rows)
    print(text)
    return rows


if __name__ == "__main__":
    main()
