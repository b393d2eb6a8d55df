"""Where the time of one training step goes (issue 12, deliverable 1).

Fits the default :class:`~skcce.CollisionClustering` (cross-neighbour
objective, linear head, EM pseudo-labels) on

* ``blobs``: ``make_blobs(100_000, 64, centers=10, random_state=0)``, standardized,
* ``effnet``: the 10,000 x 1280 pretrained-CNN features of MNIST
  (``--data-dir``/mnist_train10k_effnet_lite0.npz), standardized,

with one torch / Numba thread, and times every component of the training
steps with timing wrappers installed around the library's functions (the
thread's CPU time by default, robust on a busy machine; ``--clock wall`` for
``time.perf_counter``; nothing in the library is edited): gathering the batch rows and
the neighbours' rows, the forward pass, the loss, ``backward``, the
optimizer, the pseudo-label call split into its tensor/numpy conversion,
the solver front's validation, the solver driver and the Numba kernel, and
the Python glue around them (whatever of the step's time no wrapper
claims). Times are *exclusive*: a wrapped function's time does not include
the wrapped functions it calls. A second fit of the same data without the
step wrappers gives the uninstrumented step time, so the wrappers' own
overhead is visible. A second table splits the whole fit into its phases
(neighbour graph, training, final evaluation).

Components that a version of the library does not have are reported as
missing (the script also runs on later layouts of the training loop).

Usage::

    python benchmarks/profile_step.py                 # writes docs/benchmarks/profile_step.md
    python benchmarks/profile_step.py --quick         # seconds; report in a temporary folder
    python benchmarks/profile_step.py --models linear mlp --epochs 2
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import importlib
import os
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _common import machine_description, write_markdown  # noqa: E402

DEFAULT_OUTPUT = os.path.join(ROOT, "docs", "benchmarks", "profile_step.md")

# (module, attribute path, label) of the step's components; times are exclusive.
# A label may have several homes (the layouts of different versions).
STEP_PARTS = (
    ("skcce._training", "Trainer.run_single_epoch", "glue: epoch loop (bincount, bookkeeping)"),
    ("skcce._training", "Trainer.train_step", "glue: train step (train(), isfinite)"),
    ("skcce._objectives", "CrossNeighborObjective.__call__", "glue: objective (cat, split)"),
    ("skcce._training", "Trainer.load_batch", "gather: batch rows"),
    ("skcce._objectives", "_random_neighbors", "gather: neighbour draw"),
    ("skcce._objectives", "random_neighbors", "gather: neighbour draw"),
    ("skcce._training", "Trainer.load_rows", "gather: neighbour rows"),
    ("skcce._sources", "ArraySource.rows", "gather: rows of X (batch and neighbours)"),
    ("skcce._training", "Trainer.log_proba", "forward: log_softmax"),
    ("skcce._training", "ModelStep.log_proba", "forward: log_softmax"),
    ("skcce._training", "Trainer.forward", "forward: model"),
    ("skcce._objectives", "SelfLabelingObjective.pseudo_labels",
     "EM: tensor -> float64 numpy -> tensor"),
    ("skcce._objectives", "SelfLabelingObjective.solve", "EM: renormalise, pick the solver"),
    ("skcce.solvers", "solve_pseudo_labels", "EM: front validation"),
    ("skcce.solvers", "_solve_batch", "EM: per-batch core (no validation)"),
    ("skcce.solvers", "_solve_em", "EM: driver (start point, objective)"),
    ("skcce._kernels", "em_run", "EM: Numba kernel"),
    ("skcce.solvers", "_solve_dual", "EM: dual Newton stage (large lam)"),
    ("skcce._objectives", "SelfLabelingObjective.cross_entropy", "loss: cross-entropy"),
    ("skcce._objectives", "SelfLabelingObjective.fairness_value", "loss: fairness value"),
    ("torch", "Tensor.backward", "backward"),
    ("torch.optim", "Adam.step", "optimizer: step"),
    ("torch.optim", "Optimizer.zero_grad", "optimizer: zero_grad"),
)
CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
STEP_COUNTER = ("skcce._training", "Trainer.train_step")
TRAINING = ("skcce._training", "Trainer.fit_loop")
# (module, attribute path, label) of the fit's phases; times are inclusive.  A label may
# have several homes (the layouts of different versions); the one that exists is timed.
FIT_PHASES = (
    ("skcce.neighbors", "augmentation_neighbors", "neighbour graph"),
    ("skcce._training", "Trainer.fit_loop", "training epochs"),
    ("skcce._training", "Trainer.recalibrate_batch_norm", "BatchNorm recalibration"),
    ("skcce._callbacks", "BatchNormRecalibration.on_train_end", "BatchNorm recalibration"),
    ("skcce._training", "Trainer.evaluate", "final evaluation"),
    ("skcce.cluster", "CollisionClustering._evaluate", "final evaluation"),
)


class Timers:
    """Timing wrappers that attribute the time of ``clock`` to labels.

    Exclusive wrappers share a stack: entering one pauses its caller's clock.
    They count only while ``active`` (inside the training epochs). Inclusive
    wrappers (fit phases) always count and never touch the stack.
    """

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.exclusive = collections.defaultdict(float)
        self.inclusive = collections.defaultdict(float)
        self.calls = collections.defaultdict(int)
        self.stack = []
        self.active = False

    def wrap_exclusive(self, label, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not self.active:
                return fn(*args, **kwargs)
            now = self.clock()
            if self.stack:
                parent = self.stack[-1]
                self.exclusive[parent[0]] += now - parent[1]
            self.stack.append([label, now])
            try:
                return fn(*args, **kwargs)
            finally:
                end = self.clock()
                self.exclusive[label] += end - self.stack.pop()[1]
                self.calls[label] += 1
                if self.stack:
                    self.stack[-1][1] = end
        return wrapper

    def wrap_inclusive(self, label, fn, activate=False):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = self.clock()
            was_active = self.active
            self.active = self.active or activate
            try:
                return fn(*args, **kwargs)
            finally:
                self.active = was_active
                self.inclusive[label] += self.clock() - start
                self.calls[label] += 1
        return wrapper


def _resolve(module_name, path):
    """``(owner, name, value)`` of ``module.path``, or None when it does not exist."""
    try:
        owner = importlib.import_module(module_name)
    except ImportError:
        return None
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    if name not in vars(owner):  # patch where it is defined, not an inherited copy
        return None
    return owner, name, vars(owner)[name]


@contextlib.contextmanager
def instrumented(timers, step_parts=True):
    """Install the wrappers; yields the labels that were missing. Everything is restored."""
    patches, missing = [], []
    parts = [(m, p, lab, "phase") for m, p, lab in FIT_PHASES]
    if step_parts:
        parts += [(m, p, lab, "step") for m, p, lab in STEP_PARTS]
    else:  # still count the steps
        parts.append((*STEP_COUNTER, "steps", "count"))
    present = set()
    for module_name, path, label, kind in parts:
        found = _resolve(module_name, path)
        if found is None:
            missing.append(label)
            continue
        present.add(label)
        owner, name, value = found
        fn = value.__func__ if isinstance(value, staticmethod) else value
        if kind == "phase":
            wrapped = timers.wrap_inclusive(label, fn, activate=(module_name, path) == TRAINING)
        elif kind == "count":
            wrapped = timers.wrap_inclusive(label, fn)
        else:
            wrapped = timers.wrap_exclusive(label, fn)
        if isinstance(value, staticmethod):
            wrapped = staticmethod(wrapped)
        setattr(owner, name, wrapped)
        patches.append((owner, name, value))
    try:
        yield sorted(set(missing) - present)
    finally:
        for owner, name, value in reversed(patches):
            setattr(owner, name, value)


@contextlib.contextmanager
def cached_neighbors():
    """Compute each data set's neighbour graph once across the fits of this script."""
    import skcce.neighbors as nb

    original = nb.augmentation_neighbors
    cache = {}

    @functools.wraps(original)
    def cached(X, n_neighbors, **kwargs):
        key = (X.shape, np.asarray(X[:4]).tobytes(), n_neighbors)
        if key not in cache:
            cache[key] = original(X, n_neighbors, **kwargs)
        return cache[key].copy()

    nb.augmentation_neighbors = cached
    try:
        yield
    finally:
        nb.augmentation_neighbors = original


