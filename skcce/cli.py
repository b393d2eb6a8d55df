"""The ``skcce`` command line: demo, fit, extract and bench.

Every command reports a user error (a missing file, an array of the wrong
shape, an unknown option) as one line on stderr and a non-zero exit status;
``--traceback`` shows the full Python traceback instead, for bug reports.

Exit status: 0 on success, 1 on an error while running, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import runpy
import sys
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["main", "load_features", "load_labels", "find_benchmarks_dir", "BENCHMARKS"]

logger = logging.getLogger(__name__)

#: ``skcce bench NAME`` runs ``main(argv)`` of these scripts in ``benchmarks/``.
BENCHMARKS = {
    "solvers": "bench_solvers.py",
    "fixed": "bench_fixed_features.py",
    "deep": "bench_deep.py",
    "deep-ablation": "bench_deep_ablation.py",
    "noisy": "bench_noisy_labels.py",
    "weak": "bench_weak.py",
    "fig1": "fig1_collision_vs_shannon.py",
    "sweep": "sweep_defaults.py",
}


class CLIError(Exception):
    """A user error; reported as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (plus a hint), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------------- loading


def _load_csv(path):
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
    delimiter = "," if "," in first else None
    try:
        [float(v) for v in first.replace(",", " ").split()]
        skip = 0
    except ValueError:
        skip = 1  # a header row
    try:
        data = np.loadtxt(path, delimiter=delimiter, skiprows=skip, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise CLIError(f"{path}: not a numeric CSV table ({exc})") from None
    return data


def load_features(path):
    """Read a feature matrix (and labels, if stored) from ``.npy``, ``.npz`` or ``.csv``.

    Parameters
    ----------
    path : str or path-like
        ``.npy`` holding a 2-D array; ``.npz`` holding ``X`` (or a single
        array) and optionally ``y``; or ``.csv``, numeric, comma or whitespace
        separated, with an optional header row.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,) or None
        The ``y`` array of an ``.npz`` file, else None.

    Raises
    ------
    CLIError
        Missing file, unknown extension, or an array that is not 2-D.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from skcce.cli import load_features
    >>> path = os.path.join(tempfile.mkdtemp(), "f.npz")
    >>> np.savez(path, X=np.zeros((4, 3)), y=np.arange(4))
    >>> X, y = load_features(path)
    >>> X.shape, y.tolist()
    ((4, 3), [0, 1, 2, 3])
    """
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"features file not found: {path}")
    suffix = path.suffix.lower()
    y = None
    try:
        if suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                keys = list(data.files)
                key = next((k for k in ("X", "x", "features") if k in keys), None)
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None:
                    raise CLIError(f"{path}: no array named 'X' (found {', '.join(keys)})")
                X = data[key]
                y = data["y"] if "y" in keys else None
        elif suffix == ".csv":
            X = _load_csv(path)
        else:
            raise CLIError(f"{path}: unsupported format {suffix!r}; use .npy, .npz or .csv")
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path}: cannot read ({exc})") from None
    if X.ndim != 2:
        raise CLIError(
            f"{path}: expected a 2-D array (n_samples, n_features), got shape {X.shape}"
        )
    if y is not None and (y.ndim != 1 or y.shape[0] != X.shape[0]):
        raise CLIError(f"{path}: 'y' has shape {y.shape}, expected ({X.shape[0]},)")
    return X, y


def load_labels(path, n_samples):
    """Read a 1-D label array from ``.npy``, ``.npz`` (``y``) or ``.csv``.

    Parameters
    ----------
    path : str or path-like
        The file.
    n_samples : int
        Expected length.

    Returns
    -------
    y : ndarray of shape (n_samples,)

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from skcce.cli import load_labels
    >>> path = os.path.join(tempfile.mkdtemp(), "y.npy")
    >>> np.save(path, np.array([0, 1, 1]))
    >>> load_labels(path, 3).tolist()
    [0, 1, 1]
    """
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"labels file not found: {path}")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "y" not in data.files:
                raise CLIError(f"{path}: no array named 'y'")
            y = data["y"]
    elif path.suffix.lower() == ".csv":
        y = _load_csv(path)
    else:
        try:
            y = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CLIError(f"{path}: cannot read ({exc})") from None
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.ravel()
    if y.shape != (n_samples,):
        raise CLIError(f"{path}: labels have shape {y.shape}, expected ({n_samples},)")
    return y


