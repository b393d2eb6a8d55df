"""Weak supervision at 10%, 5% and 1% labels, CPU scale (the paper's Table 4).

Protocol (paper section 5.3, scaled to a CPU): a stratified train/test
split; in the training split only a fraction of the labels is kept (at least
one per class), the rest are -1. Each method trains the same model on the
training split and is scored by plain accuracy on the test split (the
labeled rows fix cluster ids to label ids, so no matching is needed):

* only seeds: Shannon's cross-entropy on the labeled rows only
  (``CollisionClassifier(loss='shannon')``);
* + MI-GD, + SeLa, + MI-ADM, + CCE (ours): ``CollisionClustering.fit(X, y)``
  with -1 for unlabeled rows, i.e. the labeled cross-entropy added to each
  self-labeling loss, without augmentation as in the paper;
* + CCE with the estimator's default feature-space neighbour augmentation
  (not in the paper).

The paper trains VGG-4 from scratch on STL10/CIFAR10 images (IIC and MI-D
need image augmentations and are not run here). The default data here are
the 1280-d pretrained EfficientNet-Lite0 features of 10,000 MNIST digits
(``mnist_train10k_effnet_lite0.npz``); ``--features`` takes any ``.npz`` with
``X`` and ``y``; ``--quick`` uses scikit-learn's digits, one seed and a few
epochs (a smoke test; its numbers are not meant to be compared).

Writes ``docs/benchmarks/weak.md``.

Usage::

    python benchmarks/bench_weak.py [--seeds 3] [--features F.npz] [--quick]
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import machine_description, write_markdown  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATIOS = (0.1, 0.05, 0.01)

# method name -> CollisionClustering parameters selecting its self-labeling loss
# (as in the paper, without feature-space augmentation, plus CCE with the estimator's default
# neighbour augmentation as an extra row)
SELF_LABELING = {
    "+ MI-GD": {"loss": "mutual_information", "augment": None},
    "+ SeLa": {"loss": "shannon", "solver": "sinkhorn", "augment": None},
    "+ MI-ADM": {"loss": "shannon", "fairness": "forward", "augment": None},
    "+ CCE (ours)": {"augment": None},
    "+ CCE, neighbour augmentation (default)": {},
}


def load_data(args):
    """(X, y, description) for the chosen data set, standardized later per split."""
    if args.quick:
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return X.astype(np.float32), y, "scikit-learn digits (1,797 8x8 images, raw pixels)"
    if args.features:
        with np.load(args.features) as data:
            return data["X"].astype(np.float32), data["y"], f"features from {args.features}"
    from skcce.datasets import load_mnist_features

    X, y = load_mnist_features()
    return (X.astype(np.float32), y,
            "pretrained EfficientNet-Lite0 features of 10,000 MNIST digits (1280-d)")


def partial_labels(y, fraction, rng):
    """Copy of ``y`` keeping ``fraction`` of each class's labels (at least one), -1 elsewhere."""
    partial = np.full(y.shape, -1, dtype=np.int64)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        keep = rng.choice(rows, size=max(1, round(fraction * rows.size)), replace=False)
        partial[keep] = label
    return partial


def run_methods(X_train, y_partial, X_test, y_test, n_classes, seed, args):
    """Test accuracy and fit seconds of every method for one label draw and seed."""
    from skcce import CollisionClassifier, CollisionClustering

    common = {"max_epochs": args.max_epochs, "random_state": seed, "model": args.model}
    labeled = y_partial >= 0
    out = {}
    start = time.perf_counter()
    seeds = CollisionClassifier(loss="shannon", **common)
    seeds.fit(X_train[labeled], y_partial[labeled])
    out["only seeds"] = (np.mean(seeds.predict(X_test) == y_test), time.perf_counter() - start)
    for name, params in SELF_LABELING.items():
        start = time.perf_counter()
        est = CollisionClustering(n_clusters=n_classes, **common, **params)
        est.fit(X_train, y_partial)
        out[name] = (np.mean(est.predict(X_test) == y_test), time.perf_counter() - start)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", help=".npz with X and y (default: the MNIST features)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (label draws) per ratio")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    parser.add_argument("--max-epochs", type=int, default=50)
    parser.add_argument("--model", default="linear", help="model of every method")
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks", "weak.md"))
    parser.add_argument("--quick", action="store_true", help="digits, 1 seed, 3 epochs")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    args.command = " ".join(["python benchmarks/bench_weak.py", *given])
    if args.quick:
        args.seeds, args.max_epochs = 1, 3

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y, description = load_data(args)
    n_classes = int(np.unique(y).size)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=args.test_size, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    results = {}  # (method, ratio) -> list of (accuracy, seconds)
    for ratio in args.ratios:
        for seed in range(args.seeds):
            y_partial = partial_labels(y_train, ratio, np.random.default_rng(seed))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                scores = run_methods(X_train, y_partial, X_test, y_test, n_classes, seed, args)
            for method, value in scores.items():
                results.setdefault((method, ratio), []).append(value)
            print(f"ratio {ratio:g} seed {seed}: " + ", ".join(
                f"{m} {a:.3f}" for m, (a, _) in scores.items()), flush=True)
    write_report(args, results, description, X_train.shape, X_test.shape[0])
    return 0


def _defaults():
    from skcce import CollisionClustering

    params = CollisionClustering().get_params()
    return ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()))


def write_report(args, results, description, train_shape, n_test):
    methods = ["only seeds", *SELF_LABELING]
    rows = []
    for method in methods:
        row = {"method": method}
        for ratio in args.ratios:
            acc = np.array([a for a, _ in results[(method, ratio)]])
            row[f"{ratio:g} labels"] = f"{100 * acc.mean():.2f}% ({100 * acc.std():.2f})"
        secs = [s for ratio in args.ratios for _, s in results[(method, ratio)]]
        row["median fit s"] = f"{np.median(secs):.3g}"
        rows.append(row)
    header = (
        f"Test accuracy, mean (std) over {args.seeds} seed(s) (each seed draws its own labeled "
        f"rows and initialization), with the given fraction of training labels (at least one "
        f"per class). Data: {description}; {train_shape[0]} training rows of "
        f"{train_shape[1]} standardized features, {n_test} test rows. Every method trains "
        f"the same '{args.model}' model for up to {args.max_epochs} epochs with the estimator's "
        f"other defaults; no feature-space augmentation except in the last row. Only seeds: "
        f"Shannon's cross-entropy on the labeled rows only; '+ X': "
        f"the labeled cross-entropy plus X's self-labeling loss on all training rows.\n\n"
        f"Command: `{args.command}`. Machine: {machine_description()}.\n\n"
        f"CollisionClustering defaults at the time of the run: {_defaults()}."
    )
    write_markdown(args.out, "Weak supervision (paper Table 4, CPU scale)", header, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
