"""Scale: fit time, peak memory and accuracy against M, D and K, stage by stage.

The scale benchmark of issue 11 (item 5). It fits, one after the other in
this process and on the same data:

- :class:`skcce.CollisionClustering` with its defaults except ``max_epochs``
  (``augment='cross_neighbors'``: the neighbour graph is part of the fit),
  for a small fixed number of epochs (``--epochs``): default fits
  (40 epochs) of the largest sizes would take most of the run's time on
  one core. Where the rows
  are few enough (``--default-epochs-max-rows``) a second fit with the
  default ``max_epochs`` shows the accuracy the short fits give up. No fit
  time is extrapolated: every time in the report was measured;
- :class:`sklearn.cluster.MiniBatchKMeans` (scikit-learn's defaults except
  ``n_clusters`` and ``random_state``);
- faiss k-means (``faiss.Kmeans``, 20 iterations, faiss's defaults
  otherwise: it trains on at most 256 rows per cluster), when faiss imports.

Data: synthetic Gaussian mixtures with known labels, the embedding-like
model of ``bench_neighbors.py`` (component means N(0, 3^2), axis scales
``4 / j`` for j = 1..D, randomly rotated per component, equal weights),
drawn chunk by chunk from one fixed set of components per (D, K), so that
every M samples the same distribution and large M can be written to disk;
and the real feature sets, at the sizes of ``--sizes`` below their own and
at their full size: the EfficientNet-Lite0 features of 10,000 MNIST digits
(1280-D) and the MNIST-70k pixels (784-D), standardized, 10 classes. The
synthetic grid is a star around a center point (``--grid star``): M varies
at the first D and K, K varies at the center M and the first D, D varies at
the center M and the first K (``--grid full``: every combination). With
``--memmap`` the data of ``--memmap-min-rows`` rows or more is written to a
float32 ``.npy`` file in a temporary folder and every method fits the array
of ``np.load(path, mmap_mode='r')`` (the file was just written: its pages
are in the OS cache as far as memory allows).

Measures: each fit's CPU seconds (``time.process_time``: one thread for
torch, Numba, faiss and BLAS; the machine is shared, so CPU time is the
stable measure) and wall seconds; the peak resident memory above the level
before the fit, sampled every 5 ms (Linux only), as the whole resident set
and as its anonymous part (the pages of a memmapped file count in the
former, not in the latter); the Hungarian accuracy against the labels. The
CollisionClustering fits are split into stages by timing wrappers around
the library's functions, installed for the fit and removed after it (no
library code is changed): the neighbour graph
(``skcce.neighbors.augmentation_neighbors``), the training epochs
(``Trainer.fit_loop``), inside them the EM (``skcce.solvers._solve_batch``,
the pseudo-label solve of each batch) and the rest of the training step
(the torch forward, backward and optimizer step, batch gathering and the
loop's glue), and the final evaluation (a forward pass over every row and
the EM of every batch). Times per epoch per row divide a training stage's
time by the epochs run and by M.

The report states the targets of the issue, computed from the measured
rows: the neighbour graph of 1e6 x 128 rows built in less CPU time than one
MiniBatchKMeans fit of the same data; the slope of log(fit time) against
log(M) between 1e5 and 1e6 rows at most 1.1 (at the fixed epochs of this
run); peak memory above the data at most 1 GB at 1e6 rows; the EM below 5%
of a training step at K = 1000. A log-log plot (the ``.png`` next to the
report) shows the CPU time of each method and stage against M, K and D.

The default run covers M = 1e4, 1e5 and 1e6 in memory. 1e7 rows need
``--sizes 1e4,1e5,1e6,1e7 --memmap --memmap-min-rows 1e7`` (the data alone
is 5 GB at 128-D). The data sets run cheapest first, and the report and
the plot are rewritten after a data set at most once a minute, so a run
stopped early keeps what it measured (the report then says it is
partial). Not measured here: real feature sets larger than MNIST-70k (none
is on this machine), and K = 1000 at 1e6 rows (the default run's K line is
at 1e5 rows).

Usage: ``python benchmarks/bench_scale.py [--quick] [--output PATH]
[--sizes 1e4,1e5,1e6] [--dims 128,512] [--clusters 10,100,1000]
[--epochs 3] [--memmap] [--grid star|full]``; writes
``docs/benchmarks/scale.md`` and ``scale.png`` next to it by default,
``--quick`` a smoke run (small data, the largest size from a memmap) to a
temporary folder.
"""

