"""The ``skcce`` command line: demo, fit and extract (also ``python -m skcce``).

Every command reports a user error (a missing file, an array of the wrong
shape, an unknown option) as one line on stderr and a non-zero exit status;
``--traceback`` shows the full Python traceback instead, for bug reports.

Exit status: 0 on success, 1 on an error while running, 2 on a usage error.

The benchmark scripts are not part of the installed package: run them from
a clone of the repository as ``python benchmarks/<script>.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["main", "load_features", "load_labels", "CLIError"]

logger = logging.getLogger(__name__)


class CLIError(Exception):
    """A user error; :func:`main` reports it as one line, with exit status 1.

    Examples
    --------
    >>> from skcce.cli import CLIError, load_features
    >>> try:
    ...     load_features("missing.npy")
    ... except CLIError as exc:
    ...     print(exc)
    features file not found: missing.npy
    """


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` after every option that has a default worth stating."""

    def _get_help_string(self, action):
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (plus a hint), exit status 2.

    Every ``--help`` shows the defaults.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------------- loading


def _load_csv(path):
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
        has_rows = bool(first.strip()) or any(line.strip() for line in fh)
    if not has_rows:
        raise CLIError(f"{path}: the file has no data rows")
    delimiter = "," if "," in first else None
    try:
        [float(v) for v in first.replace(",", " ").split()]
        skip = 0
    except ValueError:
        skip = 1  # a header row
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "input contained no data"
            data = np.loadtxt(path, delimiter=delimiter, skiprows=skip, dtype=np.float64,
                              ndmin=2)
    except ValueError as exc:
        raise CLIError(f"{path}: not a numeric CSV table ({exc})") from None
    if data.shape[0] == 0:
        raise CLIError(f"{path}: the file has a header row but no data rows")
    return data


