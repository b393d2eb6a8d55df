"""Training throughput of the default estimator against its targets (issue 12).

Measured in one run, on one thread (torch and Numba), medians over repeats:

* **time per epoch** of the default ``CollisionClustering`` on
  ``make_blobs(100_000, 64, centers=10, random_state=0)`` (standardized,
  float32), for the code of this checkout and for the baseline commit
  (``--baseline``, default 8429dc0, extracted with ``git archive`` into a
  temporary folder). Each version runs in its own subprocess with
  ``PYTHONPATH`` set to its source; both get the same precomputed neighbour
  graph, so only the training epochs differ. An epoch's time is
  ``(fit(max_epochs=1 + E) - fit(max_epochs=1)) / E``;
* **training steps per second** against a bare PyTorch loop on the same
  head, batch size, optimizer and data (forward, Shannon cross-entropy on
  fixed labels, backward, step);
* **default fit time** (neighbour graph included) against
  ``KMeans(n_init=10)`` on the pretrained-CNN dev features, MNIST-70k pixels
  and the 100k x 64 blobs;
* the wall time of ``skcce demo --no-plot``;
* the number of clusters the default finds on
  ``make_blobs(200_000, 64, centers=10, random_state=0)`` (raw and
  standardized) against ``KMeans(n_init=1)``.

Usage::

    python benchmarks/bench_throughput.py            # writes docs/benchmarks/throughput.md
    python benchmarks/bench_throughput.py --quick    # seconds; report in a temporary folder
    python benchmarks/bench_throughput.py --parts epoch bare --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _common import machine_description, write_markdown  # noqa: E402
from profile_step import one_thread  # noqa: E402

DEFAULT_OUTPUT = os.path.join(ROOT, "docs", "benchmarks", "throughput.md")
DEFAULT_BASELINE = "8429dc0"
PARTS = ("epoch", "bare", "fit", "demo", "collapse", "causes")
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1"}
BATCH_SIZE = 256  # the estimator's default, used by the bare loop too


# --------------------------------------------------------------------------- data
def blobs(n_samples, n_features=64, standardize=True):
    """``make_blobs(n_samples, n_features, centers=10, random_state=0)`` as float32."""
    from sklearn.datasets import make_blobs
    from sklearn.preprocessing import StandardScaler

    X, y = make_blobs(n_samples=n_samples, n_features=n_features, centers=10, random_state=0)
    if standardize:
        X = StandardScaler().fit_transform(X)
    return X.astype(np.float32), y


def real_data(name, data_dir, quick):
    """Standardized float32 ``(X, y)`` of 'effnet' or 'mnist', or None when the file is absent."""
    from sklearn.preprocessing import StandardScaler

    from skcce.datasets import MNIST_FEATURES_FILE, MNIST_FILE, find_data_file

    path = find_data_file(MNIST_FEATURES_FILE if name == "effnet" else MNIST_FILE, data_dir)
    if path is None:
        return None
    with np.load(path) as data:
        X, y = data["X"], data["y"]
    if quick:
        X, y = X[:1500], y[:1500]
    return StandardScaler().fit_transform(X.astype(np.float32)).astype(np.float32), y


# --------------------------------------------------------------------------- worker
def _use_neighbors(path):
    """Make ``augmentation_neighbors`` return the graph saved at ``path`` for its data."""
    import skcce.neighbors as nb

    saved = np.load(path)
    original = nb.augmentation_neighbors

    def precomputed(X, n_neighbors, **kwargs):
        if X.shape[0] == saved.shape[0] and n_neighbors <= saved.shape[1]:
            return saved[:, :n_neighbors].copy()
        return original(X, n_neighbors, **kwargs)

    nb.augmentation_neighbors = precomputed


def _fit_seconds(estimator, X):
    """``(wall, cpu)`` seconds of ``estimator.fit(X)`` (CPU time of this process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wall, cpu = time.perf_counter(), time.process_time()
        estimator.fit(X)
        return np.array([time.perf_counter() - wall, time.process_time() - cpu])


def worker_epoch(data_path, neighbors_path, epochs, repeats):
    """Per-epoch seconds of the default estimator, one value per repeat (runs in a subprocess)."""
    import torch

    import skcce
    from skcce import CollisionClustering

    torch.set_num_threads(1)
    _use_neighbors(neighbors_path)
    X = np.load(data_path)

    def fit(n_epochs):
        return _fit_seconds(CollisionClustering(10, max_epochs=n_epochs, device="cpu",
                                                random_state=0), X)

    fit(1)  # loads the Numba kernels and warms the allocator
    times = [((fit(1 + epochs) - fit(1)) / epochs).tolist() for _ in range(repeats)]
    return {"skcce": os.path.dirname(os.path.dirname(os.path.abspath(skcce.__file__))),
            "times": times}


def run_worker(pythonpath, args):
    """Run this script's worker under ``pythonpath``; returns its JSON answer."""
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": pythonpath}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(args)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed under {pythonpath}:\n{out.stderr[-3000:]}")
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    if os.path.realpath(answer["skcce"]) != os.path.realpath(pythonpath):
        raise RuntimeError(f"the worker imported skcce from {answer['skcce']}, not {pythonpath}")
    return answer["times"]


