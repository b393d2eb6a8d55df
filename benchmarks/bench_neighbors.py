"""Neighbour graph: recall@5 against exact search, and build time, per algorithm.

The feature-space augmentation of :class:`skcce.CollisionClustering` needs
the ``k = 5`` nearest neighbours of every row. This script builds that graph
with each algorithm of :func:`skcce.neighbors.augmentation_neighbors`, plus
the random-block approximation of skcce 0.1 (exact search within random
blocks of 20,000 rows in a 32-component PCA) for reference, and reports:

- recall@5: the fraction of each query row's 5 exact neighbours (exact
  search in the original feature space, never in a projection) that the
  graph lists, averaged over a random sample of query rows;
- the label agreement of the graph's neighbours, where labels are known;
- CPU seconds of the build (``time.process_time``, one thread: the machine is
  shared, so CPU time is the stable measure) and wall seconds.

Data: the dev features (EfficientNet-Lite0 features of 10,000 MNIST digits,
1280-D, standardized), MNIST-70k pixels (784-D, standardized, as the CLI
does), and a synthetic mixture of 10 Gaussian components in 128-D whose
covariances have the decaying spectrum of real embeddings (axis scales
``4 / j``, j = 1..128, randomly rotated per component). On the largest set
one :class:`~sklearn.cluster.MiniBatchKMeans` fit (10 clusters) is timed in
the same run, for the target "graph built in less time than one
MiniBatchKMeans fit".

Rows marked "from sample" did not build the full graph: the exact search
beyond 20,000 rows, and the faiss settings other than the default, search
only the query rows (after building the whole index), which gives those
rows exactly the neighbours the full graph would; the time of the full
search is the sample's scaled by ``n_samples / n_queries``.

Usage: ``python benchmarks/bench_neighbors.py [--quick] [--output PATH]``;
the full run writes ``docs/benchmarks/neighbors.md``, ``--quick`` a smoke
run on small data to a temporary folder.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_description, write_markdown  # noqa: E402

from skcce import neighbors  # noqa: E402
from skcce.datasets import find_data_file  # noqa: E402

K = 5
DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmarks")


def mixture(n_samples, n_features=128, n_components=10, seed=0):
    """Gaussian mixture with embedding-like (decaying) spectra, and its labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(n_components, n_features)).astype(np.float32)
    y = rng.integers(n_components, size=n_samples)
    scales = (4.0 / np.arange(1, n_features + 1)).astype(np.float32)
    X = np.empty((n_samples, n_features), dtype=np.float32)
    for c in range(n_components):
        rows = np.flatnonzero(y == c)
        rotation = np.linalg.qr(rng.normal(size=(n_features, n_features)))[0].astype(np.float32)
        noise = rng.standard_normal((len(rows), n_features), dtype=np.float32) * scales
        X[rows] = centers[c] + noise @ rotation.T
    return X, y


def load(name, quick):
    """(X float32, y, description) of a named set, or None when its file is absent."""
    if name == "mixture":
        n = 3000 if quick else 1_000_000
        X, y = mixture(n)
        return X, y, f"mixture {n:,} x 128"
    fname = {"dev": "mnist_train10k_effnet_lite0.npz", "mnist70k": "mnist70k.npz"}[name]
    path = find_data_file(fname)
    if path is None:
        return None
    data = np.load(path)
    X, y = data["X"], data["y"]
    if quick:
        X, y = X[:2000], y[:2000]
    X = StandardScaler().fit_transform(X.astype(np.float32)).astype(np.float32)
    what = "dev features" if name == "dev" else "MNIST pixels"
    return X, y, f"{what} {X.shape[0]:,} x {X.shape[1]}"


def exact_queries(X, rows):
    """Exact 5 nearest neighbours (self excluded) of ``X[rows]`` and the CPU/wall time taken."""
    cpu, wall = time.process_time(), time.perf_counter()
    nn = NearestNeighbors(n_neighbors=K + 1, algorithm="brute").fit(X)
    truth = neighbors._drop_self(nn.kneighbors(X[rows], return_distance=False), rows)
    return truth, time.process_time() - cpu, time.perf_counter() - wall