import argparse
import contextlib
import gc
import math
import os
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_description, write_markdown  # noqa: E402
from _common import output_path as quick_safe_path  # noqa: E402
from bench_neighbors import output_path  # noqa: E402
from profile_step import Timers, _resolve, markdown_table  # noqa: E402

from skcce import CollisionClustering, neighbors  # noqa: E402
from skcce.datasets import find_data_file  # noqa: E402
from skcce.metrics import clustering_accuracy  # noqa: E402

#: Rows generated (and written to a memmap) at a time.
CHUNK = 1_000_000
#: The issue's targets.
TARGET_SLOPE = 1.1
TARGET_MEMORY_MB = 1024.0
TARGET_EM_SHARE = 0.05
CC = "CollisionClustering"
MBKM = "MiniBatchKMeans"
FAISS = "faiss k-means"
#: name: (file, description, rows, features); all have 10 classes.
REAL_SETS = {"dev": ("mnist_train10k_effnet_lite0.npz", "MNIST-10k EfficientNet features",
                     10_000, 1280),
             "mnist70k": ("mnist70k.npz", "MNIST-70k pixels", 70_000, 784)}
#: rows of the real sets in a --quick run
QUICK_REAL_ROWS = 1500


# --------------------------------------------------------------------------- data
class Mixture:
    """The embedding-like Gaussian mixture of ``bench_neighbors.mixture``, drawn chunk by chunk.

    The components (means, rotations) are fixed by ``(n_features,
    n_components, seed)``; each chunk of rows draws its labels and noise
    from its own seeded generator, so a data set of any size is written
    without holding more than one chunk and every size samples the same
    distribution.
    """

    def __init__(self, n_features, n_components, seed=0):
        self.d, self.k, self.seed = n_features, n_components, seed
        rng = np.random.default_rng([seed, n_features, n_components])
        self.centers = rng.normal(scale=3.0, size=(n_components, n_features)).astype(np.float32)
        self.scales = (4.0 / np.arange(1, n_features + 1)).astype(np.float32)
        # keep the rotations between chunks when they are small (at most 256 MB)
        self._cache = {} if n_components * n_features**2 * 4 <= 2**28 else None

    def rotation(self, c):
        if self._cache is not None and c in self._cache:
            return self._cache[c]
        rng = np.random.default_rng([self.seed, self.d, self.k, c, 1])
        q = np.linalg.qr(rng.normal(size=(self.d, self.d)))[0].astype(np.float32)
        if self._cache is not None:
            self._cache[c] = q
        return q

    def fill(self, X, y):
        """Write rows into ``X`` (an array or a memmap) and their labels into ``y``."""
        n = X.shape[0]
        for i, start in enumerate(range(0, n, CHUNK)):
            stop = min(start + CHUNK, n)
            rng = np.random.default_rng([self.seed, self.d, self.k, i, 0])
            labels = rng.integers(self.k, size=stop - start)
            y[start:stop] = labels
            chunk = np.empty((stop - start, self.d), dtype=np.float32)
            for c in np.unique(labels):
                rows = np.flatnonzero(labels == c)
                noise = rng.standard_normal((len(rows), self.d), dtype=np.float32) * self.scales
                chunk[rows] = self.centers[c] + noise @ self.rotation(c).T
            X[start:stop] = chunk