def _load_numpy(path, keys, what):
    """``np.load`` of an ``.npy`` or ``.npz`` file, with errors that name the file.

    Returns the array itself (``.npy``), or ``(array under the first of keys, other arrays
    by name)`` of an ``.npz``; an ``.npz`` holding one array returns it under any name.
    """
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if not magic:
        raise CLIError(f"{path}: the file is empty (0 bytes)")
    if not (magic.startswith(b"\x93NUMPY") or magic.startswith(b"PK")):
        raise CLIError(f"{path}: not a NumPy .npy/.npz file (written by numpy.save or "
                       "numpy.savez); the file is damaged or has the wrong extension")
    try:
        loaded = np.load(path, allow_pickle=False)
    except zipfile.BadZipFile:
        raise CLIError(f"{path}: not a valid .npz archive (a zip file written by "
                       "numpy.savez); the file is damaged or has the wrong extension") from None
    except (OSError, ValueError, EOFError) as exc:
        raise CLIError(f"{path}: cannot read ({_one_line(exc, 120)})") from None
    if isinstance(loaded, np.ndarray):
        return loaded, {}
    with loaded as data:
        names = list(data.files)
        key = next((k for k in keys if k in names), None)
        if key is None and len(names) == 1:
            key = names[0]
        if key is None:
            raise CLIError(f"{path}: no array named {what} (found {', '.join(names) or 'none'})")
        return data[key], {name: data[name] for name in names if name != key}


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
        The features.
    y : ndarray of shape (n_samples,) or None
        The ``y`` array of an ``.npz`` file, else None.

    Raises
    ------
    CLIError
        Missing, empty or unreadable file, unknown extension, or an array
        that is not 2-D; the message names the file.

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
    if suffix in (".npy", ".npz"):
        X, others = _load_numpy(path, ("X", "x", "features"), "'X'")
        y = others.get("y")
    elif suffix == ".csv":
        X, y = _load_csv(path), None
    else:
        raise CLIError(f"{path}: unsupported format {suffix!r}; use .npy, .npz or .csv")
    if X.ndim != 2:
        raise CLIError(
            f"{path}: expected a 2-D array (n_samples, n_features), got shape {X.shape}"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CLIError(f"{path}: the array is empty (shape {X.shape})")
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
        The labels.

    Raises
    ------
    CLIError
        Missing, empty or unreadable file, or labels of the wrong length.

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
    if path.suffix.lower() == ".csv":
        y = _load_csv(path)
    else:
        y = _load_numpy(path, ("y",), "'y'")[0]
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.ravel()
    if y.shape != (n_samples,):
        raise CLIError(f"{path}: labels have shape {y.shape}, expected ({n_samples},)")
    return y


def _save_npy(path, array):
    """Save like ``np.save`` and return the path actually written (``.npy`` appended)."""
    path = Path(path)
    if not path.name.endswith(".npy"):  # np.save appends the suffix; report the real name
        path = path.with_name(path.name + ".npy")
    np.save(path, array)
    return path.resolve()


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
        print(f"cluster ids saved to {_save_npy(args.out, labels)}")
    else:
        print("cluster ids not saved (pass --out labels.npy to save them)")
    if args.proba_out:
        print(f"probabilities saved to {_save_npy(args.proba_out, est.predict_proba(X))}")
    return 0


# --------------------------------------------------------------------------- extract


def _load_images(path):
    path = Path(path)
    if path.is_dir():
        return str(path)
    if not path.is_file():
        raise CLIError(f"images not found: {path}")
    if path.suffix.lower() in (".npy", ".npz"):
        return _load_numpy(path, ("X", "images", "x"), "'X' or 'images'")[0]
    return [str(path)]  # a single image file


def _image_shape(text):
    """argparse type of ``--image-shape``: ``C,H,W`` (or ``CxHxW``) as a tuple of ints."""
    parts = text.replace("x", ",").replace(" ", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 1,28,28, got {text!r}")
    return shape


def _weights_argument(text):
    """``--weights`` as extract_features takes it: None, a torchvision name or a file."""
    if text.lower() in ("none", "random"):
        return None
    if text.lower() == "default" and not Path(text).is_file():
        return "DEFAULT"
    if Path(text).is_file():
        return text
    if text.replace("_", "").isalnum() and text.upper() == text:
        return text  # DEFAULT, IMAGENET1K_V2, ...: torchvision checks the name
    raise CLIError(f"weights file not found: {text} (use a state_dict file, DEFAULT, or none)")


def _cmd_extract(args):
    from skcce import extract_features
    from skcce.backbones import WeightsDownloadError

    images = _load_images(args.images)
    if getattr(images, "ndim", None) == 2 and args.image_shape is None:
        raise CLIError(
            f"{args.images}: the images are stored as rows of {images.shape[1]} values; give "
            "their shape with --image-shape C,H,W (e.g. --image-shape 1,28,28 for MNIST)")
    weights = _weights_argument(args.weights)
    device = None if args.device == "auto" else args.device
    try:
        feats = extract_features(images, model=args.model, weights=weights, size=args.size,
                                 batch_size=args.batch_size, device=device,
                                 image_shape=args.image_shape, progress=True)
    except WeightsDownloadError as exc:
        raise CLIError(
            f"could not download the {exc.arch} weights ({exc.reason}); without network "
            "access, copy the weights file from a connected machine (torchvision keeps it "
            "in ~/.cache/torch/hub/checkpoints/) and pass --weights FILE") from None
    print(f"features of shape {tuple(feats.shape)} saved to {_save_npy(args.out, feats)}")
    return 0


# --------------------------------------------------------------------------- parser


def _build_parser():
    parser = _Parser(prog="skcce", description=(
        "Self-labeled clustering with collision cross-entropy "
        "(Zhang & Boykov). Commands: demo, fit, extract. The benchmark scripts run from a "
        "clone of the repository: python benchmarks/<script>.py."))
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback on errors (for bug reports)")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser("demo", help="cluster sklearn's digits; compare with baselines")
    demo.add_argument("--out", default="skcce_demo.png",
                      help="PNG for the matched confusion matrix")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--quick", action="store_true", help="a few epochs only (for tests)")
    demo.add_argument("--no-plot", action="store_true", help="do not save the PNG")
    demo.set_defaults(func=_cmd_demo)

    fit = sub.add_parser("fit", help="cluster a feature matrix (.npy, .npz, .csv)",
                         description="Cluster a feature matrix with CollisionClustering; the "
                                     "defaults are the estimator's.")
    defaults = _estimator_defaults()
    fit.add_argument("features", help=".npy (2-D), .npz (X [, y]) or .csv file")
    fit.add_argument("--n-clusters", type=int, required=True, help="number of clusters K")
    fit.add_argument("--lam", type=float, default=defaults["lam"], help="fairness weight")
    fit.add_argument("--max-epochs", type=int, default=defaults["max_epochs"],
                     help="training epochs")
    fit.add_argument("--n-init", type=int, default=defaults["n_init"],
                     help="restarts; the lowest final loss is kept")
    fit.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                     help="mini-batch size")
    fit.add_argument("--lr", type=float, default=defaults["lr"], help="learning rate")
    fit.add_argument("--device", default=defaults["device"], help="'auto', 'cpu' or 'cuda'")
    fit.add_argument("--seed", type=int, default=0, help="random seed")
    fit.add_argument("--no-standardize", action="store_true",
                     help="do not standardize the features first")
    fit.add_argument("--labels", help="true labels (.npy/.npz/.csv) to report ACC, NMI, ARI")
    fit.add_argument("--out", help="save the cluster ids here (.npy; the suffix is added if "
                                   "missing); nothing is saved without it")
    fit.add_argument("--proba-out", help="save the cluster probabilities here (.npy)")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.set_defaults(func=_cmd_fit)

    ext = sub.add_parser("extract", help="CNN features of images (the ResNet-50 workflow)")
    ext.add_argument("images", help="a folder of images, or .npy/.npz of an image array")
    ext.add_argument("--model", default="resnet50", choices=("resnet50", "resnet18"),
                     help="the network")
    ext.add_argument("--weights", default="DEFAULT",
                     help="DEFAULT (torchvision's pretrained weights, downloaded once), a "
                          "state_dict file, or 'none' for a random network (testing only: "
                          "its features carry little information)")
    ext.add_argument("--image-shape", type=_image_shape, metavar="C,H,W",
                     help="shape of each image when the array stores one image per row, "
                          "e.g. 1,28,28 for MNIST")
    ext.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    ext.add_argument("--size", type=int, default=224,
                     help="side of the square network input in pixels")
    ext.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda'")
    ext.add_argument("--out", required=True, help="output .npy file")
    ext.set_defaults(func=_cmd_extract)
    return parser


def _estimator_defaults():
    """The defaults of CollisionClustering's parameters, for ``skcce fit --help``."""
    import inspect

    from skcce import CollisionClustering

    return {name: p.default for name, p in
            inspect.signature(CollisionClustering).parameters.items()}


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
    with _tracked_stderr() as stderr:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning  # one line, no source excerpt
                return args.func(args)
        except KeyboardInterrupt:
            stderr.end_line()
            print("skcce: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
            stderr.end_line()  # not on the line of an unfinished progress bar
            if args.traceback:
                raise
            print(f"skcce {args.command}: error: {_one_line(exc)}", file=sys.stderr)
            return 1


class _LineTrackingStream:
    """A text stream wrapper that knows whether the last write ended its line.

    Progress bars write ``\\r`` + text without a newline; an error or warning
    printed after an interrupted bar would otherwise land on the bar's line.
    """

    def __init__(self, stream):
        self._stream = stream
        self.at_line_start = True

    def write(self, text):
        if text:
            self.at_line_start = text.endswith("\n")
        return self._stream.write(text)

    def end_line(self):
        if not self.at_line_start:
            self.write("\n")

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _tracked_stderr():
    saved = sys.stderr
    sys.stderr = _LineTrackingStream(saved)
    try:
        yield sys.stderr
    finally:
        sys.stderr = saved


def _show_warning(message, category, filename, lineno, file=None, line=None):
    end_line = getattr(sys.stderr, "end_line", None)
    if end_line is not None:
        end_line()
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


if __name__ == "__main__":  # pragma: no cover - ``python -m skcce`` is skcce/__main__.py
    sys.exit(main())
