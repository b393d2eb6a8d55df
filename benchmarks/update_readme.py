"""Splice the benchmark reports' tables into README.md.

The benchmark scripts write markdown reports into ``docs/benchmarks/``. This
script copies the summary table of each report (with the date it states)
between the ``<!-- results:start -->`` and ``<!-- results:end -->`` markers of
the README, so the README's numbers always come from a run and are never
typed by hand. Each table gets a one-line caption (what was measured, on
which data) and a legend; abbreviations in the cells are spelled out, and
two rows that ran one configuration are shown as one. Reports that do not
exist yet are listed with the command that generates them.

Usage::

    python benchmarks/update_readme.py [--readme README.md] [--check]

``--check`` exits with status 1 when the README is out of date (for CI).
"""

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- results:start -->", "<!-- results:end -->"


class Report:
    """How one report's summary table appears in the README.

    Parameters
    ----------
    name : str
        The report, ``docs/benchmarks/<name>.md``.
    heading : str
        Heading in the README.
    command : str
        The command that generates the report (shown while it does not exist).
    caption : str
        One line saying what was measured, on which data.
    legend : sequence of (str, str)
        Column or row names and what they mean.
    after : str, optional
        Text of the heading that the summary table follows in the report; the
        report's first table when None.
    values : dict, optional
        Column name -> {cell text: readable text} (data set abbreviations).
    columns : dict, optional
        Column name -> readable column name.
    same : dict, optional
        Row name -> the name of a row that runs the same configuration; when
        their measured cells (all but ``timing`` columns) agree, the two are
        shown as one row named ``"<second> (= <first>)"``.
    timing : tuple of str
        Columns that differ between two runs of one configuration.
    """

    def __init__(self, name, heading, command, caption, legend, after=None, values=None,
                 columns=None, same=None, timing=()):
        self.name, self.heading, self.command = name, heading, command
        self.caption, self.legend, self.after = caption, tuple(legend), after
        self.values, self.columns = values or {}, columns or {}
        self.same, self.timing = same or {}, tuple(timing)


MNIST10K_EFFNET = "MNIST-10k EfficientNet-Lite0 features"
_ACCURACY = ("accuracy", "clustering accuracy in %, after matching clusters to classes "
                         "(Hungarian), mean ± standard deviation over seeds")
_FIXED_LEGEND = (
    _ACCURACY,
    ("min-max", "lowest and highest accuracy over the seeds"),
    ("lowest-loss seed", "accuracy of the seed whose fit ended with the lowest training loss: "
                         "the run a lowest-loss rule would keep without labels (skcce "
                         "0.1's `n_init`; restarts are now kept by consensus, row n_init=3); "
                         "blank where the method has no such loss"),
    ("NMI, ARI", "normalized mutual information and adjusted Rand index, means over seeds"),
    ("fit time (s)", "median seconds per fit; time / K-means: that time over the fit time of "
                     "`KMeans(n_init=10)` in the same run"),
    ("MI-GD, SeLa, MI-ADM", "the paper's baselines, run by the same estimator on the same "
                            "linear model"),
    ("CCE forward+PGD, reverse+EM", "collision cross-entropy with the fairness term "
                                    "KL(y||u) solved by projected gradient, or KL(u||y) by EM; "
                                    "no augmentation"),
    ("+ neighbours (avg), + cross neighbours", "feature-space neighbour augmentation"),
    ("CCE default", "`CollisionClustering()` as shipped; its augmentation is cross "
                    "neighbours, so the two rows are one"),
)
_FIXED_TIMING = ("fit time (s)", "time / K-means")

#: every method of bench_fixed_features but its solver-tolerance ablation (measured on
#: the smaller sets), so that the 70k run fits in an hour on two cores
_MNIST70K_METHODS = ("K-means", "UMAP+K-means", "MI-GD", "SeLa", "MI-ADM", "CCE forward+PGD",
                     "CCE reverse+EM", "CCE + neighbours (avg)", "CCE + cross neighbours",
                     "CCE default", "CCE default, n_init=3", "CCE default, MLP head",
                     "CCE default + refine", "TEMI")

