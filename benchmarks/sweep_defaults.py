"""The sweep that chose CollisionClustering's defaults.

One factor at a time: starting from the current defaults, each parameter
(``lam``, ``lr``, ``weight_decay``, ``batch_size``, ``max_epochs``,
``n_neighbors``, the augmentation, the model, and the preprocessing) is
varied over a few values while the others keep their default, on the
pretrained-CNN features of MNIST (``effnet``), on MNIST raw pixels (a fixed
random subset, ``--mnist-samples``) and on scikit-learn's digits. Features are
standardized first, except for the preprocessing rows, which compare
standardizing with PCA whitening and with L2-normalizing the standardized
rows. Each setting runs with ``n_init=1`` and several seeds; the report lists
the mean, std and range of the Hungarian accuracy, the accuracy of the seed
with the lowest final loss (what ``n_init`` restarts keep), and the median fit
time. It is written to ``docs/benchmarks/defaults_sweep.md``.

Usage::

    python benchmarks/sweep_defaults.py                 # full sweep
    python benchmarks/sweep_defaults.py --quick         # smoke run
    python benchmarks/sweep_defaults.py --datasets effnet --params lam lr --seeds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.decomposition import PCA

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import machine_description, write_markdown  # noqa: E402
from bench_fixed_features import (  # noqa: E402
    DATASETS,
    DEFAULT_DATA_DIR,
    load_dataset,
    run_one,
)

from skcce import CollisionClustering  # noqa: E402

DEFAULT_OUTPUT = os.path.join(os.path.dirname(HERE), "docs", "benchmarks", "defaults_sweep.md")

# parameter -> values tried (the default is always added).
GRID = {
    "lam": [0.25, 0.5, 1.0, 2.0, 4.0],
    "lr": [1e-3, 3e-3, 1e-2, 3e-2],
    "weight_decay": [0.0, 1e-4, 1e-3],
    "batch_size": [128, 256, 512],
    "max_epochs": [10, 20, 40],
    "n_neighbors": [3, 5, 10, 20],
    "augment": [None, "neighbors", "cross_neighbors"],
    "model": ["linear", "mlp"],
    "preprocessing": ["standardize", "pca-whiten", "l2-normalize"],
}
QUICK_GRID = {"lam": [0.5, 2.0], "augment": [None, "cross_neighbors"],
              "preprocessing": ["standardize", "l2-normalize"]}


def preprocess(X, how, seed=0):
    """Standardized ``X`` further transformed by ``how`` (see the module docstring)."""
    if how == "standardize":
        return X
    if how == "pca-whiten":
        n_components = min(128, X.shape[1], X.shape[0] - 1)
        Z = PCA(n_components, whiten=True, random_state=seed).fit_transform(X)
        return Z.astype(np.float32)
    if how == "l2-normalize":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        return (X / np.maximum(norms, 1e-12) * np.sqrt(X.shape[1])).astype(np.float32)
    raise ValueError(f"unknown preprocessing {how!r}")


def _fit_one(X, y, n_clusters, params, seed, threads):
    """Fit one setting with one seed; returns (accuracy, final loss, fit time)."""
    if threads is not None:  # a worker process: one thread each, as in the parent
        torch.set_num_threads(threads)
    # "CCE default" adds nothing to ``params``: the benchmark's timed fit of the estimator
    run = run_one("CCE default", X, y, n_clusters, seed, params)
    return run["acc"], run["loss"], run["time"]


def fit_seeds(X, y, n_clusters, params, seeds, n_jobs=1):
    """Fit one setting with each seed (``n_jobs`` worker processes); returns accuracies,
    final losses and fit times."""
    if n_jobs == 1:
        runs = [_fit_one(X, y, n_clusters, params, seed, None) for seed in seeds]
    else:
        threads = torch.get_num_threads()
        runs = Parallel(n_jobs=n_jobs)(delayed(_fit_one)(X, y, n_clusters, params, seed, threads)
                                       for seed in seeds)
    acc, loss, seconds = (list(col) for col in zip(*runs, strict=True))
    return np.array(acc), np.array(loss), seconds


def sweep_dataset(name, X, y, grid, seeds, base, log, n_jobs=1):
    """One-factor-at-a-time sweep on one dataset; returns table rows."""
    n_clusters = int(np.unique(y).size)
    defaults = CollisionClustering().get_params()
    rows = []
    for param, values in grid.items():
        default = "standardize" if param == "preprocessing" else defaults[param]
        for value in sorted(set(values) | {default}, key=repr):
            params = dict(base)
            Xp = X
            if param == "preprocessing":
                Xp = preprocess(X, value)
            else:
                params[param] = value
            acc, loss, seconds = fit_seeds(Xp, y, n_clusters, params, seeds, n_jobs)
            picked = acc[int(np.nanargmin(loss))] if np.isfinite(loss).any() else float("nan")
            rows.append({
                "dataset": name, "parameter": param,
                "value": repr(value) + (" (default)" if value == default else ""),
                "accuracy": f"{100 * acc.mean():.2f} ± {100 * acc.std():.2f}",
                "min-max": f"{100 * acc.min():.1f}-{100 * acc.max():.1f}",
                "lowest-loss seed": f"{100 * picked:.1f}",
                "fit time (s)": statistics.median(seconds),
            })
            log(f"{name:>8s} {param}={value!r}: {rows[-1]['accuracy']} "
                f"(lowest loss {rows[-1]['lowest-loss seed']})")
    return rows


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--params", nargs="+", default=None, choices=list(GRID),
                        help="parameters to sweep (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (default 3)")
    parser.add_argument("--mnist-samples", type=int, default=10000,
                        help="fixed random subset of MNIST-70k (default 10000)")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="seeds fitted in parallel worker processes (default 1); fit "
                             "times are then per worker, on a shared machine")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: digits, 1 seed, 3 epochs, a few settings")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.n_jobs < 1:
        parser.error("--n-jobs must be >= 1")
    return args


def main(argv=None):
    """Run the sweep and write the markdown report; returns the table rows."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    grid = QUICK_GRID if args.quick else GRID
    if args.params:
        grid = {p: GRID[p] for p in args.params}
    datasets = ["digits"] if args.quick else args.datasets
    seeds = list(range(1 if args.quick else args.seeds))
    base = {"n_init": 1, **({"max_epochs": 3} if args.quick else {})}
    rows = []
    for name in datasets:
        X, y = load_dataset(name, args.data_dir, args.mnist_samples)
        rows += sweep_dataset(name, X, y, grid, seeds, base, log=print, n_jobs=args.n_jobs)
    header = "\n".join([
        "One factor at a time around the defaults: each row changes one parameter of "
        "`CollisionClustering(n_clusters)` and keeps the others at their default "
        "(`n_init=1` in every row). Hungarian accuracy in % over seeds; `lowest-loss seed` "
        "is the accuracy of the seed with the lowest final loss (`loss_`).",
        "",
        f"Command: `python benchmarks/sweep_defaults.py {' '.join(argv)}`".rstrip(),
        "",
        f"Machine: {machine_description()}",
        "",
        f"Seeds: {seeds}. mnist: fixed random subset of {args.mnist_samples} rows of MNIST-70k "
        "raw pixels. Every dataset is standardized first.",
        "",
        "Defaults at the time of the run: " + ", ".join(
            f"{k}={v!r}" for k, v in sorted(CollisionClustering().get_params().items())
            if k not in ("random_state", "verbose", "device")),
        "",
        f"Overrides in every row: {base!r}",
    ])
    text = write_markdown(args.output, "Sweep of CollisionClustering's defaults", header, rows)
    print(text)
    return rows


if __name__ == "__main__":
    main()