@contextlib.contextmanager
def one_thread():
    """torch, Numba and the BLAS/OpenMP pools on one thread; the caller's settings are restored."""
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


def load_datasets(names, data_dir, quick):
    """``{name: (X float32 standardized, n_clusters)}``; missing files are skipped with a note."""
    from sklearn.datasets import make_blobs
    from sklearn.preprocessing import StandardScaler

    out, notes = {}, []
    for name in names:
        if name == "blobs":
            n, d = (4000, 64) if quick else (100_000, 64)
            X, _ = make_blobs(n_samples=n, n_features=d, centers=10, random_state=0)
        elif name == "effnet":
            from skcce.datasets import MNIST_FEATURES_FILE, find_data_file

            path = find_data_file(MNIST_FEATURES_FILE, data_dir)
            if path is None:
                notes.append(f"effnet skipped: {MNIST_FEATURES_FILE} not found (set SKCCE_DATA)")
                continue
            X = np.load(path)["X"][: 2000 if quick else None]
        else:
            raise ValueError(f"unknown dataset {name!r}")
        X = StandardScaler().fit_transform(X).astype(np.float32)
        out[f"{name} {X.shape[0]} x {X.shape[1]}"] = (X, 10)
    return out, notes


def profile_fit(X, n_clusters, model, epochs, step_parts, clock, random_state=0):
    """Fit once with the wrappers installed; returns the timers, steps and missing labels."""
    from skcce import CollisionClustering

    timers = Timers(clock)
    est = CollisionClustering(n_clusters, model=model, max_epochs=epochs, device="cpu",
                              random_state=random_state)
    with instrumented(timers, step_parts) as missing, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = clock()
        est.fit(X)
        total = clock() - start
    steps = timers.calls[STEP_PARTS[1][2]] if step_parts else timers.calls["steps"]
    return timers, max(steps, 1), total, missing