def extract_baseline(commit, folder):
    """``git archive`` of ``commit``'s ``skcce/`` into ``folder``; returns a note or None."""
    if shutil.which("git") is None:
        return "git is not available"
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "skcce"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        return f"git archive {commit} failed: {archive.stderr.decode(errors='replace').strip()}"
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return None


# --------------------------------------------------------------------------- measurements
def _median(pairs):
    """Element-wise median of ``(wall, cpu)`` pairs."""
    return np.median(np.asarray(pairs, dtype=float).reshape(-1, 2), axis=0)


def bare_steps_per_second(X, y, repeats):
    """``(wall, cpu)`` steps/s of forward, Shannon CE on fixed labels, backward and Adam.

    Same linear head, batch size, optimizer and learning rate as the default estimator.
    """
    import torch
    import torch.nn.functional as F

    from skcce.networks import build_model

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    rates = []
    for rep in range(repeats):
        g = torch.Generator().manual_seed(rep)
        model = build_model("linear", (X.shape[1],), 10, generator=g)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        order = torch.randperm(len(X), generator=g)
        wall, cpu, steps = time.perf_counter(), time.process_time(), 0
        for a in range(0, len(X), BATCH_SIZE):
            idx = order[a:a + BATCH_SIZE]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(Xt.index_select(0, idx)), yt[idx]).backward()
            opt.step()
            steps += 1
        rates.append([steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu)])
    return _median(rates)


def fit_vs_kmeans(X, params):
    """``(wall, cpu)`` seconds of the default fit and of ``KMeans(n_init=10)`` on ``X``."""
    from sklearn.cluster import KMeans

    from skcce import CollisionClustering

    fit = _fit_seconds(CollisionClustering(10, device="cpu", random_state=0, **params), X)
    return fit, _fit_seconds(KMeans(10, n_init=10, random_state=0), X)


def demo_seconds(quick):
    """``(wall, cpu)`` seconds of ``skcce demo --no-plot`` in a subprocess (``--quick`` too)."""
    import resource

    argv = ["demo", "--no-plot"] + (["--quick"] if quick else [])
    code = f"import sys; from skcce.cli import main; sys.exit(main({argv!r}))"
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": ROOT}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return np.array([time.perf_counter() - wall, cpu])


def collapse(n_samples, params):
    """Clusters found and accuracy on big blobs: default (raw, standardized) vs KMeans(n_init=1)."""
    from sklearn.cluster import KMeans

    from skcce import CollisionClustering
    from skcce.metrics import clustering_accuracy

    rows = []
    raw, y = blobs(n_samples, standardize=False)
    for name, X, make in (
        ("KMeans(n_init=1), raw", raw, lambda: KMeans(10, n_init=1, random_state=0)),
        ("default, raw", raw,
         lambda: CollisionClustering(10, device="cpu", random_state=0, **params)),
        ("default, standardized", blobs(n_samples)[0],
         lambda: CollisionClustering(10, device="cpu", random_state=0, **params)),
    ):
        est = make()
        wall, cpu = _fit_seconds(est, X)
        rows.append({"method": name, "clusters found": int(np.unique(est.labels_).size),
                     "accuracy": float(clustering_accuracy(y, est.labels_)),
                     "fit CPU (s)": cpu, "fit wall (s)": wall})
    return rows


