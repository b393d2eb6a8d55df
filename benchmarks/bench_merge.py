"""Over-clustering then merging: one fit with too many clusters, merged on the neighbour graph.

Fits the default :class:`~skcce.CollisionClustering` with the true number of
classes K and with ``--factor`` times as many clusters, over several seeds,
on the datasets of ``bench_model_selection.py`` (same loading, same
standardization), with the code of this checkout. Each over-clustered fit is
merged by :func:`skcce.selection.merge_clusters`, which joins clusters
greedily by the modularity gain on the neighbour graph of the data, and the
report gives, without labels,

* the accuracy of the merge to K clusters against direct fits with K clusters;
* the number of clusters at which the merge path's modularity peaks (a
  choice of K from a single fit) against the truth, and against
  :func:`skcce.selection.select_n_clusters` (one fit per candidate) from
  ``docs/benchmarks/model_selection.md``;
* the cost of the merge against a fit.

Usage::

    python benchmarks/bench_merge.py --fit-only --seeds 6   # fill the cache (workers may share it)
    python benchmarks/bench_merge.py --seeds 6              # fit what is missing, report
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench_model_selection as ms  # noqa: E402
from _common import machine_description, output_path, write_markdown  # noqa: E402

from skcce.metrics import clustering_accuracy  # noqa: E402
from skcce.selection import merge_clusters  # noqa: E402

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "skcce", "merge")
DEFAULT_OUTPUT = os.path.join(ROOT, "docs", "benchmarks", "merge.md")
N_CLASSES = {"digits": 10, "effnet": 10, "fashion": 10, "mnist": 10}


def fit_plan(datasets, seeds, factor):
    """Direct fits at K and over-clustered fits at ``factor * K``, lam=1, every seed."""
    return [(d, 1.0, s, k) for s in seeds for d in datasets
            for k in (N_CLASSES[d], factor * N_CLASSES[d])]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(ms.DATASETS), choices=ms.DATASETS)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--factor", type=int, default=2,
                        help="over-clustered fits have factor * K clusters")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="per-fit cache (outside the repo)")
    parser.add_argument("--data-dir", default=ms.DEFAULT_DATA_DIR)
    parser.add_argument("--fashion", default=ms.DEFAULT_FASHION)
    parser.add_argument("--mnist-samples", type=int, default=10000)
    parser.add_argument("--fit-only", action="store_true", help="only fill the cache")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: digits, 2 seeds, 3 epochs, in a temporary folder")
    return parser.parse_args(argv)


def _mean_std(values):
    values = 100 * np.asarray(values, dtype=float)
    return f"{values.mean():.2f} ± {values.std():.2f}"


def measure(dataset, X, y, fits, factor):
    """Merge every over-clustered fit of one dataset; compare with its direct fits."""
    k = N_CLASSES[dataset]
    direct = [f for f in fits if f["n_clusters"] == k]
    over = [f for f in fits if f["n_clusters"] == factor * k]
    rows, paths, merge_times = [], [], []
    for fit in over:
        t = time.perf_counter()
        to_k = merge_clusters(fit["labels"], X, n_clusters=k, random_state=0)
        merge_times.append(time.perf_counter() - t)
        auto = merge_clusters(fit["labels"], X, random_state=0)
        paths.append(auto.modularity)
        rows.append({"seed": fit["seed"], "acc_over": fit["acc"],
                     "acc_merged": clustering_accuracy(y, to_k.labels),
                     "k_auto": auto.n_clusters, "acc_auto": clustering_accuracy(y, auto.labels)})
    return {"direct": direct, "over": over, "rows": rows, "paths": paths,
            "merge_times": merge_times}


def plot_paths(path, results, factor):
    """Modularity along the merge path against the number of clusters, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.0), squeeze=False)
    for ax, (dataset, res) in zip(axes[0], results.items(), strict=True):
        for curve in res["paths"]:
            ks = np.flatnonzero(~np.isnan(curve))
            ax.plot(ks, curve[ks], color="tab:blue", alpha=0.6, lw=1)
            best = int(np.nanargmax(curve))
            ax.plot([best], [curve[best]], "o", color="tab:blue", ms=4)
        ax.axvline(N_CLASSES[dataset], color="k", ls="--", lw=1, label="true K")
        ax.set_title(dataset)
        ax.set_xlabel("clusters after merging")
    axes[0][0].set_ylabel("modularity (validity_score)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Merge paths of fits with {factor} x K clusters, one line per seed (dot: peak)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(output, results, argv, args):
    rows = []
    for dataset, res in results.items():
        k = N_CLASSES[dataset]
        merged = [r["acc_merged"] for r in res["rows"]]
        direct = [f["acc"] for f in res["direct"]]
        chosen = [r["k_auto"] for r in res["rows"]]
        rows.append({
            "dataset": dataset,
            "seeds (direct / over)": f"{len(direct)} / {len(res['over'])}",
            f"direct fit, K={k}": _mean_std(direct),
            f"fit with {args.factor * k}, Hungarian acc": _mean_std(
                [r["acc_over"] for r in res["rows"]]),
            f"merged to K={k}": _mean_std(merged),
            "merged - direct (points)": f"{100 * (np.mean(merged) - np.mean(direct)):+.2f}",
            "K at the modularity peak, per seed": " ".join(str(c) for c in chosen),
            "within ±2 of K": f"{sum(abs(c - k) <= 2 for c in chosen)} of {len(chosen)}",
            "acc at the peak": _mean_std([r["acc_auto"] for r in res["rows"]]),
            "median fit K (s)": float(np.median([f["time"] for f in res["direct"]])),
            f"median fit {args.factor}K (s)": float(np.median([f["time"] for f in res["over"]])),
            "median merge (s)": float(np.median(res["merge_times"])),
        })
    figure = output_path(os.path.splitext(output)[0] + ".png", args.quick)
    os.makedirs(os.path.dirname(figure) or ".", exist_ok=True)
    plot_paths(figure, results, args.factor)
    command = "python benchmarks/bench_merge.py " + " ".join(argv)
    header = (
        "Over-clustering then merging, against direct fits. Every fit is a default "
        "`CollisionClustering(n_clusters, lam=1, random_state=seed)` of this checkout (one "
        "thread), on standardized float32 features loaded as in `bench_model_selection.py`; "
        f"the over-clustered fits have {args.factor} x K clusters. Each is merged by "
        "`skcce.selection.merge_clusters` (greedy modularity merges on the 10-NN graph of "
        "PCA-50 features, `random_state=0`): once down to the true K, and once down to the "
        "peak of the modularity along the merge path (K chosen without labels, from that "
        "single fit). Accuracy is Hungarian-matched (%, mean ± std over seeds), used only to "
        "judge. Times are wall-clock seconds of one fit or one merge (with its neighbour "
        "graph); `select_n_clusters`, which fits every candidate, is measured in "
        "`model_selection.md`.\n\n"
        f"Command: `{command.strip()}`\n\nMachine: {machine_description()}\n\n"
        f"![modularity along the merge paths]({os.path.basename(figure)})"
    )
    write_markdown(output, "Over-clustering and merging", header, rows)


def main(argv=None):
    args = parse_args(argv)
    data_kwargs = {"data_dir": args.data_dir, "fashion": args.fashion,
                   "mnist_samples": args.mnist_samples}
    params = None
    if args.quick:
        tmp = tempfile.mkdtemp(prefix="skcce_merge_")
        args.cache, args.datasets, args.seeds = os.path.join(tmp, "cache"), ["digits"], 2
        params = {"max_epochs": 3}
    plan = fit_plan(args.datasets, list(range(args.seeds)), args.factor)
    ms.run_fits(plan, args.cache, data_kwargs, log=lambda m: print(m, flush=True),
                params=params)
    if args.fit_only:
        return
    results = {}
    for dataset in args.datasets:
        X, y = ms.load_dataset(dataset, **data_kwargs)
        fits = [f for f in ms.load_fits(args.cache, dataset, lam=1.0)
                if f["seed"] < args.seeds]
        results[dataset] = measure(dataset, X, y, fits, args.factor)
        print(f"{dataset}: merged {len(results[dataset]['rows'])} fits", flush=True)
    write_report(args.output, results, argv if argv is not None else sys.argv[1:], args)
    if args.quick:
        shutil.rmtree(os.path.dirname(args.cache), ignore_errors=True)


if __name__ == "__main__":
    main()