def step_rows(name, model, timers, steps, plain):
    """Table rows of one profile: ms per step and share of the instrumented step."""
    training = timers.inclusive["training epochs"]
    claimed = sum(timers.exclusive.values())
    parts = dict(timers.exclusive)
    parts["glue: between hooks (fit_loop, callbacks)"] = max(training - claimed, 0.0)
    groups = collections.defaultdict(float)
    rows = []
    for label, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        groups[label.split(":")[0]] += seconds
        rows.append({"data": name, "model": model, "component": label,
                     "ms per step": 1e3 * seconds / steps,
                     "share": f"{100 * seconds / training:.1f}%",
                     "calls per step": timers.calls.get(label, 0) / steps})
    for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        rows.append({"data": name, "model": model, "component": f"**total {group}**",
                     "ms per step": 1e3 * seconds / steps,
                     "share": f"{100 * seconds / training:.1f}%", "calls per step": ""})
    rows.append({"data": name, "model": model, "component": "**step, instrumented**",
                 "ms per step": 1e3 * training / steps, "share": "100%", "calls per step": ""})
    rows.append({"data": name, "model": model, "component": "**step, not instrumented**",
                 "ms per step": 1e3 * plain / steps, "share": "", "calls per step": ""})
    return rows


def markdown_table(rows):
    """Markdown lines of a table whose columns are the rows' keys, in order of appearance."""
    if not rows:
        return []
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (f"{v:.4g}" if isinstance(v, float) else str(v)
                 for v in (row.get(c, "") for c in columns))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run(datasets, models, epochs, clock):
    """Profile every (data set, model); returns step rows, phase rows and missing labels."""
    step_table, phase_table, missing = [], [], set()
    for name, (X, k) in datasets.items():
        for i, model in enumerate(models):
            plain, steps_plain, total_plain, _ = profile_fit(X, k, model, epochs, False, clock)
            timers, steps, total, miss = profile_fit(X, k, model, epochs, True, clock)
            missing.update(miss)
            rows = step_rows(name, model, timers, steps,
                             plain.inclusive["training epochs"] * steps / steps_plain)
            step_table += rows
            for row in rows[-4:]:
                print(f"{name:>22} {model:>6} {row['component']:<40} "
                      f"{row['ms per step']:8.3f} ms")
            fit_row = {"data": name, "model": model, "epochs": epochs, "steps": steps_plain,
                       "fit (s)": total_plain}
            for label in dict.fromkeys(label for _, _, label in FIT_PHASES):
                fit_row[f"{label} (s)"] = plain.inclusive.get(label, 0.0)
            if i > 0:  # cached_neighbors: computed by the first fit on this data only
                fit_row["neighbour graph (s)"] = "reused"
            phase_table.append(fit_row)
    return step_table, phase_table, sorted(missing)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small data, one epoch; report in a temporary folder")
    parser.add_argument("--datasets", nargs="+", default=["blobs", "effnet"],
                        choices=["blobs", "effnet"])
    parser.add_argument("--models", nargs="+", default=["linear"], choices=["linear", "mlp"])
    parser.add_argument("--epochs", type=int, default=1, help="training epochs per fit")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="'cpu': CPU time of the thread (robust on a busy machine), "
                             "'wall': perf_counter (default %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the data files (default: SKCCE_DATA or ../shared/data)")
    parser.add_argument("--output", default=None,
                        help="report path (default docs/benchmarks/profile_step.md; with "
                             "--quick a temporary file)")
    args = parser.parse_args(argv)
    output = args.output or (os.path.join(tempfile.gettempdir(), "skcce_profile_step_quick.md")
                             if args.quick else DEFAULT_OUTPUT)
    datasets, notes = load_datasets(args.datasets, args.data_dir, args.quick)
    with one_thread(), cached_neighbors():
        from skcce import CollisionClustering

        with warnings.catch_warnings():  # loads the Numba kernels before any timing
            warnings.simplefilter("ignore")
            CollisionClustering(3, max_epochs=1, device="cpu", random_state=0).fit(
                np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32))
        step_table, phase_table, missing = run(datasets, args.models, args.epochs,
                                               CLOCKS[args.clock])
        machine = machine_description()
    command = " ".join(["python benchmarks/profile_step.py",
                        *(sys.argv[1:] if argv is None else argv)])
    header = "\n".join([
        "Time of one training step of the default `CollisionClustering` (cross-neighbour "
        "objective, EM pseudo-labels, Adam, batch 256), per component, from timing "
        f"wrappers around the library's functions ({args.clock} clock: "
        f"`time.{CLOCKS[args.clock].__name__}`). Times are exclusive "
        "(a component's time excludes the wrapped components it calls); `glue` is Python "
        "work in the loop itself. The last row of each block is the same fit without the "
        "step wrappers (their overhead is the difference). One thread for torch and Numba.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine}",
        "",
        *(f"Note: {n}" for n in notes),
        *([f"Not present in this version of the library: {', '.join(missing)}."]
          if missing else []),
        "",
        "## Phases of the whole fit (seconds, not instrumented)",
        "",
        "The neighbour graph of a data set is computed by its first fit and reused by the "
        "later ones.",
        "",
        *markdown_table(phase_table),
        "",
        "## One training step",
    ])
    write_markdown(output, "Profile of one training step", header, step_table)
    print(f"report written to {output}")
    return output


if __name__ == "__main__":
    main()