def blocks_graph(X, random_state=0, block=20_000, n_components=32):
    """The skcce 0.1 approximation: exact search within random blocks, in a PCA projection."""
    rng = np.random.RandomState(random_state)
    if X.shape[0] <= block:
        return neighbors.knn_indices(X, K)
    Z = PCA(n_components, svd_solver="randomized", random_state=rng.randint(2**31 - 1))
    Z = Z.fit_transform(X).astype(np.float32)
    perm = rng.permutation(X.shape[0])
    out = np.empty((X.shape[0], K), dtype=np.int64)
    for rows in np.array_split(perm, -(-X.shape[0] // block)):
        out[rows] = rows[neighbors.knn_indices(Z[rows], K)]
    return out


class _ivf_settings:
    """Temporarily other IVF settings in skcce.neighbors (lists per sqrt(n), nprobe)."""

    def __init__(self, lists_per_sqrt_n, nprobe):
        self.values = lists_per_sqrt_n, nprobe

    def __enter__(self):
        self.saved = neighbors._IVF_LISTS_PER_SQRT_N, neighbors._IVF_NPROBE
        neighbors._IVF_LISTS_PER_SQRT_N, neighbors._IVF_NPROBE = self.values

    def __exit__(self, *exc):
        neighbors._IVF_LISTS_PER_SQRT_N, neighbors._IVF_NPROBE = self.saved


def _timed(fn, *args):
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def full_graph(build):
    """Measure a full graph build; return the query rows' neighbours and the times."""
    def measure(X, rows):
        graph, cpu, wall = _timed(build, X)
        n = X.shape[0]
        assert graph.shape == (n, K) and not (graph == np.arange(n)[:, None]).any()
        return graph[rows], cpu, wall
    return measure


def sampled_faiss(X, rows):
    """The faiss index over all rows, searched for the query rows only.

    Each row's search is independent of the others', so the query rows get
    the neighbours the full graph would give them; the full search time is
    the sample's scaled by ``n_samples / n_queries``.
    """
    import faiss

    rng = np.random.RandomState(0)
    index, cpu_build, wall_build = _timed(neighbors._faiss_index, faiss, X, rng, 0)
    found, cpu, wall = _timed(index.search, np.ascontiguousarray(X[rows]), K + 1)
    scale = X.shape[0] / len(rows)
    return neighbors._drop_self(found[1], rows), cpu_build + scale * cpu, \
        wall_build + scale * wall


def methods(quick):
    """(name, measure(X, rows) -> (neighbours of rows, CPU s, wall s)) pairs.

    The default faiss settings build the full graph; other settings are
    measured on the query rows only (``sampled_faiss``).
    """
    def faiss_default(X):
        return neighbors.augmentation_neighbors(X, K, algorithm="faiss", random_state=0)

    def nndescent(X):
        return neighbors.augmentation_neighbors(X, K, algorithm="nndescent", random_state=0)

    out = [("skcce 0.1 blocks (PCA-32)", full_graph(blocks_graph))]
    default = (neighbors._IVF_LISTS_PER_SQRT_N, neighbors._IVF_NPROBE)
    for lists, nprobe in sorted({default, (2.0, 4), (2.0, 16), (4.0, 8)}):
        name = f"faiss IVF-Flat {lists:g}*sqrt(n) lists, nprobe {nprobe}"
        if (lists, nprobe) == default:
            out.append((name + " (default)", full_graph(faiss_default)))
        else:
            def measure(X, rows, settings=(lists, nprobe)):
                with _ivf_settings(*settings):
                    return sampled_faiss(X, rows)
            out.append((name + " (from sample)", measure))
    if not quick:  # its Numba compilation alone takes longer than a smoke run should
        out.append(("pynndescent", full_graph(nndescent)))
    return out


def warm_up_numba():
    """Compile pynndescent once, outside the timings (a first use costs tens of seconds)."""
    cpu = time.process_time()
    X = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)
    neighbors.augmentation_neighbors(X, K, algorithm="nndescent", random_state=0)
    return time.process_time() - cpu


def recall(graph, truth):
    hits = [len(set(g) & set(t)) for g, t in zip(graph, truth, strict=True)]
    return float(np.mean(hits)) / K


def run_set(X, y, what, n_queries, quick):
    n = X.shape[0]
    if n <= neighbors.EXACT_MAX_SAMPLES:
        n_queries = n  # the exact graph is cheap: recall over every row
    rows = np.sort(np.random.default_rng(1).choice(n, min(n_queries, n), replace=False))
    truth, cpu, wall = exact_queries(X, rows)
    scale = n / len(rows)
    results = [{"data": what, "algorithm": "exact" + ("" if scale == 1 else " (from sample)"),
                "recall@5": 1.0, "same label": float(np.mean(y[truth] == y[rows, None])),
                "CPU s": cpu * scale, "wall s": wall * scale}]
    for name, measure in methods(quick):
        found, cpu, wall = measure(X, rows)
        results.append({"data": what, "algorithm": name, "recall@5": recall(found, truth),
                        "same label": float(np.mean(y[found] == y[rows, None])),
                        "CPU s": cpu, "wall s": wall})
        print(results[-1], flush=True)
    return results


def time_minibatch_kmeans(X):
    cpu, wall = time.process_time(), time.perf_counter()
    MiniBatchKMeans(n_clusters=10, random_state=0).fit(X)
    return time.process_time() - cpu, time.perf_counter() - wall


def output_path(output, quick, name):
    """The report file: ``output`` if given, a temporary file for a smoke run, else docs/."""
    if output is not None:
        return output
    if quick:  # a smoke run does not overwrite the documented table
        return os.path.join(tempfile.gettempdir(), f"skcce_bench_{name}_quick.md")
    return os.path.join(DOCS, f"{name}.md")


def write_report(path, title, doc, command, notes, rows):
    """Write the markdown report: the script's description, command, notes, machine, table."""
    header = "\n\n".join([doc.split("Usage:")[0].split("\n", 1)[1].strip(), command, *notes,
                          f"Machine: {machine_description()}"])
    print(write_markdown(path, title, header, rows))
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--output", default=None, help="markdown report to write")
    parser.add_argument("--queries", type=int, default=1000, help="query rows for recall")
    parser.add_argument("--sets", default="dev,mnist70k,mixture",
                        help="comma-separated data sets (dev, mnist70k, mixture)")
    args = parser.parse_args(argv)
    output = output_path(args.output, args.quick, "neighbors")
    compile_s = 0.0 if args.quick else warm_up_numba()
    rows, notes = [], []
    for name in args.sets.split(","):
        loaded = load(name, args.quick)
        if loaded is None:
            notes.append(f"{name}: data file not found, skipped.")
            continue
        X, y, what = loaded
        rows += run_set(X, y, what, args.queries, args.quick)
        if name == "mixture":
            cpu, wall = time_minibatch_kmeans(X)
            rows.append({"data": what, "algorithm": "MiniBatchKMeans fit, 10 clusters "
                         "(time reference)", "recall@5": "", "same label": "",
                         "CPU s": cpu, "wall s": wall})
    command = "python benchmarks/bench_neighbors.py" + (" --quick" if args.quick else "")
    text = (f"Command: `{command}`. Default 'auto' rule: {neighbors._auto_rule()}. "
            f"pynndescent's one-off Numba compilation ({compile_s:.0f} CPU s) ran before the "
            f"timings. Recall and label agreement are over {args.queries:,} random query rows "
            "per set (every row up to 20,000 rows).")
    write_report(output, "Neighbour graph: recall and build time", __doc__, text, notes, rows)


if __name__ == "__main__":
    main()
