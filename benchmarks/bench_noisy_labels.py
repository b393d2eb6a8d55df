"""Robustness to label noise: collision vs Shannon cross-entropy (the paper's Figure 2).

Protocol: in the training set, the labels of a fraction eta of the rows
(drawn at random) are replaced by labels drawn uniformly from the K classes.
Both losses train the same network on the soft targets
``eta * u + (1 - eta) * onehot(observed label)`` built by
:func:`skcce.soft_targets`, with :class:`skcce.CollisionClassifier`
(``loss='collision'`` or ``loss='shannon'``), and are scored by accuracy on
the clean test set.

The paper trains ResNet-18 on a scene dataset. Here the data are MNIST
(``mnist70k.npz``: training rows from the first 60,000 digits, test rows
from the last 10,000) and the default model is an MLP on the pixels, which
a CPU trains in seconds; ``--model vgg4`` trains the paper's VGG-4 on the
28x28 images instead (use ``--device cuda``).

Writes ``docs/benchmarks/noisy_labels.md`` and ``noisy_labels.png``.

Usage::

    python benchmarks/bench_noisy_labels.py [--n-train 10000] [--seeds 2] [--epochs 20]
    python benchmarks/bench_noisy_labels.py --model vgg4 --device cuda --n-train 60000 --epochs 30
    python benchmarks/bench_noisy_labels.py --quick
"""

import argparse
import os
import shlex
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import machine_description, output_path, write_markdown  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETAS = tuple(round(0.1 * i, 1) for i in range(10))
LOSSES = ("collision", "shannon")


def corrupt_labels(y, eta, n_classes, rng):
    """Replace the labels of a random fraction ``eta`` of rows by uniformly drawn labels."""
    noisy = y.copy()
    rows = rng.choice(len(y), size=int(round(eta * len(y))), replace=False)
    noisy[rows] = rng.integers(0, n_classes, size=len(rows))
    return noisy


def load_data(args):
    from skcce.datasets import load_mnist

    X, y = load_mnist(args.data)
    rng = np.random.default_rng(12345)
    train = rng.choice(60000, size=args.n_train, replace=False)
    test = 60000 + rng.choice(10000, size=args.n_test, replace=False)
    if args.model == "vgg4":  # images: uint8 rows with image_shape, converted per batch
        return X[train], y[train], X[test], y[test]
    X = X.astype(np.float32) / 255.0
    return X[train], y[train], X[test], y[test]


def make_classifier(args, loss, seed):
    from skcce import CollisionClassifier

    kw = {"model": args.model, "lr": args.lr, "batch_size": args.batch_size,
          "max_epochs": args.epochs, "tol": None, "device": args.device, "random_state": seed}
    if args.model == "mlp":
        kw["model_params"] = {"hidden_layer_sizes": (args.hidden,)}
    if args.model == "vgg4":
        kw["image_shape"] = (1, 28, 28)
    return CollisionClassifier(loss, **kw)


def run(args, X_train, y_train, X_test, y_test):
    from skcce import soft_targets

    results = {}  # (loss, eta) -> list of (accuracy, seconds, observed-label agreement)
    for eta in args.etas:
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            noisy = corrupt_labels(y_train, eta, 10, rng)
            targets = soft_targets(noisy, 10, eta)
            for loss in LOSSES:
                start = time.perf_counter()
                clf = make_classifier(args, loss, seed).fit(X_train, targets)
                seconds = time.perf_counter() - start
                acc = float(np.mean(clf.predict(X_test) == y_test))
                agree = float(np.mean(noisy == y_train))
                results.setdefault((loss, eta), []).append((acc, seconds, agree))
                print(f"eta {eta:.1f} seed {seed} {loss:9s} test acc {acc:.4f} ({seconds:.1f}s)",
                      flush=True)
    return results


def plot(args, results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for loss, style in zip(LOSSES, ("-o", "--s"), strict=True):
        acc = np.array([[a for a, _, _ in results[(loss, eta)]] for eta in args.etas])
        label = "collision CE $H_2$" if loss == "collision" else "Shannon CE $H$"
        ax.errorbar(args.etas, 100 * acc.mean(axis=1), yerr=100 * acc.std(axis=1), fmt=style,
                    capsize=3, label=label)
    ax.set_xlabel(r"$\eta$ (fraction of training labels replaced by random ones)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"MNIST, {args.model}, {args.n_train} training images", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(args, results, out, png_name, total_seconds):
    rows = []
    for eta in args.etas:
        row = {"eta": f"{eta:.1f}"}
        row["observed labels correct"] = (
            f"{100 * np.mean([c for _, _, c in results[('collision', eta)]]):.1f}%")
        for loss in LOSSES:
            acc = np.array([a for a, _, _ in results[(loss, eta)]])
            row[f"{loss} CE test acc"] = f"{100 * acc.mean():.2f}% ({100 * acc.std():.2f})"
        diff = (np.array([a for a, _, _ in results[("collision", eta)]])
                - np.array([a for a, _, _ in results[("shannon", eta)]]))
        row["collision - Shannon"] = f"{100 * diff.mean():+.2f} pts"
        secs = [s for loss in LOSSES for _, s, _ in results[(loss, eta)]]
        row["median fit s"] = f"{np.median(secs):.1f}"
        rows.append(row)
    model = (f"an MLP 784-{args.hidden}-10 (BatchNorm, ReLU) on the pixels scaled to [0, 1]"
             if args.model == "mlp" else f"'{args.model}' trained from scratch on the images")
    header = (
        f"Command: `{args.command}`\n\n"
        f"Test accuracy, mean (std) over {args.seeds} seed(s) (each seed draws its own "
        f"corrupted rows, random labels and initialization), on {args.n_test} clean MNIST test "
        f"digits, after training {model} on {args.n_train} MNIST training digits whose labels "
        f"were replaced by uniformly random ones for a fraction eta of the rows (a random "
        f"label can equal the true one; the column 'observed labels correct' gives the "
        f"resulting share). Both losses train on the soft targets eta * u + (1 - eta) * "
        f"onehot(observed label), with Adam (lr {args.lr}), batch {args.batch_size}, "
        f"{args.epochs} epochs, no early stop, on device '{args.device}'. "
        f"Total run time {total_seconds / 60:.1f} min.\n\n"
        f"Machine: {machine_description()}\n\n"
        f"![test accuracy against eta]({png_name})"
    )
    write_markdown(out, "Noisy labels: collision vs Shannon cross-entropy (paper Figure 2)",
                   header, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="mnist70k.npz or its folder (default: search)")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--etas", type=float, nargs="+", default=list(ETAS))
    parser.add_argument("--model", default="mlp", choices=("mlp", "linear", "vgg4"))
    parser.add_argument("--hidden", type=int, default=512, help="MLP hidden width")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks",
                                                      "noisy_labels.md"))
    parser.add_argument("--quick", action="store_true",
                        help="2,000 training digits, 1 seed, 3 epochs, eta in {0, 0.5, 0.9}")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.seeds, args.epochs = 2000, 2000, 1, 3
        args.etas = [0.0, 0.5, 0.9]
    args.command = "python benchmarks/bench_noisy_labels.py " + shlex.join(argv or sys.argv[1:])
    args.command = args.command.strip()
    start = time.perf_counter()
    X_train, y_train, X_test, y_test = load_data(args)
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = run(args, X_train, y_train, X_test, y_test)
    png = output_path(os.path.splitext(args.out)[0] + ".png", args.quick)
    plot(args, results, png)
    write_report(args, results, args.out, os.path.basename(png), time.perf_counter() - start)
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
