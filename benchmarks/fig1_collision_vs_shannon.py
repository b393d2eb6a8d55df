"""Reproduce the paper's Figure 1: collision H2(y, sigma) against Shannon H(y, sigma).

For binary predictions sigma = (x, 1 - x) and the three pseudo-labels
y = (0.9, 0.1), (0.7, 0.3), (0.5, 0.5), it draws both cross-entropies over
x in [0, 1] and tabulates the properties the paper reads off the figure:
H2 is finite at both end points for non-one-hot y (bounded), it is minimized
at the confident end (x = 1) rather than at sigma = y, and it is flat for the
uniform y (zero gradient), whereas H is infinite at both ends and minimized
at sigma = y (it trains sigma to copy the label's uncertainty).

Writes ``docs/benchmarks/fig1_collision_vs_shannon.png`` and
``docs/benchmarks/fig1.md``.

Usage::

    python benchmarks/fig1_collision_vs_shannon.py [--out-dir docs/benchmarks]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import machine_description, output_path, write_markdown  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def figure1_rows(targets, n_points=100001):
    """Numbers read off Figure 1, one row per pseudo-label y."""
    from skcce.plotting import collision_and_shannon_curves

    x = np.linspace(0.0, 1.0, n_points)
    rows = []
    for y in targets:
        h2, h = collision_and_shannon_curves(y, x)
        slope = np.abs(np.gradient(h2, x))
        rows.append({
            "y": f"({y[0]:g}, {y[1]:g})",
            "H2 at x=0": float(h2[0]),
            "H2 at x=1": float(h2[-1]),
            "H at x=0": float(h[0]),
            "H at x=1": float(h[-1]),
            "argmin_x H2": float(x[np.argmin(h2)]) if np.ptp(h2) > 1e-12 else "flat",
            "argmin_x H": float(x[np.argmin(h)]),
            "max abs dH2/dx": float(slope.max()),
        })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "benchmarks"),
                        help="where the PNG and the markdown go (default: docs/benchmarks)")
    parser.add_argument("--quick", action="store_true", help="coarser grid (for tests)")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skcce.plotting import FIGURE1_TARGETS, plot_collision_vs_shannon

    png = output_path(os.path.join(args.out_dir, "fig1_collision_vs_shannon.png"), args.quick)
    os.makedirs(os.path.dirname(png) or ".", exist_ok=True)
    fig = plot_collision_vs_shannon(n_points=201 if args.quick else 1001)
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    rows = figure1_rows(FIGURE1_TARGETS, n_points=1001 if args.quick else 100001)
    header = (
        "Collision cross-entropy H2(y, sigma) = -ln sum_k y_k sigma_k (eq. 9) and Shannon's "
        "H(y, sigma) = -sum_k y_k ln sigma_k (eq. 8) for sigma = (x, 1 - x), computed by "
        "`skcce.plotting.collision_and_shannon_curves` on a grid of x in [0, 1].\n\n"
        f"Command: `python benchmarks/fig1_collision_vs_shannon.py`. "
        f"Machine: {machine_description()}.\n\n"
        "![Figure 1](fig1_collision_vs_shannon.png)"
    )
    write_markdown(os.path.join(args.out_dir, "fig1.md"),
                   "Figure 1: collision vs Shannon cross-entropy", header, rows)
    print(f"wrote {png} and {os.path.join(args.out_dir, 'fig1.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