class _LogitNormLinear:
    """Factory of a linear head with batch-normalized logits (``model=`` of the causes part)."""

    def __init__(self, n_features, n_clusters):
        self.n_features, self.n_clusters = n_features, n_clusters

    def __call__(self):
        import torch

        return torch.nn.Sequential(torch.nn.Linear(self.n_features, self.n_clusters),
                                   torch.nn.BatchNorm1d(self.n_clusters))


def collapse_causes(n_samples, epochs):
    """Clusters found on the first rows of the big blobs when one setting changes."""
    from skcce import CollisionClustering
    from skcce.metrics import clustering_accuracy

    raw, y = blobs(200_000, standardize=False)
    raw, y = raw[:n_samples], y[:n_samples]
    std = blobs(200_000)[0][:n_samples]
    settings = [("defaults", {}), ("lr=1e-3", {"lr": 1e-3}), ("lam=4", {"lam": 4.0}),
                ("batch_size=1024", {"batch_size": 1024}), ("augment=None", {"augment": None}),
                ("random_state=1", {"random_state": 1}), ("n_init=3", {"n_init": 3}),
                ("batch-normalized logits", {"model": _LogitNormLinear(64, 10)})]
    rows = []
    for data, X in (("raw", raw), ("standardized", std)):
        for name, params in settings:
            est = CollisionClustering(10, device="cpu", **{"random_state": 0,
                                                           "max_epochs": epochs, **params})
            _fit_seconds(est, X)
            per_epoch = (est.cluster_sizes_history_ > 0).sum(axis=1)
            rows.append({"data": data, "setting": name,
                         "clusters used per epoch": " ".join(map(str, per_epoch)),
                         "clusters found": int(np.unique(est.labels_).size),
                         "accuracy": float(clustering_accuracy(y, est.labels_))})
    return rows


# --------------------------------------------------------------------------- report
def _row(measure, baseline, current, ratio, target, met):
    """A table row; ``baseline`` and ``current`` are ``(wall, cpu)`` pairs, None or text."""
    def cell(pair):
        if pair is None or isinstance(pair, str):
            return pair or ""
        return f"{pair[1]:.4g} (wall {pair[0]:.4g})"

    return {"measure": measure, "baseline": cell(baseline), "current": cell(current),
            "ratio (CPU)": ratio, "target": target, "met": "yes" if met else "no"}


def measure_epochs(args, tmp, X, notes):
    """``(wall, cpu)`` medians of the time per epoch, baseline (or None) and current."""
    from skcce.neighbors import augmentation_neighbors

    data_path, nb_path = os.path.join(tmp, "X.npy"), os.path.join(tmp, "neighbors.npy")
    np.save(data_path, X)
    np.save(nb_path, augmentation_neighbors(X, 5, random_state=0))
    job = {"data": data_path, "neighbors": nb_path, "epochs": 1 if args.quick else 2,
           "repeats": 1}
    base_dir = os.path.join(tmp, "baseline")
    os.makedirs(base_dir)
    note = "no --baseline" if args.baseline is None else extract_baseline(args.baseline,
                                                                          base_dir)
    if note:
        notes.append(f"baseline column skipped: {note}")
    base, cur = [], []
    for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
        if not note:
            base += run_worker(base_dir, job)
        cur += run_worker(ROOT, job)
    return (_median(base) if base else None), _median(cur)