def synthetic(n, n_features, n_clusters, folder=None):
    """``(X float32, y)``: in memory, or a read-only memmap of a ``.npy`` file in ``folder``."""
    mixture = Mixture(n_features, n_clusters)
    y = np.empty(n, dtype=np.int32)
    if folder is None:
        X = np.empty((n, n_features), dtype=np.float32)
        mixture.fill(X, y)
        return X, y
    path = os.path.join(folder, f"mixture_{n}x{n_features}_k{n_clusters}.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, n_features))
    mixture.fill(out, y)
    out.flush()
    del out
    return np.load(path, mmap_mode="r"), y


def load_real(name, quick):
    """``(X float32 standardized, y, description)`` of a real feature set, or None if absent."""
    fname, what = REAL_SETS[name][:2]
    path = find_data_file(fname)
    if path is None:
        return None
    with np.load(path) as data:
        X, y = data["X"], data["y"]
    if quick:
        X, y = X[:QUICK_REAL_ROWS], y[:QUICK_REAL_ROWS]
    X = StandardScaler().fit_transform(X.astype(np.float32)).astype(np.float32)
    return X, np.asarray(y), what


# --------------------------------------------------------------------------- measuring
def _memory():
    """(VmRSS, RssAnon) of this process in bytes, or None off Linux."""
    try:
        values = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    values[line.split(":")[0]] = int(line.split()[1]) * 1024
        return values["VmRSS"], values.get("RssAnon", values["VmRSS"])
    except (OSError, KeyError):
        return None


class PeakMemory:
    """Context manager: highest resident memory (all, anonymous) above the start, every 5 ms."""

    def __enter__(self):
        self.start = _memory()
        self.peak = [0, 0]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if self.start is not None:
            self._thread.start()
        return self

    def _update(self):
        now = _memory()
        for i in (0, 1):
            self.peak[i] = max(self.peak[i], now[i] - self.start[i])

    def _sample(self):
        while not self._done.wait(0.005):
            self._update()

    def __exit__(self, *exc):
        self._done.set()
        if self.start is not None:
            self._thread.join()
            self._update()

    @property
    def megabytes(self):
        """(resident, anonymous) peak MB above the start, or ("n/a", "n/a")."""
        if self.start is None:
            return "n/a", "n/a"
        return self.peak[0] / 2**20, self.peak[1] / 2**20


# (module, attribute path, stage, kind) of the timed functions. 'phase' wrappers time
# every call (inclusive); Trainer.fit_loop also marks the training epochs, inside which
# the 'training' wrapper (the EM of each batch) counts.
STAGES = (
    ("skcce.neighbors", "augmentation_neighbors", "graph", "phase"),
    ("skcce._training", "Trainer.fit_loop", "training", "phase"),
    ("skcce.solvers", "_solve_batch", "EM", "training"),
    ("skcce.cluster", "CollisionClustering._evaluate", "evaluation", "phase"),
    ("skcce._training", "Trainer.train_step", "steps", "count"),
)


@contextlib.contextmanager
def stage_timers(clock=time.process_time):
    """Install the stage wrappers for one fit; yields the Timers. Everything is restored."""
    timers, patches = Timers(clock), []
    try:
        for module, path, label, kind in STAGES:
            found = _resolve(module, path)
            if found is None:
                raise RuntimeError(f"{module}.{path} not found: this benchmark times it")
            owner, name, value = found
            if kind == "training":
                wrapped = timers.wrap_exclusive(label, value)
            elif kind == "count":  # its calls count, its time is part of 'training'
                wrapped = timers.wrap_inclusive(label, value)
            else:
                wrapped = timers.wrap_inclusive(label, value, activate=label == "training")
            setattr(owner, name, wrapped)
            patches.append((owner, name, value))
        yield timers
    finally:
        for owner, name, value in reversed(patches):
            setattr(owner, name, value)


def fit_collision(X, k, epochs):
    kwargs = {} if epochs is None else {"max_epochs": epochs}
    est = CollisionClustering(n_clusters=k, random_state=0, device="cpu", **kwargs)
    with stage_timers() as timers:
        est.fit(X)
    return est.labels_, {"epochs": est.n_iter_, "timers": timers}


def fit_minibatch_kmeans(X, k, epochs):
    est = MiniBatchKMeans(n_clusters=k, random_state=0).fit(X)
    batch_size = min(est.batch_size, X.shape[0])
    return est.labels_, {"epochs": est.n_steps_ * batch_size / X.shape[0]}


def fit_faiss_kmeans(X, k, epochs):
    import faiss

    kmeans = faiss.Kmeans(X.shape[1], k, niter=20, seed=0, verbose=False)
    kmeans.train(X)
    labels = np.empty(X.shape[0], dtype=np.int64)
    for start in range(0, X.shape[0], CHUNK):  # one chunk of a memmap in memory at a time
        chunk = np.ascontiguousarray(X[start:start + CHUNK], dtype=np.float32)
        labels[start:start + CHUNK] = kmeans.index.search(chunk, 1)[1].ravel()
    return labels, {"epochs": 20}


def have_faiss():
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def methods(n, default_epochs_max_rows):
    """(name, fit, epochs) of the fits of one data set of ``n`` rows, in the order they run."""
    out = [(CC, fit_collision, "run"), (MBKM, fit_minibatch_kmeans, None)]
    if have_faiss():
        out.append((FAISS, fit_faiss_kmeans, None))
    if n <= default_epochs_max_rows:
        out.append((CC, fit_collision, None))
    return out


def warm_up(n_features, k, sizes, memmap, search):
    """Small fits of each method first: imports and one-off compilation are not measured.

    ``search``: also compile the large-data neighbour search (pynndescent's
    Numba code compiles on first use, and again for a read-only memmap).
    """
    X = Mixture(n_features, k).centers[np.arange(max(500, 20 * k)) % k]
    X = X + np.random.default_rng(0).normal(size=X.shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fit, _ in methods(len(X), 0):
            fit(X, k, 1 if name == CC else None)
        if search:
            algorithm = _algorithm(max(max(sizes), neighbors.EXACT_MAX_SAMPLES + 1))
            neighbors.augmentation_neighbors(X, 5, algorithm=algorithm, random_state=0)
            if memmap:
                X.setflags(write=False)
                neighbors.augmentation_neighbors(X, 5, algorithm=algorithm, random_state=0)


def _algorithm(n):
    """The search ``neighbors_algorithm='auto'`` uses on ``n`` rows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return neighbors._resolve_algorithm("auto", n)


def run_data(data, X, y, k, storage, args, clock_start, default_epochs=True):
    """Fit every method on one data set; returns its rows (one per fit).

    ``default_epochs``: also a CollisionClustering fit with the default
    ``max_epochs`` when ``X`` has at most ``args.default_epochs_max_rows`` rows.
    """
    n, d = X.shape
    rows = []
    for name, fit, epochs in methods(n, args.default_epochs_max_rows if default_epochs else 0):
        epochs = args.epochs if epochs == "run" else epochs
        label = name if name != CC or epochs is not None else f"{CC} (default max_epochs)"
        gc.collect()
        with PeakMemory() as memory, warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            cpu, wall = time.process_time(), time.perf_counter()
            labels, info = fit(X, k, epochs)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        resident, anonymous = memory.megabytes
        row = {"data": data, "storage": storage, "M": n, "D": d, "K": k, "method": label,
               "epochs": info["epochs"], "CPU s": cpu, "wall s": wall,
               "CPU / MiniBatchKMeans": "", "us per row": 1e6 * cpu / n,
               "peak MB above start": resident, "peak anon MB above start": anonymous,
               "accuracy": clustering_accuracy(y, labels)}
        if "timers" in info:
            row["stages"] = stage_times(info["timers"], cpu, info["epochs"], n)
            row["stages"]["graph algorithm"] = _algorithm(n)
        rows.append(row)
        print(f"[{(time.perf_counter() - clock_start) / 60:6.1f} min] {data} M={n:,} D={d} "
              f"K={k} {storage}: {label}: {cpu:.1f} CPU s ({wall:.1f} wall s), "
              f"accuracy {row['accuracy']:.3f}, peak {_mb(resident)} MB", flush=True)
    reference = {r["method"]: r["CPU s"] for r in rows}.get(MBKM)
    for row in rows:
        row["CPU / MiniBatchKMeans"] = row["CPU s"] / reference if reference else ""
    return rows


def _mb(value):
    return value if isinstance(value, str) else f"{value:.0f}"


def stage_times(timers, total, epochs, n):
    """CPU seconds of the stages of one CollisionClustering fit."""
    graph = timers.inclusive.get("graph", 0.0)
    training = timers.inclusive.get("training", 0.0)
    em = timers.exclusive.get("EM", 0.0)
    evaluation = timers.inclusive.get("evaluation", 0.0)
    return {"graph": graph, "training": training, "EM": em, "step": training - em,
            "evaluation": evaluation, "other": total - graph - training - evaluation,
            "epochs": epochs, "steps": max(timers.calls.get("steps", 0), 1), "n": n}


# --------------------------------------------------------------------------- the grid
def parse_sizes(text):
    return [int(float(s)) for s in text.split(",") if s.strip()]


def grid(args):
    """(M, D, K) of the synthetic data sets, in the order they run (small first)."""
    d0, k0, center = args.dims[0], args.clusters[0], args.center_size
    if args.grid == "full":
        points = [(m, d, k) for m in args.sizes for d in args.dims for k in args.clusters]
    else:
        points = [(m, d0, k0) for m in args.sizes]
        points += [(center, d0, k) for k in args.clusters[1:]]
        points += [(center, d, k0) for d in args.dims[1:]]
    return sorted(dict.fromkeys(points), key=lambda p: (p[0] * p[1] * p[2], p))


def series(rows, args):
    """{name: (variable, [rows])} of the star's three lines, CollisionClustering and baselines."""
    d0, k0, center = args.dims[0], args.clusters[0], args.center_size
    synthetic_rows = [r for r in rows if r["data"] == "mixture"]
    pick = {
        f"M (D={d0}, K={k0})": ("M", lambda r: r["D"] == d0 and r["K"] == k0),
        f"K (M={center:,}, D={d0})": ("K", lambda r: r["M"] == center and r["D"] == d0),
        f"D (M={center:,}, K={k0})": ("D", lambda r: r["M"] == center and r["K"] == k0),
    }
    return {name: (var, [r for r in synthetic_rows if keep(r)])
            for name, (var, keep) in pick.items()}


def curves(rows, var):
    """{line label: [(x, CPU s)]} of one series: each method's fit and each stage."""
    out = {}

    def add(label, x, value):
        out.setdefault(label, {})[x] = value

    for r in rows:
        x = r[var]
        if r["method"] in (CC, MBKM, FAISS):
            add(f"{r['method']} fit", x, r["CPU s"])
        if r["method"] == CC:
            s = r["stages"]
            add("CC: neighbour graph", x, s["graph"])
            add("CC: EM (training)", x, s["EM"])
            add("CC: torch step + glue (training)", x, s["step"])
            add("CC: final evaluation", x, s["evaluation"])
    return {label: sorted(points.items()) for label, points in out.items()}


def slope(points, lo, hi):
    """log-log slope of the CPU time between ``x = lo`` and ``x = hi``, or None."""
    values = dict(points)
    a, b = values.get(lo), values.get(hi)
    if not a or not b or lo == hi:
        return None
    return math.log(b / a) / math.log(hi / lo)


def growth_tables(rows, args):
    """Markdown lines: for each series, the log-log slope of each line between neighbours."""
    lines = []
    for name, (var, selected) in series(rows, args).items():
        xs = sorted({r[var] for r in selected})
        if len(xs) < 2:
            continue
        table = []
        for label, points in curves(selected, var).items():
            row = {"line": label}
            for lo, hi in zip(xs, xs[1:], strict=False):
                s = slope(points, lo, hi)
                row[f"slope {lo:,} -> {hi:,}"] = "" if s is None else s
            table.append(row)
        lines += ["", f"### Against {name}", "", *markdown_table(table)]
    return lines


def _cc_row(rows, **where):
    found = [r for r in rows if r["method"] == CC and r["data"] == "mixture"
             and all(r[key] == value for key, value in where.items())]
    return found[-1] if found else None


def targets(rows, args):
    """Rows of the targets table: target, measured, met."""
    d0, k0 = args.dims[0], args.clusters[0]
    sizes = sorted({r["M"] for r in rows if r["data"] == "mixture" and r["D"] == d0
                    and r["K"] == k0})
    out = []

    def add(target, where, measured, met):
        out.append({"target": target, "measured at": where, "measured": measured,
                    "met": "not measured" if met is None else ("yes" if met else "no")})

    # the targets are stated at 1e6 rows; without them, the largest M of the M line
    largest = 1_000_000 if 1_000_000 in sizes else (sizes[-1] if sizes else None)
    cc = _cc_row(rows, M=largest, D=d0, K=k0) if largest else None
    where = "" if cc is None else f"M={largest:,}, D={d0}, K={k0} ({cc['storage']})"
    note = "" if largest == 1_000_000 else " (the target is stated at 1e6 rows)"
    mbkm = [r for r in rows if r["method"] == MBKM and cc is not None and r["M"] == largest
            and r["D"] == d0 and r["K"] == k0 and r["data"] == "mixture"]
    if cc is not None and mbkm:
        graph, reference = cc["stages"]["graph"], mbkm[-1]["CPU s"]
        add("neighbour graph built in less CPU time than one MiniBatchKMeans fit",
            where + note, f"graph {graph:.3g} s ({cc['stages']['graph algorithm']}), "
            f"MiniBatchKMeans {reference:.3g} s", graph < reference)
    else:
        add("neighbour graph built in less CPU time than one MiniBatchKMeans fit", "", "", None)
    lo, hi = (100_000, 1_000_000) if {100_000, 1_000_000} <= set(sizes) else (
        (sizes[-2], sizes[-1]) if len(sizes) >= 2 else (None, None))
    a = _cc_row(rows, M=lo, D=d0, K=k0) if lo else None
    b = _cc_row(rows, M=hi, D=d0, K=k0) if lo else None
    if a is not None and b is not None:
        s = math.log(b["CPU s"] / a["CPU s"]) / math.log(hi / lo)
        add(f"slope of log(fit CPU time) against log(M) at most {TARGET_SLOPE}",
            f"M={lo:,} -> {hi:,}, D={d0}, K={k0}, {b['epochs']} epoch(s)"
            + (f" ({a['storage']} -> {b['storage']})" if a["storage"] != b["storage"] else ""),
            f"{s:.3f} ({a['CPU s']:.3g} s -> {b['CPU s']:.3g} s)", s <= TARGET_SLOPE)
    else:
        add(f"slope of log(fit CPU time) against log(M) at most {TARGET_SLOPE}", "", "", None)
    if cc is not None and not isinstance(cc["peak MB above start"], str):
        memmap = cc["storage"] == "memmap"
        peak = cc["peak anon MB above start"] if memmap else cc["peak MB above start"]
        kind = "anonymous memory (the data is a memmap)" if memmap else "resident memory"
        add(f"peak memory above the data at most {TARGET_MEMORY_MB:.0f} MB", where + note,
            f"{peak:.0f} MB of {kind}", peak <= TARGET_MEMORY_MB)
    else:
        add(f"peak memory above the data at most {TARGET_MEMORY_MB:.0f} MB", "", "", None)
    kmax = max(args.clusters)
    em = _cc_row(rows, M=args.center_size, D=d0, K=kmax)
    if em is not None and em["stages"]["training"] > 0:
        stages = em["stages"]
        share = stages["EM"] / stages["training"]
        per_step = [1e3 * stages[key] / stages["steps"] for key in ("EM", "training")]
        note = "" if kmax == 1000 else " (the target is stated at K = 1000)"
        add(f"EM below {100 * TARGET_EM_SHARE:.0f}% of a training step",
            f"M={args.center_size:,}, D={d0}, K={kmax}{note}",
            f"{100 * share:.1f}% ({per_step[0]:.3g} ms of {per_step[1]:.3g} ms per step)",
            share < TARGET_EM_SHARE)
    else:
        add(f"EM below {100 * TARGET_EM_SHARE:.0f}% of a training step", "", "", None)
    return out


def stage_rows(rows):
    """The stage table: one row per CollisionClustering fit."""
    out = []
    for r in rows:
        if "stages" not in r:
            continue
        s, epochs, n = r["stages"], max(r["stages"]["epochs"], 1), r["M"]
        out.append({
            "data": r["data"], "storage": r["storage"], "M": n, "D": r["D"], "K": r["K"],
            "epochs": r["epochs"], "fit CPU s": r["CPU s"], "graph": s["graph algorithm"],
            "graph s": s["graph"], "training s": s["training"], "EM s": s["EM"],
            "step s": s["step"], "evaluation s": s["evaluation"], "other s": s["other"],
            "graph us/row": 1e6 * s["graph"] / n,
            "training us/epoch/row": 1e6 * s["training"] / epochs / n,
            "EM us/epoch/row": 1e6 * s["EM"] / epochs / n,
            "step us/epoch/row": 1e6 * s["step"] / epochs / n,
            "evaluation us/row": 1e6 * s["evaluation"] / n,
            "EM share of step": f"{100 * s['EM'] / s['training']:.1f}%" if s["training"] else "",
        })
    return out


def plot(path, rows, args):
    """Log-log plot of the CPU time of each method and stage against M, K and D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, var, sel) for name, (var, sel) in series(rows, args).items()
              if len({r[var] for r in sel}) >= 2]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.0), squeeze=False)
    styles = {"fit": "-", "CC:": "--"}
    for ax, (name, var, selected) in zip(axes[0], panels, strict=True):
        for label, points in curves(selected, var).items():
            xs, ys = zip(*[(x, y) for x, y in points if y > 0], strict=True) if any(
                y > 0 for _, y in points) else ((), ())
            if not xs:
                continue
            style = styles["CC:"] if label.startswith("CC:") else styles["fit"]
            ax.plot(xs, ys, style, marker="o", markersize=4, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(var)
        ax.set_ylabel("CPU seconds")
        ax.set_title(f"against {name}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if var == "M":  # a guide of slope 1 (time proportional to M)
            xs = sorted({r["M"] for r in selected})
            fit = dict(curves(selected, var).get(f"{CC} fit", []))
            if xs[0] in fit:
                ax.plot([xs[0], xs[-1]], [fit[xs[0]], fit[xs[0]] * xs[-1] / xs[0]], ":",
                        color="grey", label="slope 1")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"CPU time of each fit and of the CollisionClustering stages (timed fits: "
                 f"{args.epochs} epoch{'s' if args.epochs > 1 else ''})", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small smoke run (the largest size from a memmap)")
    parser.add_argument("--output", default=None, help="markdown report to write (the plot "
                        "goes next to it, same name, .png)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated numbers of rows M (default 1e4,1e5,1e6)")
    parser.add_argument("--dims", default=None, help="comma-separated D (default 128,512)")
    parser.add_argument("--clusters", default=None,
                        help="comma-separated K (default 10,100,1000)")
    parser.add_argument("--center-size", type=float, default=None,
                        help="M of the K and D lines of the star (default 1e5)")
    parser.add_argument("--grid", choices=("star", "full"), default="star",
                        help="'star': vary one of M, K, D at a time (default); 'full': all")
    parser.add_argument("--epochs", type=int, default=None,
                        help="max_epochs of the timed CollisionClustering fits (default 3)")
    parser.add_argument("--default-epochs-max-rows", type=float, default=None,
                        help="also fit CollisionClustering with its default max_epochs on the "
                             "data sets of at most this many rows of the M line and the real "
                             "sets (default 1e5; 0: never)")
    parser.add_argument("--memmap", action="store_true",
                        help="fit the data of --memmap-min-rows rows or more from a float32 "
                             ".npy memmap in a temporary folder")
    parser.add_argument("--memmap-min-rows", type=float, default=1e6)
    parser.add_argument("--real", default="dev,mnist70k",
                        help="comma-separated real feature sets (dev, mnist70k; '' for none)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = parse_sizes(args.sizes or ("1000,3000" if quick else "1e4,1e5,1e6"))
    args.dims = parse_sizes(args.dims or ("16,32" if quick else "128,512"))
    args.clusters = parse_sizes(args.clusters or ("5,20" if quick else "10,100,1000"))
    if args.center_size is None:
        args.center_size = min(args.sizes, key=lambda m: abs(math.log(m / (2000 if quick
                                                                         else 1e5))))
    args.center_size = int(args.center_size)
    if args.epochs is None:
        args.epochs = 1 if quick else 3
    if args.default_epochs_max_rows is None:
        args.default_epochs_max_rows = 1000 if quick else 1e5
    if quick:  # the smoke run also goes through the memmap path
        args.memmap, args.memmap_min_rows = True, max(args.sizes)
    args.real = [name for name in args.real.split(",") if name]
    unknown = sorted(set(args.real) - set(REAL_SETS))
    if unknown:
        parser.error(f"unknown real feature sets {unknown}; known: {sorted(REAL_SETS)}")
    return args


def jobs(args):
    """The data sets of the run, cheapest first (by M * D * K): synthetic ones and real ones."""
    out = [("mixture", m, d, k) for m, d, k in grid(args)]
    for name in args.real:
        n, d = REAL_SETS[name][2:]
        n = min(n, QUICK_REAL_ROWS) if args.quick else n
        out += [(name, m, d, 10) for m in [s for s in args.sizes if s < n] + [n]]
    return sorted(out, key=lambda job: (job[1] * job[2] * job[3], job[0] != "mixture", job))


def main(argv=None):
    args = parse_args(argv)
    output = output_path(args.output, args.quick, "scale")
    figure = quick_safe_path(os.path.splitext(output)[0] + ".png", args.quick)
    start = time.perf_counter()
    todo = jobs(args)
    print(f"{len(todo)} data sets (name, M, D, K), in this order: {todo}; timed fits of "
          f"{args.epochs} epoch(s)", flush=True)
    # beyond EXACT_MAX_SAMPLES rows the graph comes from a library: compile it first
    search = max(m for _, m, _, _ in todo) > neighbors.EXACT_MAX_SAMPLES
    warm_up(args.dims[0], args.clusters[0], [m for _, m, _, _ in todo], args.memmap, search)
    rows, notes, written = [], [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skcce_scale_") as folder:
        for i, (name, m, d, k) in enumerate(todo):
            memmap = name == "mixture" and args.memmap and m >= args.memmap_min_rows
            print(f"[{(time.perf_counter() - start) / 60:6.1f} min] data set {i + 1}/{len(todo)}"
                  f": {name} M={m:,} D={d} K={k}" + (" (memmap)" if memmap else ""), flush=True)
            # the default-epochs fits only on the M line and the real sets: they are slow
            default_epochs = name != "mixture" or (d == args.dims[0] and k == args.clusters[0])
            if name == "mixture":
                X, y = synthetic(m, d, k, folder if memmap else None)
                what = "mixture"
            else:
                loaded = load_real(name, args.quick)
                if loaded is None:
                    note = (f"{REAL_SETS[name][1]} ({REAL_SETS[name][0]}): file not found "
                            "(set SKCCE_DATA to its folder), skipped.")
                    if note not in notes:
                        notes.append(note)
                        print(note, flush=True)
                    continue
                X, y, what = loaded
                if m < len(X):
                    keep = np.sort(np.random.default_rng(0).choice(len(X), m, replace=False))
                    X, y = X[keep], y[keep]
            rows += run_data(what, X, y, k, "memmap" if memmap else "memory", args, start,
                             default_epochs)
            del X, y
            for path in os.listdir(folder):
                os.remove(os.path.join(folder, path))
            if time.perf_counter() - written > 60:  # a partial report, at most once a minute
                partial = f"**Partial report**: {i + 1} of {len(todo)} data sets done."
                write(output, figure, rows, [*notes, partial], args, argv,
                      (time.perf_counter() - start) / 60, final=False)
                written = time.perf_counter()
    write(output, figure, rows, notes, args, argv, (time.perf_counter() - start) / 60)


def write(output, figure, rows, notes, args, argv, minutes, final=True):
    """Write the report and its plot (``final=False``: a partial report during the run)."""
    has_plot = plot(figure, rows, args)
    command = " ".join(["python benchmarks/bench_scale.py",
                        *(sys.argv[1:] if argv is None else argv)])
    text = (f"Command: `{command}`. Synthetic sizes M = {', '.join(f'{m:,}' for m in args.sizes)}"
            f"; D = {', '.join(map(str, args.dims))}; K = "
            f"{', '.join(map(str, args.clusters))}; grid: {args.grid} around M = "
            f"{args.center_size:,}, D = {args.dims[0]}, K = {args.clusters[0]}. The timed "
            f"CollisionClustering fits run {args.epochs} epoch(s) (max_epochs={args.epochs}; "
            "its default is 40): their fit times are those of "
            f"{args.epochs}-epoch fits, and the per-epoch-per-row columns are the measure to "
            "scale by. Memmap: "
            + (f"data of {int(args.memmap_min_rows):,} rows or more." if args.memmap else "off.")
            + f" Default neighbour search: {neighbors._auto_rule()}. Run time "
            f"{minutes:.1f} min.")
    parts = [__doc__.split("Usage:")[0].split("\n", 1)[1].strip(), text, *notes,
             f"Machine: {machine_description()}",
             "## Targets", "\n".join(markdown_table(targets(rows, args)))]
    if has_plot:
        parts += ["## CPU time against M, K and D",
                  f"![CPU time against M, K and D (log-log)]({os.path.basename(figure)})"]
    memmapped = sorted({r["M"] for r in rows if r["storage"] == "memmap"})
    parts += ["## Growth: log-log slope of the CPU time between neighbouring points",
              "Slope 1: time proportional to the variable. CollisionClustering fits at "
              f"{args.epochs} epoch(s)."
              + (f" Data of M = {', '.join(f'{m:,}' for m in memmapped)} rows from a memmap."
                 if memmapped else ""),
              "\n".join(growth_tables(rows, args)).strip()]
    parts += ["## Stages of the CollisionClustering fits (CPU seconds)",
              "`step` is the training time outside the EM: the torch forward, backward and "
              "optimizer step, the gathering of batch and neighbour rows, and the loop's glue. "
              "`other` is the rest of the fit (input validation, model set-up). Per epoch "
              "and per row: divided by the epochs run and by M.",
              "\n".join(markdown_table(stage_rows(rows))), "## All fits"]
    table = [{key: value for key, value in r.items() if key != "stages"} for r in rows]
    write_markdown(output, "Scale: time, memory and accuracy against M, D and K",
                   "\n\n".join(parts), table)
    if final:
        print(f"wrote {output}" + (f" and {figure}" if has_plot else ""))


if __name__ == "__main__":
    main()