FASHION10K_EFFNET = "Fashion-MNIST-10k EfficientNet-Lite0 features"
_RESTART_METHODS = ("K-means", "UMAP+K-means", "CCE default", "CCE default + refine",
                    "CCE default, n_init=3", "CCE default, n_init=5",
                    "CCE default, n_init=5 + refine")
_LABEL_FREE_METHODS = ("K-means", "UMAP+K-means", "CCE default", "CCE default, n_init=5 + refine",
                       "CCE MLP head, n_init=5 + refine", "TEMI")
_LABEL_FREE_LEGEND = (
    ("MLP head", "`model='mlp'`: one hidden layer of 512 instead of the linear head"),
    ("TEMI", "Adaloglou et al. 2023, run by the same loop (`loss='temi'`): an EMA teacher and "
             "a weighted pointwise mutual information on pairs of neighbours"),
)
_RESTART_LEGEND = (
    ("n_init=3, n_init=5", "restarts from different seeds, the one that agrees most with the "
                           "others kept (consensus)"),
    ("+ refine", "`refine_epochs=5`: one fit, then 5 epochs on its neighbour-smoothed "
                 "predictions; with 5 restarts, the kept one is refined once, on the "
                 "restarts' mean membership aligned to its clusters"),
    ("UMAP+K-means", "UMAP to 10 dimensions, then `KMeans(n_init=10)`"),
)