def em_floor(X, neighbors_path, repeats, epochs):
    """CPU and wall seconds per epoch of the pseudo-label solves of training, alone.

    Records the inputs of every solver call made inside a training step of a
    default fit of ``1 + epochs`` epochs (not those of the final
    evaluation), keeps those of the last ``epochs`` epochs (the epochs that
    :func:`worker_epoch` times), then times solving them again, without the
    rest of the step: a lower bound of an epoch's time with this solver at
    its default tolerance. Returns the ``(wall, cpu)`` median per epoch and
    the number of solves per epoch.
    """
    import skcce.neighbors as nb
    from skcce import CollisionClustering, _training, solvers

    search = nb.augmentation_neighbors
    _use_neighbors(neighbors_path)  # the graph is not part of an epoch
    recorded, in_step = [], [False]
    solve, train_step = solvers._solve_batch, _training.Trainer.train_step

    def recording(p, *a, **k):
        if in_step[0]:
            recorded.append((np.array(p, copy=True), a, k))
        return solve(p, *a, **k)

    def step(self, *a, **k):
        in_step[0] = True
        try:
            return train_step(self, *a, **k)
        finally:
            in_step[0] = False

    solvers._solve_batch, _training.Trainer.train_step = recording, step
    try:
        est = CollisionClustering(10, max_epochs=1 + epochs, device="cpu", random_state=0)
        _fit_seconds(est, X)
    finally:
        solvers._solve_batch, _training.Trainer.train_step = solve, train_step
        nb.augmentation_neighbors = search  # the later fits build their own graph
    if est.n_iter_ != 1 + epochs:
        raise RuntimeError(f"the fit stopped after {est.n_iter_} epochs, not {1 + epochs}")
    per_epoch = len(recorded) // (1 + epochs)
    timed = recorded[per_epoch:]  # the epochs after the first, as worker_epoch measures
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for p, a, k in timed:
            solve(p, *a, **k)
        times.append([(time.perf_counter() - wall) / epochs, (time.process_time() - cpu) / epochs])
    return _median(times), per_epoch