def _score_lines(y_true, y_pred):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from skcce.metrics import clustering_accuracy

    return (
        f"ACC {clustering_accuracy(y_true, y_pred):.4f}  "
        f"NMI {normalized_mutual_info_score(y_true, y_pred):.4f}  "
        f"ARI {adjusted_rand_score(y_true, y_pred):.4f}"
    )


# --------------------------------------------------------------------------- demo


def _demo_methods(n_clusters, seed, quick):
    """(name, estimator factory) pairs compared by ``skcce demo``.

    CCE runs twice: with the estimator's defaults (which include feature-space
    neighbour augmentation) and as in the paper (no augmentation), the
    setting the paper's baselines also use here.
    """
    from sklearn.cluster import KMeans

    from skcce import CollisionClustering

    def cce(**params):
        if quick:
            params.setdefault("max_epochs", 5)
        return lambda: CollisionClustering(n_clusters=n_clusters, random_state=seed, **params)

    methods = [
        ("K-means", lambda: KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)),
        ("CCE (ours, defaults)", cce()),
        ("CCE (ours, no augmentation)", cce(augment=None)),
    ]
    methods += [(name, cce(augment=None, **params)) for name, params in BASELINES.items()]
    return methods


#: CollisionClustering parameters selecting each paper baseline (same loop, model and data).
BASELINES = {
    "MI-GD": {"loss": "mutual_information"},
    "SeLa": {"loss": "shannon", "solver": "sinkhorn"},
    "MI-ADM": {"loss": "shannon", "fairness": "forward"},
}