REPORTS = (
    Report("fixed_features", "Fixed features (paper Table 2)",
           "python benchmarks/bench_fixed_features.py",
           "Clustering fixed feature vectors into 10 clusters: scikit-learn's digits (1,797 "
           "images of 8x8 pixels) and MNIST-10k EfficientNet-Lite0 features (10,000 MNIST "
           "digits as 1280-d features of an ImageNet-pretrained CNN).",
           _FIXED_LEGEND,
           values={"dataset": {"digits": "sklearn digits", "effnet": MNIST10K_EFFNET}},
           same={"CCE default": "CCE + cross neighbours"}, timing=_FIXED_TIMING),
    Report("fixed_features_mnist70k", "Fixed features, all 70,000 MNIST digits as raw pixels",
           "python benchmarks/bench_fixed_features.py --datasets mnist --seeds 3 "
           "--methods " + " ".join(f"'{m}'" for m in _MNIST70K_METHODS) + " "
           "--output docs/benchmarks/fixed_features_mnist70k.md",
           "Clustering all 70,000 MNIST digits into 10 clusters from their 784 raw pixels.",
           _FIXED_LEGEND,
           values={"dataset": {"mnist": "MNIST-70k pixels"}},
           same={"CCE default": "CCE + cross neighbours"}, timing=_FIXED_TIMING),
    Report("fixed_features_restarts", "Restarts and refinement, without labels",
           "python benchmarks/bench_fixed_features.py --datasets effnet --features "
           "~/.cache/skcce/fashion_train_effnet_lite0.npz --seeds 6 --methods "
           + " ".join(f"'{m}'" for m in _RESTART_METHODS)
           + " --output docs/benchmarks/fixed_features_restarts.md",
           "Pretrained-CNN features of MNIST and of Fashion-MNIST (10,000 training images "
           "each, 1280-d EfficientNet-Lite0 features, 10 clusters): what restarts kept by "
           "consensus and the refinement stage buy, beside UMAP + K-means.",
           _FIXED_LEGEND + _RESTART_LEGEND,
           values={"dataset": {"effnet": MNIST10K_EFFNET,
                               "fashion_train_effnet_lite0.npz": FASHION10K_EFFNET}},
           timing=_FIXED_TIMING),
    Report("fixed_features_label_free_cnn", "Label-free configurations on CNN features",
           "python benchmarks/bench_fixed_features.py --datasets effnet --features "
           "~/.cache/skcce/fashion_train_effnet_lite0.npz --seeds 6 --methods "
           + " ".join(f"'{m}'" for m in _LABEL_FREE_METHODS)
           + " --output docs/benchmarks/fixed_features_label_free_cnn.md",
           "Pretrained-CNN features of MNIST and of Fashion-MNIST (10,000 training images "
           "each, 10 clusters): the label-free configurations with the linear and the MLP "
           "head, beside UMAP + K-means and TEMI, in one run.",
           _FIXED_LEGEND + _RESTART_LEGEND + _LABEL_FREE_LEGEND,
           values={"dataset": {"effnet": MNIST10K_EFFNET,
                               "fashion_train_effnet_lite0.npz": FASHION10K_EFFNET}},
           timing=_FIXED_TIMING),
    Report("fixed_features_label_free_pixels", "Label-free configurations on pixels",
           "python benchmarks/bench_fixed_features.py --datasets digits mnist --mnist-samples "
           "10000 --seeds 6 --methods " + " ".join(f"'{m}'" for m in _LABEL_FREE_METHODS)
           + " --output docs/benchmarks/fixed_features_label_free_pixels.md",
           "scikit-learn's digits (1,797 images of 8x8 pixels) and a fixed random 10,000 of "
           "MNIST-70k's raw pixels, 10 clusters: the same configurations, beside UMAP + K-means "
           "and TEMI, in one run.",
           _FIXED_LEGEND + _RESTART_LEGEND + _LABEL_FREE_LEGEND,
           values={"dataset": {"digits": "sklearn digits", "mnist": "MNIST-10k pixels"}},
           timing=_FIXED_TIMING),
    Report("solvers", "EM vs projected gradient descent (paper Table 1)",
           "python benchmarks/bench_solvers.py",
           "Seconds for the pseudo-label solvers to reach a Frank-Wolfe gap of 1e-4 with K = "
           "200 clusters, on synthetic predictions.",
           (("points", "number of rows M of the prediction matrix"),
            ("EM variant", "SQUAREM: the solver's default, EM with an extrapolation step; "
                           "plain: the paper's Algorithm 1"),
            ("EM s to 1e-4", "seconds for EM to reach the gap"),
            ("best fixed-step PGD", "the fastest of the paper's fixed step sizes for projected "
                                    "gradient descent"),
            ("speedup", "PGD's seconds over EM's; '>' is a lower bound where PGD stopped at "
                        "its iteration cap")),
           after="Speedup", columns={"M": "points"}),
    Report("deep", "Deep clustering, CPU scale (paper Table 3)", "python benchmarks/bench_deep.py",
           "VGG-4 trained from scratch on a subset of MNIST on a CPU for a few epochs (sizes in "
           "the report): far from the paper's 50-epoch runs, so compare methods, not numbers.",
           (("accuracy", "clustering accuracy in %, after matching clusters to classes "
                         "(Hungarian), mean (standard deviation) over seeds"),
            ("images/s", "training images per second"),
            ("vs bare", "images/s over that of a bare PyTorch loop on the same network and "
                        "batches, trained on the true labels without pseudo-labels: 1.00 means "
                        "no overhead"),
            ("solver share, augment share", "fraction of the training-step time spent in the "
                                            "pseudo-label solver, and in image augmentation"),
            ("fit s (median)", "median seconds per fit"))),
    Report("weak", "Weak supervision (paper Table 4)", "python benchmarks/bench_weak.py",
           f"Classification with few labels on {MNIST10K_EFFNET}: a fraction of the training "
           "rows keeps its label (columns), the rest is unlabeled.",
           (("0.1 labels, ...", "test accuracy in % with that fraction of training labels, "
                                "mean (standard deviation) over seeds"),
            ("only seeds", "cross-entropy on the labeled rows only"),
            ("+ X", "the labeled cross-entropy plus X's self-labeling loss on all training "
                    "rows"),
            ("median fit s", "median seconds per fit"))),
    Report("noisy_labels", "Noisy labels (paper Figure 2)",
           "python benchmarks/bench_noisy_labels.py",
           "Classification with noisy labels: an MLP trained on MNIST digits of which a "
           "fraction eta carry random labels, tested on clean digits.",
           (("eta", "fraction of training labels replaced by uniformly random ones"),
            ("observed labels correct", "share of training labels that are right after that "
                                        "(a random label can be the true one)"),
            ("collision / Shannon CE test acc", "test accuracy in %, mean (standard "
                                                "deviation) over seeds"),
            ("collision - Shannon", "difference of the means, in percentage points"),
            ("median fit s", "median seconds per fit")),
           columns={"shannon CE test acc": "Shannon CE test acc"}),
)