def measure(args, tmp, notes):
    """All target rows and the collapse rows."""
    params = {"max_epochs": 2} if args.quick else {}  # quick fits are not the default's
    n_rows = 3000 if args.quick else 100_000
    X, y = blobs(n_rows)
    rows, collapse_rows = [], []
    if "epoch" in args.parts:
        base, cur = measure_epochs(args, tmp, X, notes)
        speedup = None if base is None else base[1] / cur[1]
        rows.append(_row(f"time per epoch, blobs {n_rows} x 64 (s)", base, cur,
                         "n/a" if speedup is None else f"{speedup:.3g}x faster",
                         ">= 10x faster", speedup is not None and speedup >= 10))
        steps = -(-n_rows // BATCH_SIZE)
        floor, n_solves = em_floor(X, os.path.join(tmp, "neighbors.npy"), args.repeats,
                                   1 if args.quick else 2)
        if base is not None:
            budget = base / 10
            rows.append(_row(f"pseudo-label solves alone, per epoch ({n_solves} solves; "
                             "baseline column: the 10x target's whole epoch) (s)", budget,
                             floor, f"{floor[1] / budget[1]:.3g}x the target epoch",
                             "<= 1x (floor of the epoch)", floor[1] <= budget[1]))
        if "bare" in args.parts:
            bare = bare_steps_per_second(X, y, args.repeats)
            ours = steps / cur
            slower = bare[1] / ours[1]
            rows.append(_row("training steps/s: bare PyTorch loop vs current", bare, ours,
                             f"{slower:.3g}x slower than bare", "<= 2x", slower <= 2))
            solves_only = steps / floor
            rows.append(_row("steps/s if a step were its pseudo-label solves alone, vs bare",
                             bare, solves_only, f"{bare[1] / solves_only[1]:.3g}x slower than "
                             "bare", "<= 2x (floor)", bare[1] / solves_only[1] <= 2))
    if "fit" in args.parts:
        data = {"dev features (effnet)": real_data("effnet", args.data_dir, args.quick),
                "MNIST-70k pixels": real_data("mnist", args.data_dir, args.quick),
                f"blobs {n_rows} x 64": (X, y)}
        for name, found in data.items():
            if found is None:
                notes.append(f"{name} skipped: data file not found")
                continue
            limit = 3.0 if name.startswith("blobs") else 1.0
            fit, km = fit_vs_kmeans(found[0], params)
            rows.append(_row(f"default fit vs KMeans(n_init=10), {name} (s)", km, fit,
                             f"{fit[1] / km[1]:.3g}x KMeans", f"<= {limit:g}x KMeans",
                             fit[1] / km[1] <= limit))
    if "demo" in args.parts:
        seconds = demo_seconds(args.quick)
        rows.append(_row("`skcce demo%s --no-plot` (s)" % (" --quick" if args.quick else ""),
                         None, seconds, "", "< 15 s", seconds[1] < 15))
    if "collapse" in args.parts:
        collapse_rows = collapse(2000 if args.quick else 200_000, params)
    if "causes" in args.parts:
        n, epochs = (1000, 1) if args.quick else (20_000, 4)
        collapse_rows = collapse_rows + [
            {"method": f"{r['data']}, {r['setting']} (first {n} rows, {epochs} epochs)",
             "clusters found": r["clusters found"], "accuracy": r["accuracy"],
             "clusters used per epoch": r["clusters used per epoch"]}
            for r in collapse_causes(n, epochs)]
    for row in rows:
        print(row, flush=True)
    return rows, collapse_rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small data, 2-epoch fits, no demo; report in a temporary folder")
    parser.add_argument("--parts", nargs="+", default=None, choices=PARTS,
                        help="what to measure (default: everything; --quick skips the demo)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats of the epoch and steps/s timings (default 3, 1 with --quick)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help="git commit of the baseline column (default %(default)s)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_const", const=None)
    parser.add_argument("--data-dir", default=None,
                        help="folder of the data files (default: SKCCE_DATA or ../shared/data)")
    parser.add_argument("--output", default=None,
                        help="report path (default docs/benchmarks/throughput.md; with --quick "
                             "a temporary file)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        job = json.loads(args.worker)
        print(json.dumps(worker_epoch(job["data"], job["neighbors"], job["epochs"],
                                      job["repeats"])))
        return None
    sys.path.insert(1, ROOT)  # this checkout's skcce, as in the "current" subprocesses
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.parts = args.parts or [p for p in PARTS if not (args.quick and p == "demo")]
    output = args.output or (os.path.join(tempfile.gettempdir(), "skcce_throughput_quick.md")
                             if args.quick else DEFAULT_OUTPUT)
    notes = []
    with tempfile.TemporaryDirectory() as tmp, one_thread():
        rows, collapse_rows = measure(args, tmp, notes)
        machine = machine_description()
    command = " ".join(["python benchmarks/bench_throughput.py",
                        *(sys.argv[1:] if argv is None else argv)])
    collapse_text = []
    if collapse_rows:
        from profile_step import markdown_table

        n = 2000 if args.quick else 200_000
        collapse_text = ["", f"## Clusters found on make_blobs({n}, 64, centers=10, "
                         "random_state=0)", "", *markdown_table(collapse_rows)]
    header = "\n".join([
        "Throughput of the default `CollisionClustering` (cross-neighbour objective, linear "
        "head, EM pseudo-labels, batch 256) with one torch and Numba thread, against the "
        f"targets of issue 12. `baseline` is the code of commit {args.baseline} and `current` "
        "this checkout, measured in the same run; in the fit rows `baseline` holds "
        "`KMeans(n_init=10)` (one thread), in the steps/s row the bare PyTorch loop. Cells give "
        "CPU seconds of the measuring process and, in brackets, wall seconds; ratios and "
        "targets use CPU time, which a busy shared machine inflates far less than wall time "
        "(on an idle machine the two agree for one thread). Medians over "
        f"{args.repeats} repeat(s) for the epoch and steps/s rows, one fit for the others."
        + (" Quick mode: small data and 2-epoch fits, not the defaults." if args.quick else ""),
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine}",
        "",
        *(f"Note: {n}" for n in notes),
        *collapse_text,
        *(["", "## Targets"] if rows else []),
    ])
    write_markdown(output, "Training throughput", header, rows)
    print(f"report written to {output}")
    return output


if __name__ == "__main__":
    main()
