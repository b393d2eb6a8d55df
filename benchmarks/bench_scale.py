"""Scale: fit time, peak memory and accuracy against the number of rows M.

Skeleton of the scale benchmark of issue 11 (item 5). For each size M it
fits, on a synthetic Gaussian mixture with known labels (the embedding-like
mixture of ``bench_neighbors.py``: decaying spectra, randomly rotated per
component), one after the other in this process:

- :class:`skcce.CollisionClustering` with its defaults (``augment=
  'cross_neighbors'``: the neighbour graph is part of the fit time);
- :class:`sklearn.cluster.MiniBatchKMeans`;
- faiss k-means (``faiss.Kmeans``, 20 iterations), when faiss is installed.

and reports the fit's CPU seconds (``time.process_time``, one thread: the
machine is shared) and wall seconds, CPU microseconds per epoch per row for
CollisionClustering, the peak resident memory above the level before the fit
(sampled every 5 ms; Linux only) and the Hungarian accuracy against the
mixture's labels. The ratio column divides each fit's CPU time by
MiniBatchKMeans's at the same size.

Still to do for the full benchmark: M up to 1e6 (1e7 from a memmap), 512-D,
K = 100 and 1000, the real feature sets, the log-log plot, and the split of
the time into neighbour search, EM and torch step.

Usage: ``python benchmarks/bench_scale.py [--quick] [--output PATH]
[--sizes 10000,30000]``; writes ``docs/benchmarks/scale.md`` by default,
``--quick`` a smoke run to a temporary folder.
"""

import argparse
import os
import sys
import threading
import time
import warnings

from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_neighbors import mixture, output_path, write_report  # noqa: E402

from skcce import CollisionClustering, neighbors  # noqa: E402
from skcce.metrics import clustering_accuracy  # noqa: E402


def _rss():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Context manager: highest resident memory above the start, sampled every 5 ms."""

    def __enter__(self):
        self.start = _rss()
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if self.start is not None:
            self._thread.start()
        return self

    def _sample(self):
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _rss() - self.start)

    def __exit__(self, *exc):
        self._done.set()
        if self.start is not None:
            self._thread.join()
            self.peak = max(self.peak, _rss() - self.start)

    @property
    def megabytes(self):
        return "n/a" if self.start is None else self.peak / 2**20


def fit_collision(X, k):
    est = CollisionClustering(n_clusters=k, random_state=0, device="cpu").fit(X)
    return est.labels_, est.n_iter_


def fit_minibatch_kmeans(X, k):
    return MiniBatchKMeans(n_clusters=k, random_state=0).fit(X).labels_, None


def fit_faiss_kmeans(X, k):
    import faiss

    kmeans = faiss.Kmeans(X.shape[1], k, niter=20, seed=0, verbose=False)
    kmeans.train(X)
    return kmeans.index.search(X, 1)[1].ravel(), None


def methods():
    out = [("MiniBatchKMeans", fit_minibatch_kmeans),
           ("CollisionClustering", fit_collision)]
    try:
        import faiss  # noqa: F401
    except ImportError:
        return out
    return out + [("faiss k-means", fit_faiss_kmeans)]


def warm_up(n_features, k, largest):
    """One small fit of each method first: imports and one-off compilation are not measured."""
    X, _ = mixture(max(500, 20 * k), n_features=n_features, n_components=k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _, fit in methods():
            fit(X, k)
        # Beyond EXACT_MAX_SAMPLES rows the fit's graph comes from a library (pynndescent's
        # Numba code compiles on first use): run it once here.
        if largest > neighbors.EXACT_MAX_SAMPLES:
            large = neighbors._resolve_algorithm("auto", largest)
            neighbors.augmentation_neighbors(X, 5, algorithm=large)


def run_size(n, n_features, k):
    X, y = mixture(n, n_features=n_features, n_components=k)
    rows, reference = [], None
    for name, fit in methods():
        with PeakMemory() as memory, warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            cpu, wall = time.process_time(), time.perf_counter()
            labels, epochs = fit(X, k)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        reference = cpu if reference is None else reference
        rows.append({"M": n, "D": n_features, "K": k, "method": name, "CPU s": cpu,
                     "wall s": wall, "CPU / MiniBatchKMeans": cpu / reference,
                     "us per epoch per row": "" if epochs is None else 1e6 * cpu / epochs / n,
                     "peak MB above start": memory.megabytes,
                     "accuracy": clustering_accuracy(y, labels)})
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--output", default=None, help="markdown report to write")
    parser.add_argument("--sizes", default=None, help="comma-separated numbers of rows")
    parser.add_argument("--n-features", type=int, default=128)
    parser.add_argument("--n-clusters", type=int, default=10)
    args = parser.parse_args(argv)
    output = output_path(args.output, args.quick, "scale")
    default_sizes = "2000" if args.quick else "10000,30000"
    sizes = [int(float(s)) for s in (args.sizes or default_sizes).split(",")]
    warm_up(args.n_features, args.n_clusters, max(sizes))
    rows = []
    for n in sizes:
        rows += run_size(n, args.n_features, args.n_clusters)
    command = "python benchmarks/bench_scale.py" + (" --quick" if args.quick else "")
    if args.sizes:
        command += f" --sizes {args.sizes}"
    write_report(output, "Scale: time, memory and accuracy against M", __doc__,
                 f"Command: `{command}`.", [], rows)


if __name__ == "__main__":
    main()