def first_table(markdown, after=None):
    """Lines of the first pipe table in ``markdown`` (after the heading containing ``after``).

    Falls back to the first table of the report when no heading contains ``after``;
    returns an empty list when there is no table.
    """
    lines, table = markdown.splitlines(), []
    if after is not None:
        starts = [i for i, line in enumerate(lines)
                  if line.lstrip().startswith("#") and after in line]
        if starts:
            lines = lines[starts[0]:]
    for line in lines:
        if line.strip().startswith("|"):
            table.append(line.rstrip())
        elif table:
            break
    return table


def report_date(markdown):
    """The ``date: ...`` a report states, or None."""
    match = re.search(r"date:\s*([0-9]{4}-[0-9]{2}-[0-9]{2}[0-9: ]*(UTC)?)", markdown)
    return match.group(1).strip() if match else None


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def readable_table(table, report):
    """The report's table with readable names, and rows that ran one configuration merged."""
    if len(table) < 3:
        return table
    header = _cells(table[0])
    rows = [_cells(line) for line in table[2:]]
    for column, mapping in report.values.items():
        if column in header:
            i = header.index(column)
            for row in rows:
                row[i] = mapping.get(row[i], row[i])
    name_at = header.index("method") if "method" in header else 0
    measured = [i for i, c in enumerate(header) if c not in report.timing and i != name_at]
    for name, other in report.same.items():
        for second in [r for r in rows if r[name_at] == name]:
            first = next((r for r in rows if r[name_at] == other
                          and all(r[i] == second[i] for i in measured)), None)
            if first is not None:  # the same configuration measured twice: show one row
                rows.remove(first)
                second[name_at] = f"{name} (= {other})"
    header = [report.columns.get(c, c) for c in header]
    return [_row(header), table[1], *(_row(r) for r in rows)]


def results_section(reports_dir):
    """Markdown for the README's results section."""
    out = []
    for report in REPORTS:
        path = os.path.join(reports_dir, f"{report.name}.md")
        out += [f"#### {report.heading}", "", report.caption, ""]
        if not os.path.exists(path):
            out += [f"Not generated yet: run `{report.command}`.", ""]
            continue
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        table = readable_table(first_table(text, report.after), report)
        date = report_date(text)
        out += table if table else ["(the report has no table)"]
        out += ["", "Legend: " + "; ".join(f"**{k}**: {v}" for k, v in report.legend) + "."]
        stated = re.search(r"Command:\s*`([^`]+)`", text)
        source = (f"`{stated.group(1) if stated else report.command}`"
                  + (f", run {date}" if date else ""))
        out += ["", f"Full report with the machine: [docs/benchmarks/{report.name}.md]"
                f"(docs/benchmarks/{report.name}.md) ({source}).", ""]
    return "\n".join(out).rstrip() + "\n"


def splice(readme_text, section):
    """Replace the text between the markers; raise ValueError if they are missing."""
    if START not in readme_text or END not in readme_text:
        raise ValueError(f"README has no {START} ... {END} markers")
    head, rest = readme_text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{section}{END}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    parser.add_argument("--reports", default=os.path.join(ROOT, "docs", "benchmarks"))
    parser.add_argument("--check", action="store_true",
                        help="only check that the README is up to date")
    args = parser.parse_args(argv)
    with open(args.readme, encoding="utf-8") as fh:
        old = fh.read()
    try:
        new = splice(old, results_section(args.reports))
    except ValueError as exc:
        print(f"update_readme: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if new != old:
            print("README.md results are out of date: run python benchmarks/update_readme.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        with open(args.readme, "w", encoding="utf-8") as fh:
            fh.write(new)
    print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