def _format_table(rows, columns):
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _cmd_demo(args):
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.preprocessing import StandardScaler

    from skcce.metrics import clustering_accuracy

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    n_clusters = int(np.unique(y).size)
    print(f"sklearn digits: {X.shape[0]} images of 8x8 pixels, {n_clusters} classes "
          "(standardized pixels as features)")
    rows, predictions = [], {}
    for name, make in _demo_methods(n_clusters, args.seed, args.quick):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            labels = make().fit_predict(X)
            seconds = time.perf_counter() - start
        predictions[name] = labels
        rows.append((name, f"{clustering_accuracy(y, labels):.3f}",
                     f"{normalized_mutual_info_score(y, labels):.3f}", f"{seconds:.2f}"))
        print(f"  {name}: done in {seconds:.1f} s", file=sys.stderr)
    print()
    print(_format_table(rows, ("method", "accuracy", "NMI", "time (s)")))
    print("\naccuracy: after Hungarian matching of clusters to classes; NMI: normalized "
          "mutual information.")
    if args.no_plot:
        return 0
    from skcce.plotting import plot_confusion_matrix

    fig = plot_confusion_matrix(y, predictions["CCE (ours, defaults)"],
                                title="skcce demo: CCE on sklearn digits")
    out = Path(args.out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    _close(fig)
    print(f"\nconfusion matrix (after matching) and cluster sizes saved to {out.resolve()}")
    return 0


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


# --------------------------------------------------------------------------- fit


def _cmd_fit(args):
    X, y_file = load_features(args.features)
    y_true = load_labels(args.labels, X.shape[0]) if args.labels else y_file
    if not 2 <= args.n_clusters <= X.shape[0]:
        raise CLIError(
            f"--n-clusters must be between 2 and the number of samples ({X.shape[0]}), "
            f"got {args.n_clusters}"
        )
    if not np.issubdtype(X.dtype, np.number):
        raise CLIError(f"{args.features}: features must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float32 if X.dtype == np.float32 else np.float64, copy=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise CLIError(f"{args.features}: {int(bad.sum())} row(s) contain NaN or infinite "
                       f"values (first: row {int(np.flatnonzero(bad)[0])}); impute or drop them")
    from skcce import CollisionClustering

    if not args.no_standardize:
        from sklearn.preprocessing import StandardScaler

        X = StandardScaler().fit_transform(X)
    params = {"n_clusters": args.n_clusters, "random_state": args.seed,
              "verbose": 0 if args.quiet else 1}
    for name in ("lam", "max_epochs", "n_init", "batch_size", "lr", "device"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    est = CollisionClustering(**params)
    print(f"fitting CollisionClustering on {X.shape[0]} x {X.shape[1]} features "
          f"({args.n_clusters} clusters)", file=sys.stderr)
    start = time.perf_counter()
    labels = est.fit_predict(X)
    seconds = time.perf_counter() - start
    sizes = np.bincount(labels, minlength=args.n_clusters)
    print(f"fitted in {seconds:.1f} s; cluster sizes: {sizes.tolist()}")
    if y_true is not None:
        print(_score_lines(y_true, labels))
    if args.out:
        np.save(args.out, labels)
        print(f"labels saved to {args.out}")
    if args.proba_out:
        np.save(args.proba_out, est.predict_proba(X))
        print(f"probabilities saved to {args.proba_out}")
    return 0


# --------------------------------------------------------------------------- extract


def _load_images(path):
    path = Path(path)
    if path.is_dir():
        return str(path)
    if not path.is_file():
        raise CLIError(f"images not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in ("X", "images", "x") if k in data.files), None)
            if key is None:
                raise CLIError(f"{path}: no array named 'X' or 'images'")
            return data[key]
    return [str(path)]  # a single image file


def _cmd_extract(args):
    from skcce import extract_features

    images = _load_images(args.images)
    weights = args.weights
    if weights is not None and weights.lower() in ("none", "random"):
        weights = None
    elif weights is not None and weights != "DEFAULT" and not Path(weights).is_file():
        raise CLIError(f"weights file not found: {weights} (use a state_dict file or DEFAULT)")
    device = None if args.device == "auto" else args.device
    feats = extract_features(images, model=args.model, weights=weights, size=args.size,
                             batch_size=args.batch_size, device=device, progress=True)
    np.save(args.out, np.asarray(feats))
    print(f"features of shape {tuple(feats.shape)} saved to {args.out}")
    return 0


# --------------------------------------------------------------------------- bench


def find_benchmarks_dir():
    """Locate the ``benchmarks/`` folder of a source checkout.

    Looks, in order, at ``$SKCCE_BENCHMARKS_DIR``, ``./benchmarks`` and the
    folder beside the package (an editable install of the repository).

    Returns
    -------
    path : pathlib.Path or None
        None when no folder holding the benchmark scripts is found (e.g. an
        installed wheel, which does not ship them).

    Examples
    --------
    >>> from skcce.cli import find_benchmarks_dir
    >>> path = find_benchmarks_dir()
    >>> path is None or path.name == "benchmarks"
    True
    """
    candidates = []
    if os.environ.get("SKCCE_BENCHMARKS_DIR"):
        candidates.append(Path(os.environ["SKCCE_BENCHMARKS_DIR"]))
    candidates += [Path.cwd() / "benchmarks", Path(__file__).resolve().parent.parent / "benchmarks"]
    for path in candidates:
        if path.is_dir() and any((path / script).is_file() for script in BENCHMARKS.values()):
            return path
    return None


@contextlib.contextmanager
def _on_sys_path(folder):
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


def _cmd_bench(args):
    folder = find_benchmarks_dir()
    if folder is None:
        raise CLIError(
            "benchmarks folder not found: the scripts ship with the source repository, not "
            "the installed package; run from a clone or set SKCCE_BENCHMARKS_DIR"
        )
    script = folder / BENCHMARKS[args.name]
    if not script.is_file():
        raise CLIError(f"benchmark script not found: {script}")
    saved_argv = sys.argv
    sys.argv = [f"skcce bench {args.name}", *args.args]  # the script's --help names itself so
    try:
        with _on_sys_path(folder):
            namespace = runpy.run_path(str(script), run_name=f"skcce_bench_{args.name}")
            if "main" not in namespace:
                raise CLIError(f"{script} defines no main(argv) function")
            result = namespace["main"](list(args.args))
    finally:
        sys.argv = saved_argv
    return int(result or 0)


# --------------------------------------------------------------------------- parser


def _build_parser():
    parser = _Parser(prog="skcce", description=(
        "Self-labeled clustering with collision cross-entropy "
        "(Zhang & Boykov). Commands: demo, fit, extract, bench."))
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback on errors (for bug reports)")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser("demo", help="cluster sklearn's digits; compare with baselines")
    demo.add_argument("--out", default="skcce_demo.png",
                      help="PNG for the matched confusion matrix (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quick", action="store_true", help="a few epochs only (for tests)")
    demo.add_argument("--no-plot", action="store_true", help="do not save the PNG")
    demo.set_defaults(func=_cmd_demo)

    fit = sub.add_parser("fit", help="cluster a feature matrix (.npy, .npz, .csv)")
    fit.add_argument("features", help=".npy (2-D), .npz (X [, y]) or .csv file")
    fit.add_argument("--n-clusters", type=int, required=True, help="number of clusters K")
    fit.add_argument("--lam", type=float, help="fairness weight (estimator default if omitted)")
    fit.add_argument("--max-epochs", type=int, help="training epochs")
    fit.add_argument("--n-init", type=int, help="restarts; the lowest final loss is kept")
    fit.add_argument("--batch-size", type=int, help="mini-batch size")
    fit.add_argument("--lr", type=float, help="learning rate")
    fit.add_argument("--device", help="'auto', 'cpu' or 'cuda'")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    fit.add_argument("--no-standardize", action="store_true",
                     help="do not standardize the features first")
    fit.add_argument("--labels", help="true labels (.npy/.npz/.csv) to report ACC, NMI, ARI")
    fit.add_argument("--out", help="save the cluster ids here (.npy)")
    fit.add_argument("--proba-out", help="save the cluster probabilities here (.npy)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(func=_cmd_fit)

    ext = sub.add_parser("extract", help="CNN features of images (the ResNet-50 workflow)")
    ext.add_argument("images", help="a folder of images, or .npy/.npz of an image array")
    ext.add_argument("--model", default="resnet50", choices=("resnet50", "resnet18"))
    ext.add_argument("--weights", default="DEFAULT",
                     help="DEFAULT (torchvision's pretrained weights, downloads once), a "
                          "state_dict file, or 'none' for random weights (default: DEFAULT)")
    ext.add_argument("--batch-size", type=int, default=64)
    ext.add_argument("--size", type=int, default=224,
                     help="side of the square network input in pixels (default: 224)")
    ext.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda'")
    ext.add_argument("--out", required=True, help="output .npy file")
    ext.set_defaults(func=_cmd_extract)

    bench = sub.add_parser("bench", help="run a benchmark script (source checkout only)",
                           description="Run benchmarks/<script>.py's main(argv). Arguments "
                                       "after NAME go to the script (try `--help`, `--quick`).")
    bench.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    bench.set_defaults(func=_cmd_bench)
    return parser


def _version():
    from skcce import __version__

    return f"skcce {__version__}"


def main(argv=None):
    """Entry point of the ``skcce`` console script.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    status : int
        0 on success, 1 on an error while running, 2 on a usage error.

    Examples
    --------
    >>> from skcce.cli import main
    >>> main(["fit", "missing.npy", "--n-clusters", "3"])
    1
    """
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return _exit_code(exc, default=2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line, no source excerpt
            return args.func(args)
    except SystemExit as exc:  # a benchmark's own argparse (--help or a usage error)
        return _exit_code(exc, default=1)
    except KeyboardInterrupt:
        print("skcce: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
        if args.traceback:
            raise
        print(f"skcce {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"skcce: {category.__name__}: {' '.join(str(message).split())}", file=sys.stderr)


def _exit_code(exc, default):
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)  # sys.exit("message")
    return default


def _one_line(exc, limit=300):
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > limit:  # e.g. scikit-learn's long advice: keep the first sentences
        cut = text.rfind(". ", 0, limit)
        text = text[: cut + 1] if cut > 0 else text[:limit] + "..."
    if not isinstance(exc, (CLIError, ValueError, OSError, ImportError)):
        text = f"{type(exc).__name__}: {text} (rerun with --traceback for details)"
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
